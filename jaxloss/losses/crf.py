"""Linear-chain conditional random field (CRF): the sequence-level tagging loss.

A tagger emits per-token scores ``emissions [B, T, C]``; a CRF adds learned tag-to-tag
``transitions [C, C]`` (and start / end scores ``[C]``) and normalises over whole tag
*sequences*, not tokens:

.. math::
  s(y) = a_{y_1} + \\sum_{i} e_{t_i, y_i} + \\sum_{i > 1} A_{y_{i-1}, y_i} + b_{y_n},
  \\qquad -\\log p(y \\mid x) = \\log \\sum_{y'} e^{s(y')} - s(y),

where :math:`t_1 < \\dots < t_n` are the sequence's real tokens (``where`` True). Tokens
outside ``where`` are skipped, not scored: the transition runs from the last real token
to the next, so padding and masked sub-words (a word's non-first pieces) both work, and
garbage (even NaN) there contributes exactly 0 with exactly-zero gradients.

Constraints are masks, filled with the finite
:func:`jaxloss.losses.masking.large_negative` (never ``-inf``): ``static_valid [C]``
(tags that may appear at all), ``allowed [C, C]`` (``allowed[p, c]``: tag ``c`` may
follow ``p``, e.g. no ``I-X`` after ``O``) and ``start_allowed [C]`` -- the arrays
:func:`jaxloss.decoding.bio_transitions` and :func:`jaxloss.decoding.tag_valid_mask`
build. The partition function then runs over the valid sequences only, and
:func:`jaxloss.decoding.crf_decode` searches the same set.

The forward algorithm is one ``lax.scan`` over ``T`` with a ``logsumexp`` over the
previous tag, ``O(B T C^2)``; scores are upcast to at least float32 and the result is cast
back to the emissions' dtype.

References:
  J. Lafferty, A. McCallum, F. Pereira, *Conditional Random Fields: Probabilistic Models
  for Segmenting and Labeling Sequence Data*, ICML 2001. G. Lample et al., *Neural
  Architectures for Named Entity Recognition*, NAACL 2016 (BiLSTM-CRF). X. Ma, E. Hovy,
  *End-to-end Sequence Labeling via Bi-directional LSTM-CNNs-CRF*, ACL 2016.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxloss.losses import _checks
from jaxloss.losses.masking import large_negative

ArrayLike = Any


def _constrained_scores(emissions, transitions, start, end, allowed, start_allowed,
                        static_valid):
  """Upcast scores with the constraint masks applied (finite fill)."""
  dtype = _checks.compute_dtype(emissions.dtype)
  fill = large_negative(dtype)
  num = emissions.shape[-1]
  e = emissions.astype(dtype)
  trans = transitions.astype(dtype)
  a = jnp.zeros((num,), dtype) if start is None else start.astype(dtype)
  b = jnp.zeros((num,), dtype) if end is None else end.astype(dtype)
  if static_valid is not None:
    e = jnp.where(static_valid, e, fill)
  if allowed is not None:
    trans = jnp.where(allowed, trans, fill)
  if start_allowed is not None:
    a = jnp.where(start_allowed, a, fill)
  return e, trans, a, b, dtype


def _forward_scan(e, mask, trans, a, *, use_max: bool):
  """The forward recursion over real tokens: ``(alpha [B, C], seen [B], backs)``.

  ``alpha`` holds, for each last tag, the log-sum (``use_max=False``) or the max
  (``use_max=True``, Viterbi) of the scores of the prefixes ending in it; ``seen`` is
  whether the sequence had a real token; ``backs`` ``[T, B, C]`` are the Viterbi
  back-pointers (identity where a token is skipped or starts the sequence).
  """
  batch, _, num = e.shape
  identity = jnp.broadcast_to(jnp.arange(num), (batch, num))

  def step(carry, inputs):
    alpha, seen = carry
    et, active = inputs  # [B, C], [B]
    cand = alpha[:, :, None] + trans[None]  # [B, P, C]
    if use_max:
      inner, back = cand.max(axis=1), cand.argmax(axis=1)
    else:
      inner, back = jax.nn.logsumexp(cand, axis=1), identity
    new = jnp.where(seen[:, None], inner, a[None]) + et
    back = jnp.where((active & seen)[:, None], back, identity)
    alpha = jnp.where(active[:, None], new, alpha)
    return (alpha, seen | active), back

  # Zero carries derived from the inputs, so that inside shard_map they vary over the
  # same mesh axes as the carries the step produces (a scan needs equal types).
  alpha0 = jnp.where(False, e[:, 0], jnp.zeros((batch, num), e.dtype))
  seen0 = mask[:, 0] & False
  (alpha, seen), backs = jax.lax.scan(
      step, (alpha0, seen0), (jnp.swapaxes(e, 0, 1), jnp.swapaxes(mask, 0, 1)))
  return alpha, seen, backs


def _gold_score(e, tags, mask, trans, a, b):
  """``s(y)`` of the gold tags over the real tokens, ``[B]``."""
  length = tags.shape[-1]
  emit = jnp.take_along_axis(e, tags[..., None], axis=-1)[..., 0]  # [B, T]
  # Index of the previous real token (-1: none, this one is the first).
  last = jax.lax.cummax(jnp.where(mask, jnp.arange(length), -1), axis=1)
  prev = jnp.concatenate([jnp.full((tags.shape[0], 1), -1, last.dtype), last[:, :-1]],
                         axis=1)
  prev_tag = jnp.take_along_axis(tags, jnp.maximum(prev, 0), axis=1)
  pair = jnp.where(prev >= 0, trans[prev_tag, tags], a[tags])
  per_token = jnp.where(mask, emit + pair, 0.0)
  final = last[:, -1]  # the last real token, -1 if none
  last_tag = jnp.take_along_axis(tags, jnp.maximum(final, 0)[:, None], axis=1)[:, 0]
  return per_token.sum(axis=-1) + jnp.where(final >= 0, b[last_tag], 0.0)


@jax.jit
def _crf_core(emissions, tags, mask, transitions, start, end, allowed, start_allowed,
              static_valid, per_token):
  e, trans, a, b, dtype = _constrained_scores(emissions, transitions, start, end,
                                              allowed, start_allowed, static_valid)
  # Skipped tokens are replaced before any arithmetic (garbage padding stays out).
  e = jnp.where(mask[..., None], e, 0.0)
  tags = jnp.where(mask, tags, 0)
  alpha, seen, _ = _forward_scan(e, mask, trans, a, use_max=False)
  log_z = jax.nn.logsumexp(alpha + b[None], axis=-1)
  nll = jnp.where(seen, log_z - _gold_score(e, tags, mask, trans, a, b), 0.0)
  count = mask.sum(axis=-1).astype(dtype)
  nll = jnp.where(per_token, nll / jnp.maximum(count, 1.0), nll)
  return nll.astype(emissions.dtype)


def _check_masks(num, allowed, start_allowed, static_valid):
  out = []
  for x, name, shape in ((allowed, "allowed", (num, num)),
                         (start_allowed, "start_allowed", (num,)),
                         (static_valid, "static_valid", (num,))):
    if x is not None:
      x = jnp.asarray(x)
      if x.dtype != jnp.bool_:
        raise TypeError(f"`{name}` must be a bool array, got dtype {x.dtype}")
      _checks.check_shape(x, shape, name, "a tag constraint mask")
    out.append(x)
  return out


def _check_scores(emissions, transitions, start, end):
  emissions = jnp.asarray(emissions)
  _checks.check_floating(emissions, "emissions")
  if emissions.ndim < 2:
    raise ValueError(f"`emissions` must have shape [..., T, C] (a token and a tag "
                     f"axis), got {tuple(emissions.shape)}")
  num = emissions.shape[-1]
  transitions = jnp.asarray(transitions)
  _checks.check_floating(transitions, "transitions")
  _checks.check_shape(transitions, (num, num), "transitions",
                      "[C, C], transitions[p, c] scores tag c after tag p")
  vectors = []
  for x, name in ((start, "start_transitions"), (end, "end_transitions")):
    if x is not None:
      x = jnp.asarray(x)
      _checks.check_floating(x, name)
      _checks.check_shape(x, (num,), name, "one score per tag, [C]")
    vectors.append(x)
  return emissions, transitions, vectors[0], vectors[1]


def _check_gold_valid(tags, mask, allowed, start_allowed, static_valid) -> None:
  """Concrete gold sequences must be valid under the constraints (else a ~1e9 loss)."""
  t, m = _checks.concrete_value(tags), _checks.concrete_value(mask)
  if t is None or m is None:
    return
  masks = [_checks.concrete_value(x) if x is not None else None
           for x in (allowed, start_allowed, static_valid)]
  if any(x is None for x, given in zip(masks, (allowed, start_allowed, static_valid))
         if given is not None):
    return
  allowed_v, start_v, static_v = masks
  for row in range(t.shape[0]):
    real = t[row][m[row]]
    if static_v is not None and real.size and not static_v[real].all():
      bad = int(real[~static_v[real]][0])
      raise ValueError(f"`labels` of sequence {row} use tag {bad}, which static_valid "
                       f"marks invalid")
    if start_v is not None and real.size and not start_v[real[0]]:
      raise ValueError(f"`labels` of sequence {row} start with tag {int(real[0])}, which "
                       f"start_allowed forbids")
    if allowed_v is not None and real.size > 1:
      ok = allowed_v[real[:-1], real[1:]]
      if not ok.all():
        i = int(np.argmin(ok))
        raise ValueError(f"`labels` of sequence {row} have tag {int(real[i + 1])} after "
                         f"{int(real[i])}, which allowed forbids")


def crf_sequence_loss(
    emissions: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike,
    transitions: ArrayLike,
    start_transitions: Optional[ArrayLike] = None,
    end_transitions: Optional[ArrayLike] = None,
    allowed: Optional[ArrayLike] = None,
    start_allowed: Optional[ArrayLike] = None,
    static_valid: Optional[ArrayLike] = None,
    per_token: bool = True,
) -> jax.Array:
  r"""Computes the linear-chain CRF negative log-likelihood of each sequence.

  :math:`\ell = \log \sum_{y'} e^{s(y')} - s(y)` with
  :math:`s(y) = a_{y_1} + \sum_i e_{t_i, y_i} + \sum_{i>1} A_{y_{i-1}, y_i} + b_{y_n}`
  over the real tokens :math:`t_1 < \dots < t_n` of the sequence (``where`` True); the
  sum over :math:`y'` runs over the sequences the constraint masks allow. With
  ``per_token=True`` (default) it is divided by :math:`\max(n, 1)`, so it is on the
  scale of :func:`jaxloss.losses.sequence_tagging_loss` (a per-token mean) and adds to a
  sentence-level head with a comparable weight; ``False`` gives the usual summed NLL. A
  sequence with no real token gives 0. With zero transitions and start / end scores and
  no constraints it equals the token cross-entropy (the CRF then factorises).

  Args:
    emissions: floating ``[..., T, C]`` per-token tag scores (the tagger's logits);
      any leading batch axes.
    labels: int ``[..., T]`` gold tags; read only where ``where`` is True (padding may
      hold ``-100`` or garbage).
    where: bool ``[..., T]``, the real tokens (required: tagging batches are padded).
    transitions: floating ``[C, C]``; ``transitions[p, c]`` scores tag ``c`` right
      after tag ``p`` (a learned parameter, usually initialised at 0).
    start_transitions, end_transitions: floating ``[C]`` scores of the first / last
      tag, or None (0).
    allowed, start_allowed, static_valid: optional bool ``[C, C]``, ``[C]``, ``[C]``
      constraint masks (e.g. :func:`jaxloss.decoding.bio_transitions`,
      :func:`jaxloss.decoding.tag_valid_mask`).
    per_token: divide each sequence's NLL by its number of real tokens.

  Returns:
    ``[...]`` (one value per sequence) in the dtype of ``emissions``.

  Raises:
    TypeError: non-floating scores, non-integer ``labels``, non-bool masks, no
      ``where``.
    ValueError: shapes that disagree; concrete ``labels`` outside ``[0, C)`` at real
      tokens, or a concrete gold sequence that the constraints forbid (its loss would
      be about ``1e9``); NaN or ``+inf`` concrete emissions at real tokens.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxloss.losses import crf_sequence_loss, sequence_tagging_loss
    >>> e = jnp.array([[[2.0, 0.0], [0.0, 1.0]]])
    >>> crf = crf_sequence_loss(e, jnp.array([[0, 1]]), where=jnp.ones((1, 2), bool),
    ...                         transitions=jnp.zeros((2, 2)))
    >>> ce = sequence_tagging_loss(e, jnp.array([[0, 1]]), where=jnp.ones((1, 2), bool))
    >>> bool(jnp.allclose(crf, ce))  # zero transitions: the CRF factorises
    True

  References:
    Lafferty, McCallum & Pereira, ICML 2001; Lample et al., NAACL 2016.
  """
  emissions, transitions, start, end = _check_scores(emissions, transitions,
                                                     start_transitions, end_transitions)
  *lead, length, num = emissions.shape
  labels = jnp.asarray(labels)
  _checks.check_integer(labels, "labels")
  _checks.check_shape(labels, emissions.shape[:-1], "labels",
                      "one tag per token, emissions.shape[:-1] = [..., T]")
  if where is None:
    raise TypeError(f"`where` is required: a bool token mask of shape "
                    f"{tuple(labels.shape)} (True = real token)")
  where = jnp.asarray(where)
  if where.dtype != jnp.bool_:
    raise TypeError(f"`where` must be a bool array, got dtype {where.dtype}")
  _checks.check_shape(where, labels.shape, "where", "one flag per token, [..., T]")
  allowed, start_allowed, static_valid = _check_masks(num, allowed, start_allowed,
                                                      static_valid)
  _checks.check_label_range(labels, num, where)
  _checks.check_finite_logits(emissions, where)
  flat = (-1, length)
  _check_gold_valid(labels.reshape(flat), where.reshape(flat), allowed, start_allowed,
                    static_valid)
  if length == 0:
    return jnp.zeros(tuple(lead), emissions.dtype)
  nll = _crf_core(emissions.reshape(flat + (num,)), labels.reshape(flat),
                  where.reshape(flat), transitions, start, end, allowed, start_allowed,
                  static_valid, jnp.asarray(bool(per_token)))
  return nll.reshape(tuple(lead))
