"""Tests for jaxloss.losses.reduce (weighted and masked means)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import log_loss

from jaxloss.losses import masked_mean
from jaxloss.losses import softmax_cross_entropy_with_integer_labels
from jaxloss.losses import weighted_mean

VALUES = np.array([1.0, 2.0, 3.0, 4.0], np.float32)


def test_weighted_mean_value():
  w = np.array([1.0, 0.5, 2.0, 0.0], np.float32)
  np.testing.assert_allclose(weighted_mean(VALUES, w),
                             (1 + 1 + 6) / 3.5, rtol=1e-6)
  np.testing.assert_allclose(weighted_mean(VALUES), 2.5, rtol=1e-6)
  where = np.array([True, False, True, True])
  np.testing.assert_allclose(weighted_mean(VALUES, w, where),
                             (1 + 6) / 3.0, rtol=1e-6)
  np.testing.assert_allclose(masked_mean(VALUES, where), 8.0 / 3.0,
                             rtol=1e-6)


def test_broadcast_weights_and_mask_over_heads():
  values = np.arange(6, dtype=np.float32).reshape(3, 2)
  w = np.array([[1.0], [2.0], [0.0]], np.float32)  # per example, all heads
  where = np.array([True, False])  # per head
  # Included: (0, 0) w1 and (1, 0) w2 -> (0 + 2 * 2) / 3.
  np.testing.assert_allclose(weighted_mean(values, w, where), 4.0 / 3.0,
                             rtol=1e-6)
  with pytest.raises(ValueError, match=r"weights.*\(3, 2\).*\(3,\)"):
    weighted_mean(values, np.ones(3))
  with pytest.raises(ValueError, match="where"):
    weighted_mean(values, where=np.ones((3, 2, 1), bool))
  with pytest.raises(TypeError, match="where"):
    masked_mean(values, np.ones((3, 2), np.float32))


def test_class_weighted_mean_matches_pytorch_normalisation():
  # PyTorch CrossEntropyLoss(weight=w, reduction="mean") divides by the sum of
  # the label weights; sklearn's log_loss with sample_weight is the same.
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(6, 3)).astype(np.float32)
  labels = np.array([0, 1, 2, 2, 1, 0])
  w = np.array([0.2, 1.0, 5.0], np.float32)
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  expected = log_loss(labels, probs, sample_weight=w[labels], labels=[0, 1, 2])
  ce = softmax_cross_entropy_with_integer_labels(logits, labels)
  np.testing.assert_allclose(weighted_mean(ce, w[labels]), expected,
                             rtol=1e-5)
  weighted_ce = softmax_cross_entropy_with_integer_labels(
      logits, labels, class_weights=w)
  np.testing.assert_allclose(weighted_ce.sum() / w[labels].sum(), expected,
                             rtol=1e-5)


def test_empty_denominator_gives_zero_and_zero_grads():
  grad_fn = jax.jit(jax.value_and_grad(weighted_mean, argnums=(0, 1)))
  for w, where in ((np.zeros(4, np.float32), None),
                   (np.ones(4, np.float32), np.zeros(4, bool))):
    value, (g_values, g_weights) = grad_fn(VALUES, w, where)
    assert value == 0.0
    np.testing.assert_array_equal(g_values, 0.0)
    np.testing.assert_array_equal(g_weights, 0.0)


def test_nan_in_excluded_entries_does_not_leak():
  values = np.array([1.0, np.nan, 3.0, np.inf], np.float32)
  where = np.array([True, False, True, False])
  value, grads = jax.jit(jax.value_and_grad(masked_mean))(values, where)
  np.testing.assert_allclose(value, 2.0, rtol=1e-6)
  np.testing.assert_array_equal(grads, [0.5, 0.0, 0.5, 0.0])
  # A zero weight excludes a NaN too.
  np.testing.assert_allclose(
      weighted_mean(values, np.array([1.0, 0.0, 1.0, 0.0])), 2.0, rtol=1e-6)


def test_gradient_is_weight_over_denominator():
  w = np.array([1.0, 3.0, 0.0, 4.0], np.float32)
  grads = jax.jit(jax.grad(weighted_mean))(VALUES, w)
  np.testing.assert_allclose(grads, w / w.sum(), rtol=1e-6)


def test_dtypes():
  assert weighted_mean(jnp.asarray(VALUES, jnp.bfloat16)).dtype == jnp.bfloat16
  assert masked_mean(np.arange(4)).dtype == jnp.float32
  np.testing.assert_allclose(masked_mean(np.arange(4)), 1.5)
  # A bf16 accumulator would lose the count above 256 entries; float32 does
  # not: the mean of 1000 ones is exactly 1.
  ones = jnp.ones((1000,), jnp.bfloat16)
  assert float(masked_mean(ones, np.arange(1000) % 2 == 0)) == 1.0
  big = jnp.full((1000,), 3.0, jnp.bfloat16)
  assert float(weighted_mean(big, jnp.full((1000,), 0.1))) == 3.0
