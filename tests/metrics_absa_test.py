"""UIT-ViSFD ABSA metrics (aspect F1, sentiment F1, 4-class macro F1) against scikit-learn."""

import numpy as np
import pytest
from sklearn import metrics as skm

from jaxloss import metrics

TOL = 1e-12


def _random_absa(seed, n, a=10, never_present=(), accuracy=0.6):
  """Labels in {0..3} with absent most common, and noisy predictions.

  Aspects in ``never_present`` are absent in every label row. Predictions for them are
  noisy, so some seeds predict them anyway (false positives with no support) and some
  not at all (0 / 0).
  """
  rng = np.random.default_rng(seed)
  y = rng.choice(4, size=(n, a), p=[0.55, 0.25, 0.12, 0.08])
  y[:, list(never_present)] = 0
  noise = rng.choice(4, size=(n, a), p=[0.7, 0.1, 0.1, 0.1])
  p = np.where(rng.random((n, a)) < accuracy, y, noise)
  return y, p


def _sk_aspect(y, p):
  per = skm.f1_score(y != 0, p != 0, average=None, zero_division=0)
  return skm.f1_score(y != 0, p != 0, average="macro", zero_division=0), per


def _sk_sentiment(y, p):
  per = np.array([
      skm.f1_score(y[:, a], p[:, a], labels=[1, 2, 3], average="macro", zero_division=0)
      for a in range(y.shape[1])])
  return per.mean(), per


def _pair_indicators(x):
  """[N, A] polarity codes -> [N, 3A] ASPECT#POLARITY indicators, like a
  MultiLabelBinarizer over "ASPECT#Polarity" strings."""
  return np.concatenate([(x == c) for c in (1, 2, 3)], axis=1).astype(int)


CASES = [(seed, n, never) for seed in (0, 1, 2, 3)
         for n, never in ((50, (9,)), (7, (3, 9)), (50, ()), (7, ()))]


@pytest.mark.parametrize("seed,n,never", CASES)
def test_aspect_detection_against_sklearn(seed, n, never):
  y, p = _random_absa(seed, n, never_present=never)
  macro, per = _sk_aspect(y, p)
  got = metrics.aspect_detection_f1(y, p)
  assert got["macro_f1"] == pytest.approx(macro, abs=TOL)
  np.testing.assert_allclose(got["per_aspect"], per, rtol=0, atol=TOL)
  # Also equals the aspect-level precision_recall_fscore_support used by the
  # reproduction code (multi-label indicator matrix, macro average).
  _, _, f, _ = skm.precision_recall_fscore_support(
      (y != 0).astype(int), (p != 0).astype(int), average="macro", zero_division=0)
  assert got["macro_f1"] == pytest.approx(f, abs=TOL)


@pytest.mark.parametrize("seed,n,never", CASES)
def test_aspect_sentiment_against_sklearn(seed, n, never):
  y, p = _random_absa(seed, n, never_present=never)
  macro, per = _sk_sentiment(y, p)
  got = metrics.aspect_sentiment_f1(y, p)
  assert got["macro_f1"] == pytest.approx(macro, abs=TOL)
  np.testing.assert_allclose(got["per_aspect"], per, rtol=0, atol=TOL)
  # Same number as the reproduction code's macro F1 over the 30 ASPECT#POLARITY labels.
  _, _, f, _ = skm.precision_recall_fscore_support(
      _pair_indicators(y), _pair_indicators(p), average="macro", zero_division=0)
  assert got["macro_f1"] == pytest.approx(f, abs=TOL)


@pytest.mark.parametrize("seed,n,never", CASES)
def test_macro_f1_4class_against_sklearn(seed, n, never):
  y, p = _random_absa(seed, n, never_present=never)
  expected = skm.f1_score(y.ravel(), p.ravel(), labels=[0, 1, 2, 3], average="macro",
                          zero_division=0)
  assert metrics.macro_f1_4class(y, p) == pytest.approx(expected, abs=TOL)


def test_macro_f1_4class_counts_a_class_missing_from_both_as_zero():
  # No neutral (3) anywhere: sklearn with labels=[0..3] scores it 0 and averages over 4.
  y = np.array([[0, 1], [2, 0], [1, 1]])
  p = np.array([[0, 1], [2, 1], [1, 0]])
  expected = skm.f1_score(y.ravel(), p.ravel(), labels=[0, 1, 2, 3], average="macro",
                          zero_division=0)
  assert metrics.macro_f1_4class(y, p) == pytest.approx(expected, abs=TOL)
  # The older confusion-matrix macro_f1 leaves the class out (3 classes averaged).
  cm = skm.confusion_matrix(y.ravel(), p.ravel(), labels=[0, 1, 2, 3])
  assert metrics.macro_f1(cm) == pytest.approx(expected * 4 / 3, abs=TOL)


@pytest.mark.parametrize("seed,n,never", CASES[:4])
def test_report_matches_functions(seed, n, never):
  y, p = _random_absa(seed, n, never_present=never)
  report = metrics.absa_report(y, p)
  assert set(report) == {"aspect_f1", "sentiment_f1", "per_aspect_f1", "macro_f1_4class"}
  assert report["aspect_f1"] == metrics.aspect_detection_f1(y, p)["macro_f1"]
  assert report["sentiment_f1"] == metrics.aspect_sentiment_f1(y, p)["macro_f1"]
  assert report["macro_f1_4class"] == metrics.macro_f1_4class(y, p)
  assert list(report["per_aspect_f1"]) == list(metrics.ASPECTS)
  _, aspect_per = _sk_aspect(y, p)
  _, sentiment_per = _sk_sentiment(y, p)
  for i, name in enumerate(metrics.ASPECTS):
    assert report["per_aspect_f1"][name]["aspect"] == pytest.approx(aspect_per[i], abs=TOL)
    assert report["per_aspect_f1"][name]["sentiment"] == pytest.approx(
        sentiment_per[i], abs=TOL)
  for value in (report["aspect_f1"], report["sentiment_f1"], report["macro_f1_4class"]):
    assert isinstance(value, float) and 0.0 <= value <= 1.0


def test_constants():
  assert metrics.ASPECTS == ("BATTERY", "CAMERA", "DESIGN", "FEATURES", "GENERAL",
                             "PERFORMANCE", "PRICE", "SCREEN", "SER&ACC", "STORAGE")
  assert metrics.POLARITIES == ("absent", "positive", "negative", "neutral")


def test_hand_worked_example():
  # Two aspects, four reviews. Codes: 0 absent, 1 pos, 2 neg, 3 neu.
  y = np.array([[1, 0],
                [2, 1],
                [0, 3],
                [1, 1]])
  p = np.array([[1, 1],
                [1, 1],
                [0, 0],
                [0, 1]])
  # Aspect detection, present = code != 0.
  #   aspect 0: true present rows {0,1,3}, predicted {0,1}: TP 2, FP 0, FN 1
  #             F1 = 2*2 / (2*2 + 0 + 1) = 4/5 = 0.8
  #   aspect 1: true {1,2,3}, predicted {0,1,3}: TP 2, FP 1, FN 1 -> 4/6 = 0.6667
  #   macro = (0.8 + 2/3) / 2 = 0.7333
  r = metrics.aspect_detection_f1(y, p)
  assert r["per_aspect"] == pytest.approx([0.8, 2 / 3], abs=TOL)
  assert r["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2, abs=TOL)
  # Sentiment, per aspect the mean F1 over polarities 1, 2, 3:
  #   aspect 0: pos: true {0,3}, pred {0,1}: TP 1 -> 2/(2+2) = 0.5
  #             neg: true {1}, pred {} -> 0;  neu: neither -> 0 (zero_division=0)
  #             -> (0.5 + 0 + 0) / 3 = 1/6
  #   aspect 1: pos: true {1,3}, pred {0,1,3}: TP 2 -> 4/(2+3) = 0.8
  #             neg: neither -> 0;  neu: true {2}, pred {} -> 0
  #             -> 0.8 / 3 = 0.2667
  #   macro = (1/6 + 0.8/3) / 2 = 0.2167
  r = metrics.aspect_sentiment_f1(y, p)
  assert r["per_aspect"] == pytest.approx([1 / 6, 0.8 / 3], abs=TOL)
  assert r["macro_f1"] == pytest.approx((1 / 6 + 0.8 / 3) / 2, abs=TOL)
  # 4-class over the 8 slots, y = 1 0 2 1 0 3 1 1, p = 1 1 1 1 0 0 0 1:
  #   absent: true {1,4}, pred {4,5,6}: TP 1 -> 2/(2+3) = 0.4
  #   pos:    true {0,3,6,7}, pred {0,1,2,3,7}: TP 3 -> 6/(4+5) = 2/3
  #   neg:    true {2}, pred {} -> 0;   neu: true {5}, pred {} -> 0
  #   macro = (0.4 + 2/3 + 0 + 0) / 4 = 0.2667
  assert metrics.macro_f1_4class(y, p) == pytest.approx((0.4 + 2 / 3) / 4, abs=TOL)
  report = metrics.absa_report(y, p, aspect_names=("BATTERY", "CAMERA"))
  assert report["per_aspect_f1"]["BATTERY"] == pytest.approx(
      {"aspect": 0.8, "sentiment": 1 / 6}, abs=TOL)


def test_perfect_and_empty_predictions():
  y, _ = _random_absa(5, 50)
  assert metrics.absa_report(y, y)["aspect_f1"] == 1.0
  assert metrics.absa_report(y, y)["sentiment_f1"] == 1.0
  assert metrics.absa_report(y, y)["macro_f1_4class"] == 1.0
  nothing = np.zeros_like(y)
  assert metrics.aspect_detection_f1(y, nothing)["macro_f1"] == 0.0
  assert metrics.aspect_sentiment_f1(y, nothing)["macro_f1"] == 0.0


def test_accepts_lists_and_any_int_dtype():
  y = [[1, 0, 3], [0, 2, 0]]
  p = np.array([[1, 0, 0], [0, 2, 3]], dtype=np.uint8)
  assert metrics.absa_report(y, p, aspect_names="abc")["aspect_f1"] == pytest.approx(
      metrics.absa_report(np.array(y, np.int32), p.astype(np.int64),
                          aspect_names="abc")["aspect_f1"])


_Y = np.zeros((4, 10), dtype=int)


@pytest.mark.parametrize("labels,predictions,match", [
    # wrong shape: not 2-D, and the two shapes differ
    (np.zeros(10, int), np.zeros(10, int), r"labels must be 2-D \[N, A\].*got shape \(10,\)"),
    (_Y, np.zeros((4, 10, 1), int), r"predictions must be 2-D.*got shape \(4, 10, 1\)"),
    (_Y, np.zeros((5, 10), int), r"expected \(4, 10\), got \(5, 10\)"),
    (np.zeros((0, 10), int), np.zeros((0, 10), int), r"labels must be 2-D.*N, A >= 1"),
    # out-of-range label
    (np.full((4, 10), 4), _Y, r"labels must hold values in \[0, 3\].*got values in \[4, 4\]"),
    (_Y, np.full((4, 10), -1), r"predictions must hold values in \[0, 3\].*\[-1, -1\]"),
    # float and bool dtypes
    (_Y.astype(float), _Y, r"labels must be an integer array.*got dtype float64"),
    (_Y, _Y.astype(np.float32), r"predictions must be an integer array.*float32"),
    (_Y, _Y.astype(bool), r"predictions must be an integer array.*got dtype bool"),
])
def test_bad_inputs_raise(labels, predictions, match):
  for fn in (metrics.aspect_detection_f1, metrics.aspect_sentiment_f1,
             metrics.macro_f1_4class, metrics.absa_report):
    with pytest.raises(ValueError, match=match):
      fn(labels, predictions)


def test_bad_aspect_names_raise():
  with pytest.raises(ValueError, match="expected 10 names, got 2"):
    metrics.absa_report(_Y, _Y, aspect_names=("A", "B"))
  with pytest.raises(ValueError, match="distinct"):
    metrics.absa_report(_Y, _Y, aspect_names=("A",) * 10)


def test_aspect_never_present_nor_predicted_scores_zero_and_counts():
  # Aspect 1 is absent everywhere and never predicted: 0 / 0 -> 0 (zero_division=0),
  # and it still counts in the mean, as in sklearn with a fixed label set.
  y = np.array([[1, 0], [2, 0], [0, 0]])
  p = np.array([[1, 0], [2, 0], [0, 0]])
  r = metrics.aspect_detection_f1(y, p)
  assert r["per_aspect"] == [1.0, 0.0] and r["macro_f1"] == 0.5
  assert r["macro_f1"] == pytest.approx(_sk_aspect(y, p)[0], abs=TOL)
  s = metrics.aspect_sentiment_f1(y, p)
  # aspect 0: pos 1, neg 1, neu 0/0 -> 0 => 2/3; aspect 1: all 0/0 -> 0.
  assert s["per_aspect"] == pytest.approx([2 / 3, 0.0], abs=TOL)
  assert s["macro_f1"] == pytest.approx(_sk_sentiment(y, p)[0], abs=TOL)
