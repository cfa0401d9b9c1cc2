"""Classification metrics from confusion-matrix sums (computed on the host).

Devices accumulate a confusion matrix (sums and counts, as flax's examples and clu's
``Average`` do); the host turns it into per-class recall, UAR and WAR only on log steps.

WAR and UAR
-----------
*UAR* (unweighted average recall) is the plain mean of per-class recalls; on a balanced
test set it is the balanced accuracy (100 − "balanced error" in the long-tail papers).
*WAR* (weighted average recall) weights per-class recall by the class distribution the
model will meet. On a test set drawn from that distribution WAR is plain accuracy
(weights = the test support). Long-tail benchmarks carve a *balanced* test split, where
accuracy would equal UAR and hide the trade-off the recipe is about, so by default the
experiments weight recall by the *training* class distribution — the accuracy the model
would have on a test set with the training set's imbalance.

ABSA metrics for UIT-ViSFD (end of this file)
---------------------------------------------
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

Joint-NLU metrics (end of this file)
------------------------------------
Intent accuracy, slot (span) F1 and sentence ("semantic frame") accuracy, as JointBERT
reports them. Slot F1 is seqeval's default mode (conlleval semantics): a span counts
only when its type and both boundaries match, and an ``I-X`` that does not continue an
``X`` span (``O I-X``, ``B-Y I-X``) starts a new span instead of being dropped.
:func:`span_f1` wraps seqeval (it does not reimplement span extraction) and adds the span
counts and per-type scores; :func:`joint_nlu_report` adds the sentence-level numbers.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence
import warnings

import numpy as np


def per_class_recall(confusion: np.ndarray) -> np.ndarray:
  """Recall of each class from a confusion matrix (rows = true, columns = predicted).

  A class with no test examples gets recall NaN (undefined) and is left out of UAR.

  Args:
    confusion: ``[C, C]`` counts.

  Returns:
    float64 ``[C]``.

  Raises:
    ValueError: ``confusion`` not square, or negative.

  Examples:
    >>> per_class_recall(np.array([[8, 2], [1, 1]]))
    array([0.8, 0.5])
  """
  confusion = np.asarray(confusion, np.float64)
  if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
    raise ValueError(f"confusion must be a square [C, C] matrix, got shape "
                     f"{confusion.shape}")
  if (confusion < 0).any():
    raise ValueError("confusion must hold non-negative counts")
  support = confusion.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(support > 0, np.diag(confusion) / support, np.nan)


def uar(confusion: np.ndarray) -> float:
  """Unweighted average recall: mean per-class recall over classes with support."""
  return float(np.nanmean(per_class_recall(confusion)))


def war(confusion: np.ndarray, class_weights: Optional[Sequence[float]] = None) -> float:
  """Weighted average recall: per-class recall weighted by a class distribution.

  Args:
    confusion: ``[C, C]`` counts.
    class_weights: ``[C]`` non-negative weights (e.g. training class counts); None
      weights by the test support, which makes WAR equal plain accuracy.

  Returns:
    WAR in [0, 1], over classes with test support.

  Raises:
    ValueError: ``class_weights`` of the wrong length or negative.

  Examples:
    >>> c = np.array([[8, 2], [1, 1]])
    >>> round(war(c), 4), round(war(c, [1, 1]), 4), round(war(c, [3, 1]), 4)
    (0.75, 0.65, 0.725)
  """
  recall = per_class_recall(confusion)
  if class_weights is None:
    weights = np.asarray(confusion, np.float64).sum(axis=1)
  else:
    weights = np.asarray(class_weights, np.float64)
    if weights.shape != recall.shape:
      raise ValueError(f"class_weights must have shape {recall.shape}, got "
                       f"{weights.shape}")
    if (weights < 0).any():
      raise ValueError("class_weights must be non-negative")
  valid = ~np.isnan(recall)
  return float(np.sum(weights[valid] * recall[valid]) / np.sum(weights[valid]))


def accuracy(confusion: np.ndarray) -> float:
  """Plain accuracy (trace / total)."""
  confusion = np.asarray(confusion, np.float64)
  return float(np.trace(confusion) / confusion.sum())


def macro_f1(confusion: np.ndarray) -> float:
  """Macro-averaged F1 over classes with any support or prediction (sklearn's
  ``f1_score(average="macro")`` on the labels that occur)."""
  confusion = np.asarray(confusion, np.float64)
  tp = np.diag(confusion)
  support, predicted = confusion.sum(1), confusion.sum(0)
  denom = support + predicted
  valid = denom > 0
  return float(np.mean(2 * tp[valid] / denom[valid]))


def classification_report(confusion: np.ndarray,
                          war_weights: Optional[Sequence[float]] = None) -> dict:
  """WAR, UAR, accuracy, macro F1 and per-class recall as plain Python numbers.

  Raises:
    ValueError: a non-finite or negative confusion matrix (as big_vision checks
      metrics for finiteness before logging them).
  """
  confusion = np.asarray(confusion, np.float64)
  if not np.isfinite(confusion).all():
    raise ValueError("confusion matrix holds non-finite values")
  recall = per_class_recall(confusion)
  return {
      "war": war(confusion, war_weights),
      "uar": uar(confusion),
      "accuracy": accuracy(confusion),
      "macro_f1": macro_f1(confusion),
      "per_class_recall": [None if np.isnan(r) else float(r) for r in recall],
  }


# ABSA metrics for UIT-ViSFD (see the module docstring for the definitions and sources).

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


def _seqeval_labeling():
  """seqeval's ``sequence_labeling`` module, imported on first use so that the rest of
  this module works without seqeval."""
  try:
    from seqeval.metrics import sequence_labeling  # pylint: disable=g-import-not-at-top
  except ImportError as e:  # pragma: no cover - seqeval is a declared dependency
    raise ImportError("span_f1 and joint_nlu_report need seqeval: pip install "
                      "'seqeval>=1.2.2'") from e
  return sequence_labeling


def _tag_sentences(name: str, tags) -> list[list[str]]:
  """``tags`` as a list of lists of plain ``str``; TypeError for anything else."""
  if isinstance(tags, str):
    raise TypeError(f"{name} must be a sequence of sentences, each a sequence of tag "
                    f"strings, got the str {tags!r}")
  sentences = []
  for i, sentence in enumerate(tags):
    if isinstance(sentence, str):
      raise TypeError(f"{name}[{i}] must be a sequence of tag strings, got the str "
                      f"{sentence!r}")
    sentence = list(sentence)
    for tag in sentence:
      if not isinstance(tag, str):
        raise TypeError(f"{name}[{i}] must hold tag strings, got {tag!r} of type "
                        f"{type(tag).__name__}")
    sentences.append([str(tag) for tag in sentence])
  return sentences


def _check_tag_pairs(true_tags, pred_tags) -> tuple[list[list[str]], list[list[str]]]:
  """Validates the two tag sets sentence by sentence; returns them as lists of lists."""
  true_list = _tag_sentences("true_tags", true_tags)
  pred_list = _tag_sentences("pred_tags", pred_tags)
  if len(pred_list) != len(true_list):
    raise ValueError(f"pred_tags must have one tag sequence per sentence of true_tags, "
                     f"expected {len(true_list)} sentences, got {len(pred_list)}")
  if not true_list:
    raise ValueError("true_tags and pred_tags must hold at least one sentence, got none")
  for i, (t, p) in enumerate(zip(true_list, pred_list)):
    if len(t) != len(p):
      raise ValueError(f"sentence {i}: true_tags has {len(t)} tags but pred_tags has "
                       f"{len(p)}; both must be cut to the sentence's length")
  return true_list, pred_list


def span_f1(true_tags: Sequence[Sequence[str]],
            pred_tags: Sequence[Sequence[str]]) -> dict:
  """Span (chunk) precision, recall and F1 of BIO tags, seqeval's default mode.

  Spans come from ``seqeval.metrics.sequence_labeling.get_entities`` and the scores
  from seqeval's ``precision_recall_fscore_support`` (default mode, the semantics of
  CoNLL's ``conlleval`` script), so ``f1`` equals ``seqeval.metrics.f1_score(true_tags,
  pred_tags)``. A predicted span is correct only when its type and both boundaries
  match a gold span. An ``I-X`` that does not continue an ``X`` span (after ``O``,
  after ``B-Y``, at the start) starts a new span, as in conlleval.

  With no span at all, or no correct one, the scores are 0 (seqeval's
  ``zero_division=0``); seqeval's ``UndefinedMetricWarning`` is silenced. Tags that are
  not ``O``/``B-``/``I-`` are passed to seqeval as they are: it warns "PAD seems not to
  be NE tag" and reads ``PAD`` as a one-token span of type ``AD`` (``UNK``: type
  ``NK``), so a predicted special tag is a false-positive span, as in JointBERT, which
  scores its raw slot predictions with seqeval too.

  Args:
    true_tags: gold tags, one sequence of tag strings per sentence, cut to the
      sentence's length.
    pred_tags: predicted tags, same layout.

  Returns:
    ``{"precision", "recall", "f1"}``: micro averages over spans, floats in [0, 1];
    ``{"num_true", "num_pred", "num_correct"}``: span counts (ints); ``"per_type"``:
    ``{type: {"precision", "recall", "f1", "support"}}`` for every type seen in either
    set (support = gold spans of that type), in sorted type order.

  Raises:
    TypeError: a tag set, sentence or tag of the wrong type (a str where a sequence
      of tags is expected, a non-str tag).
    ValueError: no sentence, a different number of sentences, or a sentence whose
      two tag sequences differ in length (the message names the sentence index and
      both lengths).

  References:
    Nakayama, seqeval (https://github.com/chakki-works/seqeval), default mode;
    Tjong Kim Sang & De Meulder, "Introduction to the CoNLL-2003 Shared Task", CoNLL
    2003 (the ``conlleval`` span F1).

  Examples:
    >>> r = span_f1([["B-loc", "I-loc", "O", "B-per"]], [["B-loc", "O", "O", "B-per"]])
    >>> r["num_true"], r["num_pred"], r["num_correct"]
    (2, 2, 1)
    >>> r["precision"], r["recall"], r["f1"]
    (0.5, 0.5, 0.5)
    >>> r["per_type"]["loc"]
    {'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'support': 1}
  """
  from sklearn.exceptions import (  # pylint: disable=g-import-not-at-top
      UndefinedMetricWarning)
  true_list, pred_list = _check_tag_pairs(true_tags, pred_tags)
  labeling = _seqeval_labeling()
  spans = []
  for tags in (true_list, pred_list):
    by_type = {}
    for type_, start, end in labeling.get_entities(tags):
      by_type.setdefault(type_, set()).add((start, end))
    spans.append(by_type)
  true_spans, pred_spans = spans
  types = sorted(set(true_spans) | set(pred_spans))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UndefinedMetricWarning)
    precision, recall, f1, _ = labeling.precision_recall_fscore_support(
        true_list, pred_list, average="micro", zero_division=0)
    per_p, per_r, per_f, per_s = labeling.precision_recall_fscore_support(
        true_list, pred_list, average=None, zero_division=0)
  if len(per_p) != len(types):  # seqeval orders its per-type arrays by sorted type
    raise AssertionError(f"seqeval returned {len(per_p)} types, expected {types}")
  empty = set()
  return {
      "precision": float(precision),
      "recall": float(recall),
      "f1": float(f1),
      "num_true": sum(len(s) for s in true_spans.values()),
      "num_pred": sum(len(s) for s in pred_spans.values()),
      "num_correct": sum(len(s & pred_spans.get(t, empty))
                         for t, s in true_spans.items()),
      "per_type": {
          t: {"precision": float(p), "recall": float(r), "f1": float(f),
              "support": int(s)}
          for t, p, r, f, s in zip(types, per_p, per_r, per_f, per_s)},
  }


def _check_ids(name: str, ids, num: Optional[int] = None) -> np.ndarray:
  """A 1-D array of non-negative integer ids (of length ``num`` when given)."""
  ids = np.asarray(ids)
  if not (np.issubdtype(ids.dtype, np.integer) and ids.dtype != np.bool_):
    raise ValueError(f"{name} must be an integer array of ids, got dtype {ids.dtype}")
  if ids.ndim != 1:
    raise ValueError(f"{name} must be 1-D [N], got shape {ids.shape}")
  if num is not None and ids.shape[0] != num:
    raise ValueError(f"{name} must have one id per sentence, expected {num}, got "
                     f"{ids.shape[0]}")
  if ids.size and ids.min() < 0:
    raise ValueError(f"{name} must hold ids >= 0, got {ids.min()}")
  return ids.astype(np.int64)


def joint_nlu_report(*, intent_true, intent_pred,
                     tags_true: Sequence[Sequence[str]],
                     tags_pred: Sequence[Sequence[str]],
                     o_tag: str = "O",
                     label_true: Optional[Mapping[str, np.ndarray]] = None,
                     label_pred: Optional[Mapping[str, np.ndarray]] = None,
                     intent_names: Optional[Sequence[str]] = None) -> dict:
  """Intent accuracy, slot F1, sentence accuracy and collapse signals of a joint model.

  * ``intent_accuracy``: share of sentences with the right intent.
  * ``slot_f1``, ``slot_precision``, ``slot_recall``: :func:`span_f1` (seqeval,
    conlleval semantics) over all sentences.
  * ``sentence_accuracy``: share of sentences whose intent *and* every tag are right
    (JointBERT's "semantic frame accuracy"), and every extra sentence label too
    (``label_true`` / ``label_pred``, e.g. a command field) when given.
  * ``accuracy/<field>``: accuracy of each extra sentence label.
  * ``pred_non_o_share`` / ``true_non_o_share``: share of predicted / gold tokens that
    are not ``o_tag`` (0.0 when there is no token). A tagger collapsed onto ``O`` has
    ``pred_non_o_share`` near 0 while ``true_non_o_share`` is not.
  * ``top_intent_share``: the largest share of the predictions that any one intent
    takes; ``top_intent``: that intent (the smallest id on a tie), its id, or its
    name when ``intent_names`` is given. A head collapsed onto one intent has a share
    near 1.
  * ``num_sentences``: N.

  Args:
    intent_true: int ``[N]`` gold intent ids (>= 0).
    intent_pred: int ``[N]`` predicted intent ids.
    tags_true: N gold tag sequences (strings), each cut to its sentence's length.
    tags_pred: N predicted tag sequences, same lengths.
    o_tag: the outside tag.
    label_true: ``{field: array [N, ...]}``, extra sentence-level gold labels, or
      None. A sentence's label is right when all its entries equal the prediction.
    label_pred: ``{field: array}`` with the same fields and shapes, or None.
    intent_names: names indexed by intent id (used for ``top_intent``), or None.

  Returns:
    A dict of plain Python numbers (``top_intent``: int or str), keys as above.

  Raises:
    ValueError: intent ids not 1-D integer ``[N]`` or negative, or out of range of
      ``intent_names``; tags as in :func:`span_f1` (N sentences each); only one of
      ``label_true`` / ``label_pred`` given, their fields differ, or an array's shape
      is not ``[N, ...]`` or differs between the two.
    TypeError: tags of the wrong type, as in :func:`span_f1`.

  References:
    Chen, Zhuo & Wang, "BERT for Joint Intent Classification and Slot Filling",
    arXiv:1902.10909 (intent accuracy, slot F1, sentence-level semantic frame
    accuracy). The definitions follow JointBERT's ``utils.py`` (``get_intent_acc``,
    ``get_slot_metrics`` with seqeval, ``get_sentence_frame_acc``), as found in forks
    of monologg/JointBERT.

  Examples:
    >>> r = joint_nlu_report(
    ...     intent_true=np.array([0, 1, 1]), intent_pred=np.array([0, 1, 0]),
    ...     tags_true=[["B-loc", "O"], ["O", "B-per"], ["O"]],
    ...     tags_pred=[["B-loc", "O"], ["O", "O"], ["O"]],
    ...     intent_names=["weather", "call"])
    >>> round(r["intent_accuracy"], 4), round(r["sentence_accuracy"], 4)
    (0.6667, 0.3333)
    >>> r["slot_precision"], r["slot_recall"], round(r["slot_f1"], 4)
    (1.0, 0.5, 0.6667)
    >>> r["pred_non_o_share"], r["true_non_o_share"]
    (0.2, 0.4)
    >>> round(r["top_intent_share"], 4), r["top_intent"]
    (0.6667, 'weather')
  """
  intent_true = _check_ids("intent_true", intent_true)
  num = intent_true.shape[0]
  intent_pred = _check_ids("intent_pred", intent_pred, num)
  true_list, pred_list = _check_tag_pairs(tags_true, tags_pred)
  if len(true_list) != num:
    raise ValueError(f"tags_true must have one tag sequence per sentence, expected "
                     f"{num} (the length of intent_true), got {len(true_list)}")
  if intent_names is not None:
    intent_names = list(intent_names)
    high = int(max(intent_true.max(), intent_pred.max()))
    if high >= len(intent_names):
      raise ValueError(f"intent_names must name every intent id, got {len(intent_names)} "
                       f"names but id {high}")
  if (label_true is None) != (label_pred is None):
    raise ValueError("give both label_true and label_pred, or neither")
  label_true = dict(label_true or {})
  label_pred = dict(label_pred or {})
  if set(label_true) != set(label_pred):
    raise ValueError(f"label_true and label_pred must have the same fields, got "
                     f"{sorted(label_true)} and {sorted(label_pred)}")

  intent_ok = intent_true == intent_pred
  tags_ok = np.array([t == p for t, p in zip(true_list, pred_list)], bool)
  sentence_ok = intent_ok & tags_ok
  field_accuracy = {}
  for field in label_true:
    y, p = np.asarray(label_true[field]), np.asarray(label_pred[field])
    if y.ndim < 1 or y.shape[0] != num:
      raise ValueError(f"label_true[{field!r}] must have shape [N, ...] with N = {num}, "
                       f"got {y.shape}")
    if p.shape != y.shape:
      raise ValueError(f"label_pred[{field!r}] must have the shape of "
                       f"label_true[{field!r}], expected {y.shape}, got {p.shape}")
    ok = (y == p).reshape(num, -1).all(axis=1)
    field_accuracy[f"accuracy/{field}"] = float(ok.mean())
    sentence_ok &= ok

  slots = span_f1(true_list, pred_list)
  num_tokens = sum(len(t) for t in true_list)

  def non_o_share(sentences):
    if num_tokens == 0:
      return 0.0
    return sum(tag != o_tag for s in sentences for tag in s) / num_tokens

  counts = np.bincount(intent_pred)
  top = int(np.argmax(counts))
  return {
      "intent_accuracy": float(intent_ok.mean()),
      "slot_f1": slots["f1"],
      "slot_precision": slots["precision"],
      "slot_recall": slots["recall"],
      "sentence_accuracy": float(sentence_ok.mean()),
      **field_accuracy,
      "pred_non_o_share": float(non_o_share(pred_list)),
      "true_non_o_share": float(non_o_share(true_list)),
      "top_intent_share": float(counts[top] / num),
      "top_intent": intent_names[top] if intent_names is not None else top,
      "num_sentences": num,
  }
