"""Contract every per-example loss in jaxloss.losses must satisfy.

Each loss gets a small adapter that builds valid labels and hyperparameters,
so the same checks run over all of them: the output has the batch shape and
the logits' dtype, jit and eager agree, a fully masked batch gives zeros with
finite zero gradients, extreme logits stay finite, and bad label shapes raise
ValueError naming ``labels``. A new loss joins the suite by adding a row to
``LOSSES``.
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxloss.losses as L

NUM_CLASSES = 4
BATCH_SHAPE = (2, 3)  # two leading batch axes, e.g. [B, heads]


@dataclasses.dataclass(frozen=True)
class LossCase:
  name: str
  # (logits, labels, where) -> per-example loss
  fn: Callable
  # batch shape, rng -> valid labels
  make_labels: Callable
  # batch shape -> labels with a wrong shape
  bad_labels: Callable


def _int_labels(shape, rng):
  return rng.integers(0, NUM_CLASSES, size=shape).astype(np.int32)


def _one_hot_labels(shape, rng):
  return np.eye(NUM_CLASSES, dtype=np.float32)[_int_labels(shape, rng)]


def _bad_int_labels(shape):
  return np.zeros(shape + (1,), np.int32)


def _bad_prob_labels(shape):
  return np.zeros(shape, np.float32)


ALPHA = np.array([0.25, 0.5, 1.0, 2.0], np.float32)
PRIORS = np.array([0.6, 0.3, 0.1, 0.0], np.float32)

LOSSES = [
    LossCase(
        "softmax_focal_loss",
        lambda x, y, where: L.softmax_focal_loss(
            x, y, alpha=ALPHA, gamma=2.0, where=where),
        _one_hot_labels, _bad_prob_labels),
    LossCase(
        "softmax_focal_loss_gamma_half",
        lambda x, y, where: L.softmax_focal_loss(
            x, L.smooth_labels(y, 0.1), gamma=0.5, where=where),
        _one_hot_labels, _bad_prob_labels),
    LossCase(
        "softmax_focal_loss_with_integer_labels",
        lambda x, y, where: L.softmax_focal_loss_with_integer_labels(
            x, y, alpha=ALPHA, gamma=2.0, where=where),
        _int_labels, _bad_int_labels),
    LossCase(
        "softmax_cross_entropy_with_integer_labels",
        lambda x, y, where: L.softmax_cross_entropy_with_integer_labels(
            x, y, class_weights=ALPHA, where=where),
        _int_labels, _bad_int_labels),
    LossCase(
        "logit_adjusted_softmax_cross_entropy",
        lambda x, y, where: L.logit_adjusted_softmax_cross_entropy(
            x, y, class_priors=PRIORS, tau=1.0, where=where),
        _int_labels, _bad_int_labels),
]
IDS = [case.name for case in LOSSES]


def _inputs(dtype=jnp.float32, seed=0):
  rng = np.random.default_rng(seed)
  logits = jnp.asarray(rng.normal(size=BATCH_SHAPE + (NUM_CLASSES,)) * 3,
                       dtype)
  return logits, rng


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_batch_shape_and_dtype(case, dtype):
  logits, rng = _inputs(dtype)
  loss = case.fn(logits, case.make_labels(BATCH_SHAPE, rng), None)
  assert loss.shape == BATCH_SHAPE
  assert loss.dtype == dtype
  assert np.all(np.isfinite(np.asarray(loss, np.float32)))
  assert np.all(np.asarray(loss, np.float32) >= 0.0)


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
def test_jit_matches_eager(case):
  logits, rng = _inputs()
  labels = case.make_labels(BATCH_SHAPE, rng)
  where = np.array([[True, False, True], [True, True, False]])
  eager = case.fn(logits, labels, where)
  jitted = jax.jit(case.fn)(logits, labels, where)
  np.testing.assert_allclose(eager, jitted, rtol=1e-6, atol=1e-7)
  assert np.all(np.asarray(eager)[~where] == 0.0)
  assert np.all(np.asarray(eager)[where] > 0.0)


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
def test_all_masked_gives_zero_loss_and_zero_grads(case):
  logits, rng = _inputs()
  labels = case.make_labels(BATCH_SHAPE, rng)
  where = np.zeros(BATCH_SHAPE, bool)

  def total(x):
    loss = case.fn(x, labels, where)
    return L.masked_mean(loss, where), loss

  (value, loss), grads = jax.jit(jax.value_and_grad(total, has_aux=True))(
      logits)
  assert value == 0.0
  np.testing.assert_array_equal(loss, np.zeros(BATCH_SHAPE))
  np.testing.assert_array_equal(grads, np.zeros_like(logits))


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
def test_extreme_logits_are_finite(case):
  logits, rng = _inputs()
  labels = case.make_labels(BATCH_SHAPE, rng)
  # +-1e4 everywhere, so some labels sit at +1e4 (p == 1 in float32) and
  # others at -1e4 (log p == -2e4).
  extreme = jnp.where(logits > 0, 1e4, -1e4)
  value, grads = jax.jit(jax.value_and_grad(
      lambda x: case.fn(x, labels, None).sum()))(extreme)
  assert np.isfinite(value)
  assert np.all(np.isfinite(grads))


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
def test_bad_shapes_and_dtypes_raise(case):
  logits, rng = _inputs()
  labels = case.make_labels(BATCH_SHAPE, rng)
  with pytest.raises(ValueError, match="labels"):
    case.fn(logits, case.bad_labels(BATCH_SHAPE), None)
  with pytest.raises(ValueError, match="where"):
    case.fn(logits, labels, np.ones(BATCH_SHAPE[:1], bool))
  with pytest.raises(TypeError, match="logits"):
    case.fn(jnp.zeros(logits.shape, jnp.int32), labels, None)


def test_every_exported_loss_is_covered():
  exported = {name for name in L.__all__ if "loss" in name
              or "cross_entropy" in name}
  covered = {case.name.replace("_gamma_half", "") for case in LOSSES}
  assert exported == covered
