"""Tests for jaxloss.losses.contrastive against NumPy float64 and optax."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from jaxloss.losses import contrastive as con

RNG = np.random.default_rng(0)
N, D, K = 8, 5, 4
EMB = RNG.normal(size=(N, D)).astype(np.float32)
EMB_B = (EMB + 0.5 * RNG.normal(size=(N, D))).astype(np.float32)
# Class 3 is a singleton: anchor 6 has no positive.
INT_LABELS = np.array([0, 1, 0, 2, 1, 0, 3, 2], np.int32)
# Row 4 has no label at all, row 7 shares a label only with row 0.
MULTI_HOT = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0],
                      [0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 1]],
                     np.float32)
WHERE = np.array([True, False, True, True, False, True, True, True])
# The second NT-Xent view of the adapters below is x @ VIEW: linear, so it
# scales with x and keeps garbage in the row it came from.
VIEW = (np.eye(D) + 0.3 * RNG.normal(size=(D, D))).astype(np.float32)


def _jit_value_and_grad(fn):
  # One compiled program per test instead of op-by-op compiles keeps the
  # suite fast on small CPUs.
  return jax.jit(jax.value_and_grad(fn))


# -------------------------------------------------------- NumPy references


def np_unit(x):
  x = np.asarray(x, np.float64)
  norm = np.sqrt((x * x).sum(-1, keepdims=True))
  return x / np.maximum(norm, 1e-12)


def np_supcon(emb, labels, tau, base_tau=None, where=None):
  """Khosla et al. eq. 2, anchor by anchor, in float64."""
  z = np_unit(emb)
  labels = np.asarray(labels)
  n = z.shape[0]
  where = np.ones(n, bool) if where is None else np.asarray(where, bool)
  factor = 1.0 if base_tau is None else tau / base_tau
  out = np.zeros(n)
  for i in range(n):
    if not where[i]:
      continue
    others = [a for a in range(n) if a != i and where[a]]
    if labels.ndim == 2:  # multi-hot: share at least one label
      mine = set(np.flatnonzero(labels[i] > 0))
      pos = [p for p in others if mine & set(np.flatnonzero(labels[p] > 0))]
    else:
      pos = [p for p in others if labels[p] == labels[i]]
    if not pos:
      continue
    denom = sum(np.exp(z[i] @ z[a] / tau) for a in others)
    out[i] = -factor / len(pos) * sum(
        np.log(np.exp(z[i] @ z[p] / tau) / denom) for p in pos)
  return out


def np_ntxent(a, b, tau, where=None):
  """SimCLR eq. 1 over the 2N views; pair i gets the mean of both directions."""
  n = len(a)
  z = np_unit(np.concatenate([a, b]))
  where = np.ones(n, bool) if where is None else np.asarray(where, bool)
  keep = np.concatenate([where, where])

  def ell(k, partner):
    denom = sum(np.exp(z[k] @ z[m] / tau) for m in range(2 * n)
                if m != k and keep[m])
    return -np.log(np.exp(z[k] @ z[partner] / tau) / denom)

  return np.array([0.5 * (ell(i, n + i) + ell(n + i, i)) if where[i] else 0.0
                   for i in range(n)])


def np_optax_style_ntxent(emb, labels, tau):
  """optax.ntxent's definition: other positives leave each denominator."""
  z = np_unit(emb)
  terms = []
  for i in range(len(z)):
    for p in range(len(z)):
      if p == i or labels[p] != labels[i]:
        continue
      neg = sum(np.exp(z[i] @ z[m] / tau) for m in range(len(z))
                if labels[m] != labels[i])
      pos = np.exp(z[i] @ z[p] / tau)
      terms.append(-np.log(pos / (pos + neg)))
  return np.mean(terms)


def supcon(x, y, where=None, **kw):
  return con.supervised_contrastive_loss(x, y, where=where, **kw)


def _second_view(x):
  x = jnp.asarray(x)
  return (x @ VIEW).astype(x.dtype)


# Each adapter: (embeddings [..., N, D], where) -> loss [..., N].
LOSSES = {
    "supcon_int": lambda x, where=None: supcon(
        x, np.broadcast_to(INT_LABELS, x.shape[:-1]), where),
    "supcon_multi_hot": lambda x, where=None: supcon(
        x, np.broadcast_to(MULTI_HOT, x.shape[:-1] + (K,)), where,
        temperature=0.2, base_temperature=0.07),
    "ntxent": lambda x, where=None: con.ntxent_loss(
        x, _second_view(x), temperature=0.2, where=where),
}
NP_LOSSES = {
    "supcon_int": lambda x, where=None: np_supcon(x, INT_LABELS, 0.1,
                                                  where=where),
    "supcon_multi_hot": lambda x, where=None: np_supcon(
        x, MULTI_HOT, 0.2, 0.07, where=where),
    "ntxent": lambda x, where=None: np_ntxent(
        x, np.asarray(x, np.float64) @ VIEW, 0.2, where=where),
}


# ------------------------------------------------------ supervised contrastive


@pytest.mark.parametrize("tau", [0.05, 0.1, 1.0])
def test_supcon_integer_labels_match_numpy(tau):
  got = supcon(EMB, INT_LABELS, temperature=tau)
  assert got.shape == (N,) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, np_supcon(EMB, INT_LABELS, tau), rtol=2e-5,
                             atol=1e-6)
  assert got[6] == 0.0 and np.all(np.asarray(got)[INT_LABELS != 3] > 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.bool_])
def test_supcon_multi_hot_matches_numpy(dtype):
  got = supcon(EMB, MULTI_HOT.astype(dtype), temperature=0.2)
  expected = np_supcon(EMB, MULTI_HOT, 0.2)
  np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)
  assert got[4] == 0.0  # no label, no positive
  assert np.all(np.asarray(got)[np.arange(N) != 4] > 0.1)


def test_supcon_integer_equals_one_hot_multi_hot():
  one_hot = np.eye(4, dtype=np.float32)[INT_LABELS]
  for where in (None, WHERE):
    np.testing.assert_allclose(
        supcon(EMB, one_hot, where), supcon(EMB, INT_LABELS, where),
        rtol=1e-6, atol=1e-7)
  # Overlapping multi-hot labels are not a class partition: 0 and 7 share
  # label 3 but 7 and 3 share nothing, so the result differs from any ids.
  assert not np.allclose(supcon(EMB, MULTI_HOT), supcon(EMB, INT_LABELS))


def test_supcon_hand_values():
  # Orthogonal unit vectors: every logit is 0, so log 2 for the two anchors
  # of class 0 (one positive among two candidates) and 0 for the singleton.
  got = supcon(np.eye(3, dtype=np.float32), np.array([0, 0, 1]))
  np.testing.assert_allclose(got, [np.log(2.0), np.log(2.0), 0.0], rtol=1e-6)
  # The docstring example, by hand: cosines 0.8, 0, -1 from anchor 0.
  emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]],
                 np.float32)
  got = supcon(emb, np.array([0, 0, 1, 2]), temperature=0.5)
  expected0 = np.log(np.exp(1.6) + 1.0 + np.exp(-2.0)) - 1.6
  expected1 = np.log(np.exp(1.6) + np.exp(1.2) + np.exp(-1.6)) - 1.6
  np.testing.assert_allclose(got, [expected0, expected1, 0.0, 0.0],
                             rtol=1e-6)
  np.testing.assert_allclose(got[:2], [0.2064, 0.5371], atol=1e-4)


def test_supcon_anchor_without_positive_is_zero_with_finite_grads():
  labels = np.arange(N, dtype=np.int32)  # every anchor is a singleton
  value, grads = _jit_value_and_grad(lambda x: supcon(x, labels).sum())(EMB)
  assert value == 0.0
  np.testing.assert_array_equal(grads, 0.0)
  # Mixed batch: the singleton (anchor 6) adds 0 and its own term has zero
  # gradient, yet it still acts as a negative for the other anchors.
  _, own_grads = _jit_value_and_grad(
      lambda x: supcon(x, INT_LABELS)[6])(EMB)
  np.testing.assert_array_equal(own_grads, 0.0)
  value, grads = _jit_value_and_grad(
      lambda x: supcon(x, INT_LABELS).sum())(EMB)
  assert np.isfinite(value) and np.all(np.isfinite(grads))
  assert np.abs(np.asarray(grads)[6]).sum() > 1e-3
  without_6 = np.delete(np.arange(N), 6)
  assert not np.allclose(supcon(EMB, INT_LABELS)[without_6],
                         supcon(EMB[without_6], INT_LABELS[without_6]))


def test_supcon_base_temperature_scales_the_loss():
  plain = supcon(EMB, INT_LABELS, temperature=0.1)
  same = supcon(EMB, INT_LABELS, temperature=0.1, base_temperature=0.1)
  np.testing.assert_allclose(same, plain, rtol=1e-6)
  scaled = supcon(EMB, INT_LABELS, temperature=0.1, base_temperature=0.07)
  np.testing.assert_allclose(scaled, np.asarray(plain) * (0.1 / 0.07),
                             rtol=1e-5)
  np.testing.assert_allclose(scaled, np_supcon(EMB, INT_LABELS, 0.1, 0.07),
                             rtol=2e-5, atol=1e-6)


def test_embeddings_are_normalised_inside():
  scales = np.geomspace(1e-3, 1e3, N).astype(np.float32)[:, None]
  for name, fn in LOSSES.items():
    np.testing.assert_allclose(fn(EMB * scales), fn(EMB), rtol=1e-5,
                               atol=1e-6, err_msg=name)
  # A zero embedding has cosine 0 to everything, not NaN.
  emb = EMB.copy()
  emb[2] = 0.0
  value, grads = _jit_value_and_grad(
      lambda x: supcon(x, INT_LABELS).sum())(emb)
  assert np.isfinite(value) and np.all(np.isfinite(grads))
  np.testing.assert_allclose(supcon(emb, INT_LABELS),
                             np_supcon(emb, INT_LABELS, 0.1), rtol=2e-5,
                             atol=1e-6)


# ----------------------------------------------------------------- NT-Xent


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_ntxent_matches_numpy(tau):
  got = con.ntxent_loss(EMB, EMB_B, temperature=tau)
  assert got.shape == (N,) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, np_ntxent(EMB, EMB_B, tau), rtol=2e-5)


@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_ntxent_mean_matches_optax(tau):
  # optax reduces to one scalar: the mean over all 2N anchors, i.e. the mean
  # over N of the per-pair two-direction mean returned here.
  pair_labels = np.concatenate([np.arange(N), np.arange(N)])
  expected = optax.losses.ntxent(np.concatenate([EMB, EMB_B]), pair_labels,
                                 temperature=tau)
  got = con.ntxent_loss(EMB, EMB_B, temperature=tau)
  np.testing.assert_allclose(got.mean(), expected, rtol=1e-5)


def test_optax_ntxent_differs_from_supcon_for_groups_larger_than_two():
  # The docstring's claim: with >2 views per group optax drops the other
  # positives from each denominator; SupCon eq. 2 keeps them.
  labels = np.array([0, 0, 0, 1, 1, 1, 2, 2])
  theirs = optax.losses.ntxent(EMB, labels, temperature=0.5)
  np.testing.assert_allclose(theirs, np_optax_style_ntxent(EMB, labels, 0.5),
                             rtol=1e-5)
  ours = supcon(EMB, labels, temperature=0.5)
  np.testing.assert_allclose(ours, np_supcon(EMB, labels, 0.5), rtol=2e-5)
  # Every anchor has a positive, so the plain mean is SupCon's batch mean.
  assert abs(float(ours.mean()) - float(theirs)) > 1e-2


def test_ntxent_equals_supcon_on_concatenated_views():
  pair_labels = np.concatenate([np.arange(N), np.arange(N)]).astype(np.int32)
  for where in (None, WHERE):
    both = None if where is None else np.concatenate([where, where])
    per_view = supcon(np.concatenate([EMB, EMB_B]), pair_labels, both,
                      temperature=0.3)
    expected = 0.5 * (per_view[:N] + per_view[N:])
    got = con.ntxent_loss(EMB, EMB_B, temperature=0.3, where=where)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got, np_ntxent(EMB, EMB_B, 0.3, where),
                               rtol=2e-5)


def test_ntxent_single_pair_is_zero():
  # The partner is the only candidate: log(e^s / e^s) = 0.
  got = con.ntxent_loss(EMB[:1], EMB_B[:1])
  np.testing.assert_allclose(got, [0.0], atol=1e-6)


# --------------------------------------------------------- shared contract


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_reference_values(name):
  np.testing.assert_allclose(LOSSES[name](EMB), NP_LOSSES[name](EMB),
                             rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_where_equals_slicing_and_masked_get_zero_grads(name):
  fn = LOSSES[name]
  # Masked rows hold garbage that must not leak into values or gradients.
  emb = EMB.copy()
  emb[1] = np.nan
  emb[4] = np.inf

  def masked_sum(x):
    return fn(x, WHERE).sum()

  value, grads = _jit_value_and_grad(masked_sum)(emb)
  assert np.isfinite(value)
  loss = np.asarray(fn(emb, WHERE))
  np.testing.assert_array_equal(loss[~WHERE], 0.0)
  np.testing.assert_array_equal(np.asarray(grads)[~WHERE], 0.0)
  np.testing.assert_allclose(loss, NP_LOSSES[name](EMB, WHERE), rtol=2e-5,
                             atol=1e-6)

  # Slicing: same loss on a batch that never contained the masked rows.
  if name == "ntxent":
    def sliced(x):
      return con.ntxent_loss(x, x @ VIEW, temperature=0.2)
    def masked(x):
      full = jnp.asarray(emb).at[WHERE].set(x)
      return con.ntxent_loss(full, full @ VIEW, temperature=0.2,
                             where=WHERE)[WHERE]
  else:
    labels = INT_LABELS if name == "supcon_int" else MULTI_HOT
    kw = {} if name == "supcon_int" else dict(temperature=0.2,
                                               base_temperature=0.07)
    def sliced(x):
      return supcon(x, labels[WHERE], **kw)
    def masked(x):
      full = jnp.asarray(emb).at[WHERE].set(x)
      return supcon(full, labels, WHERE, **kw)[WHERE]
  got, got_grads = _jit_value_and_grad(lambda x: masked(x).sum())(EMB[WHERE])
  want, want_grads = _jit_value_and_grad(lambda x: sliced(x).sum())(
      EMB[WHERE])
  # Each loss is a log-sum-exp of up to ~8 (logits of magnitude ~5) minus a mean of
  # logits, so it is a difference of float32 terms of magnitude ~5 whose ulp is 4.8e-7:
  # a masked batch reduces over a longer row (the masked entries add exactly 0) in
  # another order, which moves the result by a few of those ulps whatever its own size
  # (measured 9.5e-7 on a loss of 0.84 at XLA's optimisation level 0). Hence an
  # absolute tolerance of 4 such ulps, and for the sum of 6 losses, 8.
  np.testing.assert_allclose(masked(EMB[WHERE]), sliced(EMB[WHERE]),
                             rtol=1e-6, atol=2e-6)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=4e-6)
  np.testing.assert_allclose(got_grads, want_grads, rtol=1e-5, atol=1e-6)


def test_masked_labels_may_hold_padding():
  labels = INT_LABELS.copy()
  labels[~WHERE] = -100
  multi = MULTI_HOT.copy()
  multi[~WHERE] = np.nan  # not 0/1, but masked: no error, no NaN
  np.testing.assert_array_equal(supcon(EMB, labels, WHERE),
                                supcon(EMB, INT_LABELS, WHERE))
  np.testing.assert_array_equal(supcon(EMB, multi, WHERE),
                                supcon(EMB, MULTI_HOT, WHERE))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_all_masked_gives_zero_with_zero_grads(name):
  fn = LOSSES[name]
  where = np.zeros(N, bool)
  emb = EMB.copy()
  emb[0] = np.nan
  value, grads = _jit_value_and_grad(lambda x: fn(x, where).sum())(emb)
  assert value == 0.0
  np.testing.assert_array_equal(grads, 0.0)


def test_single_example_gives_zero_with_zero_grads():
  for labels in (np.array([0]), np.array([[1.0, 0.0]])):
    value, grads = _jit_value_and_grad(
        lambda x: supcon(x, labels).sum())(EMB[:1])
    assert value == 0.0
    np.testing.assert_array_equal(grads, 0.0)
  # One included example among masked ones is the same situation.
  where = np.zeros(N, bool)
  where[3] = True
  value, grads = _jit_value_and_grad(
      lambda x: supcon(x, INT_LABELS, where).sum())(EMB)
  assert value == 0.0
  np.testing.assert_array_equal(grads, 0.0)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_leading_batch_axes_equal_loop(name):
  fn = LOSSES[name]
  emb = RNG.normal(size=(2, 3, N, D)).astype(np.float32)
  where = RNG.random(size=(2, 3, N)) < 0.8
  got = fn(emb, where)
  assert got.shape == (2, 3, N)
  for g in range(2):
    for h in range(3):
      np.testing.assert_allclose(got[g, h], fn(emb[g, h], where[g, h]),
                                 rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(got[g, h],
                                 NP_LOSSES[name](emb[g, h], where[g, h]),
                                 rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_check_grads_float64(name):
  fn = LOSSES[name]
  with jax.enable_x64(True):
    x = jnp.asarray(EMB, jnp.float64)
    where = WHERE
    check_grads(jax.jit(lambda x: fn(x, where).sum()), (x,), order=2,
                modes=["rev"])


def test_check_grads_temperature_float64():
  with jax.enable_x64(True):
    x = jnp.asarray(EMB, jnp.float64)
    check_grads(jax.jit(lambda t: supcon(x, INT_LABELS, temperature=t).sum()),
                (jnp.float64(0.3),), order=1, modes=["fwd", "rev"])
    check_grads(jax.jit(lambda t: con.ntxent_loss(
        x, x[::-1], temperature=t).sum()), (jnp.float64(0.3),), order=1,
                modes=["fwd", "rev"])


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_extreme_embeddings_are_finite(name):
  fn = LOSSES[name]
  extreme = np.where(EMB > 0, 1e4, -1e4).astype(np.float32)
  value, grads = _jit_value_and_grad(lambda x: fn(x).sum())(extreme)
  assert np.isfinite(value) and np.all(np.isfinite(grads))
  # Normalisation makes +-1e4 the same as +-1.
  np.testing.assert_allclose(fn(extreme), fn(np.sign(EMB)), rtol=1e-5,
                             atol=1e-6)


def test_identical_embeddings_at_low_temperature_are_finite():
  # Logits of +-1/tau = +-1e3: exp overflows without the log-sum-exp shift.
  emb = np.repeat(np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32), 4, 0)
  labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
  value, grads = _jit_value_and_grad(
      lambda x: supcon(x, labels, temperature=1e-3).sum())(emb)
  assert np.isfinite(value) and np.all(np.isfinite(grads))
  # Three positives at logit 1e3 and four negatives at -1e3: log 3 each,
  # up to float32 rounding of lse ~ 1e3 (ulp 6e-5).
  np.testing.assert_allclose(supcon(emb, labels, temperature=1e-3),
                             np.full(8, np.log(3.0)), atol=1.5e-4)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_bf16_in_bf16_out(name):
  fn = LOSSES[name]
  x = jnp.asarray(EMB, jnp.bfloat16)
  got = fn(x)
  assert got.dtype == jnp.bfloat16
  ref = fn(x.astype(jnp.float32))
  assert ref.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got, np.float32), ref, rtol=1e-2,
                             atol=1e-2)


def test_ntxent_mixed_view_dtypes_follow_embeddings_a():
  a = jnp.asarray(EMB, jnp.bfloat16)
  got = con.ntxent_loss(a, EMB_B)
  assert got.dtype == jnp.bfloat16
  ref = con.ntxent_loss(a.astype(jnp.float32), EMB_B)
  np.testing.assert_allclose(np.asarray(got, np.float32), ref, rtol=1e-2,
                             atol=1e-2)
  assert con.ntxent_loss(EMB, jnp.asarray(EMB_B, jnp.bfloat16)).dtype == (
      jnp.float32)


def test_traced_temperature_does_not_retrace():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(emb, emb_b, tau):
    return (supcon(emb, INT_LABELS, temperature=tau, base_temperature=0.07),
            con.ntxent_loss(emb, emb_b, temperature=tau))

  for seed, tau in enumerate((0.1, 0.5)):
    emb = np.random.default_rng(seed).normal(size=(N, D)).astype(np.float32)
    got_supcon, got_ntxent = step(emb, EMB_B, jnp.float32(tau))
    np.testing.assert_allclose(got_supcon,
                               np_supcon(emb, INT_LABELS, tau, 0.07),
                               rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(got_ntxent, np_ntxent(emb, EMB_B, tau),
                               rtol=2e-5)


def _max_intermediate_size(closed_jaxpr):
  """Largest element count of any value in a jaxpr, sub-jaxprs included."""
  def walk(jaxpr):
    sizes = [0]
    for eqn in jaxpr.eqns:
      sizes += [int(np.prod(v.aval.shape)) for v in eqn.outvars
                if hasattr(v.aval, "shape")]
      for param in eqn.params.values():
        for sub in (param if isinstance(param, (list, tuple)) else [param]):
          if isinstance(sub, jax.extend.core.ClosedJaxpr):
            sizes.append(walk(sub.jaxpr))
          elif isinstance(sub, jax.extend.core.Jaxpr):
            sizes.append(walk(sub))
    return max(sizes)
  return walk(closed_jaxpr.jaxpr)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_memory_is_quadratic_in_n_without_nnk_or_nnd(name):
  # 2N views for NT-Xent; N*N*K or N*N*D would exceed this bound.
  n = 2 * N if name == "ntxent" else N
  bound = max(n * n, n * D, n * K)
  assert bound < n * n * min(D, K)
  fn = LOSSES[name]
  jaxpr = jax.make_jaxpr(jax.value_and_grad(lambda x: fn(x, WHERE).sum()))(
      EMB)
  assert _max_intermediate_size(jaxpr) <= bound


def test_pairwise_logits_and_row_statistics_helpers():
  z = np_unit(EMB).astype(np.float32)
  mask = np.array([True, True, False, True, False, False, True, True])
  # Anchors 5..7 and a padding row 8 (which excludes no candidate).
  index = jnp.arange(5, 9)
  z_anchor = jnp.concatenate([jnp.asarray(z[5:]), jnp.zeros((1, D))])
  logits, candidate = con._pairwise_logits(
      z_anchor, index, jnp.asarray(z), jnp.float32(0.5), jnp.asarray(mask))
  expected_candidate = (np.arange(5, 9)[:, None] != np.arange(N)) & mask
  np.testing.assert_array_equal(candidate, expected_candidate)
  np.testing.assert_allclose(logits[:3], z[5:] @ z.T / 0.5, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_array_equal(logits[3], 0.0)
  s = np.asarray(z, np.float64) @ np.asarray(z, np.float64).T / 0.5
  for block in (N, 3):
    stats = con._row_statistics(jnp.asarray(z), jnp.float32(0.5),
                                jnp.asarray(mask), jnp.asarray(INT_LABELS),
                                block, softmax_logit=True)
    for i in range(N):
      cand = (np.arange(N) != i) & mask
      pos = cand & (INT_LABELS == INT_LABELS[i])
      softmax = np.exp(s[i][cand]) / np.exp(s[i][cand]).sum()
      np.testing.assert_allclose(
          stats["lse"][i], np.log(np.exp(s[i][cand]).sum()), rtol=1e-5)
      np.testing.assert_allclose(stats["positive_sum"][i], s[i][pos].sum(),
                                 rtol=1e-5, atol=1e-6)
      assert stats["num_positives"][i] == pos.sum()
      np.testing.assert_allclose(stats["softmax_logit"][i],
                                 softmax @ s[i][cand], rtol=1e-5, atol=1e-6)
  # No candidate at all (one included example): a finite 0, not -inf or
  # "very negative", so scaling or averaging it later cannot overflow.
  only = np.zeros(N, bool)
  only[3] = True
  stats = con._row_statistics(jnp.asarray(z), jnp.float32(1e-3),
                              jnp.asarray(only), None, N, softmax_logit=False)
  assert stats["lse"][3] == 0.0


# ------------------------------------------------------ blocked computation
#
# From N = 512 on the losses walk over blocks of anchors and differentiate
# through a custom JVP. These tests force small blocks (with a padded last
# block) and compare with a direct jnp transcription of the [N, N] formula
# differentiated by plain autodiff, and with finite differences.


def jnp_supcon(x, labels, tau, base_tau=None, where=None):
  """The full-matrix formula (eq. 2) in jnp, differentiated by autodiff."""
  n = x.shape[-2]
  keep = jnp.ones(x.shape[:-1], bool) if where is None else jnp.asarray(where)
  x = jnp.where(keep[..., None], x, 0.0)
  z = x * jax.lax.rsqrt(jnp.maximum((x * x).sum(-1, keepdims=True), 1e-24))
  s = jnp.einsum("...id,...jd->...ij", z, z,
                 precision=jax.lax.Precision.HIGHEST) / tau
  cand = ~jnp.eye(n, dtype=bool) & keep[..., None, :]
  if labels.ndim == x.ndim:
    member = (labels > 0) & keep[..., None]
    same = (member[..., :, None, :] & member[..., None, :, :]).any(-1)
  else:
    same = labels[..., :, None] == labels[..., None, :]
  pos = cand & same
  lse = jax.nn.logsumexp(jnp.where(cand, s, -1e30), axis=-1)
  count = pos.sum(-1)
  loss = lse - jnp.where(pos, s, 0.0).sum(-1) / jnp.maximum(count, 1)
  loss = jnp.where((count > 0) & keep, loss, 0.0)
  return loss if base_tau is None else loss * tau / base_tau


def jnp_ntxent(a, b, tau, where=None):
  n = a.shape[-2]
  keep = jnp.ones(a.shape[:-1], bool) if where is None else jnp.asarray(where)
  pair = jnp.concatenate([jnp.arange(n), jnp.arange(n)])
  per_view = jnp_supcon(jnp.concatenate([a, b], axis=-2),
                        jnp.broadcast_to(pair, a.shape[:-2] + (2 * n,)), tau,
                        where=jnp.concatenate([keep, keep], axis=-1))
  return 0.5 * (per_view[..., :n] + per_view[..., n:])


def _blocked_cases(dtype):
  rng = np.random.default_rng(7)
  n, d, k = 10, 6, 5
  x = rng.normal(size=(2, n, d)).astype(dtype)
  where = rng.random(size=(2, n)) < 0.8
  where[:, :2] = True
  x[~where] = np.nan  # garbage in masked rows
  ids = rng.integers(0, 3, size=(2, n)).astype(np.int32)
  multi = (rng.random(size=(2, n, k)) < 0.35).astype(np.float32)
  view = np.eye(d) + 0.3 * rng.normal(size=(d, d))
  return {
      "supcon_int": (
          lambda x, t: supcon(x, ids, where, temperature=t),
          lambda x, t: jnp_supcon(x, ids, t, where=where)),
      "supcon_multi_hot": (
          lambda x, t: supcon(x, multi, where, temperature=t,
                              base_temperature=0.07),
          lambda x, t: jnp_supcon(x, multi, t, 0.07, where=where)),
      "ntxent": (
          lambda x, t: con.ntxent_loss(x, x @ view, temperature=t,
                                       where=where),
          lambda x, t: jnp_ntxent(x, x @ view, t, where=where)),
  }, x, where


@pytest.mark.parametrize("name", ["supcon_int", "supcon_multi_hot", "ntxent"])
@pytest.mark.parametrize("block", [3, 1000])
def test_blocked_equals_direct_autodiff(name, block, monkeypatch):
  # N = 10 (20 views for NT-Xent): block 3 leaves a padded last block, 1000
  # is the single-block path. The cotangent weights every anchor
  # differently, so the symmetric reverse-mode formula is fully exercised.
  monkeypatch.setattr(con, "_block_size", lambda n: block)
  fns, x, where = _blocked_cases(np.float32)
  fn, ref = fns[name]
  weights = np.random.default_rng(1).normal(size=where.shape)
  weights = weights.astype(np.float32)

  def objective(f):
    return jax.jit(jax.value_and_grad(
        lambda x, t: (f(x, t) * weights).sum(), argnums=(0, 1)))

  # Blocked and direct sum the 2N - 1 = 19 exponentials of each row in another order,
  # with logits up to 1/tau = 5: each loss is a difference of terms of order 5 rounded
  # at float32 (eps 1.2e-7), so the two agree to a few 1e-7 of 5, not to 1e-6 of the
  # loss (measured 1.7e-6 relative on one install): 64 eps, relative and absolute.
  tol = 64 * float(np.finfo(np.float32).eps)
  got = fn(x, jnp.float32(0.2))
  np.testing.assert_allclose(got, ref(x, jnp.float32(0.2)), rtol=tol, atol=tol)
  np.testing.assert_array_equal(np.asarray(got)[~where], 0.0)
  value, (grad_x, grad_t) = objective(fn)(x, jnp.float32(0.2))
  want, (want_x, want_t) = objective(ref)(x, jnp.float32(0.2))
  np.testing.assert_allclose(value, want, rtol=tol)
  np.testing.assert_allclose(grad_x, want_x, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(grad_t, want_t, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(grad_x)[~where], 0.0)
  # In float64 the two derivations agree to rounding.
  with jax.enable_x64(True):
    x64 = jnp.asarray(np.where(where[..., None], x, 0.0), jnp.float64)
    _, (g64, t64) = objective(fn)(x64, jnp.float64(0.2))
    _, (w64, wt64) = objective(ref)(x64, jnp.float64(0.2))
    np.testing.assert_allclose(g64, w64, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(t64, wt64, rtol=1e-10)


@pytest.mark.parametrize("name", ["supcon_int", "supcon_multi_hot", "ntxent"])
def test_blocked_check_grads_float64(name, monkeypatch):
  # Forward and reverse mode, to second order in the embeddings, through the
  # custom JVP and the checkpointed scan, against finite differences.
  monkeypatch.setattr(con, "_block_size", lambda n: 3)
  with jax.enable_x64(True):
    fns, x, where = _blocked_cases(np.float64)
    fn = fns[name][0]
    x = jnp.asarray(np.where(where[..., None], x, 0.0))
    check_grads(jax.jit(lambda x: fn(x, 0.3).sum()), (x,), order=2,
                modes=["fwd", "rev"])
    check_grads(jax.jit(lambda t: fn(x, t).sum()), (jnp.float64(0.3),),
                order=1, modes=["fwd", "rev"])


def test_blocked_jvp_equals_direct_autodiff(monkeypatch):
  monkeypatch.setattr(con, "_block_size", lambda n: 4)
  fns, x, where = _blocked_cases(np.float32)
  fn, ref = fns["supcon_multi_hot"]
  x = np.where(where[..., None], x, 0.0).astype(np.float32)
  tangent = np.random.default_rng(2).normal(size=x.shape).astype(np.float32)
  got = jax.jvp(lambda x, t: fn(x, t), (x, jnp.float32(0.2)),
                (tangent, jnp.float32(0.01)))
  want = jax.jvp(lambda x, t: ref(x, t), (x, jnp.float32(0.2)),
                 (tangent, jnp.float32(0.01)))
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [33, 300])
def test_supcon_multi_hot_many_classes_match_numpy(k):
  # 33 classes pack into two uint32 words; 300 exceed the packed limit and
  # are matched with a matmul instead. Both must give eq. 2 with "any".
  rng = np.random.default_rng(k)
  labels = (rng.random(size=(N, k)) < 3.0 / k).astype(np.float32)
  labels[2, k - 1] = labels[5, k - 1] = 1.0  # a match in the last word
  keys = con._class_keys(jnp.asarray(labels), None, True, jnp.float32)
  packed = -(-k // 32) <= con._MAX_PACKED_WORDS
  assert keys.dtype == (jnp.uint32 if packed else jnp.float32)
  for where in (None, WHERE):
    np.testing.assert_allclose(
        supcon(EMB, labels, where, temperature=0.2),
        np_supcon(EMB, labels, 0.2, where=where), rtol=2e-5, atol=1e-6)


def test_block_size_rule():
  assert con._block_size(8) == 8
  assert con._block_size(511) == 511  # below 8 * _MIN_BLOCK: one block
  assert con._block_size(512) == 64
  assert con._block_size(1000) == 120  # N / 8, a multiple of 8
  assert con._block_size(1024) == 128
  assert con._block_size(4096) == 512
  # Capped at _BLOCK_ELEMENTS logits per block, but never below _MIN_BLOCK.
  assert con._block_size(8192) == con._BLOCK_ELEMENTS // 8192
  assert con._block_size(2**17) == con._MIN_BLOCK


def _temp_bytes(fn, *args):
  compiled = jax.jit(jax.value_and_grad(fn)).lower(*args).compile()
  stats = compiled.memory_analysis()
  if stats is None:
    pytest.skip(f"memory_analysis() is None on {jax.default_backend()}")
  return stats.temp_size_in_bytes


@pytest.mark.parametrize("n", [1024, 4096])
@pytest.mark.parametrize("kind", ["int", "multi_hot", "ntxent"])
def test_compiled_temp_memory_is_within_one_matrix(kind, n):
  # Forward + backward of the mean loss in at most one [B, B] float32 matrix
  # (B = N, or 2N views for NT-Xent); the direct computation needed ~2.3.
  # Only compiled, never run.
  rng = np.random.default_rng(0)
  emb = jnp.asarray(rng.normal(size=(n, 128)).astype(np.float32))
  if kind == "ntxent":
    b = 2 * n
    temp = _temp_bytes(lambda e: con.ntxent_loss(e, e[::-1]).mean(), emb)
  else:
    b = n
    labels = (rng.integers(0, 4, size=n) if kind == "int" else
              (rng.random(size=(n, 40)) < 0.075).astype(np.float32))
    temp = _temp_bytes(lambda e, y: supcon(e, y).mean(), emb,
                       jnp.asarray(labels))
  assert temp <= 4 * b * b, temp / (4 * b * b)
  # The blocks themselves stay a fraction of it.
  assert temp <= 0.6 * 4 * b * b, temp / (4 * b * b)


# ------------------------------------------------------------------ errors


def test_supcon_errors():
  with pytest.raises(ValueError, match=r"labels.*\(8,\).*\(7,\)"):
    supcon(EMB, INT_LABELS[:7])
  with pytest.raises(ValueError, match=r"labels.*\(8, 1, 1\)"):
    supcon(EMB, INT_LABELS[:, None, None])
  with pytest.raises(ValueError, match=r"labels.*\(7, 4\)"):
    supcon(EMB, MULTI_HOT[:7])
  with pytest.raises(TypeError, match=r"labels.*integer.*float32"):
    supcon(EMB, INT_LABELS.astype(np.float32))
  with pytest.raises(ValueError, match=r"labels.*multi-hot.*0\.5"):
    supcon(EMB, np.where(MULTI_HOT > 0, 0.5, 0.0))
  with pytest.raises(TypeError, match=r"embeddings.*int32"):
    supcon(EMB.astype(np.int32), INT_LABELS)
  with pytest.raises(ValueError, match=r"embeddings.*\[\.\.\., N, D\]"):
    supcon(EMB[0], INT_LABELS[0])
  for bad in (0.0, -0.1, float("nan"), float("inf")):
    with pytest.raises(ValueError, match=r"temperature.*\(0\.0, inf\)"):
      supcon(EMB, INT_LABELS, temperature=bad)
  with pytest.raises(ValueError, match="temperature.*scalar"):
    supcon(EMB, INT_LABELS, temperature=np.array([0.1, 0.2]))
  with pytest.raises(ValueError, match="base_temperature"):
    supcon(EMB, INT_LABELS, base_temperature=0.0)
  with pytest.raises(ValueError, match=r"where.*\(8,\).*\(8, 1\)"):
    supcon(EMB, INT_LABELS, np.ones((N, 1), bool))
  with pytest.raises(TypeError, match="where"):
    supcon(EMB, INT_LABELS, np.ones(N, np.float32))


def test_ntxent_errors():
  with pytest.raises(ValueError, match=r"embeddings_b.*\(8, 5\).*\(7, 5\)"):
    con.ntxent_loss(EMB, EMB_B[:7])
  with pytest.raises(TypeError, match="embeddings_a"):
    con.ntxent_loss(EMB.astype(np.int32), EMB_B)
  with pytest.raises(TypeError, match="embeddings_b"):
    con.ntxent_loss(EMB, EMB_B.astype(np.int32))
  with pytest.raises(ValueError, match="temperature"):
    con.ntxent_loss(EMB, EMB_B, temperature=-1.0)
  with pytest.raises(ValueError, match="where"):
    con.ntxent_loss(EMB, EMB_B, where=np.ones(N + 1, bool))
