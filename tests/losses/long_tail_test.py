"""Tests for jaxloss.losses.long_tail against independent NumPy references."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxloss.losses as L

RNG = np.random.default_rng(1)
LOGITS = RNG.normal(size=(6, 4)).astype(np.float32) * 2.0
LABELS = np.array([0, 1, 2, 3, 3, 1], np.int32)
COUNTS = np.array([500, 120, 30, 5])
# Cao et al.'s CIFAR-10-LT (imbalance ratio 100) training counts.
CIFAR10_LT = np.array([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])


def np_log_softmax(x):
  x = np.asarray(x, np.float64)
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def np_nll(x, labels):
  return -np.take_along_axis(np_log_softmax(x), labels[..., None], -1)[..., 0]


# ------------------------------------------------------------- logit_adjust


def test_logit_adjust_matches_numpy_and_tau_zero_is_identity():
  priors = COUNTS / COUNTS.sum()
  for tau in (0.0, 0.5, 1.0, 2.0):
    got = L.logit_adjust(LOGITS, class_priors=priors, tau=tau)
    np.testing.assert_allclose(got, LOGITS - tau * np.log(priors), rtol=1e-6,
                               atol=1e-6)
  np.testing.assert_array_equal(
      L.logit_adjust(LOGITS, class_priors=priors, tau=0.0), LOGITS)


def test_logit_adjust_improves_balanced_accuracy_of_biased_scores():
  # A Bayes classifier for the long-tailed training distribution: its logits
  # are log p(x|y) + log pi_y. Post-hoc adjustment with tau = 1 removes
  # log pi_y and so recovers the balanced-error Bayes rule exactly.
  rng = np.random.default_rng(0)
  priors = np.array([0.7, 0.2, 0.08, 0.02])
  log_lik = rng.normal(size=(2000, 4))
  labels = log_lik.argmax(-1)
  biased = (log_lik + np.log(priors)).astype(np.float32)
  adjusted = np.asarray(L.logit_adjust(biased, class_priors=priors))
  np.testing.assert_array_equal(adjusted.argmax(-1), labels)
  assert (biased.argmax(-1) == labels).mean() < 0.9


def test_logit_adjust_zero_prior_finite_and_dtype():
  priors = np.array([0.5, 0.5, 0.0, 0.0], np.float32)
  got = L.logit_adjust(jnp.asarray(LOGITS, jnp.bfloat16), class_priors=priors)
  assert got.dtype == jnp.bfloat16
  assert np.all(np.isfinite(np.asarray(got, np.float32)))


def test_logit_adjust_errors():
  with pytest.raises(ValueError, match=r"class_priors.*\(4,\)"):
    L.logit_adjust(LOGITS, class_priors=np.ones(3))
  with pytest.raises(ValueError, match="class_priors.*non-negative"):
    L.logit_adjust(LOGITS, class_priors=np.array([0.5, 0.6, -0.1, 0.0]))
  with pytest.raises(ValueError, match="tau.*scalar"):
    L.logit_adjust(LOGITS, class_priors=np.ones(4), tau=np.ones(2))
  with pytest.raises(TypeError, match="logits"):
    L.logit_adjust(np.zeros((2, 4), np.int32), class_priors=np.ones(4))


# ------------------------------------------------------- balanced softmax


def test_balanced_softmax_matches_numpy():
  expected = np_nll(LOGITS + np.log(COUNTS), LABELS)
  got = L.balanced_softmax_cross_entropy(LOGITS, LABELS, class_counts=COUNTS)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_balanced_softmax_equals_logit_adjusted_with_tau_one():
  a = L.balanced_softmax_cross_entropy(LOGITS, LABELS, class_counts=COUNTS)
  b = L.logit_adjusted_softmax_cross_entropy(
      LOGITS, LABELS, class_priors=L.class_priors_from_counts(COUNTS), tau=1.0)
  np.testing.assert_allclose(a, b, rtol=1e-6)


def test_balanced_softmax_balanced_counts_is_cross_entropy():
  a = L.balanced_softmax_cross_entropy(LOGITS, LABELS,
                                       class_counts=np.full(4, 7))
  np.testing.assert_allclose(a, np_nll(LOGITS, LABELS), rtol=1e-5)


def test_balanced_softmax_zero_count_is_finite():
  counts = np.array([10, 5, 0, 1])
  value, grads = jax.jit(jax.value_and_grad(
      lambda x: L.balanced_softmax_cross_entropy(
          x, LABELS, class_counts=counts).sum()))(LOGITS)
  assert np.isfinite(value) and np.all(np.isfinite(grads))


def test_balanced_softmax_errors():
  with pytest.raises(ValueError, match=r"class_counts.*\(4,\).*\(3,\)"):
    L.balanced_softmax_cross_entropy(LOGITS, LABELS, class_counts=[1, 2, 3])
  with pytest.raises(ValueError, match="class_counts.*non-negative"):
    L.balanced_softmax_cross_entropy(LOGITS, LABELS,
                                     class_counts=[1, 2, -3, 4])
  with pytest.raises(ValueError, match=r"labels.*\[0, 4\)"):
    L.balanced_softmax_cross_entropy(LOGITS, LABELS + 1, class_counts=COUNTS)


# ------------------------------------------------------------------- LDAM


def test_ldam_margins_cifar10_lt():
  # Independent float64 computation of the authors' rule
  # m = n^(-1/4); m *= max_m / max(m), for the CIFAR-10-LT (rho=100) counts.
  m = 1.0 / np.sqrt(np.sqrt(CIFAR10_LT.astype(np.float64)))
  expected = m * (0.5 / m.max())
  got = L.ldam_margins(CIFAR10_LT, max_margin=0.5)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  # Published-scale anchors: the rarest class gets max_margin, the head
  # (100x more examples) gets max_margin / 100^(1/4) = 0.5 / 3.1623.
  np.testing.assert_allclose(got[-1], 0.5, rtol=1e-7)
  np.testing.assert_allclose(got[0], 0.158113883, rtol=1e-6)
  # Rounded values of 0.5 * (50 / n_c)^(1/4), worked out by hand.
  np.testing.assert_allclose(
      got, [0.15811, 0.1797, 0.20424, 0.23209, 0.26383, 0.29977, 0.34068,
            0.38722, 0.4405, 0.5], atol=6e-6)


def test_ldam_matches_reference_formula():
  # The authors' LDAMLoss: x_m = x - m[y] at the label, CE(s * x_m, y).
  scale, max_m = 30.0, 0.5
  x = np.tanh(LOGITS)  # cosine logits in [-1, 1], as with a normed layer
  m = 1.0 / COUNTS.astype(np.float64) ** 0.25
  m = m * (max_m / m.max())
  x_m = x.astype(np.float64).copy()
  x_m[np.arange(len(LABELS)), LABELS] -= m[LABELS]
  expected = np_nll(scale * x_m, LABELS)
  got = L.ldam_loss(x, LABELS, class_counts=COUNTS, max_margin=max_m,
                    scale=scale)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_ldam_without_margin_effect_is_scaled_cross_entropy():
  # Equal counts give every class the same margin m: the label logit drops by
  # m for every example, a constant shift of the loss curve, not zero.
  x = np.tanh(LOGITS)
  got = L.ldam_loss(x, LABELS, class_counts=np.full(4, 9), max_margin=0.3,
                    scale=2.0)
  shifted = x.astype(np.float64).copy()
  shifted[np.arange(len(LABELS)), LABELS] -= 0.3
  np.testing.assert_allclose(got, np_nll(2.0 * shifted, LABELS), rtol=1e-5)


def test_ldam_rare_class_loss_larger_than_frequent_at_equal_logits():
  x = np.zeros((2, 4), np.float32)
  got = np.asarray(L.ldam_loss(x, np.array([0, 3]), class_counts=COUNTS))
  assert got[1] > got[0]


def test_ldam_errors():
  with pytest.raises(ValueError, match="max_margin"):
    L.ldam_loss(LOGITS, LABELS, class_counts=COUNTS, max_margin=0.0)
  with pytest.raises(ValueError, match="scale"):
    L.ldam_loss(LOGITS, LABELS, class_counts=COUNTS, scale=-1.0)
  with pytest.raises(ValueError, match=r"class_counts.*\(4,\)"):
    L.ldam_loss(LOGITS, LABELS, class_counts=[1, 2])
  with pytest.raises(ValueError, match="max_margin"):
    L.ldam_margins(COUNTS, max_margin=-0.5)


# ------------------------------------------------------------ shared checks

FNS = {
    "balanced_softmax": lambda x, y, where=None: (
        L.balanced_softmax_cross_entropy(x, y, class_counts=COUNTS,
                                         where=where)),
    "ldam": lambda x, y, where=None: L.ldam_loss(
        x, y, class_counts=COUNTS, scale=5.0, where=where),
}


@pytest.mark.parametrize("name", sorted(FNS))
def test_check_grads_float64(name):
  with jax.enable_x64(True):
    x = jnp.asarray(LOGITS, jnp.float64)
    check_grads(lambda z: FNS[name](z, LABELS), (x,), order=2,
                modes=("rev",), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(FNS))
def test_where_equals_slicing(name):
  where = np.array([1, 0, 1, 1, 0, 1], bool)
  fn = FNS[name]
  masked = fn(LOGITS, LABELS, where)
  sliced = fn(LOGITS[where], LABELS[where])
  np.testing.assert_allclose(np.asarray(masked)[where], sliced, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(masked)[~where], 0.0)
  garbage = LOGITS.copy()
  garbage[~where] = np.nan
  grads = jax.jit(jax.grad(lambda x: fn(x, LABELS, where).sum()))(garbage)
  assert np.all(np.isfinite(grads))
  np.testing.assert_array_equal(np.asarray(grads)[~where], 0.0)


@pytest.mark.parametrize("name", sorted(FNS))
def test_traced_once_and_leading_axes(name):
  chex.clear_trace_counter()
  fn = FNS[name]

  @jax.jit
  @chex.assert_max_traces(n=1)
  def run(x, y):
    return fn(x, y)

  x = LOGITS.reshape(2, 3, 4)
  y = LABELS.reshape(2, 3)
  got = run(x, y)
  run(x + 1.0, y)
  np.testing.assert_allclose(got.reshape(-1), fn(LOGITS, LABELS), rtol=1e-6)
