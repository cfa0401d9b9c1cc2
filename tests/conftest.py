"""Shared fixtures: the real digits-LT data, built once per test session."""

import pytest

from jaxloss.data import load_digits_lt


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def digits(tfds_dir):
  """Default digits-LT (ρ = 25, 30 test images a class), as numpy arrays."""
  return load_digits_lt(data_dir=tfds_dir)
