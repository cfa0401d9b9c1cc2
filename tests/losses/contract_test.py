"""The contract every public loss in jaxloss.losses satisfies (rax style).

One suite, every loss: the output has the documented shape and the input's
dtype (bf16 in, bf16 out); arbitrary leading batch axes equal a loop over
them; one trace under ``jax.jit`` for new values, and jit equals eager;
``where`` equals slicing; everything masked gives 0 with zero, finite
gradients even when the masked inputs are NaN; ``jax.test_util.check_grads``
in float64; finite values and gradients at inputs of +-1e4; bad shapes and
dtypes raise errors naming the argument.

Each loss joins the suite through one ``LossCase`` row. ``kind`` says what
``where`` masks:

* ``"rows"``: independent examples (``where`` has the output's batch shape);
  masking equals dropping those rows.
* ``"set"``: members of a batch-coupled axis (contrastive batch, candidate
  list, token sequence); masking equals slicing that axis out, and for a loss
  with one value per member the kept members' values must not change.
"""

import dataclasses
import itertools
from typing import Callable, Tuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxloss.losses as L

C = 4  # classes
N = 6  # members of a coupled axis: contrastive batch, candidates, tokens
D = 5  # embedding size
LEAD = (2, 3)  # leading batch axes for the batch-axes test

ALPHA = np.array([0.25, 0.5, 1.0, 2.0], np.float32)
PRIORS = np.array([0.6, 0.3, 0.1, 0.0], np.float32)
COUNTS = np.array([600, 300, 100, 7])
TRANSITIONS = np.random.default_rng(7).normal(size=(C, C)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class LossCase:
  name: str
  # (x, aux, where) -> loss; x is the differentiable input.
  fn: Callable
  # (rng, lead) -> (x float32, aux); the output has shape out_shape(lead).
  make: Callable
  kind: str  # "rows" or "set"
  x_name: str  # the argument name that errors about x mention
  out_shape: Callable[[Tuple[int, ...]], Tuple[int, ...]]
  # lead -> shape of `where`
  where_shape: Callable[[Tuple[int, ...]], Tuple[int, ...]]
  # aux -> aux with a wrong shape, and the argument name the error names
  bad_aux: Callable
  aux_name: str = "labels"


def _logits(rng, shape):
  return (rng.normal(size=shape) * 3.0).astype(np.float32)


def _int_labels(rng, shape, k=C):
  # Every class appears in a coupled set of N = 6, so contrastive anchors
  # mostly have positives.
  return rng.integers(0, k, size=shape).astype(np.int32)


def _rows_case(name, fn, make_aux, bad_aux=lambda y: y[..., None]):
  return LossCase(
      name, fn,
      make=lambda rng, lead: (_logits(rng, lead + (C,)),
                              make_aux(rng, lead)),
      kind="rows", x_name="logits", out_shape=lambda lead: lead,
      where_shape=lambda lead: lead, bad_aux=bad_aux)


def _one_hot(rng, lead):
  return np.eye(C, dtype=np.float32)[_int_labels(rng, lead)]


def _multi_hot(rng, shape):
  return (rng.uniform(size=shape) < 0.4).astype(np.float32)


def _relevance(rng, lead):
  # One positive per list (the reranking case) plus a graded second one.
  labels = np.zeros(lead + (N,), np.float32)
  flat = labels.reshape(-1, N)
  for row in flat:
    i, j = rng.choice(N, size=2, replace=False)
    row[i], row[j] = 1.0, 0.5
  return flat.reshape(lead + (N,))


LOSSES = [
    _rows_case(
        "softmax_focal_loss",
        lambda x, y, where: L.softmax_focal_loss(
            x, L.smooth_labels(y, 0.1), alpha=ALPHA, gamma=2.0, where=where),
        _one_hot, bad_aux=lambda y: y[..., :2]),
    _rows_case(
        "softmax_focal_loss_with_integer_labels",
        lambda x, y, where: L.softmax_focal_loss_with_integer_labels(
            x, y, alpha=ALPHA, gamma=0.5, where=where),
        _int_labels),
    _rows_case(
        "softmax_cross_entropy_with_integer_labels",
        lambda x, y, where: L.softmax_cross_entropy_with_integer_labels(
            x, y, class_weights=ALPHA, where=where),
        _int_labels),
    _rows_case(
        "logit_adjusted_softmax_cross_entropy",
        lambda x, y, where: L.logit_adjusted_softmax_cross_entropy(
            x, y, class_priors=PRIORS, tau=1.0, where=where),
        _int_labels),
    _rows_case(
        "balanced_softmax_cross_entropy",
        lambda x, y, where: L.balanced_softmax_cross_entropy(
            x, y, class_counts=COUNTS, where=where),
        _int_labels),
    _rows_case(
        "ldam_loss",
        lambda x, y, where: L.ldam_loss(
            x, y, class_counts=COUNTS, scale=4.0, where=where),
        _int_labels),
    LossCase(
        "sigmoid_focal_loss",
        lambda x, y, where: L.sigmoid_focal_loss(
            x, y, alpha=0.25, gamma=2.0, where=where),
        make=lambda rng, lead: (_logits(rng, lead + (C,)),
                                _multi_hot(rng, lead + (C,))),
        kind="rows", x_name="logits", out_shape=lambda lead: lead + (C,),
        where_shape=lambda lead: lead, bad_aux=lambda y: y[..., :2]),
    LossCase(
        "supervised_contrastive_loss",
        lambda x, y, where: L.supervised_contrastive_loss(
            x, y, temperature=0.5, where=where),
        make=lambda rng, lead: (_logits(rng, lead + (N, D)),
                                _int_labels(rng, lead + (N,), k=2)),
        kind="set", x_name="embeddings", out_shape=lambda lead: lead + (N,),
        where_shape=lambda lead: lead + (N,), bad_aux=lambda y: y[..., :2]),
    LossCase(
        "supervised_contrastive_loss_multilabel",
        lambda x, y, where: L.supervised_contrastive_loss(
            x, y, temperature=0.5, base_temperature=0.7, where=where),
        make=lambda rng, lead: (_logits(rng, lead + (N, D)),
                                _multi_hot(rng, lead + (N, 3))),
        kind="set", x_name="embeddings", out_shape=lambda lead: lead + (N,),
        where_shape=lambda lead: lead + (N,),
        bad_aux=lambda y: y[..., :2, :]),
    LossCase(
        "ntxent_loss",
        lambda x, y, where: L.ntxent_loss(x, y, temperature=0.5, where=where),
        make=lambda rng, lead: (_logits(rng, lead + (N, D)),
                                _logits(rng, lead + (N, D))),
        kind="set", x_name="embeddings_a", out_shape=lambda lead: lead + (N,),
        where_shape=lambda lead: lead + (N,), bad_aux=lambda y: y[..., :2, :],
        aux_name="embeddings_b"),
    LossCase(
        "listwise_softmax_loss",
        lambda x, y, where: L.listwise_softmax_loss(x, y, where=where),
        make=lambda rng, lead: (_logits(rng, lead + (N,)),
                                _relevance(rng, lead)),
        kind="set", x_name="scores", out_shape=lambda lead: lead,
        where_shape=lambda lead: lead + (N,), bad_aux=lambda y: y[..., :2]),
    LossCase(
        "pairwise_logistic_loss",
        lambda x, y, where: L.pairwise_logistic_loss(x, y, where=where),
        make=lambda rng, lead: (_logits(rng, lead + (N,)),
                                _relevance(rng, lead)),
        kind="set", x_name="scores", out_shape=lambda lead: lead,
        where_shape=lambda lead: lead + (N,), bad_aux=lambda y: y[..., :2]),
    LossCase(
        "sequence_tagging_loss",
        lambda x, y, where: L.sequence_tagging_loss(
            x, y, where=np.ones(y.shape, bool) if where is None else where,
            class_weights=ALPHA, gamma=2.0),
        make=lambda rng, lead: (_logits(rng, lead + (N, C)),
                                _int_labels(rng, lead + (N,))),
        kind="set", x_name="logits", out_shape=lambda lead: lead,
        where_shape=lambda lead: lead + (N,), bad_aux=lambda y: y[..., :2]),
    LossCase(
        "crf_sequence_loss",
        lambda x, y, where: L.crf_sequence_loss(
            x, y, where=np.ones(y.shape, bool) if where is None else where,
            transitions=TRANSITIONS, start_transitions=ALPHA, end_transitions=-ALPHA),
        make=lambda rng, lead: (_logits(rng, lead + (N, C)),
                                _int_labels(rng, lead + (N,))),
        kind="set", x_name="emissions", out_shape=lambda lead: lead,
        where_shape=lambda lead: lead + (N,), bad_aux=lambda y: y[..., :2]),
]
IDS = [case.name for case in LOSSES]


def _case_inputs(case, lead=(), seed=0):
  rng = np.random.default_rng(seed)
  x, aux = case.make(rng, lead)
  return x, aux, rng


def _mask(case, lead, rng):
  """A mask with at least two kept and one dropped entry on its last axis."""
  shape = case.where_shape(lead)
  where = rng.uniform(size=shape) < 0.6
  where[..., 0] = False
  where[..., 1:3] = True
  return where


def _sum_loss(case, aux, where):
  return lambda x: case.fn(x, aux, where).astype(jnp.float32).sum()


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_shape_dtype_finite_nonnegative(case, dtype):
  x, aux, _ = _case_inputs(case, lead=(3,))
  loss = case.fn(jnp.asarray(x, dtype), aux, None)
  assert loss.shape == case.out_shape((3,))
  assert loss.dtype == dtype
  values = np.asarray(loss, np.float32)
  assert np.all(np.isfinite(values)) and np.all(values >= 0.0)
  assert np.any(values > 0.0)
  if dtype == jnp.bfloat16:  # bf16 only rounds the inputs and the output
    ref = case.fn(jnp.asarray(jnp.asarray(x, dtype), jnp.float32), aux, None)
    np.testing.assert_allclose(values, ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
def test_leading_batch_axes_equal_a_loop(case):
  x, aux, _ = _case_inputs(case, lead=LEAD)
  batched = np.asarray(case.fn(x, aux, None))
  assert batched.shape == case.out_shape(LEAD)
  for index in itertools.product(*map(range, LEAD)):
    single = case.fn(x[index], aux[index], None)
    np.testing.assert_allclose(batched[index], single, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
def test_traced_once_and_jit_equals_eager(case):
  x, aux, rng = _case_inputs(case, lead=(2,))
  where = _mask(case, (2,), rng)
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def jitted(x, aux, where):
    return case.fn(x, aux, where)

  for scale in (1.0, 0.5, 2.0):  # new values, same shapes: no retrace
    np.testing.assert_allclose(jitted(x * scale, aux, where),
                               case.fn(x * scale, aux, where), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
def test_where_equals_slicing(case):
  lead = (5,) if case.kind == "rows" else ()
  x, aux, rng = _case_inputs(case, lead=lead, seed=3)
  where = _mask(case, lead, rng)
  garbage = x.copy()
  garbage[~where] = np.nan  # masked entries must not leak, even as NaN
  masked = np.asarray(case.fn(garbage, aux, where))
  sliced = np.asarray(case.fn(x[where], aux[where], None))
  if masked.shape[:1] == where.shape:  # one value per row / set member
    np.testing.assert_allclose(masked[where], sliced, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(masked[~where], 0.0)
  else:  # one value per set (a list, a sequence)
    np.testing.assert_allclose(masked, sliced, rtol=1e-5, atol=1e-6)
  grads = jax.jit(jax.grad(_sum_loss(case, aux, where)))(garbage)
  assert np.all(np.isfinite(grads))
  np.testing.assert_array_equal(np.asarray(grads)[~where], 0.0)


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
def test_all_masked_gives_zero_and_zero_finite_grads(case):
  x, aux, _ = _case_inputs(case, lead=(2,))
  where = np.zeros(case.where_shape((2,)), bool)
  garbage = np.full_like(x, np.nan)
  loss = case.fn(garbage, aux, where)
  np.testing.assert_array_equal(loss, np.zeros(case.out_shape((2,))))
  total = L.masked_mean(loss.reshape(-1), np.zeros(loss.size, bool))
  assert total == 0.0
  grads = jax.jit(jax.grad(_sum_loss(case, aux, where)))(garbage)
  np.testing.assert_array_equal(grads, np.zeros_like(x))


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
def test_check_grads_float64(case):
  x, aux, rng = _case_inputs(case, lead=(2,))
  where = _mask(case, (2,), rng)
  with jax.enable_x64(True):
    x64 = jnp.asarray(x, jnp.float64)
    aux64 = jnp.asarray(aux, jnp.float64) if np.issubdtype(
        aux.dtype, np.floating) else aux
    for w in (None, where):
      check_grads(lambda z, w=w: case.fn(z, aux64, w), (x64,), order=1,
                  modes=("rev",), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
@pytest.mark.parametrize("magnitude", [1e4, -1e4])
def test_extreme_inputs_are_finite(case, magnitude):
  x, aux, _ = _case_inputs(case, lead=(3,))
  # +-1e4 with the sign pattern of x: correct labels sit at +1e4 (p == 1 in
  # float32) and wrong ones at -1e4; all-equal magnitudes test ties.
  for extreme in (np.where(x > 0, 1e4, -1e4), np.full_like(x, magnitude)):
    extreme = extreme.astype(np.float32)
    value, grads = jax.jit(jax.value_and_grad(_sum_loss(case, aux, None)))(
        extreme)
    assert np.isfinite(value), (case.name, extreme)
    assert np.all(np.isfinite(grads)), case.name


@pytest.mark.parametrize("case", LOSSES, ids=IDS)
def test_bad_shapes_and_dtypes_raise(case):
  x, aux, rng = _case_inputs(case, lead=(3,))
  with pytest.raises(ValueError, match=case.aux_name):
    case.fn(x, case.bad_aux(aux), None)
  with pytest.raises(ValueError, match="where"):
    case.fn(x, aux, np.ones((7,), bool))
  with pytest.raises(TypeError, match=case.x_name):
    case.fn(x.astype(np.int32), aux, None)


def test_every_exported_loss_is_covered():
  exported = {name for name in L.__all__
              if "_loss" in name or "cross_entropy" in name}
  covered = {case.name.replace("_multilabel", "") for case in LOSSES}
  assert exported == covered


def test_top_level_package_reexports_every_loss():
  import jaxloss  # pylint: disable=g-import-not-at-top
  assert set(L.__all__) <= set(jaxloss.__all__)
  for name in L.__all__:
    assert getattr(jaxloss, name) is getattr(L, name)


def test_every_public_loss_docstring_is_complete():
  # Convention 6: shapes, dtypes, errors, a doctest and the reference.
  for name in L.__all__:
    doc = getattr(L, name).__doc__ or ""
    for section in ("Args:", "Returns:", "Examples:", ">>>"):
      assert section in doc, (name, section)
    if "_loss" in name or "cross_entropy" in name:
      assert "Raises:" in doc and "References:" in doc, name
      assert "shape" in doc and "dtype" in doc, name
