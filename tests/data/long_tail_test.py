"""Tests for jaxloss.data.long_tail."""

import numpy as np
import pytest

from jaxloss.data import long_tail


# --------------------------------------------------------------------------
# long_tailed_counts
# --------------------------------------------------------------------------


def test_counts_reproduce_cifar10_lt_rho100():
  # The published CIFAR-10-LT train counts (Cao et al., 2019) for rho = 100.
  counts = long_tail.long_tailed_counts(5000, 10, 100)
  np.testing.assert_array_equal(
      counts, [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
  )
  assert counts.dtype == np.int64


def test_counts_reproduce_cifar10_lt_rho10():
  # rho = 10 from the same construction, worked by hand:
  # int(5000 * 0.1 ** (c / 9)) for c = 0..9.
  np.testing.assert_array_equal(
      long_tail.long_tailed_counts(5000, 10, 10),
      [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500],
  )


def test_counts_rho1_is_balanced():
  np.testing.assert_array_equal(
      long_tail.long_tailed_counts(37, 5, 1), [37, 37, 37, 37, 37]
  )
  np.testing.assert_array_equal(
      long_tail.long_tailed_counts(37, 5, 1.0), [37] * 5
  )


def test_counts_single_class_and_two_classes():
  np.testing.assert_array_equal(long_tail.long_tailed_counts(9, 1, 50), [9])
  # Two classes: head n_max, tail int(n_max / rho).
  np.testing.assert_array_equal(long_tail.long_tailed_counts(100, 2, 3), [100, 33])


def test_counts_non_integer_ratio():
  # int(10 * 0.4 ** (c / 2)) = int(10), int(6.3245...), int(4.0) (float 4.000...).
  counts = long_tail.long_tailed_counts(10, 3, 2.5)
  np.testing.assert_array_equal(counts, [10, 6, 4])


def test_counts_non_increasing_and_head_is_n_max():
  counts = long_tail.long_tailed_counts(1234, 17, 37.5)
  assert counts[0] == 1234
  assert np.all(np.diff(counts) <= 0)
  assert counts[-1] == int(1234 / 37.5)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(n_max=100, num_classes=10, imbalance_ratio=0.5), "imbalance_ratio"),
        (dict(n_max=100, num_classes=10, imbalance_ratio=float("nan")),
         "imbalance_ratio"),
        (dict(n_max=100, num_classes=10, imbalance_ratio=float("inf")),
         "imbalance_ratio"),
        (dict(n_max=100, num_classes=10, imbalance_ratio="10"), "imbalance_ratio"),
        (dict(n_max=100, num_classes=0, imbalance_ratio=10), "num_classes"),
        (dict(n_max=100, num_classes=2.0, imbalance_ratio=10), "num_classes"),
        (dict(n_max=0, num_classes=10, imbalance_ratio=10), "n_max"),
        (dict(n_max=-3, num_classes=10, imbalance_ratio=10), "n_max"),
        (dict(n_max=True, num_classes=10, imbalance_ratio=10), "n_max"),
    ],
)
def test_counts_bad_arguments_name_the_argument(kwargs, name):
  with pytest.raises(ValueError, match=f"^{name} must"):
    long_tail.long_tailed_counts(**kwargs)


def test_counts_ratio_that_empties_the_tail_raises():
  # int(10 / 11) == 0: the tail would have no example.
  with pytest.raises(ValueError, match=r"imbalance_ratio=11.0 is too large"):
    long_tail.long_tailed_counts(10, 3, 11)
  # rho == n_max is the largest allowed ratio: the tail keeps exactly one.
  assert long_tail.long_tailed_counts(10, 3, 10)[-1] == 1


def test_counts_accept_numpy_scalars():
  np.testing.assert_array_equal(
      long_tail.long_tailed_counts(np.int64(5000), np.int32(10), np.float32(100)),
      [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50],
  )


def test_min_class_count():
  assert long_tail.min_class_count(5000, 10, 100) == 50
  assert long_tail.min_class_count(144, 10, 25) == 5
  assert long_tail.min_class_count(144, 10, 30) == 4


# --------------------------------------------------------------------------
# validate_labels
# --------------------------------------------------------------------------


def test_validate_labels_accepts_valid_labels_and_returns_array():
  out = long_tail.validate_labels([0, 9, 3], 10)
  assert isinstance(out, np.ndarray)
  np.testing.assert_array_equal(out, [0, 9, 3])
  np.testing.assert_array_equal(
      long_tail.validate_labels(np.array([0, 1], np.uint8), 2), [0, 1]
  )


def test_validate_labels_too_large_names_index_value_and_range():
  with pytest.raises(ValueError) as err:
    long_tail.validate_labels([0, 3, 10, 11], 10)
  msg = str(err.value)
  assert msg.startswith("labels must lie in [0, 10)")
  assert "labels[2] = 10" in msg  # the *first* offending entry


def test_validate_labels_negative():
  with pytest.raises(ValueError, match=r"labels\[1\] = -1 is out of range"):
    long_tail.validate_labels(np.array([2, -1, 0]), 3)


def test_validate_labels_custom_name_and_multi_dim_index():
  with pytest.raises(ValueError, match=r"^targets must lie in \[0, 4\).*"
                     r"targets\[1, 0\] = 7"):
    long_tail.validate_labels([[0, 1], [7, 2]], 4, name="targets")


@pytest.mark.parametrize(
    "labels", [[0.0, 1.0], np.array([True, False]), ["0", "1"]]
)
def test_validate_labels_rejects_non_integer_dtypes(labels):
  with pytest.raises(ValueError, match=r"^labels must have an integer dtype"):
    long_tail.validate_labels(labels, 3)


def test_validate_labels_bad_num_classes():
  with pytest.raises(ValueError, match=r"^num_classes must be an integer >= 1"):
    long_tail.validate_labels([0], 0)


# --------------------------------------------------------------------------
# make_long_tailed_split
# --------------------------------------------------------------------------


def _pool(sizes, seed=123):
  """A shuffled label pool with `sizes[c]` examples of class c."""
  labels = np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])
  return np.random.default_rng(seed).permutation(labels)


_SIZES = [60, 55, 70, 52, 64]  # min 52 -> 52 - 10 = 42 left after the test carve


def _split(labels=None, **overrides):
  kwargs = dict(num_classes=5, imbalance_ratio=10, test_per_class=10, seed=0)
  kwargs.update(overrides)
  return long_tail.make_long_tailed_split(
      _pool(_SIZES) if labels is None else labels, **kwargs
  )


def test_split_test_is_balanced_and_train_follows_long_tail_counts():
  labels = _pool(_SIZES)
  train, test = _split(labels)
  np.testing.assert_array_equal(np.bincount(labels[test], minlength=5), [10] * 5)
  # n_max = min remaining pool = 52 - 10 = 42; int(42 * 0.1 ** (c / 4)).
  expected = long_tail.long_tailed_counts(42, 5, 10)
  np.testing.assert_array_equal(expected, [42, 23, 13, 7, 4])
  np.testing.assert_array_equal(np.bincount(labels[train], minlength=5), expected)


def test_split_indices_are_sorted_int64_disjoint_and_in_range():
  labels = _pool(_SIZES)
  train, test = _split(labels)
  for idx in (train, test):
    assert idx.dtype == np.int64
    assert np.all(np.diff(idx) > 0)  # sorted, no duplicates
    assert idx.min() >= 0 and idx.max() < len(labels)
  assert np.intersect1d(train, test).size == 0


def test_split_is_deterministic_for_a_seed_and_changes_with_the_seed():
  train_a, test_a = _split(seed=7)
  train_b, test_b = _split(seed=7)
  np.testing.assert_array_equal(train_a, train_b)
  np.testing.assert_array_equal(test_a, test_b)
  train_c, test_c = _split(seed=8)
  assert not np.array_equal(test_a, test_c)
  assert not np.array_equal(train_a, train_c)


def test_split_does_not_mutate_labels_and_accepts_lists():
  labels = _pool(_SIZES)
  before = labels.copy()
  train, test = _split(labels)
  np.testing.assert_array_equal(labels, before)
  train_l, test_l = _split(labels.tolist())
  np.testing.assert_array_equal(train, train_l)
  np.testing.assert_array_equal(test, test_l)


def test_split_test_set_does_not_depend_on_ratio_and_train_sets_nest():
  _, test_10 = _split(imbalance_ratio=10)
  train_1, test_1 = _split(imbalance_ratio=1)
  train_10, _ = _split(imbalance_ratio=10)
  np.testing.assert_array_equal(test_1, test_10)
  assert np.all(np.isin(train_10, train_1))


def test_split_rho1_gives_balanced_train():
  labels = _pool(_SIZES)
  train, _ = _split(labels, imbalance_ratio=1)
  np.testing.assert_array_equal(np.bincount(labels[train]), [42] * 5)


@pytest.mark.parametrize("bad_label", [5, -1])
def test_split_out_of_range_labels_raise_naming_labels(bad_label):
  labels = _pool(_SIZES)
  labels[17] = bad_label
  with pytest.raises(ValueError, match=rf"labels\[17\] = {bad_label}"):
    _split(labels)


def test_split_label_10_with_10_classes_raises():
  labels = np.repeat(np.arange(10), 20)
  labels[-1] = 10
  with pytest.raises(ValueError, match=r"^labels must lie in \[0, 10\)"):
    long_tail.make_long_tailed_split(
        labels, num_classes=10, imbalance_ratio=2, test_per_class=5, seed=0
    )


def test_split_too_small_class_names_the_class():
  # Class 3 has exactly test_per_class examples: no train example would be left.
  with pytest.raises(ValueError, match=r"^class 3 has 10 examples.*at least 11"):
    _split(_pool([60, 55, 70, 10, 64]))
  # A class that is absent altogether.
  with pytest.raises(ValueError, match=r"^class 4 has 0 examples"):
    _split(_pool([60, 55, 70, 52]))


def test_split_test_per_class_below_one_raises():
  with pytest.raises(ValueError, match=r"^test_per_class must be an integer >= 1, got 0"):
    _split(test_per_class=0)


def test_split_ratio_below_one_raises():
  with pytest.raises(ValueError, match=r"^imbalance_ratio must be .* >= 1, got 0.5"):
    _split(imbalance_ratio=0.5)


def test_split_negative_seed_raises():
  with pytest.raises(ValueError, match=r"^seed must be an integer >= 0, got -1"):
    _split(seed=-1)


def test_split_two_dimensional_labels_raise():
  with pytest.raises(ValueError, match=r"^labels must be 1-D"):
    _split(_pool(_SIZES).reshape(-1, 1))


def test_split_smallest_class_fills_its_quota_exactly():
  # The class that sets n_max (class 3: 52 - 10 = 42 left) is not the head,
  # so its quota is below its pool; the head keeps all 42 of its quota.
  labels = _pool([52, 60, 70, 52, 64])
  train, test = _split(labels, imbalance_ratio=1)
  np.testing.assert_array_equal(np.bincount(labels[train]), [42] * 5)
  # Class 0 and 3 have 52 = 10 test + 42 train: every example is used.
  for c in (0, 3):
    used = np.concatenate([train, test])
    assert np.sum(labels[used] == c) == 52
