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

Candidate reranking (end of this file)
--------------------------------------
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


def shot_groups(class_counts, *, many: int = 1000, few: int = 200) -> dict[str, list[int]]:
  """Splits classes into many / medium / few shot by their training counts.

  The convention of the long-tail literature (Liu et al., *Large-Scale Long-Tailed
  Recognition in an Open World*, CVPR 2019, for ImageNet-LT; applied to CIFAR-10-LT at
  ρ = 100): *many* has more than ``many`` training images, *few* fewer than ``few``,
  *medium* the rest (``few`` to ``many`` inclusive).

  Args:
    class_counts: int ``[C]`` training images per class.
    many: the many-shot threshold (exclusive).
    few: the few-shot threshold (exclusive).

  Returns:
    ``{"many": [...], "medium": [...], "few": [...]}`` class indices (ascending).

  Raises:
    ValueError: ``few > many``, or counts that are not a 1-D non-negative array.

  Examples:
    >>> shot_groups([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])
    {'many': [0, 1, 2, 3], 'medium': [4, 5, 6], 'few': [7, 8, 9]}
  """
  counts = np.asarray(class_counts)
  if counts.ndim != 1 or counts.size == 0 or (counts < 0).any():
    raise ValueError(f"class_counts must be a 1-D array of non-negative counts, got "
                     f"{counts.tolist()}")
  if few > many:
    raise ValueError(f"few ({few}) must be <= many ({many})")
  return {"many": [int(c) for c in np.flatnonzero(counts > many)],
          "medium": [int(c) for c in np.flatnonzero((counts >= few) & (counts <= many))],
          "few": [int(c) for c in np.flatnonzero(counts < few)]}


def shot_accuracy(confusion: np.ndarray, class_counts, *, many: int = 1000,
                  few: int = 200) -> dict:
  """Many / medium / few-shot accuracy: the share of correct predictions among the
  test examples of each group of :func:`shot_groups` (on a balanced test set, the mean
  recall of the group's classes).

  Args:
    confusion: ``[C, C]`` counts (rows = true class, columns = predicted).
    class_counts: ``[C]`` *training* images per class (they define the groups).
    many: the many-shot threshold; few: the few-shot threshold.

  Returns:
    ``{"many_shot", "medium_shot", "few_shot"}`` as floats in [0, 1], None for an empty
    group.

  Raises:
    ValueError: ``confusion`` not ``[C, C]`` for the ``C`` of ``class_counts``; see
      :func:`shot_groups`.

  Examples:
    >>> confusion = np.diag([9.0, 8.0, 1.0]) + np.array([[0, 1, 0], [2, 0, 0], [9, 0, 0]])
    >>> shot_accuracy(confusion, [2000, 500, 10])
    {'many_shot': 0.9, 'medium_shot': 0.8, 'few_shot': 0.1}
  """
  confusion = np.asarray(confusion, np.float64)
  counts = np.asarray(class_counts)
  if confusion.shape != (counts.size, counts.size):
    raise ValueError(f"confusion must be [C, C] with C = {counts.size} (the classes of "
                     f"class_counts), got shape {confusion.shape}")
  out = {}
  for name, classes in shot_groups(counts, many=many, few=few).items():
    total = confusion[classes].sum()
    out[f"{name}_shot"] = (float(np.trace(confusion[np.ix_(classes, classes)]) / total)
                           if classes and total > 0 else None)
  return out


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


# Candidate reranking (see the module docstring for the protocol and sources).


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
