"""Tests for jaxloss.losses.weights (class weights and priors from counts)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from jaxloss.losses import class_priors_from_counts
from jaxloss.losses import class_weights_from_counts

COUNTS = np.array([100, 10, 1])


def np_effective_number(counts, beta):
  counts = np.asarray(counts, np.float64)
  return (1.0 - beta) / (1.0 - np.power(beta, counts))


def test_inverse_is_n_over_c_times_count():
  got = class_weights_from_counts(COUNTS, normalize=False)
  assert got.dtype == jnp.float32 and got.shape == (3,)
  np.testing.assert_allclose(got, 111.0 / (3.0 * COUNTS), rtol=1e-6)
  np.testing.assert_allclose(got, [0.37, 3.7, 37.0], rtol=1e-6)


def test_inverse_matches_sklearn_balanced():
  y = np.repeat(np.arange(4), [50, 20, 5, 1])
  expected = compute_class_weight("balanced", classes=np.arange(4), y=y)
  got = class_weights_from_counts(jnp.array([50.0, 20.0, 5.0, 1.0]),
                                  normalize=None)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_default_is_inverse_frequency_normalised_to_mean_one():
  # Defaults: method="inverse_frequency", normalize=True ("mean"), so the
  # weights sum to C; for counts [100, 10, 1] that is w ∝ 1/n_c scaled to 3.
  got = class_weights_from_counts(COUNTS)
  inv = 1.0 / COUNTS
  np.testing.assert_allclose(got, 3.0 * inv / inv.sum(), rtol=1e-6)
  np.testing.assert_allclose(
      got, class_weights_from_counts(COUNTS, normalize="mean"), rtol=0)


def test_sqrt_inverse_frequency_is_square_root_of_inverse():
  raw = class_weights_from_counts(COUNTS, method="sqrt_inverse_frequency",
                                  normalize=False)
  np.testing.assert_allclose(raw, np.sqrt(111.0 / (3.0 * COUNTS)), rtol=1e-6)
  head = class_weights_from_counts(COUNTS, method="sqrt_inverse_frequency",
                                   normalize="head")
  np.testing.assert_allclose(head, [1.0, np.sqrt(10.0), 10.0], rtol=1e-6)


def test_effective_number_cifar10_lt_default_beta():
  # Cui et al.'s CIFAR-10-LT (imbalance 100) counts with their beta = 0.9999,
  # normalised to sum to C = 10, against an independent float64 computation.
  counts = np.array([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])
  got = class_weights_from_counts(counts, method="effective_number")
  ref = np_effective_number(counts, float(np.float32(0.9999)))
  ref = ref * 10.0 / ref.sum()
  np.testing.assert_allclose(got, ref, rtol=1e-4)
  assert got[-1] / got[0] > 30.0  # tail weighted far above the head


@pytest.mark.parametrize("beta", [0.0, 0.9, 0.999, 0.9999])
def test_effective_number_matches_numpy(beta):
  got = class_weights_from_counts(COUNTS, method="effective_number",
                                  beta=beta, normalize=False)
  # float32 beta, as the function sees it.
  expected = np_effective_number(COUNTS, float(np.float32(beta)))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_effective_number_limits():
  # beta = 0: all ones; beta -> 1: proportional to inverse frequency.
  np.testing.assert_allclose(
      class_weights_from_counts(COUNTS, method="effective_number", beta=0.0,
                                normalize=False),
      np.ones(3), rtol=1e-6)
  near_inverse = class_weights_from_counts(
      COUNTS, method="effective_number", beta=1 - 1e-6, normalize="head")
  np.testing.assert_allclose(near_inverse, [1.0, 10.0, 100.0], rtol=1e-3)


@pytest.mark.parametrize("method", ["inverse_frequency",
                                    "sqrt_inverse_frequency",
                                    "effective_number"])
def test_normalize_mean_sums_to_num_classes(method):
  got = class_weights_from_counts(COUNTS, method=method, normalize="mean")
  np.testing.assert_allclose(got.sum(), 3.0, rtol=1e-6)
  raw = class_weights_from_counts(COUNTS, method=method, normalize=False)
  np.testing.assert_allclose(got, raw * 3.0 / raw.sum(), rtol=1e-6)


@pytest.mark.parametrize("method", ["inverse_frequency",
                                    "sqrt_inverse_frequency",
                                    "effective_number"])
def test_normalize_head_gives_one_to_most_frequent(method):
  counts = np.array([10, 100, 1, 50])
  got = np.asarray(class_weights_from_counts(counts, method=method,
                                             normalize="head"))
  assert got[1] == 1.0
  assert np.all(got >= 1.0)
  assert got[2] > got[0] > got[3] > got[1]


def test_cap_clips_after_normalisation():
  got = class_weights_from_counts(COUNTS, normalize="head", cap=20.0)
  np.testing.assert_allclose(got, [1.0, 10.0, 20.0], rtol=1e-6)
  # A cap above every weight changes nothing; cap=inf means no cap.
  for cap in (1e6, np.inf):
    np.testing.assert_allclose(
        class_weights_from_counts(COUNTS, cap=cap, normalize=False),
        class_weights_from_counts(COUNTS, normalize=False), rtol=0)


def test_zero_count_gets_finite_one_example_weight():
  counts = np.array([100, 10, 0])
  got = class_weights_from_counts(counts, normalize=False)
  one_example_counts = np.array([100, 10, 1])
  # N stays 110 (the real total), the empty class is weighted as n_c = 1.
  np.testing.assert_allclose(got, 110.0 / (3.0 * np.array([100, 10, 1])),
                             rtol=1e-6)
  assert np.all(np.isfinite(got))
  # With "head" normalisation N cancels: exactly the one-example weights.
  for method in ("inverse_frequency", "sqrt_inverse_frequency",
                 "effective_number"):
    np.testing.assert_allclose(
        class_weights_from_counts(counts, method=method, normalize="head"),
        class_weights_from_counts(one_example_counts, method=method,
                                  normalize="head"), rtol=1e-6)
  capped = class_weights_from_counts(counts, normalize="head", cap=5.0)
  np.testing.assert_allclose(capped, [1.0, 5.0, 5.0], rtol=1e-6)
  eff = class_weights_from_counts(counts, method="effective_number",
                                  beta=0.99, normalize=False)
  np.testing.assert_allclose(eff[2], 1.0, rtol=1e-6)


def test_traced_cap_inside_jit_does_not_retrace():

  @jax.jit
  @chex.assert_max_traces(n=1)
  def weights_at(cap):
    return class_weights_from_counts(COUNTS, normalize="head", cap=cap)

  for cap in (2.0, 20.0, 1000.0):
    expected = np.minimum([1.0, 10.0, 100.0], cap)
    np.testing.assert_allclose(weights_at(jnp.float32(cap)), expected,
                               rtol=1e-6)


def test_traced_counts_inside_jit():
  got = jax.jit(lambda c: class_weights_from_counts(c, normalize="mean"))(
      jnp.asarray(COUNTS))
  np.testing.assert_allclose(
      got, class_weights_from_counts(COUNTS, normalize="mean"), rtol=1e-6)


def test_accepts_numpy_and_jax_ints_and_floats():
  for counts in (COUNTS, COUNTS.astype(np.float64), jnp.asarray(COUNTS),
                 jnp.asarray(COUNTS, jnp.float32), [100, 10, 1]):
    np.testing.assert_allclose(
        class_weights_from_counts(counts, normalize=False),
        [0.37, 3.7, 37.0], rtol=1e-6)


def test_priors():
  got = class_priors_from_counts(np.array([6, 3, 1, 0]))
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, [0.6, 0.3, 0.1, 0.0], rtol=1e-6)


@pytest.mark.parametrize("fn", [class_weights_from_counts,
                                class_priors_from_counts])
@pytest.mark.parametrize("counts, pattern", [
    (np.array([5, -1, 3]), r"class_counts.*non-negative.*-1"),
    (np.array([[1, 2], [3, 4]]), r"class_counts.*1-D.*\(2, 2\)"),
    (np.array([0, 0, 0]), r"class_counts.*positive.*zeros"),
    (np.array([]), r"class_counts.*at least one class"),
    (np.array([1.0, np.nan]), r"class_counts.*finite"),
])
def test_bad_counts_raise(fn, counts, pattern):
  with pytest.raises(ValueError, match=pattern):
    fn(counts)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(method="inverse"),
     r"method.*'inverse_frequency', 'sqrt_inverse_frequency', "
     r"'effective_number'.*'inverse'"),
    (dict(method="effective_number", beta=1.0), r"beta.*\[0.0, 1.0\).*1.0"),
    (dict(beta=-0.1), r"beta.*-0.1"),
    (dict(normalize="sum"), r"normalize.*True, False, None, 'mean', 'head'.*'sum'"),
    (dict(normalize=1.0), r"normalize.*1.0"),
    (dict(cap=0.0), r"cap.*\(0.0, inf\].*0.0"),
    (dict(cap=-2.0), r"cap.*-2.0"),
])
def test_bad_arguments_raise(kwargs, pattern):
  with pytest.raises(ValueError, match=pattern):
    class_weights_from_counts(COUNTS, **kwargs)
