"""Learning-to-rank losses over a candidate list: listwise softmax, pairwise.

Both losses score a list of ``L`` candidates (``scores [..., L]``) against
non-negative relevance ``labels [..., L]``: binary (the one true item among
sampled negatives, as in reranking or next-item recommendation) or graded
(0-4 judgements). They consume the last axis and return one value per list,
``[...]``; every leading axis is a batch axis and nothing is reduced across
lists, so the caller's :func:`jaxloss.losses.masked_mean` decides how lists
are averaged.

Numerical conventions:

* Scores are upcast to at least float32 and the result is cast back to the
  dtype of ``scores`` (bf16 in, bf16 out).
* ``where [..., L]`` (True = valid candidate) marks padding of ragged lists.
  Padded candidates are *replaced* before any arithmetic: their scores by a
  finite large negative (:func:`jaxloss.losses.masking.large_negative`, never
  ``-inf``) for the softmax and by 0 for the pairs, their labels by 0. So
  garbage padding (NaN scores, label -1) cannot leak, a padded list equals
  the sliced list exactly, and a list with no valid candidate gives 0 with
  zero gradients. optax and rax fill with ``-inf`` and then drop the
  resulting NaN of a fully padded list with ``where`` in the sum: the values
  agree, but a NaN is formed on the way, which ``jax_debug_nans`` reports
  and any later arithmetic on it (``0 * nan``) would spread.
* A list without any positive label carries no ranking signal and gives 0
  with zero gradients, as in TF-Ranking.
* Negative labels at valid candidates raise ``ValueError`` when the labels
  are concrete (TF-Ranking's convention of ``-1`` for padding is accepted
  under ``where=False``).
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxloss.losses import _checks
from jaxloss.losses import masking

ArrayLike = Any


def _check_relevance(labels: jax.Array, mask: Optional[jax.Array]) -> None:
  """Raises ValueError for negative or non-finite valid labels, if concrete."""
  values = _checks.concrete_value(labels)
  if values is None:
    return
  values = values.astype(np.float64)
  bad = ~np.isfinite(values) | (values < 0)
  if mask is not None:
    mask_values = _checks.concrete_value(mask)
    if mask_values is None:
      return
    bad = bad & mask_values
  if bad.any():
    first = values[bad].reshape(-1)[0]
    raise ValueError(
        "`labels` must be non-negative, finite relevance values (0 = not "
        f"relevant); got {int(bad.sum())} invalid value(s), e.g. {first}. "
        "Mark padding candidates with `where` instead.")


def _validate_list_inputs(scores: ArrayLike, labels: ArrayLike,
                          where: ArrayLike):
  """Checks list inputs; returns scores, labels and the mask (or None)."""
  scores = jnp.asarray(scores)
  labels = jnp.asarray(labels)
  _checks.check_floating(scores, "scores")
  if scores.ndim < 1 or scores.shape[-1] == 0:
    raise ValueError(
        "`scores` must have a non-empty candidate axis (shape [..., L] with "
        f"L >= 1); got shape {tuple(scores.shape)}.")
  _checks.check_shape(labels, scores.shape, "labels",
                      "the shape of `scores`: one relevance per candidate")
  if labels.dtype == jnp.bool_:
    labels = labels.astype(jnp.int32)
  elif not (jnp.issubdtype(labels.dtype, jnp.integer) or
            jnp.issubdtype(labels.dtype, jnp.floating)):
    raise TypeError(
        "`labels` must hold numeric relevance (bool, integer or floating); "
        f"got dtype {labels.dtype}.")
  mask = None
  if where is not None:
    where = jnp.asarray(where)
    _checks.check_shape(where, scores.shape, "where",
                        "the shape of `scores`: one flag per candidate")
    mask = _checks.as_mask(where, scores.shape)
  _check_relevance(labels, mask)
  return scores, labels, mask


# The public functions validate in Python and call these jitted cores; inside
# a user's jit the inner jit is inlined.


@jax.jit
def _listwise_softmax_core(scores, labels, mask):
  dtype = _checks.compute_dtype(scores.dtype)
  s = scores.astype(dtype)
  y = labels.astype(dtype)
  if mask is not None:
    # One where per input both drops garbage padding and takes the padded
    # candidates out of the softmax: exp(fill - max) is exactly 0, so the
    # padded list equals the sliced one, and unlike -inf a fully padded list
    # still has a finite log_softmax (uniform) and hence finite gradients.
    s = jnp.where(mask, s, masking.large_negative(dtype))
    y = jnp.where(mask, y, 0.0)
  log_p = jax.nn.log_softmax(s, axis=-1)
  total = y.sum(axis=-1, keepdims=True)
  # No positive label: q = 0, so the loss is 0 and its gradient
  # softmax * sum(q) - q is exactly 0. The where avoids 0 / 0.
  q = y / jnp.where(total > 0, total, 1.0)
  return (-(q * log_p).sum(axis=-1)).astype(scores.dtype)


@jax.jit
def _pairwise_logistic_core(scores, labels, mask):
  dtype = _checks.compute_dtype(scores.dtype)
  s = scores.astype(dtype)
  y = labels
  if mask is not None:
    s = jnp.where(mask, s, 0.0)
    y = jnp.where(mask, y, jnp.zeros((), y.dtype))
  # pairs[..., i, j]: candidate i must rank above candidate j. Labels are
  # compared in their own dtype, so integer grades never round.
  pairs = y[..., :, None] > y[..., None, :]
  if mask is not None:
    pairs = pairs & mask[..., :, None] & mask[..., None, :]
  # softplus(s_j - s_i) = -log sigmoid(s_i - s_j), evaluated as
  # logaddexp(x, 0): finite, with a gradient in [0, 1], for any score gap.
  # The whole [..., L, L] expression is elementwise up to the sum, so XLA
  # fuses it into one pass (one pairwise array, not one per step).
  per_pair = jax.nn.softplus(s[..., None, :] - s[..., :, None])
  total = jnp.where(pairs, per_pair, 0.0).sum(axis=(-2, -1))
  count = pairs.sum(axis=(-2, -1)).astype(dtype)
  return (total / jnp.maximum(count, 1.0)).astype(scores.dtype)


def listwise_softmax_loss(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""Computes the listwise softmax cross-entropy (ListNet top-1) per list.

  With the label distribution :math:`q_i = y_i / \sum_{k \in V} y_k` over
  the valid candidates :math:`V`,

  .. math::
    \ell(s, y) = -\sum_{i \in V} q_i \log
        \frac{\exp s_i}{\sum_{j \in V} \exp s_j},

  and :math:`\ell = 0` when :math:`\sum_{k \in V} y_k = 0` (no positive).
  With a single positive this is the sampled-softmax / InfoNCE loss of
  reranking: :math:`-\log \mathrm{softmax}(s)_{\text{pos}}`.

  Relation to the JAX libraries: ``optax.losses.ranking_softmax_loss`` and
  ``rax.softmax_loss`` (rax 0.4, default ``label_fn``) use the labels
  *unnormalised*, :math:`-\sum_i y_i \log \mathrm{softmax}(s)_i`. The two
  agree exactly for one-hot labels and, for graded labels, this loss equals
  theirs applied to ``labels / labels.sum(-1)``. Normalising follows Cao et
  al. (a cross-entropy between two distributions) and TF-Ranking's
  ``SoftmaxLoss``, so a list with three relevant items does not weigh three
  times as much as a list with one; to weigh lists by their total relevance
  as TF-Ranking's reduction does, pass ``labels.sum(-1)`` as the weights of
  :func:`jaxloss.losses.weighted_mean`. Unlike rax's
  ``normalize_probabilities`` (which turns an all-zero list into a uniform
  target), a list without positives gives 0.

  Args:
    scores: Candidate scores (unnormalised log-probabilities), floating,
      shape ``[..., L]`` with ``L >= 1``; leading axes are batch axes.
    labels: Non-negative relevance, shape ``[..., L]``, bool, integer or
      floating: one-hot for "the true item among the candidates", or graded.
      Negative values raise ValueError when concrete (padding values such as
      -1 are allowed where ``where`` is False).
    where: Optional bool (or 0/1 int) mask of shape ``[..., L]``, True = a
      real candidate. Padded candidates are ignored as if sliced away; they
      may hold any score, including NaN.

  Returns:
    Per-list loss in nats, shape ``scores.shape[:-1]``, dtype of ``scores``.
    0 for a list with no valid candidate or no positive label.

  Raises:
    TypeError: if ``scores`` is not floating, ``labels`` is not numeric, or
      ``where`` is floating.
    ValueError: if ``scores`` has no (or an empty) candidate axis, ``labels``
      or ``where`` does not have the shape of ``scores``, or a concrete valid
      label is negative or not finite.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxloss.losses import listwise_softmax_loss
    >>> scores = jnp.array([[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    >>> labels = jnp.array([[1, 0, 0, 0], [2, 1, 0, 0]])
    >>> with jnp.printoptions(precision=4):
    ...   print(listwise_softmax_loss(scores, labels))
    [0.4402 1.3863]
    >>> where = jnp.array([[True, True, False, False]] * 2)
    >>> with jnp.printoptions(precision=4):
    ...   print(listwise_softmax_loss(scores, labels, where=where))
    [0.3133 0.6931]

  References:
    Cao et al., `Learning to Rank: From Pairwise Approach to Listwise Approach
    <https://doi.org/10.1145/1273496.1273513>`_, ICML 2007 (ListNet, top-one
    probability).

    Bruch et al., `An Analysis of the Softmax Cross Entropy Loss for
    Learning-to-Rank with Binary Relevance
    <https://doi.org/10.1145/3341981.3344221>`_, ICTIR 2019.

    Pasumarthi et al., `TF-Ranking: Scalable TensorFlow Library for
    Learning-to-Rank <https://arxiv.org/abs/1812.00073>`_, KDD 2019
    (``SoftmaxLoss``).
  """
  scores, labels, mask = _validate_list_inputs(scores, labels, where)
  return _listwise_softmax_core(scores, labels, mask)


def pairwise_logistic_loss(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    where: Optional[ArrayLike] = None,
) -> jax.Array:
  r"""Computes the pairwise logistic (RankNet / BPR) loss, averaged per list.

  Over the set :math:`P` of ordered pairs of valid candidates whose labels
  differ, :math:`P = \{(i, j) : y_i > y_j\}`,

  .. math::
    \ell(s, y) = \frac{1}{\max(|P|, 1)} \sum_{(i, j) \in P}
        \log\left(1 + e^{-(s_i - s_j)}\right)
      = \frac{1}{\max(|P|, 1)} \sum_{(i, j) \in P}
        -\log \sigma(s_i - s_j).

  Each unordered pair with different labels is counted once; ties and pairs
  involving a padded candidate are skipped, and a list with no such pair
  (all labels equal, or fewer than two valid candidates) gives 0.

  Reduction: the mean over the list's pairs, so lists with many pairs (long,
  or with several positives) weigh the same as short ones and the loss stays
  on the scale of one pair (``log 2`` at equal scores). rax's
  ``pairwise_logistic_loss`` computes the same per-pair terms, but with
  ``reduce_fn=jnp.mean`` it averages over all valid pairs of the *batch*
  (lists with more pairs weigh more), with ``jnp.sum`` it sums them, and
  with ``reduce_fn=None`` it returns the ``[..., L * L]`` pair terms. For a
  single list this loss equals rax's ``jnp.mean`` value; rax's ``jnp.sum``
  per list is this loss times ``|P|``. BPR-Opt (Rendle et al.) sums over
  the sampled (user, positive, negative) triples, i.e. this loss with one
  positive times the number of negatives; RankNet's cost is the per-pair
  term with target probability 1.

  Memory: the pair terms form one ``[..., L, L]`` elementwise expression
  that is summed at once, fine for ``L`` up to a few hundred.

  Args:
    scores: Candidate scores, floating, shape ``[..., L]`` with ``L >= 1``;
      leading axes are batch axes.
    labels: Non-negative relevance, shape ``[..., L]``, bool, integer or
      floating (binary or graded). Only the order of labels matters.
    where: Optional bool (or 0/1 int) mask of shape ``[..., L]``, True = a
      real candidate. Padded candidates form no pairs and may hold any score.

  Returns:
    Per-list mean pair loss in nats, shape ``scores.shape[:-1]``, dtype of
    ``scores``.

  Raises:
    TypeError: if ``scores`` is not floating, ``labels`` is not numeric, or
      ``where`` is floating.
    ValueError: if ``scores`` has no (or an empty) candidate axis, ``labels``
      or ``where`` does not have the shape of ``scores``, or a concrete valid
      label is negative or not finite.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jaxloss.losses import pairwise_logistic_loss
    >>> scores = jnp.array([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    >>> labels = jnp.array([[1, 0, 0], [2, 1, 0]])
    >>> with jnp.printoptions(precision=4):
    ...   print(pairwise_logistic_loss(scores, labels))
    [0.2201 0.6931]

  References:
    Burges et al., `Learning to Rank using Gradient Descent
    <https://doi.org/10.1145/1102351.1102363>`_, ICML 2005 (RankNet).

    Rendle et al., `BPR: Bayesian Personalized Ranking from Implicit Feedback
    <https://arxiv.org/abs/1205.2618>`_, UAI 2009.

    Jagerman et al., `Rax: Composable Learning-to-Rank using JAX
    <https://doi.org/10.1145/3534678.3539065>`_, KDD 2022
    (``rax.pairwise_logistic_loss``).
  """
  scores, labels, mask = _validate_list_inputs(scores, labels, where)
  return _pairwise_logistic_core(scores, labels, mask)
