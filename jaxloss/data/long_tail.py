"""Dataset-independent long-tailed split logic.

The long-tailed benchmarks used by the imbalance literature (CIFAR-10-LT,
CIFAR-100-LT, ImageNet-LT) are made from a balanced pool by keeping an
exponentially decaying number of examples per class, while the test set stays
balanced. This module holds that rule and the split built from it, as pure NumPy
functions of their inputs (the same seed always gives the same indices), so that
every TFDS builder in :mod:`jaxloss.data` shares one implementation.

References:
  Cui, Jia, Lin, Song and Belongie, *Class-Balanced Loss Based on Effective
  Number of Samples*, CVPR 2019.
  Cao, Wei, Gaidon, Arechiga and Ma, *Learning Imbalanced Datasets with
  Label-Distribution-Aware Margin Loss*, NeurIPS 2019.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

__all__ = [
    "long_tailed_counts",
    "make_long_tailed_split",
    "min_class_count",
    "validate_labels",
]


def _check_int(value: Any, name: str, *, minimum: int) -> int:
  """Returns ``value`` as an ``int`` or raises a ``ValueError`` naming it."""
  # bool is an Integral, but `True` as a class count is always a mistake.
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ValueError(
        f"{name} must be an integer >= {minimum}, got {value!r} "
        f"(type {type(value).__name__})."
    )
  if value < minimum:
    raise ValueError(f"{name} must be an integer >= {minimum}, got {value}.")
  return int(value)


def _check_imbalance_ratio(imbalance_ratio: Any) -> float:
  """Returns ``imbalance_ratio`` as a float or raises a ``ValueError``."""
  if isinstance(imbalance_ratio, bool) or not isinstance(
      imbalance_ratio, numbers.Real
  ):
    raise ValueError(
        "imbalance_ratio must be a finite real number >= 1, got "
        f"{imbalance_ratio!r} (type {type(imbalance_ratio).__name__})."
    )
  ratio = float(imbalance_ratio)
  if not np.isfinite(ratio) or ratio < 1.0:
    raise ValueError(
        f"imbalance_ratio must be a finite real number >= 1, got {ratio}."
    )
  return ratio


def long_tailed_counts(
    n_max: int, num_classes: int, imbalance_ratio: float
) -> np.ndarray:
  """Per-class example counts of an exponentially long-tailed split.

  Class ``c`` (0-based) keeps ``n_c = int(n_max * (1 / imbalance_ratio) **
  (c / (num_classes - 1)))`` examples: class 0 is the head with ``n_max``
  examples and class ``num_classes - 1`` the tail with ``int(n_max /
  imbalance_ratio)``. The floor with ``int`` and the exponent are exactly those
  of the CIFAR-10-LT reference code, so ``n_max=5000, num_classes=10,
  imbalance_ratio=100`` reproduces the published counts 5000, 2997, ..., 50.

  Args:
    n_max: number of examples of the head class (class 0); an integer >= 1.
    num_classes: number of classes ``C``; an integer >= 1. With one class the
      result is ``[n_max]``.
    imbalance_ratio: ``rho = n_head / n_tail``; a finite real number >= 1.
      ``1`` gives a balanced split.

  Returns:
    An ``int64`` array of shape ``[num_classes]``, non-increasing, with
    ``counts[0] == n_max``.

  Raises:
    ValueError: if ``n_max < 1``, ``num_classes < 1``, ``imbalance_ratio < 1``
      (or not finite), or if ``imbalance_ratio`` is so large that the tail
      class would get no example at all (``int(n_max / imbalance_ratio) < 1``).

  Examples:
    >>> long_tailed_counts(5000, 10, 100).tolist()
    [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    >>> long_tailed_counts(144, 10, 25).tolist()
    [144, 100, 70, 49, 34, 24, 16, 11, 8, 5]
    >>> long_tailed_counts(7, 3, 1).tolist()
    [7, 7, 7]

  References:
    Cao et al., *Learning Imbalanced Datasets with Label-Distribution-Aware
    Margin Loss*, NeurIPS 2019 (the CIFAR-10-LT construction).
    Cui et al., *Class-Balanced Loss Based on Effective Number of Samples*,
    CVPR 2019.
  """
  n_max = _check_int(n_max, "n_max", minimum=1)
  num_classes = _check_int(num_classes, "num_classes", minimum=1)
  ratio = _check_imbalance_ratio(imbalance_ratio)
  if num_classes == 1:
    return np.array([n_max], dtype=np.int64)
  # Same float expression as the reference implementation, so the floors agree
  # with the published CIFAR-10-LT / CIFAR-100-LT counts to the example.
  inv_ratio = 1.0 / ratio
  counts = np.array(
      [int(n_max * inv_ratio ** (c / (num_classes - 1.0)))
       for c in range(num_classes)],
      dtype=np.int64,
  )
  if counts[-1] < 1:
    raise ValueError(
        f"imbalance_ratio={ratio} is too large for n_max={n_max}: the tail "
        f"class (class {num_classes - 1}) would keep int({n_max} / {ratio}) = "
        f"{counts[-1]} examples; use imbalance_ratio <= n_max = {n_max}."
    )
  return counts


def min_class_count(
    n_max: int, num_classes: int, imbalance_ratio: float
) -> int:
  """Number of examples the rarest (tail) class keeps.

  Args:
    n_max: number of examples of the head class; an integer >= 1.
    num_classes: number of classes; an integer >= 1.
    imbalance_ratio: ``n_head / n_tail``; a finite real number >= 1.

  Returns:
    ``long_tailed_counts(n_max, num_classes, imbalance_ratio)[-1]`` as an int.

  Raises:
    ValueError: as :func:`long_tailed_counts`.

  Examples:
    >>> min_class_count(144, 10, 25)
    5
    >>> min_class_count(5000, 10, 100)
    50
  """
  return int(long_tailed_counts(n_max, num_classes, imbalance_ratio)[-1])


def validate_labels(
    labels: Any, num_classes: int, *, name: str = "labels"
) -> np.ndarray:
  """Checks that ``labels`` are integer class ids in ``[0, num_classes)``.

  Args:
    labels: array-like of integer class ids, any shape.
    num_classes: number of classes; an integer >= 1.
    name: the argument name to use in error messages.

  Returns:
    ``labels`` as a NumPy integer array (no copy when it already is one).

  Raises:
    ValueError: if ``num_classes`` is not an integer >= 1, if ``labels`` do not
      have an integer dtype (floats holding whole numbers and booleans are
      rejected too), or if any label lies outside ``[0, num_classes)``; the
      message names ``name``, the valid range and the first offending index and
      value.

  Examples:
    >>> validate_labels([0, 2, 1], 3).tolist()
    [0, 2, 1]
    >>> validate_labels([0, 3, 1], 3)
    Traceback (most recent call last):
      ...
    ValueError: labels must lie in [0, 3) (num_classes=3); labels[1] = 3 is out of range.
  """
  num_classes = _check_int(num_classes, "num_classes", minimum=1)
  arr = np.asarray(labels)
  if arr.dtype.kind not in ("i", "u"):
    raise ValueError(
        f"{name} must have an integer dtype (class ids in [0, {num_classes})), "
        f"got dtype {arr.dtype}."
    )
  bad = (arr < 0) | (arr >= num_classes)
  if np.any(bad):
    flat = int(np.flatnonzero(bad.ravel())[0])
    if arr.ndim == 1:
      where = f"{name}[{flat}]"
    else:
      position = ", ".join(str(int(i)) for i in np.unravel_index(flat, arr.shape))
      where = f"{name}[{position}]"
    raise ValueError(
        f"{name} must lie in [0, {num_classes}) (num_classes={num_classes}); "
        f"{where} = {arr.ravel()[flat]} is out of range."
    )
  return arr


def make_long_tailed_split(
    labels: Any,
    *,
    num_classes: int,
    imbalance_ratio: float,
    test_per_class: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
  """Splits a labelled pool into a long-tailed train set and a balanced test set.

  Two steps, per class ``c`` in order ``0 .. num_classes - 1``, from one
  ``np.random.default_rng(seed)``:

  1. Draw a random permutation of the class's examples. Its first
     ``test_per_class`` entries form the class's test examples, so the test set
     is balanced and stratified.
  2. The rest of the permutation is the class's remaining pool (itself a
     uniformly random order). The train set keeps its first ``n_c`` entries,
     where ``n_c = long_tailed_counts(n_max, num_classes, imbalance_ratio)[c]``
     and ``n_max`` is the *smallest* remaining pool over all classes. Taking the
     minimum guarantees that every class, including the head, can fill its
     quota from its own data; the price is that ``n_max`` is set by the rarest
     class of the original pool, not by the most frequent one.

  Class 0 is the head and class ``num_classes - 1`` the tail, as in
  CIFAR-10-LT. The result is a pure function of the arguments. Because the
  random draws do not depend on ``imbalance_ratio``, the same seed gives the
  same test set for every ``imbalance_ratio``, and the train set of a larger
  ratio is a subset of that of a smaller one.

  Args:
    labels: 1-D array-like of integer class ids in ``[0, num_classes)``, one
      per example of the pool; the returned indices point into it.
    num_classes: number of classes; an integer >= 1.
    imbalance_ratio: ``n_head / n_tail`` of the train split; a finite real
      number >= 1 (``1`` gives a balanced train split).
    test_per_class: number of test examples per class; an integer >= 1.
    seed: non-negative integer seed for ``np.random.default_rng``.

  Returns:
    ``(train_idx, test_idx)``: sorted ``int64`` index arrays into ``labels``,
    disjoint, of lengths ``sum(long_tailed_counts(...))`` and
    ``num_classes * test_per_class``.

  Raises:
    ValueError: if ``labels`` are not 1-D integers in ``[0, num_classes)``; if
      ``test_per_class < 1`` or ``seed < 0``; if a class has fewer than
      ``test_per_class + 1`` examples (the message names the class and its
      count); or if ``imbalance_ratio`` is invalid or too large (see
      :func:`long_tailed_counts`).

  Examples:
    >>> labels = [0] * 6 + [1] * 6 + [2] * 6
    >>> train, test = make_long_tailed_split(
    ...     labels, num_classes=3, imbalance_ratio=4, test_per_class=2, seed=0)
    >>> np.bincount(np.asarray(labels)[test]).tolist()
    [2, 2, 2]
    >>> np.bincount(np.asarray(labels)[train]).tolist()
    [4, 2, 1]
    >>> bool(np.intersect1d(train, test).size == 0)
    True

  References:
    Cao et al., *Learning Imbalanced Datasets with Label-Distribution-Aware
    Margin Loss*, NeurIPS 2019.
    Cui et al., *Class-Balanced Loss Based on Effective Number of Samples*,
    CVPR 2019.
  """
  num_classes = _check_int(num_classes, "num_classes", minimum=1)
  labels = validate_labels(labels, num_classes, name="labels")
  if labels.ndim != 1:
    raise ValueError(
        f"labels must be 1-D (one class id per example), got shape "
        f"{labels.shape}."
    )
  test_per_class = _check_int(test_per_class, "test_per_class", minimum=1)
  seed = _check_int(seed, "seed", minimum=0)
  ratio = _check_imbalance_ratio(imbalance_ratio)

  pool_counts = np.bincount(labels, minlength=num_classes)
  for c, count in enumerate(pool_counts):
    if count < test_per_class + 1:
      raise ValueError(
          f"class {c} has {count} examples in labels, but test_per_class="
          f"{test_per_class} needs at least {test_per_class + 1} (the test "
          "examples plus at least one train example)."
      )

  rng = np.random.default_rng(seed)
  test_parts, remaining = [], []
  for c in range(num_classes):
    perm = rng.permutation(np.flatnonzero(labels == c))
    test_parts.append(perm[:test_per_class])
    remaining.append(perm[test_per_class:])

  n_max = min(len(r) for r in remaining)
  counts = long_tailed_counts(n_max, num_classes, ratio)
  train_parts = [r[:n] for r, n in zip(remaining, counts)]

  train_idx = np.sort(np.concatenate(train_parts)).astype(np.int64)
  test_idx = np.sort(np.concatenate(test_parts)).astype(np.int64)
  return train_idx, test_idx
