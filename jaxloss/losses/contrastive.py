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
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from jaxloss.losses import _checks

ArrayLike = Any

# Norm guard of the L2 normalisation (torch.nn.functional.normalize's default).
_NORM_EPS = 1e-12


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


def _masked_pairwise_logits(z: jax.Array, temperature: jax.Array,
                            mask: Optional[jax.Array]):
  """Returns the anchor-candidate logits and their log-sum-exp.

  Args:
    z: Unit embeddings ``[..., N, D]`` in the compute dtype.
    temperature: Scalar in the compute dtype.
    mask: None or bool ``[..., N]``.

  Returns:
    ``(logits, lse, candidate)``: ``logits[..., i, j] = z_i . z_j / tau``
    ``[..., N, N]``; ``candidate[..., i, j]`` is True where ``j`` is in the
    contrast set A(i) (``j != i`` and ``j`` included); ``lse[..., i]`` is
    ``log sum_{a in A(i)} exp(logits[..., i, a])``, or 0 where A(i) is empty.
  """
  # HIGHEST: bf16 operand rounding would move logits by ~1e-2 at tau = 0.1.
  logits = jnp.einsum("...id,...jd->...ij", z, z,
                      precision=jax.lax.Precision.HIGHEST) / temperature
  n = z.shape[-2]
  candidate = ~jnp.eye(n, dtype=bool)
  if mask is not None:
    candidate = candidate & mask[..., None, :]
  # A finite stand-in for -inf: exp underflows to exactly 0 whenever one real
  # candidate exists, and an all-excluded row stays finite (logsumexp of an
  # all -inf row is -inf with a NaN gradient, safe only while every later
  # where happens to discard it).
  very_negative = jnp.finfo(logits.dtype).min / 2
  lse = jax.nn.logsumexp(jnp.where(candidate, logits, very_negative), axis=-1)
  # Rows with no candidate are discarded by the callers; 0 keeps any arithmetic
  # on them (scaling, averaging two views) far from overflow.
  lse = jnp.where(candidate.any(axis=-1), lse, 0.0)
  return logits, lse, candidate


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


@jax.jit
def _supcon_core(embeddings, labels, temperature, base_temperature, mask):
  dtype = _checks.compute_dtype(embeddings.dtype)
  tau = temperature.astype(dtype)
  z = _unit(embeddings.astype(dtype), mask)
  logits, lse, candidate = _masked_pairwise_logits(z, tau, mask)
  if labels.ndim == embeddings.ndim:
    # Multi-hot: positives share at least one label, found with one [N, K] @
    # [K, N] matmul (no [N, N, K] intermediate). Counts of 0/1 are exact.
    member = labels > 0
    if mask is not None:
      member = member & mask[..., None]
    member = member.astype(dtype)
    overlap = jnp.einsum("...ik,...jk->...ij", member, member,
                         precision=jax.lax.Precision.HIGHEST)
    same = overlap > 0
  else:
    same = labels[..., :, None] == labels[..., None, :]
  positive = same & candidate
  num_positives = positive.sum(axis=-1)
  positive_sum = jnp.sum(jnp.where(positive, logits, 0.0), axis=-1)
  # -(1/|P|) sum_p (s_ip - lse_i) = lse_i - mean_p s_ip; max(., 1) avoids 0/0.
  loss = lse - positive_sum / jnp.maximum(num_positives, 1).astype(dtype)
  loss = jnp.where(num_positives > 0, loss, 0.0)
  if base_temperature is not None:
    loss = loss * (tau / base_temperature.astype(dtype))
  if mask is not None:
    loss = jnp.where(mask, loss, 0.0)
  return loss.astype(embeddings.dtype)


@jax.jit
def _ntxent_core(embeddings_a, embeddings_b, temperature, mask):
  dtype = _checks.compute_dtype(
      jnp.result_type(embeddings_a.dtype, embeddings_b.dtype))
  tau = temperature.astype(dtype)
  n = embeddings_a.shape[-2]
  x = jnp.concatenate([embeddings_a.astype(dtype),
                       embeddings_b.astype(dtype)], axis=-2)
  both = None if mask is None else jnp.concatenate([mask, mask], axis=-1)
  z = _unit(x, both)
  _, lse, _ = _masked_pairwise_logits(z, tau, both)
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
  return _supcon_core(embeddings, labels, temperature, base_temperature, mask)


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
  return _ntxent_core(embeddings_a, embeddings_b, temperature, mask)
