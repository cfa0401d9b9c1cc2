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
