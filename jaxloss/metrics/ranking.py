"""Candidate-reranking metrics: HR@k, NDCG@k, MRR, the position test, baselines.

Each test case is a list of C candidates holding exactly one true item; a model scores
the candidates (float ``[N, C]``) and :func:`true_item_ranks` turns the scores into the
0-based rank of the true item, with ties counted *against* it. :func:`ranking_metrics`
gives HR@k, NDCG@k, MRR and the mean rank. This is the sampled-candidate protocol of
SASRec (Kang & McAuley, ICDM 2018: the true item and 100 sampled negatives, HR@10 and
NDCG@10). Sampled metrics are not the full-ranking metrics: Krichene & Rendle (KDD 2020)
show they can even order models differently, so compare numbers only under the same
candidate sampler. :func:`position_uniformity` tests that the true item's position in
the candidate lists carries no information, and :func:`random_scores` /
:func:`popularity_scores` are the baselines a trained model must beat.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def _check_label_index(label_index, num_lists: int, num_candidates: int) -> np.ndarray:
  """``label_index`` as int64 ``[N]`` with values in ``[0, num_candidates)``."""
  label_index = np.asarray(label_index)
  if not (np.issubdtype(label_index.dtype, np.integer) and
          label_index.dtype != np.bool_):
    raise ValueError(f"label_index must be an integer array, expected an int dtype, "
                     f"got dtype {label_index.dtype}")
  if label_index.shape != (num_lists,):
    raise ValueError(f"label_index must have shape [N] = ({num_lists},), got shape "
                     f"{label_index.shape}")
  if num_lists:
    low, high = int(label_index.min()), int(label_index.max())
    if low < 0 or high >= num_candidates:
      raise ValueError(f"label_index must hold positions in [0, {num_candidates}) (C = "
                       f"{num_candidates} candidates), got values in [{low}, {high}]")
  return label_index.astype(np.int64)


def true_item_ranks(scores, label_index, *, where=None) -> np.ndarray:
  """0-based rank of the true candidate in each list, ties counted against it.

  The rank is the number of *other* valid candidates whose score is ``>=`` the true
  item's score (pessimistic ties). A constant scorer therefore gets the worst rank,
  ``C - 1`` (valid candidates - 1), never a free hit. SASRec's evaluation (``util.py``,
  ``rank = predictions.argsort().argsort()[0]`` with the true item at index 0) instead
  resolves ties by NumPy's sort order, which in practice puts the first index first,
  so there a constant scorer has rank 0 and HR@1 = 1.

  Args:
    scores: real ``[N, C]``, higher = ranked earlier, N >= 1 lists of C >= 1
      candidates. Valid candidates must not be NaN (±inf is allowed); masked ones may
      hold anything.
    label_index: int ``[N]``, the true candidate's position in each list, in
      ``[0, C)``.
    where: bool ``[N, C]``, True for real candidates, False for padding (left out of
      the ranking), or None (all valid).

  Returns:
    int64 ``[N]``, ranks in ``[0, valid candidates - 1]``.

  Raises:
    ValueError: ``scores`` not a real 2-D array with N, C >= 1; ``label_index`` not an
      int ``[N]`` array or out of ``[0, C)``; ``where`` not a bool ``[N, C]`` array; a
      true score that is not finite; a masked true candidate; a NaN among the valid
      candidates.

  References:
    Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018
    (arXiv:1808.09781); evaluation code kang205/SASRec ``util.py`` ``evaluate``.

  Examples:
    >>> true_item_ranks(np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1], [1., 1., 1.]]),
    ...                 np.array([0, 0, 2]))
    array([0, 1, 2])
    >>> true_item_ranks(np.array([[0.2, 9.0, 0.5]]), np.array([0]),
    ...                 where=np.array([[True, False, True]]))
    array([1])
  """
  scores = np.asarray(scores)
  if not (np.issubdtype(scores.dtype, np.integer) or
          np.issubdtype(scores.dtype, np.floating)) or scores.dtype == np.bool_:
    raise ValueError(f"scores must be a real (int or float) array, got dtype "
                     f"{scores.dtype}")
  if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] < 1:
    raise ValueError(f"scores must be 2-D [N, C] with N, C >= 1, got shape "
                     f"{scores.shape}")
  num_lists, num_candidates = scores.shape
  label_index = _check_label_index(label_index, num_lists, num_candidates)
  if where is None:
    where = np.ones(scores.shape, bool)
  else:
    where = np.asarray(where)
    if where.dtype != np.bool_:
      raise ValueError(f"where must be a bool array, got dtype {where.dtype}")
    if where.shape != scores.shape:
      raise ValueError(f"where must have the shape of scores, expected {scores.shape}, "
                       f"got {where.shape}")
  rows = np.arange(num_lists)
  masked_true = ~where[rows, label_index]
  if masked_true.any():
    i = int(np.argmax(masked_true))
    raise ValueError(f"where must keep the true candidate, but list {i} masks its true "
                     f"candidate at position {int(label_index[i])}")
  true_score = scores[rows, label_index]
  bad = ~np.isfinite(true_score)
  if bad.any():
    i = int(np.argmax(bad))
    raise ValueError(f"scores must be finite at the true candidate, but list {i} has "
                     f"score {true_score[i]} at position {int(label_index[i])}")
  nan = np.isnan(scores) & where if np.issubdtype(scores.dtype, np.floating) else None
  if nan is not None and nan.any():
    i, j = (int(x) for x in np.argwhere(nan)[0])
    raise ValueError(f"scores must not be NaN at a valid candidate (mask it with "
                     f"where), got NaN in list {i} at position {j}")
  at_or_above = (scores >= true_score[:, None]) & where
  return at_or_above.sum(axis=1).astype(np.int64) - 1  # minus the true item itself


def ranking_metrics(scores, label_index, *, ks: Sequence[int] = (1, 5, 10),
                    where=None) -> dict:
  """HR@k, NDCG@k, MRR and mean rank of one true item among sampled candidates.

  With one relevant item and its 0-based rank r (from :func:`true_item_ranks`,
  pessimistic ties), averaged over the N lists:

  * ``hr@k`` = mean(r < k), the hit rate (= recall@k with one relevant item);
  * ``ndcg@k`` = mean(1 / log2(r + 2) if r < k else 0) (the ideal DCG is 1);
  * ``mrr`` = mean(1 / (r + 1)) over the full list (not cut at k);
  * ``mean_rank`` = mean(r + 1), 1-based;
  * ``num_lists`` = N.

  Caveat: these are *sampled* metrics when the candidates are the true item plus
  sampled negatives (e.g. 100, as in SASRec). They are not estimates of the
  full-ranking metrics and can order models differently (Krichene & Rendle, KDD 2020),
  so compare them only across runs with the same candidate sampler and C.

  Args:
    scores: real ``[N, C]``, as in :func:`true_item_ranks`.
    label_index: int ``[N]`` in ``[0, C)``.
    ks: cut-offs, each an int >= 1 (a k >= C gives HR@k = 1).
    where: bool ``[N, C]`` valid-candidate mask, or None.

  Returns:
    ``{"hr@k", "ndcg@k" for each k, "mrr", "mean_rank"}`` as Python floats and
    ``"num_lists"`` as an int.

  Raises:
    ValueError: as :func:`true_item_ranks`; a k that is not an int >= 1.

  References:
    Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018
    (arXiv:1808.09781), HR@10 and NDCG@10 over 1 + 100 sampled candidates;
    Krichene & Rendle, "On Sampled Metrics for Item Recommendation", KDD 2020
    (doi:10.1145/3394486.3403226).

  Examples:
    >>> s = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1], [1., 1., 1.]])
    >>> r = ranking_metrics(s, np.array([0, 0, 2]), ks=(1, 2))
    >>> r["hr@1"], r["hr@2"], r["mean_rank"], r["num_lists"]
    (0.3333333333333333, 0.6666666666666666, 2.0, 3)
    >>> round(r["ndcg@2"], 4), round(r["mrr"], 4)
    (0.5436, 0.6111)
  """
  ks = tuple(ks)
  for k in ks:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
      raise ValueError(f"ks must hold ints >= 1, got {k!r} in {ks}")
  ranks = true_item_ranks(scores, label_index, where=where)
  gain = 1.0 / np.log2(ranks + 2.0)
  out = {}
  for k in ks:
    out[f"hr@{int(k)}"] = float(np.mean(ranks < k))
  for k in ks:
    out[f"ndcg@{int(k)}"] = float(np.mean(np.where(ranks < k, gain, 0.0)))
  out["mrr"] = float(np.mean(1.0 / (ranks + 1.0)))
  out["mean_rank"] = float(np.mean(ranks + 1.0))
  out["num_lists"] = int(ranks.shape[0])
  return out


def position_uniformity(label_index, num_candidates: int) -> dict:
  """Chi-square test that the true item's position is uniform over the C positions.

  If the data pipeline puts the true item at a predictable position (always first, as
  SASRec's evaluation lists do, or skewed by a biased shuffle), a model or a
  tie-breaking rule can score by position alone. A small p-value flags that. The test
  is ``scipy.stats.chisquare`` of the position counts against N / C each. Its
  chi-square approximation wants about 5 or more expected lists per position
  (N >= 5 C).

  Args:
    label_index: int ``[N]``, N >= 1, positions in ``[0, num_candidates)``.
    num_candidates: C >= 2.

  Returns:
    ``{"chi2": float, "dof": int (C - 1), "p_value": float, "counts": [C ints]}``.

  Raises:
    ValueError: ``num_candidates`` not an int >= 2; ``label_index`` not a non-empty int
      ``[N]`` array or out of ``[0, C)``.

  Examples:
    >>> r = position_uniformity(np.array([0, 1, 2, 0, 1, 2]), 3)
    >>> r["chi2"], r["dof"], r["p_value"], r["counts"]
    (0.0, 2, 1.0, [2, 2, 2])
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top
  if (isinstance(num_candidates, (bool, np.bool_)) or
      not isinstance(num_candidates, (int, np.integer)) or num_candidates < 2):
    raise ValueError(f"num_candidates must be an int >= 2, got {num_candidates!r}")
  num_candidates = int(num_candidates)
  label_index = np.asarray(label_index)
  if label_index.ndim != 1 or label_index.shape[0] < 1:
    raise ValueError(f"label_index must be 1-D [N] with N >= 1, got shape "
                     f"{label_index.shape}")
  label_index = _check_label_index(label_index, label_index.shape[0], num_candidates)
  counts = np.bincount(label_index, minlength=num_candidates)
  result = stats.chisquare(counts)
  return {"chi2": float(result.statistic), "dof": num_candidates - 1,
          "p_value": float(result.pvalue), "counts": [int(c) for c in counts]}


def random_scores(num_lists: int, num_candidates: int, *, seed) -> np.ndarray:
  """Uniform random scores, the chance baseline (HR@k ≈ k / C in expectation).

  Args:
    num_lists: N >= 1.
    num_candidates: C >= 1.
    seed: anything ``np.random.default_rng`` accepts; the same seed gives the same
      scores.

  Returns:
    float64 ``[N, C]`` in [0, 1), ``np.random.default_rng(seed).random((N, C))``.

  Raises:
    ValueError: ``num_lists`` or ``num_candidates`` not an int >= 1.
  """
  for name, value in (("num_lists", num_lists), ("num_candidates", num_candidates)):
    if (isinstance(value, (bool, np.bool_)) or
        not isinstance(value, (int, np.integer)) or value < 1):
      raise ValueError(f"{name} must be an int >= 1, got {value!r}")
  return np.random.default_rng(seed).random((int(num_lists), int(num_candidates)))


def popularity_scores(candidates, item_counts, *, seed) -> np.ndarray:
  """Popularity baseline: each candidate's count, ties broken at random by ``seed``.

  The score is ``item_counts[candidates] + u`` with u drawn independently per
  candidate strictly inside (0, 1). The counts are whole numbers, so a more frequent
  item always scores higher, and items with equal counts are ordered at random, never
  by their position in the list. (Breaking ties by position would hand the popularity
  baseline every tie when the true item sits at a fixed position.) Above about 2**20
  the float64 spacing of ``count + u`` grows past 2**-32, and two equal-count items
  can, rarely, tie exactly.

  Args:
    candidates: int ``[N, C]`` item ids, each in ``[0, V)``.
    item_counts: ``[V]`` non-negative whole-number counts (e.g. training
      interactions per item id), int or float dtype.
    seed: anything ``np.random.default_rng`` accepts; the same seed gives the same
      scores.

  Returns:
    float64 ``[N, C]``.

  Raises:
    ValueError: ``candidates`` not a 2-D int array with N, C >= 1, or an id outside
      ``[0, V)``; ``item_counts`` not a non-empty 1-D array of finite, non-negative
      whole numbers.

  Examples:
    >>> s = popularity_scores(np.array([[2, 0, 1]]), np.array([5, 0, 9]), seed=0)
    >>> np.floor(s)
    array([[9., 5., 0.]])
  """
  item_counts = np.asarray(item_counts)
  if (not (np.issubdtype(item_counts.dtype, np.integer) or
           np.issubdtype(item_counts.dtype, np.floating)) or
      item_counts.dtype == np.bool_):
    raise ValueError(f"item_counts must be an int or float array, got dtype "
                     f"{item_counts.dtype}")
  if item_counts.ndim != 1 or item_counts.shape[0] < 1:
    raise ValueError(f"item_counts must be 1-D [V] with V >= 1, got shape "
                     f"{item_counts.shape}")
  counts = item_counts.astype(np.float64)
  if (not np.isfinite(counts).all() or (counts < 0).any() or
      (counts != np.floor(counts)).any()):
    raise ValueError("item_counts must hold finite, non-negative whole numbers (the "
                     "tie-break in (0, 1) keeps the order of whole counts only)")
  candidates = np.asarray(candidates)
  if not (np.issubdtype(candidates.dtype, np.integer) and candidates.dtype != np.bool_):
    raise ValueError(f"candidates must be an integer array of item ids, got dtype "
                     f"{candidates.dtype}")
  if candidates.ndim != 2 or candidates.shape[0] < 1 or candidates.shape[1] < 1:
    raise ValueError(f"candidates must be 2-D [N, C] with N, C >= 1, got shape "
                     f"{candidates.shape}")
  low, high = int(candidates.min()), int(candidates.max())
  if low < 0 or high >= counts.shape[0]:
    raise ValueError(f"candidates must hold item ids in [0, {counts.shape[0]}) (the "
                     f"length of item_counts), got ids in [{low}, {high}]")
  rng = np.random.default_rng(seed)
  # (j + 0.5) / 2**52 for j in [0, 2**52): exact in float64, strictly inside (0, 1).
  tie_break = (rng.integers(0, 2**52, size=candidates.shape) + 0.5) / 2.0**52
  return counts[candidates] + tie_break


def max_metric_difference(a: Mapping[str, object], b: Mapping[str, object]) -> float:
  """Largest absolute difference between two metric dicts over their shared numeric
  keys, for the "evaluating twice gives the same metrics" check.

  Numeric means int or float (bool and NumPy scalars included); other values (lists,
  strings) and keys found in only one dict are skipped. NaN in both counts as equal
  (0), as do equal infinities; NaN in one only counts as ``inf``.

  Raises:
    ValueError: no shared numeric key (the check would pass vacuously).

  Examples:
    >>> max_metric_difference({"hr@1": 0.5, "mrr": 0.75, "counts": [1]},
    ...                       {"hr@1": 0.5, "mrr": 0.5, "extra": 1.0})
    0.25
  """
  def numeric(value):
    return isinstance(value, (int, float, np.integer, np.floating, np.bool_))

  shared = [k for k in a if k in b and numeric(a[k]) and numeric(b[k])]
  if not shared:
    raise ValueError(f"a and b must share a numeric key, got keys {sorted(a)} and "
                     f"{sorted(b)}")
  worst = 0.0
  for key in shared:
    x, y = float(a[key]), float(b[key])
    if x == y or (np.isnan(x) and np.isnan(y)):  # x == y also covers inf == inf
      diff = 0.0
    elif np.isnan(x) or np.isnan(y):
      diff = float("inf")
    else:
      diff = abs(x - y)
    worst = max(worst, diff)
  return worst
