"""Candidate-reranking metrics: true-item ranks, HR / NDCG / MRR, position uniformity,
baseline scorers.

The hand-worked numbers are written out in the comments; the random tests check the
metrics against sklearn's ``ndcg_score`` and a plain Python sort, and the baselines
against their chance levels within 3 standard errors (all draws are seeded).
"""

import math

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from jaxloss import metrics

# Three lists of three candidates. List 0: the true item (0.9) is first -> rank 0.
# List 1: 0.3 beats the true 0.2 -> rank 1. List 2: all tied, ties count against the
# true item -> rank 2 (the worst), not 0.
HAND_SCORES = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1], [1.0, 1.0, 1.0]])
HAND_LABELS = np.array([0, 0, 2])


def _se(p, n):
  """Standard error of a proportion p estimated from n draws."""
  return math.sqrt(p * (1 - p) / n)


def _python_rank(row, label):
  """0-based rank of ``label`` by a plain sort, ties put the true item last."""
  order = sorted(range(len(row)), key=lambda j: (-row[j], j == label))
  return order.index(label)


def _no_tie_scores(rng, n, c):
  # A random permutation of distinct values per row: no ties anywhere.
  return np.argsort(rng.random((n, c)), axis=1).astype(np.float64) + rng.random((n, 1))


# -------------------------------------------------------------------- true_item_ranks


def test_hand_worked_ranks():
  ranks = metrics.true_item_ranks(HAND_SCORES, HAND_LABELS)
  assert ranks.dtype == np.int64
  np.testing.assert_array_equal(ranks, [0, 1, 2])


def test_constant_scorer_gets_the_worst_rank():
  # 101 candidates (SASRec's 1 + 100), all scores equal, true item at position 0 (as in
  # SASRec's lists): rank C - 1 = 100, so HR@10 = 0, never a free hit.
  scores = np.zeros((4, 101), np.float32)
  labels = np.zeros(4, np.int64)
  np.testing.assert_array_equal(metrics.true_item_ranks(scores, labels), [100] * 4)
  r = metrics.ranking_metrics(scores, labels, ks=(1, 10))
  assert r["hr@1"] == 0.0 and r["hr@10"] == 0.0 and r["ndcg@10"] == 0.0
  assert r["mean_rank"] == 101.0


def test_integer_scores_with_ties_match_python_sort():
  rng = np.random.default_rng(3)
  scores = rng.integers(0, 4, size=(500, 7))  # many ties
  labels = rng.integers(0, 7, size=500)
  ranks = metrics.true_item_ranks(scores, labels)
  expected = [_python_rank(list(s), l) for s, l in zip(scores, labels)]
  np.testing.assert_array_equal(ranks, expected)


def test_masked_padding_with_huge_score_does_not_change_rank():
  # List 0: true 0.5 at position 1, real rival 0.7 -> rank 1. Positions 3 and 4 are
  # padding with a huge score and a NaN; masked, they are left out.
  scores = np.array([[0.7, 0.5, 0.1, 1e9, np.nan],
                     [0.2, 0.3, 0.4, 1e9, 1e9]])
  labels = np.array([1, 2])
  where = np.array([[True, True, True, False, False],
                    [True, True, True, False, False]])
  ranks = metrics.true_item_ranks(scores, labels, where=where)
  np.testing.assert_array_equal(ranks, [1, 0])
  np.testing.assert_array_equal(
      ranks, metrics.true_item_ranks(scores[:, :3], labels))
  # Unmasked, the huge score would push the true item down by one.
  np.testing.assert_array_equal(
      metrics.true_item_ranks(scores[:, :4], labels), [2, 1])
  # Lists of different lengths: list 1 has only 2 real candidates.
  where[1, 2] = False
  scores[1, 2] = 1e9
  np.testing.assert_array_equal(
      metrics.true_item_ranks(scores, np.array([1, 1]), where=where), [1, 0])


def test_infinite_rivals_are_ranked():
  # -inf (a model's own masking) ranks below, +inf above a finite true score.
  scores = np.array([[-np.inf, 0.0, np.inf]])
  np.testing.assert_array_equal(metrics.true_item_ranks(scores, np.array([1])), [1])


# -------------------------------------------------------------------- ranking_metrics


def test_hand_worked_metrics():
  # Ranks [0, 1, 2] (see HAND_SCORES).
  r = metrics.ranking_metrics(HAND_SCORES, HAND_LABELS, ks=(1, 2, 3))
  assert list(r) == ["hr@1", "hr@2", "hr@3", "ndcg@1", "ndcg@2", "ndcg@3", "mrr",
                     "mean_rank", "num_lists"]
  assert all(type(v) is float for k, v in r.items() if k != "num_lists")
  assert type(r["num_lists"]) is int and r["num_lists"] == 3
  assert r["hr@1"] == pytest.approx(1 / 3, abs=1e-15)  # only rank 0
  assert r["hr@2"] == pytest.approx(2 / 3, abs=1e-15)  # ranks 0 and 1
  assert r["hr@3"] == 1.0
  # NDCG: gain 1/log2(rank + 2) = 1, 1/log2(3), 1/log2(4) = 1/2 inside the cut.
  assert r["ndcg@1"] == pytest.approx(1 / 3, abs=1e-15)
  assert r["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 3, abs=1e-15)
  assert r["ndcg@3"] == pytest.approx((1 + 1 / math.log2(3) + 1 / 2) / 3, abs=1e-15)
  # MRR over the full list: (1 + 1/2 + 1/3) / 3 = 11/18.
  assert r["mrr"] == pytest.approx(11 / 18, abs=1e-15)
  assert r["mean_rank"] == 2.0  # (1 + 2 + 3) / 3


def test_default_ks_and_k_beyond_list():
  r = metrics.ranking_metrics(HAND_SCORES, HAND_LABELS)
  assert set(r) == {"hr@1", "hr@5", "hr@10", "ndcg@1", "ndcg@5", "ndcg@10", "mrr",
                    "mean_rank", "num_lists"}
  # k >= C = 3 keeps every list: HR = 1, NDCG = the full DCG.
  assert r["hr@5"] == r["hr@10"] == 1.0
  assert r["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / 2) / 3, abs=1e-15)


@pytest.mark.parametrize("k", [5, 10])
def test_ndcg_matches_sklearn(k):
  rng = np.random.default_rng(0)
  n, c = 300, 20
  scores = _no_tie_scores(rng, n, c)
  labels = rng.integers(0, c, size=n)
  relevance = np.zeros((n, c))
  relevance[np.arange(n), labels] = 1.0
  r = metrics.ranking_metrics(scores, labels, ks=(k,))
  assert r[f"ndcg@{k}"] == pytest.approx(ndcg_score(relevance, scores, k=k), abs=1e-12)
  # Per list too (one list at a time).
  for i in range(0, n, 17):
    one = metrics.ranking_metrics(scores[i:i + 1], labels[i:i + 1], ks=(k,))
    assert one[f"ndcg@{k}"] == pytest.approx(
        ndcg_score(relevance[i:i + 1], scores[i:i + 1], k=k), abs=1e-12)


def test_hr_mrr_match_python_sort_loop():
  rng = np.random.default_rng(1)
  n, c = 400, 30
  scores = _no_tie_scores(rng, n, c)
  labels = rng.integers(0, c, size=n)
  python_ranks = []
  for row, label in zip(scores.tolist(), labels.tolist()):
    order = sorted(range(c), key=lambda j, row=row: row[j], reverse=True)
    python_ranks.append(order.index(label))
  r = metrics.ranking_metrics(scores, labels, ks=(1, 5, 10))
  for k in (1, 5, 10):
    assert r[f"hr@{k}"] == pytest.approx(
        sum(rank < k for rank in python_ranks) / n, abs=1e-15)
  assert r["mrr"] == pytest.approx(
      sum(1 / (rank + 1) for rank in python_ranks) / n, abs=1e-12)
  assert r["mean_rank"] == pytest.approx(
      sum(rank + 1 for rank in python_ranks) / n, abs=1e-12)


@pytest.mark.parametrize("c", [50, 101])
def test_position_only_scorer_on_uniform_labels_is_at_chance(c):
  # Score = -position (position 0 ranked first), true item uniform over c positions:
  # the rank is the position itself, so HR@k ≈ k / c and MRR ≈ H_c / c.
  n = 20_000
  rng = np.random.default_rng(c)
  labels = rng.integers(0, c, size=n)
  scores = np.broadcast_to(-np.arange(c, dtype=np.float64), (n, c))
  np.testing.assert_array_equal(metrics.true_item_ranks(scores, labels), labels)
  r = metrics.ranking_metrics(scores, labels, ks=(1, 10))
  assert abs(r["hr@1"] - 1 / c) < 3 * _se(1 / c, n)
  assert abs(r["hr@10"] - 10 / c) < 3 * _se(10 / c, n)
  reciprocal = 1 / np.arange(1, c + 1)
  mrr_se = reciprocal.std() / math.sqrt(n)
  assert abs(r["mrr"] - reciprocal.mean()) < 3 * mrr_se


# ---------------------------------------------------------------- position_uniformity


def test_position_uniformity_hand_counts():
  # Positions [0, 1, 1, 3] over C = 4: counts [1, 2, 0, 1], expected 1 each,
  # chi2 = 0 + 1 + 1 + 0 = 2 with 3 dof; the chi-square(3) tail at x is
  # erfc(sqrt(x / 2)) + sqrt(2x / pi) exp(-x / 2).
  r = metrics.position_uniformity(np.array([0, 1, 1, 3]), 4)
  assert r["counts"] == [1, 2, 0, 1]
  assert r["chi2"] == pytest.approx(2.0, abs=1e-12)
  assert r["dof"] == 3
  assert r["p_value"] == pytest.approx(
      math.erfc(1.0) + math.sqrt(4 / math.pi) * math.exp(-1.0), rel=1e-9)


def test_position_uniformity_uniform_vs_fixed():
  rng = np.random.default_rng(7)
  uniform = metrics.position_uniformity(rng.integers(0, 50, size=20_000), 50)
  assert uniform["p_value"] > 0.01
  assert sum(uniform["counts"]) == 20_000 and len(uniform["counts"]) == 50
  fixed = metrics.position_uniformity(np.zeros(20_000, np.int64), 50)
  assert fixed["p_value"] < 1e-10
  assert fixed["counts"] == [20_000] + [0] * 49
  # chi2 = sum (o - e)^2 / e with e = 400: (19600^2 + 49 * 400^2) / 400 = 49 * 20000.
  assert fixed["chi2"] == pytest.approx(49 * 20_000, rel=1e-12)


# ------------------------------------------------------------------ baseline scorers


def test_random_scores():
  s = metrics.random_scores(3, 5, seed=11)
  assert s.shape == (3, 5) and s.dtype == np.float64
  np.testing.assert_array_equal(s, np.random.default_rng(11).random((3, 5)))
  np.testing.assert_array_equal(s, metrics.random_scores(3, 5, seed=11))
  assert not np.array_equal(s, metrics.random_scores(3, 5, seed=12))
  # Chance level: HR@1 ≈ 1/C whatever the true item's position.
  n, c = 20_000, 50
  labels = np.zeros(n, np.int64)
  r = metrics.ranking_metrics(metrics.random_scores(n, c, seed=0), labels, ks=(1,))
  assert abs(r["hr@1"] - 1 / c) < 3 * _se(1 / c, n)


def test_popularity_scores_order_by_count():
  item_counts = np.array([5, 0, 9, 5, 2])
  candidates = np.array([[2, 0, 1, 4], [1, 4, 0, 2]])
  s = metrics.popularity_scores(candidates, item_counts, seed=0)
  assert s.shape == (2, 4) and s.dtype == np.float64
  np.testing.assert_array_equal(np.floor(s), item_counts[candidates])
  frac = s - item_counts[candidates]
  assert ((frac > 0) & (frac < 1)).all()
  # Ranked by count: items 2 (9), 0 (5), 4 (2), 1 (0).
  np.testing.assert_array_equal(np.argsort(-s, axis=1), [[0, 1, 3, 2], [3, 2, 1, 0]])
  # The most popular item as the true one is always first.
  r = metrics.ranking_metrics(s, np.array([0, 3]), ks=(1,))
  assert r["hr@1"] == 1.0
  # Float whole-number counts are accepted.
  np.testing.assert_array_equal(
      metrics.popularity_scores(candidates, item_counts.astype(np.float32), seed=0), s)


def test_popularity_ties_are_seeded_not_positional():
  n, c = 20_000, 50
  candidates = np.tile(np.arange(c), (n, 1))
  item_counts = np.full(c, 7)  # every count equal: pure tie-break
  a = metrics.popularity_scores(candidates, item_counts, seed=5)
  np.testing.assert_array_equal(a, metrics.popularity_scores(candidates, item_counts,
                                                             seed=5))
  assert not np.array_equal(a, metrics.popularity_scores(candidates, item_counts,
                                                         seed=6))
  assert np.unique(a, axis=1).shape == a.shape  # no exact ties left in any list
  # The true item at position 0 in every list gets HR@1 ≈ 1/C, not 1.
  r = metrics.ranking_metrics(a, np.zeros(n, np.int64), ks=(1, 10))
  assert abs(r["hr@1"] - 1 / c) < 3 * _se(1 / c, n)
  assert abs(r["hr@10"] - 10 / c) < 3 * _se(10 / c, n)


# ------------------------------------------------------------- max_metric_difference


def test_max_metric_difference():
  r1 = metrics.ranking_metrics(HAND_SCORES, HAND_LABELS)
  r2 = metrics.ranking_metrics(HAND_SCORES.copy(), HAND_LABELS.copy())
  assert metrics.max_metric_difference(r1, r2) == 0.0
  a = {"hr@10": 0.5, "mrr": 0.25, "counts": [1, 2], "only_a": 9.0}
  b = {"hr@10": 0.75, "mrr": 0.125, "counts": [3, 4], "only_b": -9.0}
  assert metrics.max_metric_difference(a, b) == 0.25
  assert metrics.max_metric_difference({"x": np.nan}, {"x": np.nan}) == 0.0
  assert metrics.max_metric_difference({"x": np.inf}, {"x": np.inf}) == 0.0
  assert metrics.max_metric_difference({"x": np.nan}, {"x": 0.0}) == math.inf
  assert metrics.max_metric_difference({"n": 3}, {"n": np.int64(5)}) == 2.0


# ------------------------------------------------------------------------- errors


@pytest.mark.parametrize("scores, labels, where, match", [
    (np.zeros(3), np.array([0]), None, "scores must be 2-D"),
    (np.zeros((0, 3)), np.zeros(0, np.int64), None, "scores must be 2-D"),
    (np.zeros((1, 3), bool), np.array([0]), None, "scores must be a real"),
    (np.array([["a", "b"]]), np.array([0]), None, "scores must be a real"),
    (np.zeros((2, 3)), np.array([0]), None, r"label_index must have shape \[N\]"),
    (np.zeros((2, 3)), np.array([0.0, 1.0]), None, "label_index must be an integer"),
    (np.zeros((2, 3)), np.array([0, 3]), None, r"positions in \[0, 3\)"),
    (np.zeros((2, 3)), np.array([-1, 0]), None, r"positions in \[0, 3\)"),
    (np.zeros((1, 3)), np.array([0]), np.ones((1, 2), bool), "where must have the shape"),
    (np.zeros((1, 3)), np.array([0]), np.ones((1, 3)), "where must be a bool"),
    (np.zeros((1, 3)), np.array([1]), np.array([[True, False, True]]),
     "masks its true candidate"),
    (np.array([[0.0, np.nan, 1.0]]), np.array([1]), None, "finite at the true"),
    (np.array([[0.0, np.inf, 1.0]]), np.array([1]), None, "finite at the true"),
    (np.array([[0.0, 0.5, np.nan]]), np.array([1]), None, "must not be NaN"),
])
def test_true_item_ranks_errors(scores, labels, where, match):
  with pytest.raises(ValueError, match=match):
    metrics.true_item_ranks(scores, labels, where=where)
  with pytest.raises(ValueError, match=match):  # ranking_metrics checks the same
    metrics.ranking_metrics(scores, labels, where=where)


@pytest.mark.parametrize("ks", [(0,), (1, -5), (2.0,), (True,), ("5",)])
def test_ranking_metrics_bad_ks(ks):
  with pytest.raises(ValueError, match="ks must hold ints >= 1"):
    metrics.ranking_metrics(HAND_SCORES, HAND_LABELS, ks=ks)


@pytest.mark.parametrize("labels, c, match", [
    (np.array([0, 1]), 1, "num_candidates must be an int >= 2"),
    (np.array([0, 1]), 2.0, "num_candidates must be an int >= 2"),
    (np.array([0, 2]), 2, r"positions in \[0, 2\)"),
    (np.array([-1, 0]), 3, r"positions in \[0, 3\)"),
    (np.zeros(0, np.int64), 3, "label_index must be 1-D"),
    (np.zeros((2, 2), np.int64), 3, "label_index must be 1-D"),
    (np.array([0.0, 1.0]), 3, "label_index must be an integer"),
])
def test_position_uniformity_errors(labels, c, match):
  with pytest.raises(ValueError, match=match):
    metrics.position_uniformity(labels, c)


@pytest.mark.parametrize("n, c, match", [
    (0, 5, "num_lists must be an int >= 1"),
    (2.5, 5, "num_lists must be an int >= 1"),
    (3, 0, "num_candidates must be an int >= 1"),
])
def test_random_scores_errors(n, c, match):
  with pytest.raises(ValueError, match=match):
    metrics.random_scores(n, c, seed=0)


@pytest.mark.parametrize("candidates, counts, match", [
    (np.array([[0, 3]]), np.array([1, 2, 3]), r"item ids in \[0, 3\)"),
    (np.array([[-1, 0]]), np.array([1, 2, 3]), r"item ids in \[0, 3\)"),
    (np.array([[0.0, 1.0]]), np.array([1, 2, 3]), "candidates must be an integer"),
    (np.array([0, 1]), np.array([1, 2, 3]), "candidates must be 2-D"),
    (np.array([[0, 1]]), np.array([[1, 2, 3]]), "item_counts must be 1-D"),
    (np.array([[0, 1]]), np.zeros(0), "item_counts must be 1-D"),
    (np.array([[0, 1]]), np.array([1, -2, 3]), "non-negative whole numbers"),
    (np.array([[0, 1]]), np.array([1.0, 2.5, 3.0]), "non-negative whole numbers"),
    (np.array([[0, 1]]), np.array([1.0, np.inf]), "non-negative whole numbers"),
    (np.array([[0, 1]]), np.array([True, False]), "item_counts must be an int or float"),
])
def test_popularity_scores_errors(candidates, counts, match):
  with pytest.raises(ValueError, match=match):
    metrics.popularity_scores(candidates, counts, seed=0)


def test_max_metric_difference_needs_a_shared_numeric_key():
  with pytest.raises(ValueError, match="must share a numeric key"):
    metrics.max_metric_difference({"a": 1.0, "c": [1]}, {"b": 1.0, "c": [1]})
