"""Token-tagging losses (BIO entity tags, slot filling) reduced per sequence.

A tagger emits ``logits [..., T, C]`` for ``T`` tokens and ``C`` tags; the
labels are ``[..., T]`` integer tags, and padded batches carry a token mask
``where [..., T]``. The loss here consumes the token axis and returns *one
value per sequence*, ``[...]``: the mean, over the sequence's valid tokens,
of the (class-weighted, optionally focal) token cross-entropy. That makes it
a per-example loss like every other loss in :mod:`jaxloss.losses`: in a
joint model it adds elementwise to a sentence-level head,
``intent_loss [B] + lam * tagging_loss [B]``, before the one masked mean of
the training step.

Numerical conventions:

* Logits are upcast to at least float32 and the result is cast back to the
  dtype of ``logits`` (bf16 in, bf16 out); the token sum is accumulated in
  float32, not bf16.
* ``where`` is required: tagging batches are almost always padded, and a
  silently unmasked pad token (label 0 = ``O``) would train the model to
  predict ``O`` on padding. Masked tokens are *replaced* before any
  arithmetic (logits by 0, labels by class 0), so padding holding garbage
  logits or PyTorch's ``ignore_index = -100`` contributes exactly 0 with
  exactly-zero gradients, and a sequence with no valid token gives 0 with
  zero (finite) gradients instead of ``0 / 0``.
* Log-probabilities come from ``log_softmax`` and the focal factor
  ``(1 - p)^gamma`` from ``-expm1(log p)``, shared with
  :mod:`jaxloss.losses.classification`.
* Concrete labels outside ``[0, C)`` at valid tokens raise ``ValueError``;
  under ``jax.jit`` they cannot be checked and make that sequence NaN (never
  a silent read of another class).

To forbid impossible tags (``I-X`` after ``O``), mask the logits first with
:func:`jaxloss.losses.masking.mask_invalid_logits`, never with ``-inf``.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from jaxloss.losses import _checks
from jaxloss.losses import classification

ArrayLike = Any

# Shared with the classification losses so that a tagging token and a
# classified example get bit-identical log-probabilities and focal factors.
# pylint: disable=protected-access
_label_log_prob = classification._label_log_prob
_focal_factor = classification._focal_factor
_gamma = classification._gamma
# pylint: enable=protected-access


@jax.jit
def _sequence_tagging_core(logits, labels, mask, class_weights, gamma):
  dtype = _checks.compute_dtype(logits.dtype)
  x = logits.astype(dtype)
  # Replace masked tokens before any arithmetic: a where on the output alone
  # still backpropagates 0 * NaN = NaN from garbage padding, and label -100
  # would otherwise gather NaN.
  x = jnp.where(mask[..., None], x, 0.0)
  labels = jnp.where(mask, labels, 0)
  log_p = _label_log_prob(x, labels)
  focal = _focal_factor(log_p, gamma.astype(dtype))
  loss = -focal * log_p
  if class_weights is not None:
    # Clip is safe: an out-of-range label already made log_p NaN.
    loss = loss * jnp.take(class_weights.astype(dtype), labels, mode="clip")
  loss = jnp.where(mask, loss, 0.0)
  count = mask.sum(axis=-1).astype(dtype)
  # max(count, 1): an all-padding sequence has a zero sum, so it gives 0
  # (with zero gradients) rather than 0 / 0.
  return (loss.sum(axis=-1) / jnp.maximum(count, 1.0)).astype(logits.dtype)


def sequence_tagging_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike,
    class_weights: Optional[ArrayLike] = None,
    gamma: ArrayLike = 0.0,
) -> jax.Array:
  r"""Computes the per-sequence mean of the (focal) token cross-entropy.

  For a sequence with valid tokens :math:`V` (``where`` True), tags
  :math:`y_t` and :math:`p_t = \mathrm{softmax}(x_t)_{y_t}`,

  .. math::
    \ell = \frac{1}{\max(|V|, 1)} \sum_{t \in V}
        w_{y_t} \, (1 - p_t)^\gamma \, (-\log p_t),

  so ``gamma = 0`` is the class-weighted cross-entropy and ``gamma > 0`` the
  focal loss of Lin et al., which down-weights the easy, abundant ``O``
  tokens. A sequence without valid tokens gives 0.

  Normalisation, compared with PyTorch: ``nn.CrossEntropyLoss(weight=w,
  ignore_index=-100)`` on the flattened ``[B * T, C]`` batch returns
  :math:`\sum_{b, t \in V_b} w_{y_{bt}} \mathrm{CE}_{bt} / \sum_{b, t \in
  V_b} w_{y_{bt}}`: one pooled token mean over the batch, normalised by the
  *weights*. This loss differs in two ways: (1) each sequence is averaged
  over its own tokens, so after the caller's mean over sequences every
  sentence weighs the same whatever its length (the pooled mean lets long
  sentences dominate); (2) it divides by the token *count*, so ``w`` scales
  the loss (a sequence of ``O`` tokens with ``w_O = 0.1`` costs a tenth of
  its cross-entropy, where PyTorch's weight-normalised mean would give the
  full cross-entropy for a batch of only ``O`` tokens). Both keep each
  sequence's loss independent of the rest of the batch, as a per-example
  loss must. To reproduce PyTorch exactly, compute per-token losses and sum::

    tok = softmax_focal_loss_with_integer_labels(
        logits, labels, alpha=w, gamma=0.0, where=where)      # [B, T]
    w_tok = jnp.where(where, w[jnp.where(where, labels, 0)], 0.0)
    loss = tok.sum() / jnp.maximum(w_tok.sum(), 1e-12)

  (or :func:`jaxloss.losses.weighted_mean` of the unweighted token loss with
  weights ``w_tok``).

  Args:
    logits: Unnormalised tag log-probabilities, floating, shape
      ``[..., T, C]``: the last axis is the tag axis, the one before it the
      token axis, and any leading axes are batch axes.
    labels: Integer tags in ``[0, C)``, shape ``[..., T]``. Tokens where
      ``where`` is False may hold any value (e.g. -100). Out-of-range labels
      at valid tokens raise ValueError when concrete and make the sequence
      NaN under ``jax.jit``.
    where: Required bool (or 0/1 int) token mask of shape ``[..., T]``, True
      = a real token. Keyword-only with no default, so padding cannot be
      forgotten; pass ``jnp.ones(labels.shape, bool)`` for unpadded input.
    class_weights: Optional ``[C]`` non-negative per-tag weights (e.g.
      ``O = 0.1``, entity tags up to 5), e.g. from
      :func:`jaxloss.losses.class_weights_from_counts`; default all ones.
    gamma: Focusing exponent, a non-negative scalar; may be traced (e.g.
      from a schedule) without recompiling. 0 gives the cross-entropy.

  Returns:
    Per-sequence loss in nats per token, shape ``logits.shape[:-2]``, dtype
    of ``logits``.

  Raises:
    TypeError: if ``logits`` is not floating, ``labels`` is not integer,
      ``where`` is missing, None or floating.
    ValueError: if ``logits`` has fewer than two axes, ``labels`` is not
      ``logits.shape[:-1]``, ``where`` is not ``labels.shape``,
      ``class_weights`` is not ``[C]`` or (when concrete) has negative
      entries, a concrete ``gamma`` is negative or not a scalar, or a
      concrete label at a valid token is out of range.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxloss.losses import sequence_tagging_loss
    >>> # Tags: O, B-PER, I-PER. Two sentences, the second one padded.
    >>> logits = jnp.array([[[2.0, 0.0, -1.0], [0.0, 1.5, 0.0],
    ...                      [0.0, 0.5, 1.0]],
    ...                     [[1.0, 0.0, 0.0], [9.0, 9.0, 9.0],
    ...                      [9.0, 9.0, 9.0]]])
    >>> labels = jnp.array([[0, 1, 2], [0, -100, -100]])
    >>> where = labels >= 0
    >>> with jnp.printoptions(precision=4):
    ...   print(sequence_tagging_loss(logits, labels, where=where))
    [0.4064 0.5514]
    >>> weights = jnp.array([0.1, 5.0, 5.0])
    >>> with jnp.printoptions(precision=4):
    ...   print(sequence_tagging_loss(logits, labels, where=where,
    ...                               class_weights=weights, gamma=2.0))
    [0.3348 0.0099]

  References:
    Lin et al., `Focal Loss for Dense Object Detection
    <https://arxiv.org/abs/1708.02002>`_, ICCV 2017.

    Chen et al., `BERT for Joint Intent Classification and Slot Filling
    <https://arxiv.org/abs/1902.10909>`_, 2019 (token loss added to the
    sentence-level intent loss).

    PyTorch ``torch.nn.CrossEntropyLoss`` (``weight``, ``ignore_index``,
    ``reduction="mean"``) for the pooled normalisation compared above.
  """
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  _checks.check_floating(logits, "logits")
  if logits.ndim < 2:
    raise ValueError(
        "`logits` must have shape [..., T, C] (a token and a tag axis); got "
        f"shape {tuple(logits.shape)}.")
  _checks.check_integer(labels, "labels")
  _checks.check_shape(labels, logits.shape[:-1], "labels",
                      "the token shape `logits.shape[:-1]` = [..., T]")
  if where is None:
    raise TypeError(
        "`where` is required: a bool token mask of shape "
        f"{tuple(labels.shape)} (True = real token). Pass "
        "`jnp.ones(labels.shape, bool)` if nothing is padded.")
  where = jnp.asarray(where)
  _checks.check_shape(where, labels.shape, "where",
                      "the token shape of `labels`, [..., T]")
  mask = _checks.as_mask(where, labels.shape)
  num_classes = logits.shape[-1]
  _checks.check_label_range(labels, num_classes, mask)
  _checks.check_finite_logits(logits, mask)
  if class_weights is not None:
    class_weights = _checks.class_vector(class_weights, num_classes,
                                         "class_weights", allow_scalar=False)
    _checks.check_nonnegative(class_weights, "class_weights")
  gamma = _gamma(gamma)
  return _sequence_tagging_core(logits, labels, mask, class_weights, gamma)
