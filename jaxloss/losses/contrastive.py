"""Batch contrastive losses: supervised contrastive (SupCon) and NT-Xent.

Unlike the classification losses, these couple the examples of a batch: each
example (the *anchor*) is scored against the other examples of its contrast
set. The contrast set is the second-to-last axis ``N`` of ``embeddings
[..., N, D]``; every leading axis indexes an independent contrast set (e.g.
one per aspect, or per device group), so a ``[G, N, D]`` input is ``G``
separate losses computed in one program. The result has one value per anchor,
``[..., N]``, and is never reduced over ``N``: its mean over ``N`` is SimCLR's
loss and the SupCon reference code's ``.mean()`` (the SupCon paper sums over
anchors instead), and :func:`jaxloss.losses.masked_mean` gives the masked
mean.

Numerical conventions shared by the losses in this module:

* Embeddings are L2-normalised inside, so similarities are cosines in
  ``[-1, 1]`` and the logits are bounded by ``1 / temperature``. The norm is
  guarded as ``x * rsqrt(max(|x|^2, eps^2))`` with ``eps = 1e-12`` (the
  default of ``torch.nn.functional.normalize``, which the SupCon reference
  training code applies): a zero vector stays the zero vector, with similarity
  0 to everything, instead of ``0 / 0``.
* Inputs are upcast to at least float32 and the result is cast back to the
  embeddings' dtype (bf16 in, bf16 out). The similarity matmul runs at
  ``Precision.HIGHEST``: for unit vectors at ``temperature = 0.1``, rounding
  the operands to bf16 (the TPU default pass) moves logits by up to ~1e-2,
  and to TF32 (recent GPUs) by ~2e-3.
* The self-similarity and masked-out candidates are removed from the
  log-sum-exp by replacing their logits with half the most negative finite
  float (never ``-inf``), and an anchor with no candidate at all gets a
  log-sum-exp of 0, so no ``inf`` appears in values or gradients.
* ``where`` (True = include) removes an example entirely: it is neither an
  anchor nor a candidate for any other anchor, its embedding is replaced by
  zeros before any arithmetic (so NaN padding gives exactly-zero gradients),
  and its output is 0. The result on the included examples equals the loss of
  the sliced batch.
* An anchor without positives (a singleton class, or every positive masked)
  contributes exactly 0 with finite gradients, instead of ``0 / 0``.
* The ``[..., N, N]`` logits are never materialised. From ``N = 512`` on, the
  anchors are processed in blocks of ``N / 8`` rows (at most ``2**22``
  logits per block), as memory-efficient attention does (Rabe & Staats,
  `Self-attention Does Not Need O(n^2) Memory
  <https://arxiv.org/abs/2112.05682>`_, 2021), and the gradient is a custom
  JVP that recomputes each block's logits instead of storing them, so
  forward plus backward keep a few ``[..., N / 8, N]`` blocks: about half of
  one ``[N, N]`` float32 matrix at ``N = 1024``, a third at ``N = 4096``.
  Every row still reduces all ``N`` logits at once (no online softmax), so
  the values are those of the direct computation. Forward-mode and
  higher-order derivatives work as usual.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import jax
from jax.custom_derivatives import SymbolicZero
import jax.numpy as jnp

from jaxloss.losses import _checks

ArrayLike = Any

# Norm guard of the L2 normalisation (torch.nn.functional.normalize's default).
_NORM_EPS = 1e-12

# Anchor blocks: see _block_size.
_BLOCK_ELEMENTS = 2**22
_MIN_BLOCK = 64
# Multi-hot labels with more than 32 * this many classes use a matmul.
_MAX_PACKED_WORDS = 8


# ------------------------------------------------------------------ helpers


def _unit(x: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
  """L2-normalises the last axis; masked and zero rows become zero vectors."""
  if mask is not None:
    # Replace, don't multiply: 0 * NaN padding would still be NaN.
    x = jnp.where(mask[..., None], x, 0.0)
  sq_norm = jnp.sum(x * x, axis=-1, keepdims=True)
  # rsqrt(max(|x|^2, eps^2)) == 1 / max(|x|, eps), without a sqrt whose
  # derivative is infinite at 0.
  return x * jax.lax.rsqrt(jnp.maximum(sq_norm, _NORM_EPS**2))


def _pairwise_logits(z_anchor: jax.Array, anchor_index: jax.Array,
                     z: jax.Array, temperature: jax.Array,
                     mask: Optional[jax.Array]):
  """Returns some anchors' logits against every example, and the candidates.

  Args:
    z_anchor: Unit embeddings of ``b`` anchors ``[..., b, D]`` in the compute
      dtype.
    anchor_index: Int ``[b]``, the anchors' positions in the contrast set;
      positions ``>= N`` (padding) exclude no candidate.
    z: Unit embeddings of the contrast set ``[..., N, D]``.
    temperature: Scalar in the compute dtype.
    mask: None or bool ``[..., N]``.

  Returns:
    ``(logits, candidate)``, both ``[..., b, N]``: ``logits[..., i, j] =
    z_i . z_j / tau``, and ``candidate[..., i, j]`` is True where ``j`` is in
    the contrast set A(i) (``j != i`` and ``j`` included).
  """
  # HIGHEST: bf16 operand rounding would move logits by ~1e-2 at tau = 0.1.
  logits = jnp.einsum("...id,...jd->...ij", z_anchor, z,
                      precision=jax.lax.Precision.HIGHEST) / temperature
  candidate = anchor_index[:, None] != jnp.arange(z.shape[-2])[None, :]
  if mask is not None:
    candidate = candidate & mask[..., None, :]
  return logits, candidate


def _very_negative(dtype) -> float:
  # A finite stand-in for -inf: exp underflows to exactly 0 whenever one real
  # candidate exists, and an all-excluded row stays finite (logsumexp of an
  # all -inf row is -inf with a NaN gradient, safe only while every later
  # where happens to discard it).
  return jnp.finfo(dtype).min / 2


def _has_candidate(n: int, mask: Optional[jax.Array]):
  """Whether A(i) is non-empty, ``[..., N]`` (a Python bool without mask)."""
  if mask is None:
    return n > 1
  included = mask.astype(jnp.int32)
  return included.sum(axis=-1, keepdims=True) - included > 0


def _class_keys(labels: jax.Array, mask: Optional[jax.Array],
                multi_hot: bool, dtype):
  """What :func:`_same_class` compares: ids, packed bits or memberships.

  Multi-hot labels ``[..., N, K]`` become their set bits packed into
  ``ceil(K / 32)`` uint32 words per example (zero where masked), so two
  examples are positives when a bitwise AND of their words is non-zero: a
  few integer ops per pair instead of a ``K``-long dot product. Beyond
  ``_MAX_PACKED_WORDS`` words the 0/1 memberships (in ``dtype``) are matched
  with a matmul instead, whose counts of 0/1 products are exact.
  """
  if not multi_hot:
    return labels  # integer class ids [..., N]
  member = labels > 0
  if mask is not None:
    member = member & mask[..., None]
  k = member.shape[-1]
  words = -(-k // 32)
  if words > _MAX_PACKED_WORDS:
    return member.astype(dtype)
  bits = member.astype(jnp.uint32) << (jnp.arange(k, dtype=jnp.uint32) % 32)
  # Distinct powers of two: each word's sum is the bitwise OR, below 2**32.
  return jnp.stack([jnp.sum(bits[..., w:w + 32], axis=-1, dtype=jnp.uint32)
                    for w in range(0, k, 32)], axis=-1)


def _same_class(anchor_keys: jax.Array, keys: jax.Array,
                multi_hot: bool) -> jax.Array:
  """Bool ``[..., b, N]``: whether anchor ``i`` and example ``j`` match."""
  if not multi_hot:
    return anchor_keys[..., :, None] == keys[..., None, :]
  if keys.dtype == jnp.uint32:
    same = None
    for w in range(keys.shape[-1]):
      hit = (anchor_keys[..., :, None, w] & keys[..., None, :, w]) != 0
      same = hit if same is None else same | hit
    return same
  # Memberships: one [b, K] @ [K, N] matmul, no [b, N, K] intermediate.
  return jnp.einsum("...ik,...jk->...ij", anchor_keys, keys,
                    precision=jax.lax.Precision.HIGHEST) > 0


# ------------------------------------------------------------ anchor blocks
#
# The [..., N, N] logits are never formed: every pass below walks over blocks
# of ``block`` anchors and their [..., block, N] rows (flash-attention style),
# so the compiled temporary memory is a few such blocks plus O(N D).


def _block_size(n: int) -> int:
  """Anchors per block for a contrast set of ``n`` (``n``: a single block).

  An eighth of the rows keeps the few live ``[b, N]`` buffers of a block
  (logits, masks, weights) well under one ``[N, N]`` float32 matrix; the cap
  of ``_BLOCK_ELEMENTS`` per block bounds them absolutely for large ``N``.
  Blocks of fewer than ``_MIN_BLOCK`` rows cost more in loop overhead and
  thin matmuls than they save, so small sets stay one block.
  """
  if n < 8 * _MIN_BLOCK:
    return n
  return max(_MIN_BLOCK, min(n // 8, _BLOCK_ELEMENTS // n) // 8 * 8)


def _split_anchors(x: jax.Array, block: int, axis: int) -> jax.Array:
  """``[..., N, ...]`` -> ``[N_pad / block, ..., block, ...]``, zero-padded."""
  axis = axis % x.ndim
  n = x.shape[axis]
  num_blocks = -(-n // block)
  pad = [(0, 0)] * x.ndim
  pad[axis] = (0, num_blocks * block - n)
  x = jnp.pad(x, pad)
  x = x.reshape(x.shape[:axis] + (num_blocks, block) + x.shape[axis + 1:])
  return jnp.moveaxis(x, axis, 0)


def _merge_anchors(x: jax.Array, n: int) -> jax.Array:
  """``[num_blocks, ..., block]`` -> ``[..., n]`` (drops the padding)."""
  x = jnp.moveaxis(x, 0, -2)
  return x.reshape(x.shape[:-2] + (-1,))[..., :n]


def _anchor_blocks(block: int, embeddings: jax.Array, **arrays) -> dict:
  """Splits per-anchor arrays into ``[num_blocks, ...]`` blocks.

  Arrays of the rank of ``embeddings [..., N, D]`` (embeddings, multi-hot
  keys) are ``[..., N, F]``, the others ``[..., N]``; None values are
  skipped. ``index`` holds each block's anchor positions.
  """
  n = embeddings.shape[-2]
  blocks = {"index": jnp.arange(-(-n // block) * block).reshape(-1, block)}
  for name, x in arrays.items():
    if x is not None:
      axis = -2 if x.ndim == embeddings.ndim else -1
      blocks[name] = _split_anchors(x, block, axis)
  return blocks


def _scan_blocks(body, init, blocks: dict):
  """``lax.scan`` over the blocks; a single block runs without a loop."""
  if blocks["index"].shape[0] == 1:
    carry, out = body(init, {k: v[0] for k, v in blocks.items()})
    return carry, jax.tree_util.tree_map(lambda y: y[None], out)
  return jax.lax.scan(body, init, blocks)


def _row_statistics(z, temperature, mask, keys, block: int,
                    softmax_logit: bool) -> dict:
  """Per-anchor statistics of the logit rows, ``[..., N]`` each.

  ``lse``, ``log sum_{a in A(i)} exp(s_ia)`` (0 where A(i) is empty),
  computed as ``jax.nn.logsumexp`` does from the row's ``max`` and
  ``sumexp = sum_a exp(s_ia - max)``, which are returned too; with class
  keys ``positive_sum`` (the sum of the logits of the positives P(i) in
  A(i)) and ``num_positives`` (|P(i)|); with ``softmax_logit``, also
  ``sum_{a in A(i)} softmax_a(i) s_ia`` (0 where A(i) is empty).
  """
  n = z.shape[-2]
  multi_hot = keys is not None and keys.ndim == z.ndim
  blocks = _anchor_blocks(block, z, z=z, keys=keys)

  def body(carry, x):
    fill = x["fill"]
    logits, candidate = _pairwise_logits(x["z"], x["index"], z, temperature,
                                         mask)
    masked = jnp.where(candidate, logits, fill)
    row_max = jnp.max(masked, axis=-1)
    exp_shifted = jnp.exp(masked - row_max[..., None])
    out = {"max": row_max, "sumexp": jnp.sum(exp_shifted, axis=-1)}
    if keys is not None:
      positive = candidate & _same_class(x["keys"], keys, multi_hot)
      out["positive_sum"] = jnp.sum(jnp.where(positive, logits, 0 * fill),
                                    axis=-1)
      out["num_positives"] = positive.sum(axis=-1)
    if softmax_logit:
      out["softmax_logit"] = jnp.sum(exp_shifted * logits,
                                     axis=-1) / out["sumexp"]
    return carry, out

  # The fill value comes in per block (and the 0 is derived from it): the
  # [..., b, N] broadcast of a constant would be hoisted out of the loop when
  # reverse mode linearizes the scan (jax's _scan_known_hoisting) and stay
  # live as one more block-sized buffer.
  blocks["fill"] = jnp.full(blocks["index"].shape[:1],
                            _very_negative(z.dtype), z.dtype)
  _, out = _scan_blocks(body, None, blocks)
  stats = {k: _merge_anchors(v, n) for k, v in out.items()}
  # Rows with no candidate are discarded by the callers; 0 keeps any arithmetic
  # on them (scaling, averaging two views) far from overflow.
  has_candidate = _has_candidate(n, mask)
  stats["lse"] = jnp.where(has_candidate,
                           jnp.log(stats["sumexp"]) + stats["max"], 0.0)
  if softmax_logit:
    stats["softmax_logit"] = jnp.where(has_candidate, stats["softmax_logit"],
                                       0.0)
  return stats


def _contrast_value(stats: dict):
  if "num_positives" not in stats:
    return stats["lse"], None
  lse = stats["lse"]
  num_positives = stats["num_positives"]
  # -(1/|P|) sum_p (s_ip - lse_i) = lse_i - mean_p s_ip; max(., 1) avoids 0/0.
  count = jnp.maximum(num_positives, 1).astype(lse.dtype)
  # The count leaves as float32, so that its (zero) tangent can be built with
  # zeros_like and so carries the primal's varying-axes type under shard_map.
  return lse - stats["positive_sum"] / count, num_positives.astype(jnp.float32)


@functools.partial(jax.custom_jvp, nondiff_argnums=(4,))
def _contrast(z, temperature, mask, keys, block: int):
  """Per-anchor ``lse_i - mean_{p in P(i)} s_ip`` and ``|P(i)|``.

  Args:
    z: Unit embeddings ``[..., N, D]`` in the compute dtype.
    temperature: Scalar in the compute dtype.
    mask: None or bool ``[..., N]``.
    keys: None (no positives: the result is ``lse`` and None), or the class
      keys of :func:`_class_keys`, ``[..., N]`` or ``[..., N, F]``.
    block: Anchors per block (static); ``>= N`` is a single block.

  Returns:
    ``(loss, num_positives)``, ``[..., N]`` float and float32 (or None).
  """
  return _contrast_value(_row_statistics(z, temperature, mask, keys, block,
                                         False))


def _contrast_tangent(z, z_dot, temperature, mask, keys, block: int,
                      row_max, inverse_sumexp, inverse_count):
  r"""The tangent of :func:`_contrast` along ``z_dot``, in anchor blocks.

  With ``W[i, j] = d loss_i / d s_ij = softmax_j(i) - [j in P(i)] / |P(i)|``
  (zero outside A(i)) and ``ds_ij = (dz_i . z_j + z_i . dz_j) / tau``, the
  tangent is ``sum_j W[i, j] X[i, j] + sum_j W[i, j] X[j, i]`` with
  ``X = dz z^T / tau``. The second sum pairs column ``i`` of ``X`` with row
  ``i`` of ``W``; as the logits are symmetric, rows ``J`` of ``W^T`` come
  from the same logit rows ``s[J, :]`` as rows ``J`` of ``W``. So each block
  needs one ``[b, D] x [D, N]`` matmul for ``X[J, :]``, and the transpose that
  reverse mode derives is one ``[b, N] x [N, D]`` matmul per block,
  ``(c_J W[J, :] + W^T[J, :] c) @ z / tau`` for the output cotangent ``c``.
  Autodiff through the blocks would instead need ``dS @ z`` and a
  transposed ``dS^T @ z_J`` accumulated into the whole ``dz``. The body is
  checkpointed: the backward pass recomputes a block's logits and ``W``
  from ``z`` and the O(N) statistics rather than storing them.
  """
  n = z.shape[-2]
  multi_hot = keys is not None and keys.ndim == z.ndim
  blocks = _anchor_blocks(block, z, z=z, z_dot=z_dot, keys=keys, mask=mask,
                          row_max=row_max, inverse_sumexp=inverse_sumexp,
                          inverse_count=inverse_count)
  anchors = jnp.arange(n)

  def body(column_sum, x):
    logits, candidate = _pairwise_logits(x["z"], x["index"], z, temperature,
                                         mask)
    very_negative = _very_negative(logits.dtype)
    # Row block J of W^T: W[i, k] for anchors i and k in J, where k is the
    # candidate, so k must be included (its own mask), not i.
    candidate_t = x["index"][:, None] != anchors[None, :]
    if mask is not None:
      candidate_t = candidate_t & x["mask"][..., :, None]
    # softmax_j(i) = exp(s_ij - max_i) / sumexp_i as logsumexp's own
    # derivative has it: exp(s_ij - lse_i) would carry lse_i's rounding
    # error, which grows with 1 / tau, into every weight of the row.
    w = jnp.exp(jnp.where(candidate, logits - x["row_max"][..., :, None],
                          very_negative)) * x["inverse_sumexp"][..., :, None]
    w_t = jnp.exp(jnp.where(candidate_t, logits - row_max[..., None, :],
                            very_negative)) * inverse_sumexp[..., None, :]
    if keys is not None:
      same = _same_class(x["keys"], keys, multi_hot)
      w = w - jnp.where(same & candidate, x["inverse_count"][..., :, None],
                        0.0)
      w_t = w_t - jnp.where(same & candidate_t,
                            inverse_count[..., None, :], 0.0)
    d_logits = jnp.einsum("...id,...jd->...ij", x["z_dot"], z,
                          precision=jax.lax.Precision.HIGHEST) / temperature
    return (column_sum + jnp.sum(w_t * d_logits, axis=-2),
            jnp.sum(w * d_logits, axis=-1))

  column_sum, row_sum = _scan_blocks(
      jax.checkpoint(body, prevent_cse=False),
      jnp.zeros(z.shape[:-1], z.dtype), blocks)
  return _merge_anchors(row_sum, n) + column_sum


@functools.partial(_contrast.defjvp, symbolic_zeros=True)
def _contrast_jvp(block, primals, tangents):
  z, temperature, mask, keys = primals
  z_dot, temperature_dot = tangents[:2]
  tau_varies = not isinstance(temperature_dot, SymbolicZero)
  stats = _row_statistics(z, temperature, mask, keys, block, tau_varies)
  loss, num_positives = _contrast_value(stats)
  if num_positives is None:
    inverse_count = None
  else:
    inverse_count = 1.0 / jnp.maximum(num_positives, 1).astype(loss.dtype)
  loss_dot = jnp.zeros_like(loss)
  if not isinstance(z_dot, SymbolicZero):
    loss_dot = loss_dot + _contrast_tangent(
        z, z_dot, temperature, mask, keys, block, stats["max"],
        1.0 / stats["sumexp"], inverse_count)
  if tau_varies:
    # d s_ij / d tau = -s_ij / tau, so d loss_i / d tau = -sum_j W_ij s_ij /
    # tau, with the softmax part from the forward rows.
    weighted = stats["softmax_logit"]
    if inverse_count is not None:
      weighted = weighted - stats["positive_sum"] * inverse_count
    loss_dot = loss_dot - temperature_dot / temperature * weighted
  count_dot = None if num_positives is None else jnp.zeros_like(num_positives)
  return (loss, num_positives), (loss_dot, count_dot)


def _temperature(value: ArrayLike, name: str) -> jax.Array:
  """Validates a positive scalar temperature (value check only if concrete)."""
  _checks.check_scalar_range(value, name, 0.0, float("inf"),
                             low_closed=False, high_closed=False)
  value = jnp.asarray(value)
  if value.ndim != 0:
    raise ValueError(f"`{name}` must be a scalar; got shape {value.shape}.")
  if not jnp.issubdtype(value.dtype, jnp.floating) and not jnp.issubdtype(
      value.dtype, jnp.integer):
    raise TypeError(
        f"`{name}` must be a real number; got dtype {value.dtype}.")
  return value


def _check_embeddings(x: jax.Array, name: str) -> None:
  _checks.check_floating(x, name)
  if x.ndim < 2:
    raise ValueError(
        f"`{name}` must have shape [..., N, D] (a contrast set of N vectors "
        f"of dimension D); got shape {tuple(x.shape)}.")
  if x.shape[-2] == 0:
    raise ValueError(
        f"`{name}` holds an empty contrast set (N = 0 in shape {tuple(x.shape)}); "
        "skip the contrastive term for an empty batch.")


def _check_multi_hot(labels: jax.Array, mask: Optional[jax.Array]) -> None:
  """Raises ValueError when concrete multi-label labels are not 0/1."""
  if labels.dtype == jnp.bool_:
    return
  values = _checks.concrete_value(labels)
  if values is None:
    return
  bad = (values != 0) & (values != 1)
  if mask is not None:
    mask_values = _checks.concrete_value(mask)
    if mask_values is None:
      return
    bad = bad & mask_values[..., None]
  if bad.any():
    first = values[bad].reshape(-1)[0]
    raise ValueError(
        "`labels` of shape [..., N, K] must be multi-hot (0/1 or bool); got "
        f"{int(bad.sum())} other value(s), e.g. {first.item()!r}. Smoothed "
        "or soft labels would make every pair a positive.")


def _validate_labels(labels: jax.Array, embeddings: jax.Array,
                     mask: Optional[jax.Array]) -> None:
  batch = tuple(embeddings.shape[:-1])
  if labels.ndim == embeddings.ndim - 1:
    if not jnp.issubdtype(labels.dtype, jnp.integer):
      raise TypeError(
          "`labels` of shape [..., N] must be integer class ids; got dtype "
          f"{labels.dtype}. Pass multi-hot labels as [..., N, K].")
    _checks.check_shape(labels, batch, "labels",
                        "`embeddings.shape[:-1]`: one class id per example")
  elif labels.ndim == embeddings.ndim:
    if tuple(labels.shape[:-1]) != batch:
      raise ValueError(
          f"`labels` must have shape {batch} (class ids) or {batch + ('K',)} "
          f"(multi-hot), matching `embeddings.shape[:-1]`; got shape "
          f"{tuple(labels.shape)}.")
    if not (labels.dtype == jnp.bool_
            or jnp.issubdtype(labels.dtype, jnp.integer)
            or jnp.issubdtype(labels.dtype, jnp.floating)):
      raise TypeError(
          "`labels` of shape [..., N, K] must be bool, integer or floating "
          f"multi-hot; got dtype {labels.dtype}.")
    _check_multi_hot(labels, mask)
  else:
    raise ValueError(
        f"`labels` must have shape {batch} (class ids) or {batch + ('K',)} "
        f"(multi-hot), matching `embeddings.shape[:-1]`; got shape "
        f"{tuple(labels.shape)}.")


# The public functions validate in Python and then call one of these jitted
# cores (see classification.py): temperature is an argument, not a constant,
# so a schedule can change it without recompiling.


@functools.partial(jax.jit, static_argnames=("block",))
def _supcon_core(embeddings, labels, temperature, base_temperature, mask, *,
                 block):
  dtype = _checks.compute_dtype(embeddings.dtype)
  tau = temperature.astype(dtype)
  z = _unit(embeddings.astype(dtype), mask)
  keys = _class_keys(labels, mask, labels.ndim == embeddings.ndim, dtype)
  loss, num_positives = _contrast(z, tau, mask, keys, block)
  loss = jnp.where(num_positives > 0, loss, 0.0)
  if base_temperature is not None:
    loss = loss * (tau / base_temperature.astype(dtype))
  if mask is not None:
    loss = jnp.where(mask, loss, 0.0)
  return loss.astype(embeddings.dtype)


@functools.partial(jax.jit, static_argnames=("block",))
def _ntxent_core(embeddings_a, embeddings_b, temperature, mask, *, block):
  dtype = _checks.compute_dtype(
      jnp.result_type(embeddings_a.dtype, embeddings_b.dtype))
  tau = temperature.astype(dtype)
  n = embeddings_a.shape[-2]
  x = jnp.concatenate([embeddings_a.astype(dtype),
                       embeddings_b.astype(dtype)], axis=-2)
  both = None if mask is None else jnp.concatenate([mask, mask], axis=-1)
  z = _unit(x, both)
  lse, _ = _contrast(z, tau, both, None, block)
  # The positive logit of a_i and of b_i is the same z_a . z_b / tau; a direct
  # row-wise dot instead of reading it off the [2N, 2N] matrix.
  positive = jnp.sum(z[..., :n, :] * z[..., n:, :], axis=-1) / tau
  loss = 0.5 * (lse[..., :n] + lse[..., n:]) - positive
  if mask is not None:
    loss = jnp.where(mask, loss, 0.0)
  return loss.astype(embeddings_a.dtype)


# ------------------------------------------------------------------- losses


def supervised_contrastive_loss(
    embeddings: ArrayLike,
    labels: ArrayLike,
    *,
    temperature: ArrayLike = 0.1,
    base_temperature: Optional[ArrayLike] = None,
    where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""Computes the supervised contrastive (SupCon) loss of every anchor.

  Khosla et al.'s :math:`\mathcal{L}^{sup}_{out}` (eq. 2). With
  :math:`z` the L2-normalised embeddings, :math:`A(i)` every other included
  example and :math:`P(i) \subseteq A(i)` the positives of anchor :math:`i`,

  .. math::
    \ell_i = -\frac{\tau}{\tau_b} \frac{1}{|P(i)|} \sum_{p \in P(i)}
      \log \frac{\exp(z_i \cdot z_p / \tau)}
                {\sum_{a \in A(i)} \exp(z_i \cdot z_a / \tau)} .

  Positives stay in the denominator, as in eq. 2 (the :math:`\mathcal{L}_{out}`
  form the paper recommends) and the authors' code. The factor
  :math:`\tau / \tau_b` is the reference code's ``base_temperature`` (not in
  the paper); ``base_temperature=None`` means :math:`\tau_b = \tau`, factor 1.
  A mean of :math:`\ell` over ``N`` is the paper's per-batch loss divided by
  the batch size (the reference code's ``.mean()``).

  *Positives.* With integer labels, :math:`P(i) = \{j \in A(i) : y_j = y_i\}`.
  With multi-hot labels ``[..., N, K]``, :math:`P(i) = \{j \in A(i) :
  y_i \cdot y_j > 0\}`: two examples are positives when they share at least
  one label. This is the "any" positive-selection rule of Zhang & Wu's
  MulSupCon study (their code's ``get_output_func(pattern='any')``); it keeps
  eq. 2 unchanged (binary positives, no new hyperparameter) and reduces
  exactly to the integer form for one-hot labels. Overlap-weighted variants
  (MulSupCon's per-label anchors, Jaccard weights) are different losses.

  *Anchors without positives* (a singleton class, an example with no label,
  or every positive masked) contribute exactly 0 with finite gradients; they
  still act as negatives for the other anchors. The authors' reference code
  divides by ``mask.sum(1) = 0`` there and returns NaN (HobbitLong/SupContrast
  ``losses.py``; issue #141).

  Args:
    embeddings: Floating ``[..., N, D]``. The contrast set is the ``N`` axis;
      leading axes are independent contrast sets. Normalised inside (cosine
      similarity), so the scale of each vector is irrelevant; a zero vector
      has similarity 0 to everything.
    labels: Either integer class ids ``[..., N]`` (any integer values;
      positives have equal ids), or multi-hot ``[..., N, K]`` of dtype bool,
      integer or floating with 0/1 entries (checked when concrete; under
      ``jax.jit`` any entry > 0 counts as a member).
    temperature: Positive scalar :math:`\tau`. It may be traced (e.g. from a
      schedule inside ``jax.jit``) without recompiling.
    base_temperature: Optional positive scalar :math:`\tau_b` scaling the loss
      by :math:`\tau / \tau_b`; None means no scaling.
    where: Optional bool (or 0/1 int) mask ``[..., N]``, True = include. An
      excluded example is neither an anchor nor a candidate: the result on the
      included examples equals the loss of the sliced batch, and excluded
      entries are 0 with exactly-zero gradients.

  Returns:
    Per-anchor loss in nats, shape ``[..., N]``, dtype of ``embeddings``.

  Raises:
    TypeError: if ``embeddings`` is not floating, ``[..., N]`` labels are not
      integer, or ``where`` is floating.
    ValueError: if ``embeddings`` has fewer than 2 axes, ``labels`` is neither
      ``[..., N]`` nor ``[..., N, K]`` with ``[..., N] ==
      embeddings.shape[:-1]``, concrete multi-hot labels are not 0/1,
      ``where`` is not ``[..., N]``, or a temperature is not a scalar or
      (when concrete) not positive and finite.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxloss.losses import supervised_contrastive_loss
    >>> embeddings = jnp.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0],
    ...                         [-1.0, 0.0]])
    >>> labels = jnp.array([0, 0, 1, 2])
    >>> loss = supervised_contrastive_loss(embeddings, labels,
    ...                                    temperature=0.5)
    >>> with jnp.printoptions(precision=4):
    ...   print(loss)
    [0.2064 0.5371 0.     0.    ]

  References:
    Khosla et al., `Supervised Contrastive Learning
    <https://arxiv.org/abs/2004.11362>`_, NeurIPS 2020 (eq. 2); reference
    code https://github.com/HobbitLong/SupContrast. Zhang & Wu,
    `Multi-Label Supervised Contrastive Learning
    <https://ojs.aaai.org/index.php/AAAI/article/view/29619>`_, AAAI 2024
    (the "any" rule for multi-label positives).
  """
  embeddings = jnp.asarray(embeddings)
  labels = jnp.asarray(labels)
  _check_embeddings(embeddings, "embeddings")
  mask = _checks.as_mask(where, embeddings.shape[:-1])
  _validate_labels(labels, embeddings, mask)
  temperature = _temperature(temperature, "temperature")
  if base_temperature is not None:
    base_temperature = _temperature(base_temperature, "base_temperature")
  return _supcon_core(embeddings, labels, temperature, base_temperature, mask,
                      block=_block_size(embeddings.shape[-2]))


def ntxent_loss(
    embeddings_a: ArrayLike,
    embeddings_b: ArrayLike,
    *,
    temperature: ArrayLike = 0.1,
    where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""Computes the NT-Xent (SimCLR InfoNCE) loss of every pair of views.

  ``embeddings_a[i]`` and ``embeddings_b[i]`` are two views of example
  :math:`i`. Over the :math:`2N` normalised views :math:`z`, the loss of
  anchor :math:`k` with partner :math:`k^+` is

  .. math::
    \ell(k, k^+) = -\log \frac{\exp(z_k \cdot z_{k^+} / \tau)}
      {\sum_{m \ne k} \exp(z_k \cdot z_m / \tau)} ,

  where the denominator runs over the :math:`2N - 1` other views (the partner
  and both views of every other pair). Pair :math:`i` gets the mean of its two
  directions, :math:`\tfrac12 [\ell(a_i, b_i) + \ell(b_i, a_i)]`, so the mean
  over ``N`` is SimCLR's loss over :math:`2N` anchors (Chen et al., eq. 1 and
  Algorithm 1). It equals :func:`supervised_contrastive_loss` on the
  concatenated views with labels ``[0..N-1, 0..N-1]``, averaged over the
  two halves.

  Relation to ``optax.losses.ntxent(concat([a, b]), labels)``: for these pair
  labels optax returns the mean of this loss over ``N`` (one scalar). The two
  differ otherwise: optax normalises with ``|x| >= sqrt(eps)`` instead of
  ``1e-12``, uses ``temperature=0.07`` by default, cannot mask, and with
  groups of more than two views it removes the *other* positives from each
  positive's denominator, which is not SupCon's eq. 2. This is the InfoNCE
  form of SimCLR; CPC's original InfoNCE and CLIP's cross-view loss draw
  their candidates from other sets.

  Args:
    embeddings_a: Floating ``[..., N, D]``, the first view of each pair. The
      contrast set is the ``N`` axis; leading axes are independent.
    embeddings_b: Floating ``[..., N, D]``, the second view, same shape.
      Both are normalised inside (cosine similarity).
    temperature: Positive scalar :math:`\tau`; may be traced without
      recompiling.
    where: Optional bool (or 0/1 int) mask ``[..., N]`` of pairs, True =
      include. An excluded pair removes both its views from every
      denominator; its entry is 0 with exactly-zero gradients.

  Returns:
    Per-pair loss in nats, shape ``[..., N]``, dtype of ``embeddings_a``
    (computed in at least float32 and in float64 if either view is).

  Raises:
    TypeError: if either embedding is not floating or ``where`` is floating.
    ValueError: if the embeddings differ in shape or have fewer than 2 axes,
      ``where`` is not ``[..., N]``, or ``temperature`` is not a scalar or
      (when concrete) not positive and finite.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxloss.losses import ntxent_loss
    >>> a = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> b = jnp.array([[0.6, 0.8], [0.0, 2.0]])
    >>> loss = ntxent_loss(a, b, temperature=1.0)
    >>> with jnp.printoptions(precision=4):
    ...   print(loss)
    [0.9885 0.7824]

  References:
    Chen et al., `A Simple Framework for Contrastive Learning of Visual
    Representations <https://arxiv.org/abs/2002.05709>`_, ICML 2020 (eq. 1);
    Oord et al., `Representation Learning with Contrastive Predictive Coding
    <https://arxiv.org/abs/1807.03748>`_, arXiv 2018 (InfoNCE).
  """
  embeddings_a = jnp.asarray(embeddings_a)
  embeddings_b = jnp.asarray(embeddings_b)
  _check_embeddings(embeddings_a, "embeddings_a")
  _check_embeddings(embeddings_b, "embeddings_b")
  _checks.check_shape(embeddings_b, embeddings_a.shape, "embeddings_b",
                      "the shape of `embeddings_a`: one view per pair")
  mask = _checks.as_mask(where, embeddings_a.shape[:-1])
  temperature = _temperature(temperature, "temperature")
  return _ntxent_core(embeddings_a, embeddings_b, temperature, mask,
                      block=_block_size(2 * embeddings_a.shape[-2]))
