"""Per-class weights and priors computed from class counts.

These helpers turn a histogram of training labels into the ``[C]`` vectors the
classification losses take (``class_weights=``, ``alpha=``, ``class_priors=``),
so that a recipe composes them instead of growing flags on every loss.

They are pure ``jnp`` functions: ``cap`` (and the counts themselves) may be
traced values, e.g. a class-weight cap that a curriculum stage raises step by
step inside ``jax.jit``. Validation of *values* (negative counts, a bad cap)
needs concrete arrays, so it runs eagerly and at trace time for closed-over
constants, and is skipped for traced arguments.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxloss.losses import _checks

ArrayLike = Any

_METHODS = ("inverse_frequency", "sqrt_inverse_frequency", "effective_number")
# True is "mean" (Cui et al.'s convention); False and None both mean raw weights.
_NORMALIZE = (True, False, None, "mean", "head")


def _validated_counts(class_counts: ArrayLike) -> jax.Array:
  """Checks counts (shape always; values when concrete); returns an array."""
  counts = jnp.asarray(class_counts)
  if counts.ndim != 1:
    raise ValueError(
        "`class_counts` must be 1-D with one count per class, shape [C]; got "
        f"shape {tuple(counts.shape)}.")
  if counts.shape[0] == 0:
    raise ValueError(
        "`class_counts` must hold at least one class; got shape (0,).")
  if not (jnp.issubdtype(counts.dtype, jnp.integer) or
          jnp.issubdtype(counts.dtype, jnp.floating)):
    raise TypeError(
        "`class_counts` must have an integer or floating dtype; got dtype "
        f"{counts.dtype}.")
  values = _checks.concrete_value(class_counts)
  if values is not None:
    values = values.astype(np.float64)
    if not np.all(np.isfinite(values)):
      raise ValueError(
          f"`class_counts` must be finite; got {values.tolist()}.")
    if np.any(values < 0):
      raise ValueError(
          "`class_counts` must be non-negative; got negative count(s) at "
          f"class(es) {np.flatnonzero(values < 0).tolist()}: "
          f"{values.tolist()}.")
    if not np.any(values > 0):
      raise ValueError(
          "`class_counts` must have at least one positive count; got all "
          f"zeros: {values.tolist()}.")
  return counts


def class_weights_from_counts(
    class_counts: ArrayLike,
    *,
    method: str = "inverse_frequency",
    beta: ArrayLike = 0.9999,
    cap: Optional[ArrayLike] = None,
    normalize: Union[bool, str, None] = True,
) -> jax.Array:
  r"""Computes per-class loss weights from class counts.

  Methods, with :math:`n_c` the count of class ``c``, :math:`N = \sum_c n_c`
  and ``C`` the number of classes:

  * ``"inverse_frequency"``: :math:`w_c = N / (C \, n_c)` (scikit-learn's
    ``class_weight="balanced"``; a balanced data set gives all ones).
  * ``"sqrt_inverse_frequency"``: :math:`w_c = \sqrt{N / (C \, n_c)}`, a
    milder re-weighting (the square-root rule of Mahajan et al. and of
    Mikolov et al.'s sub-sampling).
  * ``"effective_number"``: :math:`w_c = (1 - \beta) / (1 - \beta^{n_c})`, the
    inverse effective number of samples (Cui et al.).

  Then ``normalize`` rescales, and ``cap`` clips: ``w = minimum(w, cap)``.

  A class with zero examples gets the weight it would have with exactly one
  example (``N / C`` for ``"inverse_frequency"``, its square root for
  ``"sqrt_inverse_frequency"``, ``1`` for ``"effective_number"``, before
  normalisation), so it is finite; pair it with ``cap`` to bound it.

  Args:
    class_counts: ``[C]`` non-negative counts (NumPy or JAX, int or float;
      fractional counts are allowed).
    method: ``"inverse_frequency"``, ``"sqrt_inverse_frequency"`` or
      ``"effective_number"``.
    beta: Effective-number hyperparameter in ``[0, 1)`` (Cui et al. use
      0.9999 on CIFAR-LT); ignored by the other methods. ``beta -> 1`` approaches inverse frequency, ``beta = 0``
      gives all ones.
    cap: Optional upper bound on the (normalised) weights, a positive scalar
      (``inf`` means no cap); may be traced, e.g. a curriculum stage value
      inside ``jax.jit``, without recompiling.
    normalize: ``True`` or ``"mean"`` (the default: scaled so the weights
      average 1 over classes, i.e. sum to ``C``, as Cui et al.), ``False`` or
      None (raw weights), or ``"head"`` (divided by the weight of the most
      frequent class, so it gets 1 and rarer classes get at least 1).

  Returns:
    float32 ``[C]`` weights.

  Raises:
    TypeError: if ``class_counts`` is not numeric.
    ValueError: if ``class_counts`` is not 1-D or empty; if ``method`` or
      ``normalize`` is unknown; and, when the value is concrete, if a count is
      negative or non-finite, all counts are zero, ``beta`` is outside
      ``[0, 1)`` or ``cap <= 0``. Traced counts are not value-checked; all
      zero traced counts give NaN weights under ``"mean"``/``"head"``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxloss.losses import class_weights_from_counts
    >>> counts = jnp.array([100, 10, 1])
    >>> with jnp.printoptions(precision=4):
    ...   print(class_weights_from_counts(counts, normalize=False))
    ...   print(class_weights_from_counts(counts))
    ...   print(class_weights_from_counts(counts, normalize="head", cap=20.0))
    [ 0.37  3.7  37.  ]
    [0.027  0.2703 2.7027]
    [ 1. 10. 20.]

  References:
    Cui et al., `Class-Balanced Loss Based on Effective Number of Samples
    <https://arxiv.org/abs/1901.05555>`_, CVPR 2019.

    King and Zeng, *Logistic Regression in Rare Events Data*, Political
    Analysis 2001 (the ``N / (C n_c)`` heuristic used by scikit-learn).

    Mahajan et al., `Exploring the Limits of Weakly Supervised Pretraining
    <https://arxiv.org/abs/1805.00932>`_, ECCV 2018 (square-root re-weighting).
  """
  if method not in _METHODS:
    raise ValueError(
        f"`method` must be one of {list(_METHODS)}; got {method!r}.")
  if not any(normalize is v or (isinstance(v, str) and normalize == v)
             for v in _NORMALIZE):
    raise ValueError(
        f"`normalize` must be one of {list(_NORMALIZE)}; got {normalize!r}.")
  normalize = {True: "mean", False: None}.get(normalize, normalize)
  # beta is checked for every method: a bad beta is a config mistake even
  # where it is ignored.
  _checks.check_scalar_range(beta, "beta", 0.0, 1.0, high_closed=False)
  beta = jnp.asarray(beta)
  if beta.ndim != 0:
    raise ValueError(f"`beta` must be a scalar; got shape {beta.shape}.")
  if cap is not None:
    _checks.check_scalar_range(cap, "cap", 0.0, float("inf"),
                               low_closed=False)
    cap = jnp.asarray(cap)
    if cap.ndim != 0:
      raise ValueError(f"`cap` must be a scalar; got shape {cap.shape}.")
  counts = _validated_counts(class_counts)
  return _class_weights_core(counts, beta, cap, method, normalize)


# Jitted so an eager call compiles one small program rather than one per op;
# inside a user's jit it is inlined. method/normalize select code paths.
@functools.partial(jax.jit, static_argnames=("method", "normalize"))
def _class_weights_core(counts, beta, cap, method, normalize):
  counts = counts.astype(jnp.float32)
  num_classes = counts.shape[0]
  # Zero-count classes are weighted as if they had one example; fractional
  # counts in (0, 1) are kept as given.
  n = jnp.where(counts > 0, counts, 1.0)

  if method == "inverse_frequency":
    weights = counts.sum() / (num_classes * n)
  elif method == "sqrt_inverse_frequency":
    weights = jnp.sqrt(counts.sum() / (num_classes * n))
  else:
    beta = beta.astype(jnp.float32)
    # 1 - beta**n as -expm1(n log beta) keeps its relative precision when
    # beta is close to 1 and n is small (beta**n rounds to 1 - ulp there).
    # beta = 0 is clipped to tiny so the log is finite (-87), not -inf.
    log_beta = jnp.log(jnp.maximum(beta, jnp.finfo(jnp.float32).tiny))
    weights = (1.0 - beta) / -jnp.expm1(n * log_beta)

  if normalize == "mean":
    weights = weights * (num_classes / weights.sum())
  elif normalize == "head":
    # argmax picks the first of tied head classes; ties share one weight.
    weights = weights / weights[jnp.argmax(counts)]

  if cap is not None:
    weights = jnp.minimum(weights, cap.astype(jnp.float32))
  return weights


def class_priors_from_counts(class_counts: ArrayLike) -> jax.Array:
  r"""Computes class priors :math:`\pi_c = n_c / N` from class counts.

  The priors feed :func:`jaxloss.losses.logit_adjusted_softmax_cross_entropy`,
  which clips a zero prior (a class absent from the training counts) to a tiny
  positive value before taking its log.

  Args:
    class_counts: ``[C]`` non-negative counts (NumPy or JAX, int or float).

  Returns:
    float32 ``[C]`` priors summing to 1 (up to rounding).

  Raises:
    TypeError: if ``class_counts`` is not numeric.
    ValueError: if ``class_counts`` is not 1-D or empty, or, when concrete,
      has a negative or non-finite count or only zeros.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxloss.losses import class_priors_from_counts
    >>> with jnp.printoptions(precision=4):
    ...   print(class_priors_from_counts(jnp.array([6, 3, 1])))
    [0.6 0.3 0.1]

  References:
    Menon et al., `Long-tail learning via logit adjustment
    <https://arxiv.org/abs/2007.07314>`_, ICLR 2021 (the priors
    :math:`\pi` of the logit adjustment).
  """
  counts = _validated_counts(class_counts)
  return _priors_core(counts)


@jax.jit
def _priors_core(counts):
  counts = counts.astype(jnp.float32)
  return counts / counts.sum()
