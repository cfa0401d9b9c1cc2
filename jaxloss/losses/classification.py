"""Classification losses for imbalanced training: focal, weighted, logit-adjusted.

Softmax (one class per example) and sigmoid (multi-label) focal losses, the
class-weighted and the logit-adjusted cross-entropy, and label smoothing. The
other long-tail losses (balanced softmax, LDAM, post-hoc adjustment) are in
:mod:`jaxloss.losses.long_tail`.

Every loss here returns one value per example (the labels' batch shape ``[...]``)
and never reduces: the caller chooses the normalisation, usually
:func:`jaxloss.losses.weighted_mean`. Leading axes are all batch axes, so a
multi-head ``[B, A, C]`` input needs no loop.

Numerical conventions shared by all losses in this module:

* Inputs are upcast to at least float32 for the computation and the result is
  cast back to the dtype of ``logits`` (bf16 in, bf16 out).
* Log-probabilities come from ``jax.nn.log_softmax``; probabilities are never
  formed and logged again.
* ``where`` (True = include) zeroes a row *and* replaces its inputs before any
  arithmetic, so padding rows holding garbage (NaN, huge logits, label -100)
  produce exactly 0 and exactly-zero gradients, even if every row is masked.
* Integer labels outside ``[0, C)`` raise ``ValueError`` when the labels are
  concrete; under ``jax.jit`` they cannot be checked and give NaN for that row
  (a gather in "fill" mode), which the NaN monitors will catch.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from jaxloss.losses import _checks

ArrayLike = Any


def _guarded_power(q: jax.Array, gamma: jax.Array) -> jax.Array:
  """Returns ``q ** gamma`` for ``q`` in ``[0, 1]``, with finite gradients."""
  # q = 0 does happen (a confident correct prediction makes 1 - p exactly 0).
  # There d/dq q**gamma = gamma * q**(gamma - 1) is inf for 0 < gamma < 1 and
  # 0 * inf = NaN for gamma = 0, and the NaN would reach the logits through the
  # chain rule. So we evaluate the power only where q is a normal float (then
  # q**(gamma - 1) <= 1/tiny is finite) and use the limit 0**gamma elsewhere.
  # The inner where keeps the discarded branch's gradient out; below tiny the
  # focal term is multiplied by a cross-entropy of order q < tiny, so using
  # the limit there changes the loss by less than 1e-38.
  tiny = jnp.finfo(q.dtype).tiny
  regular = q >= tiny
  safe_q = jnp.where(regular, q, 1.0)
  limit = jnp.where(gamma == 0, 1.0, 0.0).astype(q.dtype)
  return jnp.where(regular, safe_q ** gamma, limit)


def _focal_factor(log_p: jax.Array, gamma: jax.Array) -> jax.Array:
  """Returns ``(1 - p) ** gamma`` from ``log p``, with finite gradients."""
  # 1 - p as -expm1(log p) keeps full relative precision when p is close to 1;
  # 1 - exp(log_p) cancels to 0 long before p really is 1.
  return _guarded_power(-jnp.expm1(log_p), gamma)


def _gamma(gamma: ArrayLike) -> jax.Array:
  _checks.check_scalar_range(gamma, "gamma", 0.0, float("inf"),
                             high_closed=False)
  gamma = jnp.asarray(gamma)
  if gamma.ndim != 0:
    raise ValueError(f"`gamma` must be a scalar; got shape {gamma.shape}.")
  return gamma


def _validate_integer_label_inputs(logits: ArrayLike, labels: ArrayLike,
                                   where: ArrayLike):
  """Checks integer-label inputs; returns them as arrays plus ``C``."""
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  _checks.check_floating(logits, "logits")
  _checks.check_logits_rank(logits)
  _checks.check_integer(labels, "labels")
  _checks.check_shape(labels, logits.shape[:-1], "labels",
                      "the batch shape `logits.shape[:-1]`")
  num_classes = logits.shape[-1]
  mask = _checks.as_mask(where, labels.shape)
  _checks.check_label_range(labels, num_classes, mask)
  _checks.check_finite_logits(logits, mask)
  return logits, labels, mask, num_classes


def _label_log_prob(x: jax.Array, labels: jax.Array) -> jax.Array:
  """Returns ``log_softmax(x)[..., labels]`` without a one-hot array."""
  log_probs = jax.nn.log_softmax(x, axis=-1)
  # "fill" with NaN (and no wrapping of negative indices) makes an out-of-range
  # label visible instead of silently reading another class, as clipping would.
  return jnp.take_along_axis(
      log_probs, labels[..., None], axis=-1, mode="fill",
      fill_value=jnp.nan, wrap_negative_indices=False)[..., 0]


def _finish(loss: jax.Array, mask: Optional[jax.Array],
            dtype: Any) -> jax.Array:
  if mask is not None:
    loss = jnp.where(mask, loss, 0.0)
  return loss.astype(dtype)


# The public functions validate in Python (static shapes and dtypes, plus
# value checks on concrete inputs) and then call one of these jitted cores.
# Inside a user's jit the inner jit is simply inlined; called eagerly, it
# compiles the loss as one program instead of dispatching ~30 small ops.


@jax.jit
def _softmax_focal_core(logits, labels, alpha, gamma, mask):
  """Focal loss with probability labels; the class axis is last."""
  dtype = _checks.compute_dtype(logits.dtype)
  x = logits.astype(dtype)
  y = labels.astype(dtype)
  if mask is not None:
    # Replace masked inputs, not just masked outputs: a where on the output
    # alone still backpropagates 0 * NaN = NaN from garbage padding rows.
    x = jnp.where(mask[..., None], x, 0.0)
    y = jnp.where(mask[..., None], y, 0.0)
  log_p = jax.nn.log_softmax(x, axis=-1)
  per_class = -y * _focal_factor(log_p, gamma.astype(dtype)) * log_p
  if alpha is not None:
    per_class = per_class * alpha.astype(dtype)
  return _finish(per_class.sum(axis=-1), mask, logits.dtype)


@jax.jit
def _integer_label_core(logits, labels, mask, weights, adjustment, gamma):
  """-weights[y] * (1 - p_y)**gamma * log p_y for logits + adjustment.

  ``weights`` is None, a scalar or ``[C]``; ``adjustment`` is None or a
  ``(class_priors, tau)`` pair; ``gamma`` None means plain cross-entropy.
  """
  dtype = _checks.compute_dtype(logits.dtype)
  x = logits.astype(dtype)
  if mask is not None:
    x = jnp.where(mask[..., None], x, 0.0)  # see _softmax_focal_core
    labels = jnp.where(mask, labels, 0)
  if adjustment is not None:
    priors, tau = adjustment
    # float32 tiny even when computing in float64: the shift of an empty
    # class should not depend on whether x64 happens to be enabled. Masked
    # rows of x are 0 here, so their adjusted logits stay finite.
    tiny = jnp.finfo(jnp.float32).tiny
    log_prior = jnp.log(jnp.maximum(priors.astype(dtype), tiny))
    x = x + tau.astype(dtype) * log_prior
  log_p = _label_log_prob(x, labels)
  loss = -log_p
  if gamma is not None:
    loss = _focal_factor(log_p, gamma.astype(dtype)) * loss
  if weights is not None:
    weights = weights.astype(dtype)
    if weights.ndim == 1:
      # Clip is safe: an out-of-range label already made log_p NaN.
      weights = jnp.take(weights, labels, mode="clip")
    loss = loss * weights
  return _finish(loss, mask, logits.dtype)


def softmax_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: Optional[ArrayLike] = None,
    gamma: ArrayLike = 2.0,
    axis: int = -1,
    where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""Computes the softmax focal loss for probability or one-hot labels.

  With :math:`p = \mathrm{softmax}(x)` over the class axis,

  .. math::
    \ell = -\sum_c \alpha_c \, y_c \, (1 - p_c)^\gamma \log p_c .

  ``gamma = 0`` and ``alpha = None`` give the softmax cross-entropy. ``alpha``
  is a plain multiplier of class ``c``'s term (as in Keras'
  ``CategoricalFocalCrossentropy``), not the ``alpha``/``1 - alpha`` pair of
  the binary (sigmoid) focal loss.

  Args:
    logits: Unnormalised log-probabilities, floating, shape ``[..., C]`` (the
      class axis is ``axis``). Any leading axes are batch axes.
    labels: Target probabilities (one-hot, smoothed or soft), same shape as
      ``logits``. Rows should sum to 1; this is not checked.
    alpha: Class weighting: None (all 1), a scalar, or a ``[C]`` vector whose
      entry ``c`` multiplies class ``c``'s term.
    gamma: Focusing exponent, a non-negative scalar (may be traced). Larger
      values down-weight well-classified examples more.
    axis: The class axis of ``logits`` and ``labels``.
    where: Optional bool (or 0/1 int) mask of the batch shape, True = include.
      Excluded entries give exactly 0 with zero gradients.

  Returns:
    Per-example loss in nats, shape ``logits.shape`` without ``axis``, dtype
    of ``logits``.

  Raises:
    TypeError: if ``logits`` is not floating or ``where`` is floating.
    ValueError: if ``labels.shape != logits.shape``, ``alpha`` is neither a
      scalar nor ``[C]``, ``where`` does not have the batch shape, ``axis`` is
      out of range, or a concrete ``gamma`` is negative.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxloss.losses import softmax_focal_loss
    >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    >>> labels = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    >>> loss = softmax_focal_loss(logits, labels, gamma=2.0)
    >>> with jnp.printoptions(precision=4):
    ...   print(loss)
    [0.0041 0.4883]

  References:
    Lin et al., `Focal Loss for Dense Object Detection
    <https://arxiv.org/abs/1708.02002>`_, ICCV 2017.

    Keras ``CategoricalFocalCrossentropy``
    (https://keras.io/api/losses/probabilistic_losses/).
  """
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  _checks.check_floating(logits, "logits")
  _checks.check_logits_rank(logits)
  axis = _checks.canonical_axis(axis, logits.ndim)
  _checks.check_shape(labels, logits.shape, "labels",
                      "the shape of `logits`: one probability per class")
  logits = jnp.moveaxis(logits, axis, -1)
  labels = jnp.moveaxis(labels, axis, -1)
  mask = _checks.as_mask(where, logits.shape[:-1])
  gamma = _gamma(gamma)
  if alpha is not None:
    alpha = _checks.class_vector(alpha, logits.shape[-1], "alpha",
                                 allow_scalar=True)
    _checks.check_nonnegative(alpha, "alpha")
  return _softmax_focal_core(logits, labels, alpha, gamma, mask)


def softmax_focal_loss_with_integer_labels(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: Optional[ArrayLike] = None,
    gamma: ArrayLike = 2.0,
    where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""Computes the softmax focal loss for integer class labels.

  Equal to :func:`softmax_focal_loss` with one-hot labels, without building
  the one-hot array: with :math:`p_y` the softmax probability of the label,

  .. math::
    \ell = -\alpha_y \, (1 - p_y)^\gamma \log p_y .

  Args:
    logits: Unnormalised log-probabilities, floating, shape ``[..., C]``; the
      class axis is last and all leading axes are batch axes.
    labels: Integer class indices in ``[0, C)``, shape ``[...]``. Out-of-range
      labels raise ValueError when ``labels`` is concrete; under ``jax.jit``
      they cannot be checked and give NaN for that example.
    alpha: Class weighting: None (all 1), a scalar, or a ``[C]`` vector;
      example ``i`` is multiplied by ``alpha[labels[i]]``.
    gamma: Focusing exponent, a non-negative scalar (may be traced).
    where: Optional bool (or 0/1 int) mask of shape ``[...]``, True = include.
      Excluded entries give exactly 0 with zero gradients; their labels may
      hold any padding value.

  Returns:
    Per-example loss in nats, shape ``[...]``, dtype of ``logits``.

  Raises:
    TypeError: if ``logits`` is not floating, ``labels`` is not integer, or
      ``where`` is floating.
    ValueError: if ``labels.shape != logits.shape[:-1]``, ``alpha`` is neither
      a scalar nor ``[C]``, ``where`` does not have shape ``[...]``, a concrete
      label is out of range, or a concrete ``gamma`` is negative.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxloss.losses import softmax_focal_loss_with_integer_labels
    >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    >>> labels = jnp.array([0, 1])
    >>> loss = softmax_focal_loss_with_integer_labels(
    ...     logits, labels, alpha=jnp.array([0.25, 1.0, 1.0]))
    >>> with jnp.printoptions(precision=4):
    ...   print(loss)
    [0.001  0.4883]

  References:
    Lin et al., `Focal Loss for Dense Object Detection
    <https://arxiv.org/abs/1708.02002>`_, ICCV 2017.
  """
  logits, labels, mask, num_classes = _validate_integer_label_inputs(
      logits, labels, where)
  gamma = _gamma(gamma)
  if alpha is not None:
    alpha = _checks.class_vector(alpha, num_classes, "alpha",
                                 allow_scalar=True)
    _checks.check_nonnegative(alpha, "alpha")
  return _integer_label_core(logits, labels, mask, alpha, None, gamma)


def softmax_cross_entropy_with_integer_labels(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    class_weights: Optional[ArrayLike] = None,
    where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""Computes per-example softmax cross-entropy, optionally class-weighted.

  .. math::
    \ell = -w_y \log \mathrm{softmax}(x)_y .

  To reproduce PyTorch's ``CrossEntropyLoss(weight=w, reduction="mean")``,
  reduce with :func:`jaxloss.losses.weighted_mean` using ``w[labels]`` as the
  weights of the *unweighted* loss, or equivalently divide the sum of this
  loss by ``w[labels].sum()``; a plain mean of this loss is
  ``reduction="sum"`` divided by the batch size.

  Args:
    logits: Unnormalised log-probabilities, floating, shape ``[..., C]``; the
      class axis is last and all leading axes are batch axes.
    labels: Integer class indices in ``[0, C)``, shape ``[...]``. Out-of-range
      labels raise ValueError when concrete and give NaN under ``jax.jit``.
    class_weights: Optional ``[C]`` non-negative per-class weights (e.g. from
      :func:`jaxloss.losses.class_weights_from_counts`); default all ones.
    where: Optional bool (or 0/1 int) mask of shape ``[...]``, True = include.

  Returns:
    ``class_weights[labels] * CE`` in nats, shape ``[...]``, dtype of
    ``logits``.

  Raises:
    TypeError: if ``logits`` is not floating, ``labels`` is not integer, or
      ``where`` is floating.
    ValueError: if ``labels.shape != logits.shape[:-1]``, ``class_weights`` is
      not ``[C]``, ``where`` does not have shape ``[...]``, or a concrete
      label is out of range.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxloss.losses import softmax_cross_entropy_with_integer_labels
    >>> logits = jnp.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]])
    >>> labels = jnp.array([0, 1])
    >>> loss = softmax_cross_entropy_with_integer_labels(
    ...     logits, labels, class_weights=jnp.array([1.0, 2.0, 1.0]))
    >>> with jnp.printoptions(precision=4):
    ...   print(loss)
    [0.2761 5.9036]

  References:
    `Cross-entropy <https://en.wikipedia.org/wiki/Cross-entropy>`_,
    Wikipedia; PyTorch ``torch.nn.CrossEntropyLoss`` (the ``weight``
    argument).
  """
  logits, labels, mask, num_classes = _validate_integer_label_inputs(
      logits, labels, where)
  if class_weights is not None:
    class_weights = _checks.class_vector(class_weights, num_classes,
                                         "class_weights", allow_scalar=False)
  return _integer_label_core(logits, labels, mask, class_weights, None, None)


def logit_adjusted_softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    class_priors: ArrayLike,
    tau: ArrayLike = 1.0,
    where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""Computes the logit-adjusted softmax cross-entropy (Menon et al.).

  The logits are shifted by the scaled log-prior before the cross-entropy, so
  the loss asks head classes for a larger margin than tail classes:

  .. math::
    \ell = -\log \mathrm{softmax}(x + \tau \log \pi)_y .

  At inference use the raw ``logits``; ``tau = 0`` recovers the plain
  cross-entropy.

  Args:
    logits: Unnormalised log-probabilities, floating, shape ``[..., C]``; the
      class axis is last and all leading axes are batch axes.
    labels: Integer class indices in ``[0, C)``, shape ``[...]``. Out-of-range
      labels raise ValueError when concrete and give NaN under ``jax.jit``.
    class_priors: ``[C]`` non-negative class frequencies :math:`\pi` (e.g.
      from :func:`jaxloss.losses.class_priors_from_counts`). They need not sum
      to exactly 1: the softmax is invariant to a common scale. A zero prior is
      clipped to the smallest normal float32 before the log (a finite shift of
      about ``-87 * tau``), never ``-inf``.
    tau: Scalar temperature of the adjustment; may be a traced value (e.g.
      from an optax schedule inside ``jax.jit``) without recompiling.
    where: Optional bool (or 0/1 int) mask of shape ``[...]``, True = include.

  Returns:
    Per-example loss in nats, shape ``[...]``, dtype of ``logits``.

  Raises:
    TypeError: if ``logits`` is not floating, ``labels`` is not integer, or
      ``where`` is floating.
    ValueError: if ``labels.shape != logits.shape[:-1]``, ``class_priors`` is
      not ``[C]`` or (when concrete) has negative or non-finite entries,
      ``tau`` is not a scalar, ``where`` does not have shape ``[...]``, or a
      concrete label is out of range.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxloss.losses import logit_adjusted_softmax_cross_entropy
    >>> logits = jnp.zeros((2, 2))
    >>> labels = jnp.array([0, 1])
    >>> priors = jnp.array([0.8, 0.2])
    >>> loss = logit_adjusted_softmax_cross_entropy(
    ...     logits, labels, class_priors=priors, tau=1.0)
    >>> with jnp.printoptions(precision=4):
    ...   print(loss)
    [0.2231 1.6094]

  References:
    Menon et al., `Long-tail learning via logit adjustment
    <https://arxiv.org/abs/2007.07314>`_, ICLR 2021 (the logit-adjusted loss,
    eq. 10).
  """
  logits, labels, mask, num_classes = _validate_integer_label_inputs(
      logits, labels, where)
  priors = _checks.class_vector(class_priors, num_classes, "class_priors",
                                allow_scalar=False)
  _checks.check_nonnegative(class_priors, "class_priors")
  tau = jnp.asarray(tau)
  if tau.ndim != 0:
    raise ValueError(f"`tau` must be a scalar; got shape {tau.shape}.")
  _checks.check_finite_scalar(tau, "tau")
  return _integer_label_core(logits, labels, mask, None, (priors, tau), None)


@jax.jit
def _sigmoid_focal_core(logits, labels, alpha, gamma, mask):
  dtype = _checks.compute_dtype(logits.dtype)
  x = logits.astype(dtype)
  y = labels.astype(dtype)
  if mask is not None:
    x = jnp.where(mask, x, 0.0)  # see _softmax_focal_core
    y = jnp.where(mask, y, 0.0)
  # Binary cross-entropy from log-sigmoids: log(1 - sigmoid(x)) is
  # log_sigmoid(-x), which stays finite where 1 - sigmoid(x) rounds to 0.
  log_p = jax.nn.log_sigmoid(x)
  log_not_p = jax.nn.log_sigmoid(-x)
  ce = -(y * log_p + (1.0 - y) * log_not_p)
  # 1 - p_t = y (1 - p) + (1 - y) p, with each probability taken from its own
  # sigmoid rather than as 1 - sigmoid(x), so there is no cancellation.
  one_minus_p_t = y * jnp.exp(log_not_p) + (1.0 - y) * jnp.exp(log_p)
  loss = ce * _guarded_power(one_minus_p_t, gamma.astype(dtype))
  if alpha is not None:
    alpha = alpha.astype(dtype)
    loss = (alpha * y + (1.0 - alpha) * (1.0 - y)) * loss
  return _finish(loss, mask, logits.dtype)


def sigmoid_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: Optional[ArrayLike] = None,
    gamma: ArrayLike = 2.0,
    where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""Computes the sigmoid (binary, multi-label) focal loss, per element.

  Each of the ``C`` outputs is an independent binary decision. With
  :math:`p = \sigma(x)` and :math:`p_t = y p + (1 - y)(1 - p)`,

  .. math::
    \ell = -\alpha_t \, (1 - p_t)^\gamma \,
           \big(y \log p + (1 - y) \log(1 - p)\big),
    \qquad \alpha_t = \alpha y + (1 - \alpha)(1 - y).

  ``alpha = None`` means no :math:`\alpha_t` factor; ``gamma = 0`` and
  ``alpha = None`` give ``optax.sigmoid_binary_cross_entropy``. Unlike the
  softmax losses this one is *not* summed over the class axis: as in optax and
  torchvision's ``sigmoid_focal_loss(reduction="none")`` it returns one value
  per (example, class) decision; ``.sum(-1)`` gives the per-example loss.

  Args:
    logits: Unnormalised log-odds, floating, shape ``[..., C]``.
    labels: Binary (or soft, in ``[0, 1]``) targets of the same shape; bool
      and integer labels are converted to the computation dtype.
    alpha: None, a scalar in ``[0, 1]``, or a ``[C]`` vector (one balance
      factor per class); the weight of the positive term, ``1 - alpha`` that
      of the negative term. Lin et al. use 0.25.
    gamma: Focusing exponent, a non-negative scalar (may be traced).
    where: Optional bool (or 0/1 int) mask, either of the batch shape
      ``[...]`` (whole examples) or of ``logits.shape`` (single decisions),
      True = include. Excluded entries give exactly 0 with zero gradients.

  Returns:
    Loss in nats per decision, shape ``logits.shape``, dtype of ``logits``.

  Raises:
    TypeError: if ``logits`` is not floating or ``where`` is floating.
    ValueError: if ``labels.shape != logits.shape``, ``alpha`` is neither a
      scalar nor ``[C]``, ``where`` has neither allowed shape, or a concrete
      ``gamma`` is negative or a concrete scalar ``alpha`` is outside
      ``[0, 1]``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxloss.losses import sigmoid_focal_loss
    >>> logits = jnp.array([[2.0, -1.0, 0.0]])
    >>> labels = jnp.array([[1.0, 0.0, 1.0]])
    >>> loss = sigmoid_focal_loss(logits, labels, alpha=0.25, gamma=2.0)
    >>> with jnp.printoptions(precision=4):
    ...   print(loss)
    [[0.0005 0.017  0.0433]]

  References:
    Lin et al., `Focal Loss for Dense Object Detection
    <https://arxiv.org/abs/1708.02002>`_, ICCV 2017 (eq. 5, the
    :math:`\alpha`-balanced form).
  """
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  _checks.check_floating(logits, "logits")
  _checks.check_logits_rank(logits)
  _checks.check_shape(labels, logits.shape, "labels",
                      "the shape of `logits`: one target per class")
  mask = None
  if where is not None:
    where_shape = tuple(jnp.shape(where))
    if where_shape == tuple(logits.shape):
      mask = _checks.as_mask(where, logits.shape)
    else:
      mask = _checks.as_mask(where, logits.shape[:-1])[..., None]
      mask = jnp.broadcast_to(mask, logits.shape)
  gamma = _gamma(gamma)
  if alpha is not None:
    alpha = _checks.class_vector(alpha, logits.shape[-1], "alpha",
                                 allow_scalar=True)
    if alpha.ndim == 0:
      _checks.check_scalar_range(alpha, "alpha", 0.0, 1.0)
  return _sigmoid_focal_core(logits, labels, alpha, gamma, mask)


def smooth_labels(labels: ArrayLike, alpha: ArrayLike) -> jax.Array:
  """Applies label smoothing: ``(1 - alpha) * labels + alpha / C``.

  Compose it with :func:`softmax_focal_loss` (or any loss taking probability
  labels) instead of adding a smoothing flag to every loss.

  Args:
    labels: One-hot (or probability) labels, shape ``[..., C]`` with the class
      axis last. Integer or bool one-hot labels are converted to float32;
      floating labels keep their dtype.
    alpha: Smoothing factor in ``[0, 1]``, a scalar (may be traced, e.g. from
      a schedule).

  Returns:
    Smoothed labels, shape ``[..., C]``; each row still sums to its original
    sum when that sum is 1.

  Raises:
    ValueError: if ``labels`` is a scalar, ``alpha`` is not a scalar, or a
      concrete ``alpha`` is outside ``[0, 1]``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxloss.losses import smooth_labels
    >>> smoothed = smooth_labels(jnp.array([0.0, 1.0, 0.0, 0.0]), 0.2)
    >>> with jnp.printoptions(precision=4):
    ...   print(smoothed)
    [0.05 0.85 0.05 0.05]

  References:
    Szegedy et al., `Rethinking the Inception Architecture for Computer Vision
    <https://arxiv.org/abs/1512.00567>`_, CVPR 2016; Müller et al., `When does
    label smoothing help? <https://arxiv.org/abs/1906.02629>`_, NeurIPS 2019.
  """
  labels = jnp.asarray(labels)
  if labels.ndim < 1:
    raise ValueError(
        "`labels` must have a class axis (shape [..., C]); got a scalar.")
  if not jnp.issubdtype(labels.dtype, jnp.floating):
    labels = labels.astype(jnp.float32)
  alpha = jnp.asarray(alpha)
  if alpha.ndim != 0:
    raise ValueError(f"`alpha` must be a scalar; got shape {alpha.shape}.")
  _checks.check_scalar_range(alpha, "alpha", 0.0, 1.0)
  alpha = alpha.astype(labels.dtype)
  num_classes = labels.shape[-1]
  return (1.0 - alpha) * labels + alpha / num_classes
