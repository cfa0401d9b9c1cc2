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
"""

from __future__ import annotations

from typing import Optional, Sequence

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
