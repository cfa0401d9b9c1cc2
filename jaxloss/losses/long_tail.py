"""Losses and adjustments for long-tailed labels: balanced softmax, LDAM, post-hoc.

These fight the same bias as the class weights of
:func:`jaxloss.losses.class_weights_from_counts`, but through the *logits*
rather than the loss weights: each moves the decision boundary away from the
rare classes, by the log-prior (balanced softmax, logit adjustment) or by a
margin that shrinks with the class count (LDAM). All of them reduce to plain
softmax cross-entropy on a balanced training set.

Numerical conventions are those of :mod:`jaxloss.losses.classification`:
per-example outputs, computation in at least float32 with the result in the
dtype of ``logits``, ``where`` replaces masked inputs before any arithmetic,
and concrete integer labels are range-checked. Counts are turned into finite
log-priors: a class with zero training examples is treated as having the
smallest normal float32 prior (a finite shift, never ``log 0 = -inf``).
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from jaxloss.losses import _checks
from jaxloss.losses import classification
from jaxloss.losses import weights as weights_lib

ArrayLike = Any


def _scalar(x: ArrayLike, name: str) -> jax.Array:
  x = jnp.asarray(x)
  if x.ndim != 0:
    raise ValueError(f"`{name}` must be a scalar; got shape {x.shape}.")
  return x


def _counts_for(class_counts: ArrayLike, num_classes: int) -> jax.Array:
  counts = weights_lib._validated_counts(class_counts)  # pylint: disable=protected-access
  if counts.shape[0] != num_classes:
    raise ValueError(
        f"`class_counts` must have shape ({num_classes},), one count per class "
        f"of `logits`; got shape {tuple(counts.shape)}.")
  return counts


def logit_adjust(
    logits: ArrayLike,
    *,
    class_priors: ArrayLike,
    tau: ArrayLike = 1.0,
) -> jax.Array:
  r"""Adjusts trained logits post hoc for a balanced test distribution.

  .. math::
    \tilde{x}_c = x_c - \tau \log \pi_c .

  Predicting :math:`\arg\max_c \tilde{x}_c` with a model trained by plain
  cross-entropy on long-tailed data approximates the Bayes-optimal classifier
  for the *balanced* error (Menon et al., eq. 9), at no training cost. Do not
  combine it with a model trained with
  :func:`jaxloss.losses.logit_adjusted_softmax_cross_entropy` (that loss
  already builds the same adjustment into the logits).

  Args:
    logits: Trained logits, floating, shape ``[..., C]``.
    class_priors: ``[C]`` non-negative training class frequencies
      :math:`\pi` (e.g. :func:`jaxloss.losses.class_priors_from_counts`). A
      zero prior is clipped to the smallest normal float32 (a finite shift of
      about ``+87 * tau``), never ``log 0``.
    tau: Scalar strength; 1 is the paper's default, 0 returns ``logits``. May
      be traced.

  Returns:
    Adjusted logits, shape and dtype of ``logits``.

  Raises:
    TypeError: if ``logits`` is not floating.
    ValueError: if ``class_priors`` is not ``[C]`` or, when concrete, has
      negative or non-finite entries; if ``tau`` is not a scalar.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxloss.losses import logit_adjust
    >>> logits = jnp.array([[1.0, 0.5]])
    >>> adjusted = logit_adjust(logits, class_priors=jnp.array([0.9, 0.1]))
    >>> with jnp.printoptions(precision=4):
    ...   print(adjusted, adjusted.argmax(-1))
    [[1.1054 2.8026]] [1]

  References:
    Menon et al., `Long-tail learning via logit adjustment
    <https://arxiv.org/abs/2007.07314>`_, ICLR 2021 (post-hoc adjustment,
    eq. 9).
  """
  logits = jnp.asarray(logits)
  _checks.check_floating(logits, "logits")
  _checks.check_logits_rank(logits)
  priors = _checks.class_vector(class_priors, logits.shape[-1],
                                "class_priors", allow_scalar=False)
  _checks.check_nonnegative(class_priors, "class_priors")
  tau = _scalar(tau, "tau")
  _checks.check_finite_scalar(tau, "tau")
  return _logit_adjust_core(logits, priors, tau)


@jax.jit
def _logit_adjust_core(logits, priors, tau):
  dtype = _checks.compute_dtype(logits.dtype)
  tiny = jnp.finfo(jnp.float32).tiny
  log_prior = jnp.log(jnp.maximum(priors.astype(dtype), tiny))
  return (logits.astype(dtype) - tau.astype(dtype) * log_prior).astype(
      logits.dtype)


def balanced_softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    class_counts: ArrayLike,
    where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""Computes the balanced softmax cross-entropy (Ren et al.).

  The training softmax is reweighted by the class counts :math:`n_c`, which
  compensates for the label shift between a long-tailed training set and a
  balanced test set:

  .. math::
    \ell = -\log \frac{n_y e^{x_y}}{\sum_c n_c e^{x_c}}
         = -\log \mathrm{softmax}(x + \log n)_y .

  It equals :func:`jaxloss.losses.logit_adjusted_softmax_cross_entropy` with
  ``tau = 1`` and priors proportional to the counts (the softmax ignores the
  common ``log N``). At test time use the raw ``logits``.

  Args:
    logits: Unnormalised log-probabilities, floating, shape ``[..., C]``; the
      class axis is last and all leading axes are batch axes.
    labels: Integer class indices in ``[0, C)``, shape ``[...]``. Out-of-range
      labels raise ValueError when concrete and give NaN under ``jax.jit``.
    class_counts: ``[C]`` non-negative training counts (int or float). A zero
      count is clipped like a zero prior (finite, about ``-87`` in log space
      below the total).
    where: Optional bool (or 0/1 int) mask of shape ``[...]``, True = include.

  Returns:
    Per-example loss in nats, shape ``[...]``, dtype of ``logits``.

  Raises:
    TypeError: if ``logits`` is not floating, ``labels`` is not integer,
      ``class_counts`` is not numeric, or ``where`` is floating.
    ValueError: if ``labels.shape != logits.shape[:-1]``, ``class_counts`` is
      not ``[C]`` or (when concrete) is negative, non-finite or all zero,
      ``where`` does not have shape ``[...]``, or a concrete label is out of
      range.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxloss.losses import balanced_softmax_cross_entropy
    >>> logits = jnp.zeros((2, 2))
    >>> labels = jnp.array([0, 1])
    >>> loss = balanced_softmax_cross_entropy(
    ...     logits, labels, class_counts=jnp.array([80, 20]))
    >>> with jnp.printoptions(precision=4):
    ...   print(loss)
    [0.2231 1.6094]

  References:
    Ren et al., `Balanced Meta-Softmax for Long-Tailed Visual Recognition
    <https://arxiv.org/abs/2007.10740>`_, NeurIPS 2020 (eq. 4).
  """
  logits, labels, mask, num_classes = (
      classification._validate_integer_label_inputs(logits, labels, where))  # pylint: disable=protected-access
  counts = _counts_for(class_counts, num_classes)
  priors = weights_lib._priors_core(counts)  # pylint: disable=protected-access
  return classification._integer_label_core(  # pylint: disable=protected-access
      logits, labels, mask, None, (priors, jnp.float32(1.0)), None)


def ldam_margins(class_counts: ArrayLike, *,
                 max_margin: ArrayLike = 0.5) -> jax.Array:
  r"""Returns the LDAM per-class margins :math:`\Delta_c \propto n_c^{-1/4}`.

  .. math::
    \Delta_c = m_{\max} \, \frac{n_c^{-1/4}}{\max_k n_k^{-1/4}}
             = m_{\max} \Big(\frac{\min_k n_k}{n_c}\Big)^{1/4},

  so the rarest class gets ``max_margin`` (Cao et al., eq. 13, with the
  constant chosen as in the authors' code). A class with zero count is treated
  as having one example.

  Args:
    class_counts: ``[C]`` non-negative training counts.
    max_margin: The largest margin, a positive scalar (the paper's 0.5).

  Returns:
    float32 ``[C]`` margins in logit units (before the ``scale`` of
    :func:`ldam_loss`).

  Raises:
    TypeError: if ``class_counts`` is not numeric.
    ValueError: bad counts (see :func:`class_weights_from_counts`) or a
      concrete ``max_margin <= 0``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxloss.losses import ldam_margins
    >>> with jnp.printoptions(precision=4):
    ...   print(ldam_margins(jnp.array([10000, 100, 1])))
    [0.05  0.1581 0.5   ]

  References:
    Cao et al., `Learning Imbalanced Datasets with Label-Distribution-Aware
    Margin Loss <https://arxiv.org/abs/1906.07413>`_, NeurIPS 2019.
  """
  counts = weights_lib._validated_counts(class_counts)  # pylint: disable=protected-access
  _checks.check_scalar_range(max_margin, "max_margin", 0.0, float("inf"),
                             low_closed=False, high_closed=False)
  return _ldam_margins_core(counts, _scalar(max_margin, "max_margin"))


@jax.jit
def _ldam_margins_core(counts, max_margin):
  n = jnp.maximum(counts.astype(jnp.float32), 1.0)
  # (min n / n)^(1/4) rather than n^(-1/4) / max(n^(-1/4)): the same value,
  # without underflow for huge counts.
  return max_margin.astype(jnp.float32) * (n.min() / n) ** 0.25


def ldam_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    class_counts: ArrayLike,
    max_margin: ArrayLike = 0.5,
    scale: ArrayLike = 30.0,
    where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""Computes the label-distribution-aware margin (LDAM) loss (Cao et al.).

  The label's logit is lowered by a class-dependent margin before a scaled
  softmax cross-entropy, so rare classes must be separated by a larger margin:

  .. math::
    \ell = -\log \mathrm{softmax}\big(s\,(x - \Delta_y e_y)\big)_y ,
    \qquad \Delta_c = m_{\max} (\min_k n_k / n_c)^{1/4}

  (:func:`ldam_margins`). The authors feed it cosine logits in ``[-1, 1]``
  (a normalised last layer), hence the scale ``s = 30``. For LDAM-DRW
  (deferred re-weighting) multiply the result by
  ``class_weights_from_counts(counts, method="effective_number")[labels]``
  from the re-weighting epoch on, e.g. through a curriculum stage value.

  Args:
    logits: Floating, shape ``[..., C]``; class axis last, leading axes are
      batch axes.
    labels: Integer class indices in ``[0, C)``, shape ``[...]``.
    class_counts: ``[C]`` non-negative training counts.
    max_margin: Margin of the rarest class, positive scalar (paper: 0.5).
    scale: Logit scale ``s``, positive scalar (paper: 30; use 1 for
      unnormalised logits).
    where: Optional bool (or 0/1 int) mask of shape ``[...]``, True = include.

  Returns:
    Per-example loss in nats, shape ``[...]``, dtype of ``logits``.

  Raises:
    TypeError: if ``logits`` is not floating, ``labels`` is not integer, or
      ``where`` is floating.
    ValueError: if ``labels.shape != logits.shape[:-1]``, ``class_counts`` is
      not ``[C]`` or has bad values, ``where`` has the wrong shape, a concrete
      label is out of range, or a concrete ``max_margin``/``scale`` is not
      positive.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxloss.losses import ldam_loss
    >>> logits = jnp.array([[0.5, 0.2], [0.5, 0.2]])
    >>> labels = jnp.array([0, 1])
    >>> loss = ldam_loss(logits, labels, class_counts=jnp.array([100, 1]),
    ...                  scale=1.0)
    >>> with jnp.printoptions(precision=4):
    ...   print(loss)
    [0.6247 1.1711]

  References:
    Cao et al., `Learning Imbalanced Datasets with Label-Distribution-Aware
    Margin Loss <https://arxiv.org/abs/1906.07413>`_, NeurIPS 2019 (eq. 13;
    reference code ``kaidic/LDAM-DRW``, ``LDAMLoss``).
  """
  logits, labels, mask, num_classes = (
      classification._validate_integer_label_inputs(logits, labels, where))  # pylint: disable=protected-access
  counts = _counts_for(class_counts, num_classes)
  _checks.check_scalar_range(max_margin, "max_margin", 0.0, float("inf"),
                             low_closed=False, high_closed=False)
  _checks.check_scalar_range(scale, "scale", 0.0, float("inf"),
                             low_closed=False, high_closed=False)
  margins = _ldam_margins_core(counts, _scalar(max_margin, "max_margin"))
  return _ldam_core(logits, labels, mask, margins, _scalar(scale, "scale"))


@jax.jit
def _ldam_core(logits, labels, mask, margins, scale):
  dtype = _checks.compute_dtype(logits.dtype)
  x = logits.astype(dtype)
  if mask is not None:
    x = jnp.where(mask[..., None], x, 0.0)
    labels = jnp.where(mask, labels, 0)
  num_classes = x.shape[-1]
  # The margin lands on the label's logit only; a comparison with iota avoids
  # materialising a float one-hot, and an out-of-range label (under jit) gets
  # no margin and then NaN from the gather below.
  is_label = labels[..., None] == jnp.arange(num_classes)
  margin = jnp.take(margins.astype(dtype), labels, mode="clip")
  x = scale.astype(dtype) * (x - jnp.where(is_label, margin[..., None], 0.0))
  loss = -classification._label_log_prob(x, labels)  # pylint: disable=protected-access
  return classification._finish(loss, mask, logits.dtype)  # pylint: disable=protected-access
