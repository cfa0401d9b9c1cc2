"""Tests for jaxloss.losses.weighted_sum."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxloss.losses as L

INTENT = np.array([0.5, 1.5, 2.0], np.float32)
ENTITY = np.array([0.25, 0.75, 3.0], np.float32)
COMMAND = np.array([1.0, 0.0, 0.5], np.float32)


def test_fixed_weights_match_hand_sum():
  total, weighted = L.weighted_sum(
      {"intent": INTENT, "entity": ENTITY, "command": COMMAND},
      {"intent": 0.3, "entity": 0.5, "command": 0.2})
  expected = 0.3 * INTENT + 0.5 * ENTITY + 0.2 * COMMAND
  np.testing.assert_allclose(total, expected, rtol=1e-6)
  np.testing.assert_allclose(weighted["entity"], 0.5 * ENTITY, rtol=1e-6)
  np.testing.assert_allclose(sum(weighted.values()), total, rtol=1e-6)
  assert list(weighted) == ["intent", "entity", "command"]


def test_scheduled_entity_warmup_inside_jit_traces_once():
  # The joint-NLU warm-up: entity weight 0.3 -> 0.4 -> 0.5 at epochs 1, 2
  # (10 steps an epoch), as one optax schedule evaluated on the traced step.
  warmup = optax.piecewise_constant_schedule(0.3, {10: 4.0 / 3.0, 20: 1.25})
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def total_at(step):
    total, _ = L.weighted_sum({"intent": INTENT, "entity": ENTITY},
                              {"intent": 0.3, "entity": warmup}, step=step)
    return total

  for step, lam in [(0, 0.3), (9, 0.3), (10, 0.4), (25, 0.5), (1000, 0.5)]:
    np.testing.assert_allclose(total_at(jnp.int32(step)),
                               0.3 * INTENT + lam * ENTITY, rtol=1e-6)


def test_traced_weights_and_gradients():
  def objective(x, lam):
    total, _ = L.weighted_sum({"a": x ** 2, "b": x}, {"a": lam, "b": 1.0})
    return total.sum()

  grads = jax.jit(jax.grad(objective))(jnp.array([1.0, 2.0]), 0.5)
  np.testing.assert_allclose(grads, [2.0, 3.0])


def test_bf16_terms_stay_bf16_and_scalars_work():
  total, _ = L.weighted_sum({"a": jnp.asarray(INTENT, jnp.bfloat16)},
                            {"a": 0.7})
  assert total.dtype == jnp.bfloat16
  total, _ = L.weighted_sum({"a": jnp.float32(2.0), "b": jnp.float32(4.0)},
                            {"a": 0.8, "b": 0.2})
  np.testing.assert_allclose(total, 2.4, rtol=1e-6)


@pytest.mark.parametrize("terms, weights, kwargs, error, pattern", [
    ({}, {}, {}, ValueError, "terms.*at least one"),
    ({"a": INTENT}, {"b": 1.0}, {}, ValueError,
     r"missing weights for \['a'\].*\['b'\]"),
    ({"a": INTENT, "b": INTENT[:2]}, {"a": 1.0, "b": 1.0}, {}, ValueError,
     r"same shape.*'a': \(3,\).*'b': \(2,\)"),
    ({"a": INTENT}, {"a": -0.5}, {}, ValueError,
     r"weights\['a'\].*non-negative"),
    ({"a": INTENT}, {"a": np.ones(2)}, {}, ValueError,
     r"weights\['a'\].*scalar"),
    ({"a": INTENT}, {"a": optax.constant_schedule(0.5)}, {}, ValueError,
     r"weights\['a'\].*schedule.*step="),
    ({"a": np.array([1, 2])}, {"a": 1.0}, {}, TypeError,
     r"terms\['a'\].*floating"),
])
def test_errors_name_the_argument(terms, weights, kwargs, error, pattern):
  with pytest.raises(error, match=pattern):
    L.weighted_sum(terms, weights, **kwargs)
