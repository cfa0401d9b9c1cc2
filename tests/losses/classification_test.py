"""Tests for jaxloss.losses.classification against NumPy and optax references."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from jaxloss.losses import classification as cls
from jaxloss.losses import masked_mean

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(4, 5)).astype(np.float32) * 2.0
INT_LABELS = np.array([0, 3, 4, 1], dtype=np.int32)
ONE_HOT = np.eye(5, dtype=np.float32)[INT_LABELS]


def _jit_value_and_grad(fn):
  # One compiled program per test instead of op-by-op compiles keeps the
  # suite fast on small CPUs; eager behaviour is covered by contract_test.
  return jax.jit(jax.value_and_grad(fn))


def np_log_softmax(x):
  x = np.asarray(x, np.float64)
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def np_focal(logits, probs, gamma, alpha=1.0):
  log_p = np_log_softmax(logits)
  p = np.exp(log_p)
  return -(np.asarray(alpha) * probs * (1 - p) ** gamma * log_p).sum(-1)


def np_ce(logits, labels):
  log_p = np_log_softmax(logits)
  return -np.take_along_axis(log_p, labels[..., None], -1)[..., 0]


# ----------------------------------------------------------------- focal loss


def test_focal_matches_keras_categorical_focal_case():
  # Keras CategoricalFocalCrossentropy docstring example (alpha=0.25, gamma=2).
  probs = np.array([[0.05, 0.9, 0.05], [0.1, 0.85, 0.05]], np.float32)
  labels = np.array([[0, 1, 0], [0, 0, 1]], np.float32)
  expected = np.array([2.634e-4, 0.67591])
  got = cls.softmax_focal_loss(np.log(probs), labels, alpha=0.25, gamma=2.0)
  np.testing.assert_allclose(got, expected, rtol=1e-3)
  got_int = cls.softmax_focal_loss_with_integer_labels(
      np.log(probs), np.array([1, 2]), alpha=0.25, gamma=2.0)
  np.testing.assert_allclose(got_int, expected, rtol=1e-3)


@pytest.mark.parametrize("alpha", [None, 1.0])
def test_focal_gamma_zero_is_cross_entropy(alpha):
  ref_optax = optax.softmax_cross_entropy_with_integer_labels(
      LOGITS, INT_LABELS)
  ref_np = np_ce(LOGITS, INT_LABELS)
  got_int = cls.softmax_focal_loss_with_integer_labels(
      LOGITS, INT_LABELS, alpha=alpha, gamma=0.0)
  got_prob = cls.softmax_focal_loss(LOGITS, ONE_HOT, alpha=alpha, gamma=0.0)
  for got in (got_int, got_prob):
    np.testing.assert_allclose(got, ref_optax, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, ref_np, rtol=1e-5, atol=1e-6)


def test_focal_uniform_logits_hand_value():
  expected = (2.0 / 3.0) ** 2 * np.log(3.0)  # 0.48827
  got = cls.softmax_focal_loss(jnp.zeros((2, 3)), np.eye(3)[:2], gamma=2.0)
  np.testing.assert_allclose(got, [expected, expected], rtol=1e-6)
  np.testing.assert_allclose(got[0], 0.48827, rtol=1e-4)
  got_int = cls.softmax_focal_loss_with_integer_labels(
      jnp.zeros((2, 3)), np.array([0, 2]), gamma=2.0)
  np.testing.assert_allclose(got_int, [expected, expected], rtol=1e-6)


def test_focal_per_class_alpha_matches_numpy():
  alpha = np.array([0.1, 0.5, 1.0, 2.0, 4.0], np.float32)
  expected = alpha[INT_LABELS] * np_focal(LOGITS, ONE_HOT, 2.0)
  got_int = cls.softmax_focal_loss_with_integer_labels(
      LOGITS, INT_LABELS, alpha=alpha, gamma=2.0)
  got_prob = cls.softmax_focal_loss(LOGITS, ONE_HOT, alpha=alpha, gamma=2.0)
  np.testing.assert_allclose(got_int, expected, rtol=1e-5)
  np.testing.assert_allclose(got_prob, expected, rtol=1e-5)


def test_focal_soft_labels_and_smoothing_match_numpy():
  soft = np.asarray(cls.smooth_labels(ONE_HOT, 0.1))
  np.testing.assert_allclose(soft, 0.9 * ONE_HOT + 0.02, rtol=1e-6)
  alpha = np.array([1.0, 2.0, 0.5, 1.0, 3.0], np.float32)
  got = cls.softmax_focal_loss(LOGITS, soft, alpha=alpha, gamma=1.5)
  np.testing.assert_allclose(got, np_focal(LOGITS, soft, 1.5, alpha),
                             rtol=1e-5)


def test_focal_axis_argument():
  got = cls.softmax_focal_loss(LOGITS.T, ONE_HOT.T, axis=0, gamma=2.0)
  np.testing.assert_allclose(got, np_focal(LOGITS, ONE_HOT, 2.0), rtol=1e-5)


def test_focal_down_weights_easy_examples():
  logits = np.array([[4.0, 0.0], [0.5, 0.0]], np.float32)
  labels = np.array([0, 0])
  ratio = np_ce(logits, labels) / np.asarray(
      cls.softmax_focal_loss_with_integer_labels(logits, labels, gamma=2.0))
  # CE / focal = 1 / (1 - p)**2: ~3100 for the easy row, ~7 for the hard one.
  np.testing.assert_allclose(ratio, (1 - np.exp(-np_ce(logits, labels)))**-2,
                             rtol=1e-4)
  assert ratio[0] > 100 * ratio[1]


# ------------------------------------------------- CE and logit adjustment


def test_class_weighted_cross_entropy_matches_numpy():
  w = np.array([1.0, 2.0, 3.0, 0.5, 0.0], np.float32)
  got = cls.softmax_cross_entropy_with_integer_labels(
      LOGITS, INT_LABELS, class_weights=w)
  np.testing.assert_allclose(got, w[INT_LABELS] * np_ce(LOGITS, INT_LABELS),
                             rtol=1e-5)
  plain = cls.softmax_cross_entropy_with_integer_labels(LOGITS, INT_LABELS)
  np.testing.assert_allclose(
      plain, optax.softmax_cross_entropy_with_integer_labels(
          LOGITS, INT_LABELS), rtol=1e-6)


def test_logit_adjustment_tau_zero_is_cross_entropy():
  priors = np.array([0.5, 0.3, 0.1, 0.07, 0.03], np.float32)
  got = cls.logit_adjusted_softmax_cross_entropy(
      LOGITS, INT_LABELS, class_priors=priors, tau=0.0)
  np.testing.assert_allclose(got, np_ce(LOGITS, INT_LABELS), rtol=1e-5)


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_logit_adjustment_matches_numpy(tau):
  priors = np.array([0.5, 0.3, 0.1, 0.07, 0.03], np.float32)
  expected = np_ce(LOGITS + tau * np.log(priors.astype(np.float64)),
                   INT_LABELS)
  got = cls.logit_adjusted_softmax_cross_entropy(
      LOGITS, INT_LABELS, class_priors=priors, tau=tau)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # Priors need not be normalised: the softmax ignores a common scale.
  got_scaled = cls.logit_adjusted_softmax_cross_entropy(
      LOGITS, INT_LABELS, class_priors=priors * 100.0, tau=tau)
  np.testing.assert_allclose(got_scaled, expected, rtol=1e-5)


def test_logit_adjustment_zero_prior_is_finite():
  priors = np.array([0.6, 0.4, 0.0], np.float32)
  logits = jnp.zeros((3, 3))
  labels = jnp.array([0, 1, 2])
  loss, grads = _jit_value_and_grad(
      lambda x: cls.logit_adjusted_softmax_cross_entropy(
          x, labels, class_priors=priors).sum())(logits)
  assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grads))
  # The empty class gets a shift of log(tiny) ~ -87: a huge but finite loss.
  per_example = cls.logit_adjusted_softmax_cross_entropy(
      logits, labels, class_priors=priors)
  # CE(0 + log pi): the third example's loss is log(0.6 + 0.4 + tiny) -
  # log(tiny), i.e. -log(tiny) ~ 87.3.
  np.testing.assert_allclose(per_example[2], -np.log(np.finfo(np.float32).tiny),
                             rtol=1e-5)


def test_logit_adjustment_traced_tau_does_not_retrace():
  priors = jnp.array([0.5, 0.3, 0.1, 0.07, 0.03])

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(tau):
    return cls.logit_adjusted_softmax_cross_entropy(
        LOGITS, INT_LABELS, class_priors=priors, tau=tau)

  for tau in (0.0, 0.5, 1.0):
    expected = np_ce(LOGITS + tau * np.log(np.asarray(priors, np.float64)),
                     INT_LABELS)
    np.testing.assert_allclose(step(jnp.float32(tau)), expected, rtol=1e-5)


# ------------------------------------------------------------------ gradients

ALPHA = np.linspace(0.5, 1.5, 5)
PRIORS = np.array([0.5, 0.3, 0.1, 0.1, 0.0])

# Each adapter: (logits [N, 5], integer labels [N], where) -> loss [N].
ALL_LOSSES = {
    "focal": lambda x, y, where=None: cls.softmax_focal_loss(
        x, jax.nn.one_hot(y, 5), gamma=2.0, where=where),
    "focal_int": lambda x, y, where=None: (
        cls.softmax_focal_loss_with_integer_labels(
            x, y, alpha=ALPHA, gamma=2.0, where=where)),
    "ce_weighted": lambda x, y, where=None: (
        cls.softmax_cross_entropy_with_integer_labels(
            x, y, class_weights=np.arange(1.0, 6.0), where=where)),
    "logit_adjusted": lambda x, y, where=None: (
        cls.logit_adjusted_softmax_cross_entropy(
            x, y, class_priors=PRIORS, tau=1.0, where=where)),
}


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_check_grads_float64(name):
  loss_fn = ALL_LOSSES[name]
  with jax.enable_x64(True):
    x = jnp.asarray(LOGITS[:2], jnp.float64)
    check_grads(jax.jit(lambda x: loss_fn(x, INT_LABELS[:2]).sum()), (x,),
                order=2, modes=["rev"])


@pytest.mark.parametrize("gamma", [0.5, 1.0])
def test_check_grads_focal_fractional_gamma(gamma):
  with jax.enable_x64(True):
    x = jnp.asarray(LOGITS[:2], jnp.float64)
    check_grads(jax.jit(lambda x: cls.softmax_focal_loss_with_integer_labels(
        x, INT_LABELS[:2], gamma=gamma).sum()), (x,), order=1, modes=["rev"])


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_mask_equals_slicing_and_masked_rows_get_zero_grad(name):
  loss_fn = ALL_LOSSES[name]
  where = np.array([True, False, True, False])
  # Masked rows hold garbage that must not leak into values or gradients.
  logits = LOGITS.copy()
  logits[1] = np.nan
  logits[3] = np.inf
  labels = INT_LABELS.copy()
  labels[3] = -100

  def masked(x):
    return masked_mean(loss_fn(x, labels, where=where), where)

  value, grads = _jit_value_and_grad(masked)(logits)
  sliced_value, sliced_grads = _jit_value_and_grad(
      lambda x: loss_fn(x, INT_LABELS[where]).mean())(LOGITS[where])
  np.testing.assert_allclose(value, sliced_value, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(grads)[where], sliced_grads,
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(
      np.asarray(loss_fn(logits, labels, where=where))[~where], 0.0)
  np.testing.assert_array_equal(np.asarray(grads)[~where], 0.0)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_extreme_logits_finite_values_and_grads(gamma):
  # Row 0: label class at +1e4 (p == 1 exactly in float32); row 1: label
  # class at -1e4 (log p == -2e4); row 2: label in the middle.
  logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [1e4, 0.0, -1e4]],
                    np.float32)
  labels = np.array([0, 0, 1])
  one_hot = np.eye(3, dtype=np.float32)[labels]
  # (loss, scale of the label term for row 1)
  cases = [
      (lambda x: cls.softmax_focal_loss(x, one_hot, gamma=gamma), 1.0),
      (lambda x: cls.softmax_focal_loss_with_integer_labels(
          x, labels, alpha=np.array([0.2, 0.3, 0.5]), gamma=gamma), 0.2),
      (lambda x: cls.softmax_cross_entropy_with_integer_labels(x, labels),
       1.0),
      (lambda x: cls.logit_adjusted_softmax_cross_entropy(
          x, labels, class_priors=np.array([0.0, 0.5, 0.5])), 1.0),
  ]
  for fn, scale in cases:
    value, grads = _jit_value_and_grad(lambda x: fn(x).sum())(logits)
    assert np.isfinite(value) and np.all(np.isfinite(grads))
    loss = np.asarray(fn(logits))
    # Certain and right: no loss. Certain and wrong: ~2e4 nats, with the
    # focal factor (1 - 0)**gamma = 1, and the CE gradient p - y = [-1, 1, 0].
    np.testing.assert_allclose(loss[0], 0.0, atol=1e-6)
    np.testing.assert_allclose(loss[1], scale * 2e4, rtol=1e-2)
    np.testing.assert_allclose(grads[1], scale * np.array([-1.0, 1.0, 0.0]),
                               atol=1e-6)


def test_focal_certain_prediction_grads_are_exact():
  # At p == 1 the focal loss and its gradient are 0 for gamma > 0, and the CE
  # gradient (p - y, here 0) for gamma == 0. No NaN from 0 ** (gamma - 1).
  logits = jnp.array([[1e4, -1e4, 0.0]])
  for gamma in (0.0, 0.25, 2.0):
    _, grads = _jit_value_and_grad(
        lambda x: cls.softmax_focal_loss_with_integer_labels(
            x, jnp.array([0]), gamma=gamma).sum())(logits)
    np.testing.assert_array_equal(np.abs(np.asarray(grads)), 0.0)


def test_all_masked_gives_zero_with_zero_grads():
  where = np.zeros(4, bool)
  for name, fn in ALL_LOSSES.items():
    value, grads = _jit_value_and_grad(
        lambda x: masked_mean(fn(x, INT_LABELS, where=where), where))(LOGITS)
    assert value == 0.0, name
    np.testing.assert_array_equal(grads, np.zeros_like(LOGITS))


# ------------------------------------------------------------ dtypes, shapes


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_bf16_in_bf16_out(name):
  fn = ALL_LOSSES[name]
  got = fn(jnp.asarray(LOGITS, jnp.bfloat16), INT_LABELS)
  assert got.dtype == jnp.bfloat16
  ref = fn(jnp.asarray(LOGITS, jnp.bfloat16).astype(jnp.float32), INT_LABELS)
  assert ref.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got, np.float32), ref, rtol=1e-2,
                             atol=1e-2)


def test_leading_batch_axes_equal_loop_over_heads():
  logits = RNG.normal(size=(3, 2, 4)).astype(np.float32)
  labels = RNG.integers(0, 4, size=(3, 2)).astype(np.int32)
  alpha = np.array([0.5, 1.0, 1.5, 2.0], np.float32)
  priors = np.array([0.4, 0.3, 0.2, 0.1], np.float32)
  fns = [
      lambda x, y: cls.softmax_focal_loss_with_integer_labels(
          x, y, alpha=alpha),
      lambda x, y: cls.softmax_focal_loss(x, np.eye(4, dtype=np.float32)[y],
                                          alpha=alpha),
      lambda x, y: cls.softmax_cross_entropy_with_integer_labels(
          x, y, class_weights=alpha),
      lambda x, y: cls.logit_adjusted_softmax_cross_entropy(
          x, y, class_priors=priors),
  ]
  for fn in fns:
    got = fn(logits, labels)
    assert got.shape == (3, 2)
    looped = np.stack([fn(logits[:, a], labels[:, a]) for a in range(2)], 1)
    np.testing.assert_allclose(got, looped, rtol=1e-6)


# ----------------------------------------------------------------- errors


def test_integer_label_errors():
  f = cls.softmax_focal_loss_with_integer_labels
  with pytest.raises(TypeError, match="labels"):
    f(LOGITS, INT_LABELS.astype(np.float32))
  with pytest.raises(TypeError, match="logits"):
    f(LOGITS.astype(np.int32), INT_LABELS)
  with pytest.raises(ValueError, match=r"labels.*\(4,\).*\(4, 1\)"):
    f(LOGITS, INT_LABELS[:, None])
  with pytest.raises(ValueError, match=r"alpha.*\(5,\).*\(4,\)"):
    f(LOGITS, INT_LABELS, alpha=np.ones(4))
  with pytest.raises(ValueError, match="where"):
    f(LOGITS, INT_LABELS, where=np.ones((4, 5), bool))
  with pytest.raises(TypeError, match="where"):
    f(LOGITS, INT_LABELS, where=np.ones(4, np.float32))
  with pytest.raises(ValueError, match="gamma"):
    f(LOGITS, INT_LABELS, gamma=-1.0)
  with pytest.raises(ValueError, match=r"labels.*\[0, 5\).*7"):
    f(LOGITS, np.array([0, 7, 1, 1]))
  with pytest.raises(ValueError, match="class_weights"):
    cls.softmax_cross_entropy_with_integer_labels(
        LOGITS, INT_LABELS, class_weights=2.0)
  with pytest.raises(ValueError, match="class_priors"):
    cls.logit_adjusted_softmax_cross_entropy(
        LOGITS, INT_LABELS, class_priors=np.ones(3))
  with pytest.raises(ValueError, match="class_priors.*negative"):
    cls.logit_adjusted_softmax_cross_entropy(
        LOGITS, INT_LABELS, class_priors=np.array([1.0, -1, 1, 1, 1]))


def test_probability_label_errors():
  with pytest.raises(ValueError, match=r"labels.*\(4, 5\)"):
    cls.softmax_focal_loss(LOGITS, INT_LABELS)
  with pytest.raises(ValueError, match="axis"):
    cls.softmax_focal_loss(LOGITS, ONE_HOT, axis=2)
  with pytest.raises(ValueError, match="alpha"):
    cls.softmax_focal_loss(LOGITS, ONE_HOT, alpha=np.ones((5, 1)))
  with pytest.raises(ValueError, match="alpha"):
    cls.smooth_labels(ONE_HOT, 1.5)


def test_padding_labels_allowed_when_masked_and_nan_under_jit():
  labels = np.array([0, -100, 4, 9])
  where = np.array([True, False, True, False])
  got = cls.softmax_cross_entropy_with_integer_labels(LOGITS, labels,
                                                      where=where)
  np.testing.assert_allclose(
      got, np.where(where, np_ce(LOGITS, np.where(where, labels, 0)), 0.0),
      rtol=1e-5)
  # Unmasked out-of-range labels cannot be checked under jit: NaN, not a
  # silent read of another class.
  jitted = jax.jit(cls.softmax_cross_entropy_with_integer_labels)(
      LOGITS, labels)
  assert np.isnan(jitted[1]) and np.isnan(jitted[3])
  np.testing.assert_allclose(jitted[np.array([0, 2])],
                             np_ce(LOGITS[[0, 2]], labels[[0, 2]]), rtol=1e-5)


def test_traced_hyperparameters_inside_jit():
  # gamma and alpha may come from schedules inside the jitted step.
  @jax.jit
  def loss(gamma, alpha):
    return cls.softmax_focal_loss_with_integer_labels(
        LOGITS, INT_LABELS, alpha=alpha, gamma=gamma)

  alpha = np.linspace(0.5, 1.5, 5).astype(np.float32)
  for gamma in (0.0, 1.0, 2.0):
    expected = alpha[INT_LABELS] * np_focal(LOGITS, ONE_HOT, gamma)
    np.testing.assert_allclose(loss(jnp.float32(gamma), alpha), expected,
                               rtol=1e-5)


# ------------------------------------------------------- sigmoid focal loss


def np_sigmoid_focal(x, y, gamma, alpha=None):
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  p = 1.0 / (1.0 + np.exp(-x))
  ce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
  p_t = p * y + (1 - p) * (1 - y)
  loss = ce * (1 - p_t) ** gamma
  if alpha is not None:
    loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
  return loss


SIG_LOGITS = RNG.normal(size=(5, 6)).astype(np.float32) * 3.0
SIG_LABELS = (RNG.uniform(size=(5, 6)) < 0.3).astype(np.float32)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_sigmoid_focal_matches_numpy_and_optax(gamma, alpha):
  got = cls.sigmoid_focal_loss(SIG_LOGITS, SIG_LABELS, alpha=alpha,
                               gamma=gamma)
  assert got.shape == SIG_LOGITS.shape
  np.testing.assert_allclose(
      got, np_sigmoid_focal(SIG_LOGITS, SIG_LABELS, gamma, alpha), rtol=1e-5,
      atol=1e-7)
  ref = optax.losses.sigmoid_focal_loss(SIG_LOGITS, SIG_LABELS, alpha=alpha,
                                        gamma=gamma)
  np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_sigmoid_focal_gamma_zero_is_binary_cross_entropy():
  got = cls.sigmoid_focal_loss(SIG_LOGITS, SIG_LABELS, gamma=0.0)
  ref = optax.sigmoid_binary_cross_entropy(SIG_LOGITS, SIG_LABELS)
  np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)


def test_sigmoid_focal_per_class_alpha_and_soft_labels():
  alpha = np.linspace(0.1, 0.9, 6).astype(np.float32)
  soft = np.clip(SIG_LABELS * 0.9 + 0.05, 0, 1)
  got = cls.sigmoid_focal_loss(SIG_LOGITS, soft, alpha=alpha, gamma=2.0)
  np.testing.assert_allclose(
      got, np_sigmoid_focal(SIG_LOGITS, soft, 2.0, alpha), rtol=1e-5,
      atol=1e-7)
  # Per-class alpha equals a scalar alpha column by column.
  for c in (0, 5):
    col = cls.sigmoid_focal_loss(SIG_LOGITS, soft, alpha=float(alpha[c]),
                                 gamma=2.0)[:, c]
    np.testing.assert_allclose(got[:, c], col, rtol=1e-6)
  # Bool labels are accepted.
  np.testing.assert_allclose(
      cls.sigmoid_focal_loss(SIG_LOGITS, SIG_LABELS.astype(bool)),
      cls.sigmoid_focal_loss(SIG_LOGITS, SIG_LABELS), rtol=0)


def test_sigmoid_focal_where_example_and_element_masks():
  rows = np.array([True, False, True, True, False])
  elems = RNG.uniform(size=SIG_LOGITS.shape) < 0.6
  for where, keep in ((rows, np.broadcast_to(rows[:, None], elems.shape)),
                      (elems, elems)):
    garbage = SIG_LOGITS.copy()
    garbage[~keep] = np.nan
    fn = lambda x: cls.sigmoid_focal_loss(x, SIG_LABELS, alpha=0.25,
                                          where=where)
    loss = fn(garbage)
    np.testing.assert_array_equal(np.asarray(loss)[~keep], 0.0)
    np.testing.assert_allclose(
        np.asarray(loss)[keep],
        np.asarray(cls.sigmoid_focal_loss(SIG_LOGITS, SIG_LABELS,
                                          alpha=0.25))[keep], rtol=1e-6)
    grads = jax.jit(jax.grad(lambda x: fn(x).sum()))(garbage)
    assert np.all(np.isfinite(grads))
    np.testing.assert_array_equal(np.asarray(grads)[~keep], 0.0)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_sigmoid_focal_extreme_logits_and_check_grads(gamma):
  extreme = np.where(SIG_LOGITS > 0, 1e4, -1e4).astype(np.float32)
  value, grads = jax.jit(jax.value_and_grad(
      lambda x: cls.sigmoid_focal_loss(x, SIG_LABELS, gamma=gamma).sum()))(
          extreme)
  assert np.isfinite(value) and np.all(np.isfinite(grads))
  with jax.enable_x64(True):
    x = jnp.asarray(SIG_LOGITS[:2], jnp.float64)
    check_grads(lambda z: cls.sigmoid_focal_loss(
        z, SIG_LABELS[:2], alpha=0.25, gamma=gamma), (x,), order=2,
                modes=("rev",), atol=1e-5, rtol=1e-5)


def test_sigmoid_focal_errors():
  with pytest.raises(ValueError, match="labels"):
    cls.sigmoid_focal_loss(SIG_LOGITS, SIG_LABELS[:, :3])
  with pytest.raises(ValueError, match=r"alpha.*\(6,\)"):
    cls.sigmoid_focal_loss(SIG_LOGITS, SIG_LABELS, alpha=np.ones(3))
  with pytest.raises(ValueError, match=r"alpha.*\[0.0, 1.0\]"):
    cls.sigmoid_focal_loss(SIG_LOGITS, SIG_LABELS, alpha=1.5)
  with pytest.raises(ValueError, match="gamma"):
    cls.sigmoid_focal_loss(SIG_LOGITS, SIG_LABELS, gamma=-1.0)
  with pytest.raises(ValueError, match="where"):
    cls.sigmoid_focal_loss(SIG_LOGITS, SIG_LABELS, where=np.ones(3, bool))
