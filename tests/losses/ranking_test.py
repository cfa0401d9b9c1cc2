"""Tests for jaxloss.losses.ranking against NumPy, published and optax values.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from jaxloss.losses import ranking

RNG = np.random.default_rng(0)
B, L = 4, 7
SCORES = (RNG.normal(size=(B, L)) * 2.0).astype(np.float32)
GRADED = RNG.integers(0, 4, size=(B, L)).astype(np.int32)
ONE_HOT = np.eye(L, dtype=np.int32)[RNG.integers(0, L, size=B)]
# Ragged lists: 7, 5, 2 and 1 real candidates.
WHERE = np.arange(L)[None, :] < np.array([7, 5, 2, 1])[:, None]

LOSSES = {
    "listwise": ranking.listwise_softmax_loss,
    "pairwise": ranking.pairwise_logistic_loss,
}


def _jit_value_and_grad(fn):
  # One compiled program per test keeps the suite fast on small CPUs.
  return jax.jit(jax.value_and_grad(fn))


def np_listwise(scores, labels):
  """Reference for one list (already sliced to its valid candidates)."""
  s = np.asarray(scores, np.float64)
  y = np.asarray(labels, np.float64)
  if y.sum() == 0:
    return 0.0
  log_p = s - s.max() - np.log(np.exp(s - s.max()).sum())
  return float(-(y / y.sum() * log_p).sum())


def np_pairwise(scores, labels):
  s = np.asarray(scores, np.float64)
  y = np.asarray(labels, np.float64)
  terms = [np.logaddexp(0.0, s[j] - s[i])
           for i in range(len(s)) for j in range(len(s)) if y[i] > y[j]]
  return float(np.mean(terms)) if terms else 0.0


NP_REFS = {"listwise": np_listwise, "pairwise": np_pairwise}


def np_batched(name, scores, labels, where=None):
  scores = np.asarray(scores)
  if where is None:
    where = np.ones(scores.shape, bool)
  return np.array([NP_REFS[name](s[w], y[w])
                   for s, y, w in zip(scores, labels, where)])


# ------------------------------------------------------------ reference values


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("labels", [GRADED, ONE_HOT], ids=["graded", "binary"])
def test_matches_numpy(name, labels):
  got = LOSSES[name](SCORES, labels)
  np.testing.assert_allclose(got, np_batched(name, SCORES, labels),
                             rtol=1e-5, atol=1e-6)
  got = LOSSES[name](SCORES, labels, where=WHERE)
  np.testing.assert_allclose(got, np_batched(name, SCORES, labels, WHERE),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_candidates", [50, 101])
def test_listwise_published_uniform_value_is_log_n(num_candidates):
  # One positive among n equally scored candidates: -log(1/n) = ln n
  # (ln 50 = 3.9120, ln 101 = 4.6151), whatever the common score.
  labels = np.zeros((2, num_candidates), np.int32)
  labels[:, 3] = 1
  scores = np.stack([np.zeros(num_candidates), np.full(num_candidates, 7.5)])
  got = ranking.listwise_softmax_loss(scores.astype(np.float32), labels)
  np.testing.assert_allclose(got, [np.log(num_candidates)] * 2, rtol=1e-6)
  expected = {50: 3.9120, 101: 4.6151}[num_candidates]
  np.testing.assert_allclose(got[0], expected, atol=5e-5)
  # Padded to 128 candidates: still ln n, not ln 128.
  pad = 128 - num_candidates
  padded = ranking.listwise_softmax_loss(
      np.pad(scores, ((0, 0), (0, pad))).astype(np.float32),
      np.pad(labels, ((0, 0), (0, pad))),
      where=np.broadcast_to(np.arange(128) < num_candidates, (2, 128)))
  np.testing.assert_allclose(padded, got, rtol=1e-6)


def test_pairwise_hand_values():
  # Equal scores: every pair costs log 2. Two candidates: softplus(s_j - s_i).
  got = ranking.pairwise_logistic_loss(
      np.array([[0.0, 0.0, 0.0], [3.0, 1.0, 0.0]], np.float32),
      np.array([[2, 1, 0], [0, 1, 0]]),
      where=np.array([[True] * 3, [True, True, False]]))
  np.testing.assert_allclose(got, [np.log(2.0), np.log1p(np.exp(2.0))],
                             rtol=1e-6)


# ---------------------------------------------------------- library agreement


def test_listwise_equals_optax_for_binary_labels():
  for where in (None, WHERE):
    got = ranking.listwise_softmax_loss(SCORES, ONE_HOT, where=where)
    ref = optax.losses.ranking_softmax_loss(
        jnp.asarray(SCORES), jnp.asarray(ONE_HOT), where=where,
        reduce_fn=None)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_listwise_equals_optax_on_normalised_graded_labels():
  # optax does not normalise the labels (-sum y log p); this loss is optax's
  # on labels / sum(labels), i.e. optax's divided by the label sum.
  for where in (None, WHERE):
    valid = np.ones_like(WHERE) if where is None else WHERE
    total = (GRADED * valid).sum(-1, keepdims=True).astype(np.float32)
    got = ranking.listwise_softmax_loss(SCORES, GRADED, where=where)
    ref = optax.losses.ranking_softmax_loss(
        jnp.asarray(SCORES), jnp.asarray(GRADED / np.maximum(total, 1)),
        where=where, reduce_fn=None)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    unnormalised = optax.losses.ranking_softmax_loss(
        jnp.asarray(SCORES), jnp.asarray(GRADED), where=where,
        reduce_fn=None)
    np.testing.assert_allclose(np.asarray(got) * total[:, 0], unnormalised,
                               rtol=1e-5)


def test_fully_padded_list_equals_optax_without_forming_nan():
  where = WHERE.copy()
  where[1] = False
  labels = jnp.asarray(ONE_HOT)
  value, grads = _jit_value_and_grad(
      lambda s: ranking.listwise_softmax_loss(s, labels, where=where).sum())(
          SCORES)
  ref_value, ref_grads = _jit_value_and_grad(
      lambda s: optax.losses.ranking_softmax_loss(
          s, labels, where=where, reduce_fn=jnp.sum))(SCORES)
  np.testing.assert_allclose(value, ref_value, rtol=1e-6)
  np.testing.assert_allclose(grads, ref_grads, atol=1e-6)
  np.testing.assert_array_equal(grads[1], 0.0)
  # The documented difference: optax's -inf fill makes log_softmax of the
  # empty list NaN and drops it afterwards, which jax_debug_nans reports; the
  # finite fill never forms a NaN. (Eager on purpose: debug_nans only sees
  # the outputs of each jitted computation.)
  with jax.debug_nans(True):
    jax.value_and_grad(
        lambda s: ranking.listwise_softmax_loss(s, labels, where=where).sum())(
            SCORES)
    with pytest.raises(FloatingPointError):
      jax.value_and_grad(lambda s: optax.losses.ranking_softmax_loss(
          s, labels, where=where, reduce_fn=jnp.sum))(SCORES)


# ------------------------------------------------------------- masking, zeros


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_where_equals_slicing_with_garbage_padding(name):
  fn = LOSSES[name]
  scores = SCORES.copy()
  scores[~WHERE] = np.nan
  labels = GRADED.copy()
  labels[~WHERE] = -1  # TF-Ranking's padding label
  value, grads = _jit_value_and_grad(
      lambda s: fn(s, labels, where=WHERE).sum())(scores)
  per_list = np.asarray(fn(scores, labels, where=WHERE))
  sliced_grads = np.zeros_like(SCORES)
  sliced_total = 0.0
  for k in range(B):
    w = WHERE[k]
    v, g = jax.value_and_grad(lambda s: fn(s, GRADED[k][w]))(SCORES[k][w])
    np.testing.assert_allclose(per_list[k], v, rtol=1e-6, atol=1e-7)
    sliced_grads[k][w] = g
    sliced_total += float(v)
  np.testing.assert_allclose(value, sliced_total, rtol=1e-6)
  np.testing.assert_allclose(grads, sliced_grads, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(np.asarray(grads)[~WHERE], 0.0)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_no_positive_or_no_valid_candidate_gives_zero_and_zero_grads(name):
  fn = LOSSES[name]
  labels = GRADED.copy()
  labels[0] = 0  # no positive label (pairwise: no pair either)
  labels[1] = 2  # all equal: pairwise has no pair
  where = np.ones((B, L), bool)
  where[2] = False  # no valid candidate
  scores = SCORES.copy()
  scores[2] = np.nan
  value, grads = _jit_value_and_grad(
      lambda s: fn(s, labels, where=where).sum())(scores)
  per_list = np.asarray(fn(scores, labels, where=where))
  assert np.isfinite(value) and np.all(np.isfinite(grads))
  zero_rows = [0, 2] if name == "listwise" else [0, 1, 2]
  np.testing.assert_array_equal(per_list[zero_rows], 0.0)
  np.testing.assert_array_equal(np.asarray(grads)[zero_rows], 0.0)
  np.testing.assert_allclose(per_list[3], NP_REFS[name](SCORES[3], labels[3]),
                             rtol=1e-5)


# -------------------------------------------------------------------- grads


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_check_grads_float64(name):
  fn = LOSSES[name]
  with jax.enable_x64(True):
    scores = jnp.asarray(SCORES[:2], jnp.float64)
    check_grads(jax.jit(lambda s: fn(s, GRADED[:2], where=WHERE[:2]).sum()),
                (scores,), order=2, modes=["rev"])


def test_listwise_gradient_is_softmax_minus_label_distribution():
  _, grads = _jit_value_and_grad(
      lambda s: ranking.listwise_softmax_loss(s, GRADED).sum())(SCORES)
  q = GRADED / GRADED.sum(-1, keepdims=True)
  np.testing.assert_allclose(grads, jax.nn.softmax(SCORES) - q, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_extreme_scores_finite_values_and_grads(name):
  fn = LOSSES[name]
  # Row 0: positive far below the negatives; row 1: far above.
  scores = np.array([[-1e4, 1e4, 1e4, 0.0], [1e4, -1e4, -1e4, 0.0]],
                    np.float32)
  labels = np.array([[1, 0, 0, 0], [1, 0, 0, 0]])
  value, grads = _jit_value_and_grad(lambda s: fn(s, labels).sum())(scores)
  assert np.isfinite(value) and np.all(np.isfinite(grads))
  got = np.asarray(fn(scores, labels))
  expected = np_batched(name, scores, labels)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # Certainly wrong: ~2e4 nats (listwise: s_max - s_pos + log 2; pairwise:
  # (2e4 + 2e4 + 1e4) / 3). Certainly right: ~0.
  assert got[0] > 1e4
  np.testing.assert_allclose(got[1], 0.0, atol=1e-6)


# ----------------------------------------------------------- dtypes, shapes


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_bf16_in_bf16_out(name):
  fn = LOSSES[name]
  got = fn(jnp.asarray(SCORES, jnp.bfloat16), GRADED, where=WHERE)
  assert got.dtype == jnp.bfloat16
  ref = fn(jnp.asarray(SCORES, jnp.bfloat16).astype(jnp.float32), GRADED,
           where=WHERE)
  assert ref.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got, np.float32), ref, rtol=1e-2,
                             atol=1e-2)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_leading_axes_equal_loop(name):
  fn = LOSSES[name]
  scores = RNG.normal(size=(2, 3, L)).astype(np.float32)
  labels = RNG.integers(0, 3, size=(2, 3, L))
  where = RNG.random((2, 3, L)) > 0.2
  got = fn(scores, labels, where=where)
  assert got.shape == (2, 3)
  looped = np.array([[NP_REFS[name](scores[a, b][where[a, b]],
                                    labels[a, b][where[a, b]])
                      for b in range(3)] for a in range(2)])
  np.testing.assert_allclose(got, looped, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_traced_once_under_jit(name):
  fn = LOSSES[name]
  # The counter is keyed by the code of `step`, shared by both parameters.
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(scores, labels, where):
    return fn(scores, labels, where=where)

  for k in range(2):
    scores = SCORES + k
    labels = np.roll(GRADED, k, axis=-1)
    np.testing.assert_allclose(step(scores, labels, WHERE),
                               np_batched(name, scores, labels, WHERE),
                               rtol=1e-5, atol=1e-6)


def test_pairwise_materialises_one_pairwise_array():
  # Forward: the [B, L, L] pair terms fuse into the reduction (no temp);
  # value_and_grad: a single [B, L, L] float32 buffer for the backward pass.
  b, l = 8, 256
  scores = jnp.zeros((b, l))
  labels = jnp.zeros((b, l), jnp.int32)
  pair_bytes = b * l * l * 4
  fwd = jax.jit(lambda s: ranking.pairwise_logistic_loss(s, labels).sum())
  vg = jax.jit(jax.value_and_grad(
      lambda s: ranking.pairwise_logistic_loss(s, labels).sum()))
  fwd_temp = fwd.lower(scores).compile().memory_analysis().temp_size_in_bytes
  vg_temp = vg.lower(scores).compile().memory_analysis().temp_size_in_bytes
  assert fwd_temp < pair_bytes // 2, fwd_temp
  assert vg_temp < 1.5 * pair_bytes, vg_temp


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_errors_name_the_argument(name):
  fn = LOSSES[name]
  with pytest.raises(TypeError, match="scores"):
    fn(SCORES.astype(np.int32), GRADED)
  with pytest.raises(ValueError, match=r"scores.*\(\)"):
    fn(np.float32(1.0), np.int32(1))
  with pytest.raises(ValueError, match=r"scores.*\(4, 0\)"):
    fn(np.zeros((4, 0), np.float32), np.zeros((4, 0), np.int32))
  with pytest.raises(ValueError, match=r"labels.*\(4, 7\).*\(4, 6\)"):
    fn(SCORES, GRADED[:, :6])
  with pytest.raises(TypeError, match="labels"):
    fn(SCORES, GRADED.astype(np.complex64))
  with pytest.raises(ValueError, match=r"where.*\(4, 7\).*\(4,\)"):
    fn(SCORES, GRADED, where=np.ones(4, bool))
  with pytest.raises(TypeError, match="where"):
    fn(SCORES, GRADED, where=WHERE.astype(np.float32))
  bad = GRADED.copy()
  bad[2, 1] = -3
  with pytest.raises(ValueError, match=r"labels.*non-negative.*-3"):
    fn(SCORES, bad)
  with pytest.raises(ValueError, match=r"labels.*nan"):
    fn(SCORES, np.where(WHERE, GRADED, np.nan).astype(np.float32))
  # Negative padding labels are fine where the candidate is masked, and
  # cannot be checked (so are not) under jit.
  bad_where = WHERE.copy()
  bad_where[2, 1] = False
  fn(SCORES, bad, where=bad_where)
  jax.jit(fn)(SCORES, bad)
