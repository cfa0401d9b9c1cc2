"""Tests for jaxloss.losses.sequence against NumPy and per-token references."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxloss.losses import sequence
from jaxloss.losses import softmax_focal_loss_with_integer_labels
from jaxloss.losses import weighted_mean

RNG = np.random.default_rng(0)
# Tags: O, B-PER, I-PER, B-LOC, I-LOC.
B, T, C = 3, 6, 5
LOGITS = (RNG.normal(size=(B, T, C)) * 2.0).astype(np.float32)
LENGTHS = np.array([6, 4, 1])
WHERE = np.arange(T)[None, :] < LENGTHS[:, None]
LABELS = np.where(WHERE, RNG.integers(0, C, size=(B, T)), -100).astype(
    np.int32)
WEIGHTS = np.array([0.1, 2.0, 2.0, 5.0, 5.0], np.float32)


def _jit_value_and_grad(fn):
  # One compiled program per test keeps the suite fast on small CPUs.
  return jax.jit(jax.value_and_grad(fn))


def np_token_losses(logits, labels, weights=None, gamma=0.0):
  x = np.asarray(logits, np.float64)
  m = x.max(-1, keepdims=True)
  log_probs = x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
  log_p = np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
  w = 1.0 if weights is None else np.asarray(weights, np.float64)[labels]
  return w * (1.0 - np.exp(log_p)) ** gamma * -log_p


def np_sequence(logits, labels, where, weights=None, gamma=0.0):
  """Loops over sequences, slicing each to its valid tokens."""
  out = []
  for x, y, w in zip(logits, labels, where):
    tok = np_token_losses(x[w], y[w], weights, gamma)
    out.append(tok.mean() if w.any() else 0.0)
  return np.array(out)


def _loss(x, y=LABELS, where=WHERE, **kw):
  return sequence.sequence_tagging_loss(x, y, where=where, **kw)


# ------------------------------------------------------------ reference values


@pytest.mark.parametrize("gamma", [0.0, 2.0])
@pytest.mark.parametrize("weights", [None, WEIGHTS], ids=["plain", "weighted"])
def test_matches_numpy(gamma, weights):
  got = _loss(LOGITS, class_weights=weights, gamma=gamma)
  np.testing.assert_allclose(
      got, np_sequence(LOGITS, LABELS, WHERE, weights, gamma), rtol=1e-5)


def test_hand_value_uniform_logits():
  # Uniform logits over 5 tags: every token costs w_y * (4/5)**gamma * ln 5.
  labels = np.array([[0, 3, 3, 0]])
  where = np.array([[True, True, True, False]])
  got = _loss(np.zeros((1, 4, C), np.float32), labels, where,
              class_weights=WEIGHTS, gamma=2.0)
  expected = (0.1 + 5.0 + 5.0) / 3 * 0.8**2 * np.log(5.0)
  np.testing.assert_allclose(got, [expected], rtol=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_equals_sum_of_per_token_focal_loss(gamma):
  tok = softmax_focal_loss_with_integer_labels(
      LOGITS, LABELS, alpha=WEIGHTS, gamma=gamma, where=WHERE)
  expected = np.asarray(tok).sum(-1) / LENGTHS
  got = _loss(LOGITS, class_weights=WEIGHTS, gamma=gamma)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_documented_pytorch_pooled_mean_recipe():
  # PyTorch CrossEntropyLoss(weight=w, ignore_index=-100), written in NumPy:
  # sum of w[y] * CE over all valid tokens / sum of w[y].
  flat_x = LOGITS[WHERE]
  flat_y = LABELS[WHERE]
  torch_ref = (np_token_losses(flat_x, flat_y, WEIGHTS).sum() /
               WEIGHTS[flat_y].sum())
  tok = softmax_focal_loss_with_integer_labels(
      LOGITS, LABELS, alpha=WEIGHTS, gamma=0.0, where=WHERE)
  w_tok = jnp.where(WHERE, WEIGHTS[np.where(WHERE, LABELS, 0)], 0.0)
  np.testing.assert_allclose(tok.sum() / w_tok.sum(), torch_ref, rtol=1e-5)
  unweighted = softmax_focal_loss_with_integer_labels(
      LOGITS, LABELS, gamma=0.0, where=WHERE)
  np.testing.assert_allclose(weighted_mean(unweighted, w_tok, WHERE),
                             torch_ref, rtol=1e-5)
  # ...and it is a different number from the mean of the per-sequence loss.
  ours = float(np.mean(_loss(LOGITS, class_weights=WEIGHTS)))
  assert abs(ours - torch_ref) > 0.05 * torch_ref


# -------------------------------------------------------- padding and masks


def test_where_equals_slicing_the_time_axis_with_garbage_padding():
  logits = LOGITS.copy()
  logits[~WHERE] = np.nan
  logits[2, 3] = np.inf

  def fn(x):
    return _loss(x, class_weights=WEIGHTS, gamma=2.0).sum()

  value, grads = _jit_value_and_grad(fn)(logits)
  per_seq = np.asarray(_loss(logits, class_weights=WEIGHTS, gamma=2.0))
  total = 0.0
  for b in range(B):
    n = LENGTHS[b]
    v, g = jax.value_and_grad(lambda x: sequence.sequence_tagging_loss(
        x[None], LABELS[b, :n][None], where=np.ones((1, n), bool),
        class_weights=WEIGHTS, gamma=2.0)[0])(LOGITS[b, :n])
    np.testing.assert_allclose(per_seq[b], v, rtol=1e-6)
    np.testing.assert_allclose(grads[b, :n], g, rtol=1e-5, atol=1e-7)
    total += float(v)
  np.testing.assert_allclose(value, total, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(grads)[~WHERE], 0.0)


def test_all_padding_sequence_gives_zero_and_zero_grads():
  where = WHERE.copy()
  where[1] = False
  labels = LABELS.copy()
  labels[1] = -100
  logits = LOGITS.copy()
  logits[1] = np.nan
  for gamma in (0.0, 0.5, 2.0):
    value, grads = _jit_value_and_grad(
        lambda x: _loss(x, labels, where, class_weights=WEIGHTS,
                        gamma=gamma).sum())(logits)
    assert np.isfinite(value) and np.all(np.isfinite(grads))
    per_seq = np.asarray(_loss(logits, labels, where, class_weights=WEIGHTS,
                               gamma=gamma))
    assert per_seq[1] == 0.0
    np.testing.assert_array_equal(np.asarray(grads)[1], 0.0)
    np.testing.assert_allclose(
        per_seq[[0, 2]],
        np_sequence(LOGITS[[0, 2]], LABELS[[0, 2]], WHERE[[0, 2]], WEIGHTS,
                    gamma), rtol=1e-5)
  all_masked = _loss(LOGITS, LABELS, np.zeros((B, T), bool))
  np.testing.assert_array_equal(all_masked, 0.0)


# -------------------------------------------------------------------- grads


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_check_grads_float64(gamma):
  with jax.enable_x64(True):
    x = jnp.asarray(LOGITS[:2], jnp.float64)
    check_grads(jax.jit(lambda x: _loss(
        x, LABELS[:2], WHERE[:2], class_weights=WEIGHTS, gamma=gamma).sum()),
                (x,), order=2 if gamma != 0.5 else 1, modes=["rev"])


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_extreme_logits_finite_values_and_grads(gamma):
  # Token 0: right and certain; token 1: wrong and certain; token 2: padding.
  logits = np.array([[[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [1e4, 1e4, -1e4]]],
                    np.float32)
  labels = np.array([[0, 0, -100]])
  where = np.array([[True, True, False]])
  value, grads = _jit_value_and_grad(
      lambda x: _loss(x, labels, where, gamma=gamma).sum())(logits)
  assert np.isfinite(value) and np.all(np.isfinite(grads))
  # (0 + 2e4) / 2 valid tokens; gradient of the wrong token is
  # (p - onehot) / 2 and the certain right one's is 0.
  np.testing.assert_allclose(value, 1e4, rtol=1e-3)
  np.testing.assert_allclose(grads[0, 1], [-0.5, 0.5, 0.0], atol=1e-6)
  np.testing.assert_array_equal(np.abs(grads[0, [0, 2]]), 0.0)


# ----------------------------------------------------------- dtypes, shapes


def test_bf16_in_bf16_out():
  x = jnp.asarray(LOGITS, jnp.bfloat16)
  got = _loss(x, class_weights=WEIGHTS, gamma=2.0)
  assert got.dtype == jnp.bfloat16
  ref = _loss(x.astype(jnp.float32), class_weights=WEIGHTS, gamma=2.0)
  assert ref.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got, np.float32), ref, rtol=1e-2,
                             atol=1e-2)


def test_leading_axes_equal_loop():
  logits = RNG.normal(size=(2, 3, T, C)).astype(np.float32)
  labels = RNG.integers(0, C, size=(2, 3, T)).astype(np.int32)
  where = RNG.random((2, 3, T)) > 0.3
  got = _loss(logits, labels, where, class_weights=WEIGHTS, gamma=1.0)
  assert got.shape == (2, 3)
  looped = np.stack([np_sequence(logits[a], labels[a], where[a], WEIGHTS, 1.0)
                     for a in range(2)])
  np.testing.assert_allclose(got, looped, rtol=1e-5)
  flat = _loss(logits.reshape(6, T, C), labels.reshape(6, T),
               where.reshape(6, T), class_weights=WEIGHTS, gamma=1.0)
  np.testing.assert_allclose(got.reshape(6), flat, rtol=1e-6)


def test_traced_once_with_traced_gamma():

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(logits, gamma):
    return _loss(logits, class_weights=WEIGHTS, gamma=gamma)

  for k, gamma in enumerate((0.0, 2.0, 0.5)):
    logits = LOGITS + k
    np.testing.assert_allclose(
        step(logits, jnp.float32(gamma)),
        np_sequence(logits, LABELS, WHERE, WEIGHTS, gamma), rtol=1e-5)


# ----------------------------------------------------------------- errors


def test_errors_name_the_argument():
  f = sequence.sequence_tagging_loss
  with pytest.raises(TypeError, match="where"):
    f(LOGITS, LABELS)  # pylint: disable=missing-kwoa
  with pytest.raises(TypeError, match="where.*required"):
    f(LOGITS, LABELS, where=None)
  with pytest.raises(ValueError, match=r"where.*\(3, 6\).*\(3,\)"):
    f(LOGITS, LABELS, where=WHERE[:, 0])
  with pytest.raises(ValueError, match=r"where.*\(3, 6\).*\(3, 6, 5\)"):
    f(LOGITS, LABELS, where=np.ones((B, T, C), bool))
  with pytest.raises(TypeError, match="where"):
    f(LOGITS, LABELS, where=WHERE.astype(np.float32))
  with pytest.raises(ValueError, match=r"labels.*\(3, 6\).*\(3, 5\)"):
    f(LOGITS, LABELS[:, :5], where=WHERE[:, :5])
  with pytest.raises(TypeError, match="labels"):
    f(LOGITS, LABELS.astype(np.float32), where=WHERE)
  with pytest.raises(TypeError, match="logits"):
    f(LOGITS.astype(np.int32), LABELS, where=WHERE)
  with pytest.raises(ValueError, match=r"logits.*\[\.\.\., T, C\].*\(5,\)"):
    f(LOGITS[0, 0], np.int32(0), where=np.bool_(True))
  with pytest.raises(ValueError, match=r"class_weights.*\(5,\).*\(4,\)"):
    f(LOGITS, LABELS, where=WHERE, class_weights=np.ones(4))
  with pytest.raises(ValueError, match=r"class_weights.*\(5,\).*\(\)"):
    f(LOGITS, LABELS, where=WHERE, class_weights=2.0)
  with pytest.raises(ValueError, match="class_weights.*non-negative"):
    f(LOGITS, LABELS, where=WHERE, class_weights=-WEIGHTS)
  with pytest.raises(ValueError, match="gamma"):
    f(LOGITS, LABELS, where=WHERE, gamma=-1.0)
  with pytest.raises(ValueError, match="gamma"):
    f(LOGITS, LABELS, where=WHERE, gamma=np.ones(2))
  bad = LABELS.copy()
  bad[0, 2] = 7
  with pytest.raises(ValueError, match=r"labels.*\[0, 5\).*7"):
    f(LOGITS, bad, where=WHERE)
  # -100 at a valid token is out of range too.
  with pytest.raises(ValueError, match=r"labels.*-100"):
    f(LOGITS, LABELS, where=np.ones((B, T), bool))


def test_out_of_range_label_under_jit_is_nan_not_another_class():
  bad = LABELS.copy()
  bad[0, 2] = 7
  got = jax.jit(lambda x, y: _loss(x, y))(LOGITS, bad)
  assert np.isnan(got[0])
  np.testing.assert_allclose(got[1:], np_sequence(LOGITS, LABELS, WHERE)[1:],
                             rtol=1e-5)
