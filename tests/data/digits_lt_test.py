"""Tests for the Digits-LT TFDS builder and loader (real sklearn digits)."""

import time

import numpy as np
import pytest
from sklearn.datasets import load_digits
import tensorflow_datasets as tfds

from jaxloss.data import digits_lt
from jaxloss.data import long_tail

# Real per-digit counts of sklearn's load_digits() (the UCI optdigits test set).
_DIGIT_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


@pytest.fixture(scope="module")
def digits():
  return load_digits()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def default_data(data_dir):
  start = time.perf_counter()
  data = digits_lt.load_digits_lt(data_dir=data_dir)
  data["build_seconds"] = time.perf_counter() - start
  return data


def test_pool_counts_are_the_known_ones(digits):
  np.testing.assert_array_equal(np.bincount(digits.target), _DIGIT_COUNTS)


def test_default_ratio_keeps_at_least_five_of_the_rarest_digit():
  n_max = min(_DIGIT_COUNTS) - digits_lt.DEFAULT_TEST_PER_CLASS  # 174 - 30
  assert n_max == 144
  rarest = long_tail.min_class_count(
      n_max, 10, digits_lt.DEFAULT_IMBALANCE_RATIO
  )
  assert rarest == 5
  # The margin: ratios up to 28 still keep 5 (int(144 / 28) = 5), 29 keeps 4.
  assert long_tail.min_class_count(n_max, 10, 28) == 5
  assert long_tail.min_class_count(n_max, 10, 29) == 4


def test_shapes_and_dtypes(default_data):
  train, test = default_data["train"], default_data["test"]
  assert train["image"].shape == (461, 8, 8, 1)
  assert test["image"].shape == (300, 8, 8, 1)
  for split in (train, test):
    assert split["image"].dtype == np.float32
    assert split["label"].dtype == np.int32
    assert split["index"].dtype == np.int64
    assert split["label"].shape == split["index"].shape == split["image"].shape[:1]
  assert default_data["class_counts"].dtype == np.int64
  assert default_data["num_classes"] == 10
  assert default_data["class_names"] == [str(d) for d in range(10)]


def test_pixels_in_unit_interval_and_use_the_full_range(default_data):
  for split in ("train", "test"):
    image = default_data[split]["image"]
    assert image.min() == 0.0
    assert image.max() == 1.0


def test_train_class_counts_follow_the_long_tail(default_data):
  expected = long_tail.long_tailed_counts(144, 10, 25)
  np.testing.assert_array_equal(expected, [144, 100, 70, 49, 34, 24, 16, 11, 8, 5])
  np.testing.assert_array_equal(default_data["class_counts"], expected)
  np.testing.assert_array_equal(
      np.bincount(default_data["train"]["label"], minlength=10), expected
  )
  assert default_data["class_counts"].min() >= 5


def test_test_split_is_balanced(default_data):
  np.testing.assert_array_equal(
      np.bincount(default_data["test"]["label"], minlength=10), [30] * 10
  )


def test_images_and_labels_match_sklearn(default_data, digits):
  for split in ("train", "test"):
    part = default_data[split]
    index = part["index"]
    np.testing.assert_array_equal(part["label"], digits.target[index])
    np.testing.assert_allclose(
        part["image"][..., 0], digits.images[index] / 16.0, rtol=0, atol=0
    )


def test_examples_sorted_by_pool_position_and_splits_disjoint(default_data):
  train_idx = default_data["train"]["index"]
  test_idx = default_data["test"]["index"]
  assert np.all(np.diff(train_idx) > 0)
  assert np.all(np.diff(test_idx) > 0)
  assert np.intersect1d(train_idx, test_idx).size == 0


def test_split_equals_make_long_tailed_split_on_the_pool(default_data, digits):
  train_idx, test_idx = long_tail.make_long_tailed_split(
      digits.target, num_classes=10, imbalance_ratio=25, test_per_class=30, seed=0
  )
  np.testing.assert_array_equal(default_data["train"]["index"], train_idx)
  np.testing.assert_array_equal(default_data["test"]["index"], test_idx)


def test_build_is_quick_and_second_load_reuses_identical_data(
    default_data, data_dir
):
  assert default_data["build_seconds"] < 5.0
  prepared = data_dir / "digits_lt" / "rho25_test30_seed0" / "1.0.0"
  files = sorted(p.name for p in prepared.glob("*.array_record*"))
  assert files == [
      "digits_lt-test.array_record-00000-of-00001",
      "digits_lt-train.array_record-00000-of-00001",
  ]
  mtimes = {p: p.stat().st_mtime_ns for p in prepared.iterdir()}
  again = digits_lt.load_digits_lt(data_dir=data_dir)
  # Not regenerated: every prepared file is untouched.
  assert {p: p.stat().st_mtime_ns for p in prepared.iterdir()} == mtimes
  for split in ("train", "test"):
    for key in ("image", "label", "index"):
      np.testing.assert_array_equal(again[split][key], default_data[split][key])
  np.testing.assert_array_equal(again["class_counts"], default_data["class_counts"])


def test_other_config_non_integer_ratio(tmp_path, digits):
  data = digits_lt.load_digits_lt(
      imbalance_ratio=12.5, test_per_class=20, seed=3, data_dir=tmp_path
  )
  assert (tmp_path / "digits_lt" / "rho12p5_test20_seed3").is_dir()
  # min count 174 - 20 = 154 left; int(154 * 0.08 ** (c / 9)).
  expected = long_tail.long_tailed_counts(154, 10, 12.5)
  np.testing.assert_array_equal(expected, [154, 116, 87, 66, 50, 37, 28, 21, 16, 12])
  np.testing.assert_array_equal(data["class_counts"], expected)
  np.testing.assert_array_equal(np.bincount(data["test"]["label"]), [20] * 10)
  np.testing.assert_array_equal(
      data["train"]["label"], digits.target[data["train"]["index"]]
  )


def test_seed_changes_the_split(default_data, data_dir):
  other = digits_lt.load_digits_lt(seed=1, data_dir=data_dir)
  np.testing.assert_array_equal(other["class_counts"], default_data["class_counts"])
  assert not np.array_equal(other["test"]["index"], default_data["test"]["index"])


def test_config_names_are_derived_and_filesystem_safe():
  assert digits_lt.DigitsLTConfig().name == "rho25_test30_seed0"
  assert digits_lt.DigitsLTConfig(imbalance_ratio=100).name == "rho100_test30_seed0"
  name = digits_lt.DigitsLTConfig(
      imbalance_ratio=7.25, test_per_class=15, seed=2
  ).name
  assert name == "rho7p25_test15_seed2"
  assert all(ch.isalnum() or ch == "_" for ch in name)
  assert digits_lt.DigitsLT.DEFAULT_CONFIG_NAME == "rho25_test30_seed0"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(imbalance_ratio=0.9), r"^imbalance_ratio must .* got 0.9"),
        (dict(test_per_class=0), r"^test_per_class must be an integer >= 1, got 0"),
        (dict(seed=-2), r"^seed must be an integer >= 0, got -2"),
        (dict(name="mine"), r"^name must match .*'rho25_test30_seed0'.*'mine'"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
  with pytest.raises(ValueError, match=match):
    digits_lt.DigitsLTConfig(**kwargs)


def test_loader_rejects_bad_values_before_building(tmp_path):
  with pytest.raises(ValueError, match=r"^imbalance_ratio must"):
    digits_lt.load_digits_lt(imbalance_ratio=0.5, data_dir=tmp_path)
  assert not (tmp_path / "digits_lt").exists()


def test_test_per_class_that_empties_a_digit_names_it(tmp_path):
  # Digit 8 has 174 examples: 174 test examples leave none for training.
  with pytest.raises(ValueError, match=r"^class 8 has 174 examples"):
    digits_lt.load_digits_lt(test_per_class=174, data_dir=tmp_path)


def test_registered_with_tfds_and_readable_by_name(default_data, data_dir):
  # The builder is registered, so tfds' own entry points find the prepared data.
  source = tfds.data_source(
      "digits_lt/rho25_test30_seed0", split="test", data_dir=data_dir,
      download=False,
  )
  assert len(source) == 300
  indices = sorted(int(source[i]["index"]) for i in range(len(source)))
  np.testing.assert_array_equal(indices, default_data["test"]["index"])
