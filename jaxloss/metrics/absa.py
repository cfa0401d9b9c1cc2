"""Multi-aspect sentiment (ABSA) metrics for UIT-ViSFD, on the host.

Labels and predictions are int ``[N, A]`` arrays (A = 10 aspects, :data:`ASPECTS`), each
slot one of 0 absent, 1 positive, 2 negative, 3 neutral (:data:`POLARITIES`).

*What the paper says.* Phan et al., "SA2SL: From Aspect-Based Sentiment Analysis to
Social Listening System for Business Intelligence", KSEM 2021 (arXiv:2105.15079,
https://arxiv.org/abs/2105.15079) report for their best model, Bi-LSTM + fastText: "the
best performances (in F1-score) of 84.48% for the aspect task and 63.06% for the
sentiment task" (abstract). In the stored copies we could search (ar5iv
https://ar5iv.arxiv.org/html/2105.15079, the Springer page doi 10.1007/978-3-030-82147-0_53)
only the abstract and introduction came back. So we could not read the paper's own
definition of the two scores, and no official evaluation script was found: the dataset
repository LuongPhan/UIT-ViSFD (README.md) ships only the data.

*What we implement, and from where.* We follow the public reproduction code
hatuki0604/mysentiment @ 767de318 (``baseline/naivebayes.py``, ``baseline/svm.py``,
``baseline/lstm_torch.py``, "SA2SL paper-style evaluation"). It scores two multi-label
tasks with ``precision_recall_fscore_support(..., average="macro", zero_division=0)``:
"Aspect Detection: aspects (including OTHERS)" and "Sentiment Detection: aspect#polarity
(exclude OTHERS)". Here that gives:

* **aspect F1** (:func:`aspect_detection_f1`): for each aspect, the binary F1 of
  "aspect present" (label != 0); the macro F1 is the plain mean over the A aspects.
* **sentiment F1** (:func:`aspect_sentiment_f1`): for each ASPECT#POLARITY pair (A x 3 =
  30 binary labels), the binary F1 of "slot == that polarity", where "absent" counts as
  "not this polarity"; the macro F1 is the mean over the 30 pairs. Every aspect has
  exactly 3 pairs, so this equals the mean over aspects of the per-aspect score. That
  score is the 3-polarity macro F1 ``f1_score(y[:, a], p[:, a], labels=[1, 2, 3],
  average="macro")``. It is a *joint* score: a polarity predicted for an absent aspect
  is a false positive, and a missed aspect is a false negative for its gold polarity.
  That fits the paper's sentiment score sitting far below its aspect score (63 vs 84),
  though the paper itself does not say so. We did not choose the other reading,
  polarity F1 on gold-present slots only, because no source for it was found.
* **4-class macro F1** (:func:`macro_f1_4class`, not in the paper): the macro F1 over
  the 4 classes of all N x A slots pooled.

Deviation: the reproduction code counts ``{OTHERS}`` as an 11th aspect in aspect
detection. Our data pipeline drops ``{OTHERS}`` (it has no polarity), so the aspect
F1 here averages over the 10 real aspects only.

Empty classes follow scikit-learn's ``f1_score(..., zero_division=0)`` with an explicit
label list. F1 = 2·TP / (2·TP + FP + FN) is 0 for a class that has support or
predictions but no true positive. A class with neither support nor predictions (0 / 0)
also scores 0 and still counts in the mean. This can happen to a rare pair such as
STORAGE#neutral in a small split.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


ASPECTS = ("BATTERY", "CAMERA", "DESIGN", "FEATURES", "GENERAL", "PERFORMANCE", "PRICE",
           "SCREEN", "SER&ACC", "STORAGE")
POLARITIES = ("absent", "positive", "negative", "neutral")
_NUM_POLARITIES = len(POLARITIES)


def _check_absa_array(name: str, array) -> np.ndarray:
  array = np.asarray(array)
  if not (np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_):
    raise ValueError(f"{name} must be an integer array, expected an int dtype, got "
                     f"dtype {array.dtype}")
  if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
    raise ValueError(f"{name} must be 2-D [N, A] with N, A >= 1, got shape "
                     f"{array.shape}")
  low, high = int(array.min()), int(array.max())
  if low < 0 or high >= _NUM_POLARITIES:
    raise ValueError(f"{name} must hold values in [0, {_NUM_POLARITIES - 1}] "
                     f"({', '.join(POLARITIES)}), got values in [{low}, {high}]")
  return array.astype(np.int64)


def _absa_confusions(labels, predictions) -> np.ndarray:
  """Per-aspect 4 x 4 confusion matrices ``[A, 4, 4]`` (rows = true, columns =
  predicted), after validating both arrays."""
  labels = _check_absa_array("labels", labels)
  predictions = _check_absa_array("predictions", predictions)
  if labels.shape != predictions.shape:
    raise ValueError(f"predictions must have the shape of labels, expected "
                     f"{labels.shape}, got {predictions.shape}")
  num_aspects = labels.shape[1]
  k = _NUM_POLARITIES
  index = (np.arange(num_aspects) * k * k)[None, :] + labels * k + predictions
  counts = np.bincount(index.ravel(), minlength=num_aspects * k * k)
  return counts.reshape(num_aspects, k, k).astype(np.float64)


def _f1_from_counts(tp: np.ndarray, support: np.ndarray,
                    predicted: np.ndarray) -> np.ndarray:
  """2·TP / (support + predicted), 0 where both are 0 (sklearn's zero_division=0)."""
  denom = support + predicted
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)


def aspect_detection_f1(labels, predictions) -> dict:
  """Aspect-detection F1: per aspect, binary F1 of "aspect present" (slot != 0).

  Equals ``sklearn.metrics.f1_score(labels != 0, predictions != 0, average=None /
  "macro", zero_division=0)`` on the ``[N, A]`` indicator matrices: the macro F1 is
  the plain mean over aspects. An aspect that is neither present nor predicted in
  any review scores 0 (sklearn's ``zero_division=0``), and it still counts in the mean.

  Args:
    labels: int ``[N, A]``, values in {0 absent, 1 positive, 2 negative, 3 neutral}.
    predictions: int ``[N, A]``, same coding.

  Returns:
    ``{"macro_f1": float, "per_aspect": [A floats]}``, all in [0, 1].

  Raises:
    ValueError: a non-integer dtype, not 2-D, values outside [0, 3], or shapes that
      differ; the message names the argument, the expected and the actual value.

  References:
    Phan et al., KSEM 2021 (SA2SL; UIT-ViSFD), "aspect task" F1. The definition
    follows the reproduction code hatuki0604/mysentiment ``baseline/naivebayes.py``;
    see the module docstring.

  Examples:
    >>> y = np.array([[1, 0], [2, 1], [0, 3], [1, 1]])
    >>> p = np.array([[1, 1], [1, 1], [0, 0], [0, 1]])
    >>> r = aspect_detection_f1(y, p)
    >>> round(r["macro_f1"], 4), [round(f, 4) for f in r["per_aspect"]]
    (0.7333, [0.8, 0.6667])
  """
  confusion = _absa_confusions(labels, predictions)
  tp = confusion[:, 1:, 1:].sum(axis=(1, 2))
  support = confusion[:, 1:, :].sum(axis=(1, 2))
  predicted = confusion[:, :, 1:].sum(axis=(1, 2))
  per_aspect = _f1_from_counts(tp, support, predicted)
  return {"macro_f1": float(np.mean(per_aspect)),
          "per_aspect": [float(f) for f in per_aspect]}


def aspect_sentiment_f1(labels, predictions) -> dict:
  """Sentiment (aspect-polarity) F1: per aspect, the macro F1 over the 3 polarities.

  Each aspect's score is ``sklearn.metrics.f1_score(labels[:, a], predictions[:, a],
  labels=[1, 2, 3], average="macro", zero_division=0)``. "Absent" is never a target
  class but takes part in the counts. A polarity predicted for an absent aspect is a
  false positive, and a polarity missed because the aspect was not detected is a false
  negative. The macro F1 is the mean over aspects. That equals the macro F1 over the
  ``A x 3`` binary ASPECT#POLARITY labels, as the reproduction code computes it. A
  polarity that an aspect neither has nor gets predicted (0 / 0) scores 0
  (``zero_division=0``) and still counts.

  Args:
    labels: int ``[N, A]``, values in {0 absent, 1 positive, 2 negative, 3 neutral}.
    predictions: int ``[N, A]``, same coding.

  Returns:
    ``{"macro_f1": float, "per_aspect": [A floats]}``, all in [0, 1].

  Raises:
    ValueError: as :func:`aspect_detection_f1`.

  References:
    Phan et al., KSEM 2021 (SA2SL; UIT-ViSFD), "sentiment task" F1. The definition
    follows hatuki0604/mysentiment ``baseline/naivebayes.py`` ("Sentiment Detection:
    aspect#polarity"); see the module docstring.

  Examples:
    >>> y = np.array([[1, 0], [2, 1], [0, 3], [1, 1]])
    >>> p = np.array([[1, 1], [1, 1], [0, 0], [0, 1]])
    >>> r = aspect_sentiment_f1(y, p)
    >>> round(r["macro_f1"], 4), [round(f, 4) for f in r["per_aspect"]]
    (0.2167, [0.1667, 0.2667])
  """
  confusion = _absa_confusions(labels, predictions)
  polar = np.arange(1, _NUM_POLARITIES)
  tp = confusion[:, polar, polar]
  support = confusion.sum(axis=2)[:, 1:]
  predicted = confusion.sum(axis=1)[:, 1:]
  per_aspect = _f1_from_counts(tp, support, predicted).mean(axis=1)
  return {"macro_f1": float(np.mean(per_aspect)),
          "per_aspect": [float(f) for f in per_aspect]}


def macro_f1_4class(labels, predictions) -> float:
  """4-class macro F1 over all ``N x A`` aspect slots pooled.

  Equals ``sklearn.metrics.f1_score(labels.ravel(), predictions.ravel(), labels=[0, 1,
  2, 3], average="macro", zero_division=0)``. All four classes always count. A class
  absent from both arrays scores 0 and still counts. (``macro_f1(confusion)`` above
  drops such a class instead. The two agree whenever every class occurs, as on the
  real splits.)

  Raises:
    ValueError: as :func:`aspect_detection_f1`.

  Examples:
    >>> y = np.array([[1, 0], [2, 1], [0, 3], [1, 1]])
    >>> p = np.array([[1, 1], [1, 1], [0, 0], [0, 1]])
    >>> round(macro_f1_4class(y, p), 4)
    0.2667
  """
  confusion = _absa_confusions(labels, predictions).sum(axis=0)
  per_class = _f1_from_counts(np.diag(confusion), confusion.sum(axis=1),
                              confusion.sum(axis=0))
  return float(np.mean(per_class))


def absa_report(labels, predictions, aspect_names: Sequence[str] = ASPECTS) -> dict:
  """Aspect F1, sentiment F1, per-aspect F1 and 4-class macro F1 as plain Python numbers.

  Args:
    labels: int ``[N, A]``, values in {0 absent, 1 positive, 2 negative, 3 neutral}.
    predictions: int ``[N, A]``, same coding.
    aspect_names: A names that key ``per_aspect_f1`` (default :data:`ASPECTS`).

  Returns:
    ``{"aspect_f1": float, "sentiment_f1": float, "per_aspect_f1": {name: {"aspect":
    float, "sentiment": float}}, "macro_f1_4class": float}``, the keys
    ``summary.json`` uses.

  Raises:
    ValueError: as :func:`aspect_detection_f1`, or ``aspect_names`` of a length other
      than A or with repeated names.

  Examples:
    >>> y = np.array([[1, 0], [2, 1], [0, 3], [1, 1]])
    >>> p = np.array([[1, 1], [1, 1], [0, 0], [0, 1]])
    >>> r = absa_report(y, p, aspect_names=("BATTERY", "CAMERA"))
    >>> round(r["aspect_f1"], 4), round(r["sentiment_f1"], 4)
    (0.7333, 0.2167)
    >>> {k: round(v, 4) for k, v in r["per_aspect_f1"]["CAMERA"].items()}
    {'aspect': 0.6667, 'sentiment': 0.2667}
  """
  aspect = aspect_detection_f1(labels, predictions)
  sentiment = aspect_sentiment_f1(labels, predictions)
  aspect_names = tuple(aspect_names)
  if len(aspect_names) != len(aspect["per_aspect"]):
    raise ValueError(f"aspect_names must name every aspect column, expected "
                     f"{len(aspect['per_aspect'])} names, got {len(aspect_names)}")
  if len(set(aspect_names)) != len(aspect_names):
    raise ValueError(f"aspect_names must be distinct, got {aspect_names}")
  return {
      "aspect_f1": aspect["macro_f1"],
      "sentiment_f1": sentiment["macro_f1"],
      "per_aspect_f1": {
          name: {"aspect": a, "sentiment": s}
          for name, a, s in zip(aspect_names, aspect["per_aspect"],
                                sentiment["per_aspect"])},
      "macro_f1_4class": macro_f1_4class(labels, predictions),
  }


# Joint-NLU metrics (see the module docstring for the definitions and sources).
