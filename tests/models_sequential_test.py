"""SASRec and the reranking loss: causality, left padding, the masks of the candidate
lists, the loss at initialisation, and the two losses against independent references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxloss import losses
from jaxloss.models.sequential import SASRec
from experiments.rerank.objective import make_rerank_loss

NUM_ITEMS = 40


def _model(**kw):
  return SASRec(num_items=NUM_ITEMS, max_len=8, hidden=16, num_blocks=2, num_heads=2,
                dropout_rate=0.0, **kw)


def _variables(model, k=5):
  return model.init(jax.random.PRNGKey(0), jnp.ones((1, k), jnp.int32),
                    jnp.zeros((1, model.max_len), jnp.int32),
                    jnp.zeros((1, model.max_len), jnp.int32), train=False)


def _encode(model, variables, seq):
  return model.apply(variables, jnp.asarray(seq), train=False, method=SASRec.encode)


def test_causal_a_position_never_sees_later_items():
  model = _model()
  v = _variables(model)
  a = np.array([[0, 0, 3, 7, 9, 11, 2, 5]])
  b = a.copy()
  b[0, 5:] = [30, 31, 32]  # change the items after position 4
  ha, hb = _encode(model, v, a), _encode(model, v, b)
  np.testing.assert_allclose(ha[0, :5], hb[0, :5], atol=1e-6)
  assert np.abs(ha[0, 5:] - hb[0, 5:]).max() > 1e-3


def test_left_padding_and_length_do_not_matter():
  model = _model()
  v = _variables(model)
  short = _encode(model, v, np.array([[3, 7, 9]]))
  padded = _encode(model, v, np.array([[0, 0, 0, 0, 0, 3, 7, 9]]))
  np.testing.assert_allclose(short[0], padded[0, -3:], atol=1e-5)
  np.testing.assert_array_equal(padded[0, :5], 0.0)  # padding positions are zero


def test_scores_are_dot_products_and_where_masks_own_items_and_padding():
  model = _model()
  v = _variables(model, k=4)
  seq = np.array([[0, 0, 0, 0, 0, 3, 7, 9], [0, 0, 0, 0, 0, 0, 1, 2]])
  pos = np.array([[0, 0, 0, 0, 3, 7, 9, 12], [0, 0, 0, 0, 0, 1, 2, 5]])
  negatives = np.array([[20, 7, 12, 0], [30, 31, 32, 33]])  # 7, 12 are user 0's items
  out = model.apply(v, negatives, seq, pos, train=False)
  assert out["scores"].shape == (2, 8, 5) and out["where"].shape == (2, 8, 5)
  h = _encode(model, v, seq)
  table = v["params"]["item_embedding"]["embedding"]
  np.testing.assert_allclose(out["scores"][..., 0], np.sum(h * table[pos], -1), atol=1e-5)
  np.testing.assert_allclose(out["scores"][..., 1:],
                             np.einsum("bld,bkd->blk", h, table[negatives]), atol=1e-5)
  where = np.asarray(out["where"])
  np.testing.assert_array_equal(where[0, :4], False)  # padded positions
  np.testing.assert_array_equal(where[0, 4:, 0], True)
  np.testing.assert_array_equal(where[0, 4:, 1:], [[True, False, False, False]] * 4)
  np.testing.assert_array_equal(where[1, :5], False)
  np.testing.assert_array_equal(where[1, 5:], True)


def test_score_candidates_uses_the_last_position():
  model = _model()
  v = _variables(model)
  history = np.array([[0, 0, 0, 4, 8, 15, 16, 23]])
  candidates = np.array([[1, 2, 3, 23, 40]])
  scores = model.apply(v, history, candidates, method=SASRec.score_candidates)
  h = _encode(model, v, history)[:, -1]
  table = v["params"]["item_embedding"]["embedding"]
  np.testing.assert_allclose(scores, np.einsum("bd,bcd->bc", h, table[candidates]),
                             atol=1e-5)


def test_too_long_and_bad_heads_raise():
  model = _model()
  v = _variables(model)
  with pytest.raises(ValueError, match="max_len=8"):
    _encode(model, v, np.ones((1, 9), np.int32))
  with pytest.raises(ValueError, match="divisible by num_heads"):
    _variables(SASRec(num_items=5, max_len=4, hidden=10, num_heads=3))


@pytest.mark.parametrize("num_candidates", [50, 101])
def test_untrained_listwise_loss_is_ln_num_candidates(num_candidates):
  # The paper's size on a realistic item count: scores ≈ 0, loss ≈ ln C.
  model = SASRec(num_items=23715, max_len=50)
  rng = np.random.default_rng(0)
  seq = rng.integers(1, 23716, (64, 50))
  seq[:, :30] = 0
  pos = np.concatenate([seq[:, 1:], rng.integers(1, 23716, (64, 1))], axis=1)
  pos[:, :29] = 0
  negatives = rng.integers(1, 23716, (64, num_candidates - 1))
  v = model.init(jax.random.PRNGKey(0), negatives, seq, pos, train=False)
  out = model.apply(v, negatives, seq, pos, train=True,
                    rngs={"dropout": jax.random.PRNGKey(1)})
  loss, weight, _ = make_rerank_loss("listwise")(out, None, {})
  mean = float(jnp.sum(loss * weight) / jnp.sum(weight))
  assert abs(mean - math.log(num_candidates)) < 0.05


def _random_outputs(seed=0, b=3, length=4, k=6):
  rng = np.random.default_rng(seed)
  scores = rng.normal(size=(b, length, 1 + k)).astype(np.float32)
  where = rng.random((b, length, 1 + k)) < 0.8
  where[..., 0] = rng.random((b, length)) < 0.7  # padded positions
  where[..., 1:] &= where[..., :1]
  where[0, 0, :] = [True] + [False] * k  # a valid position without any negative
  where[2] = False  # a user without a valid position
  return {"scores": scores, "where": where}


def test_listwise_rerank_loss_against_a_numpy_loop():
  out = _random_outputs()
  loss, weight, aux = make_rerank_loss("listwise")(out, None, {})
  s, w = out["scores"].astype(np.float64), out["where"]
  for i in range(3):
    terms = []
    for t in range(4):
      if not w[i, t, 0]:
        continue
      valid = s[i, t][w[i, t]]
      terms.append(-(s[i, t, 0] - np.log(np.sum(np.exp(valid)))))
    assert weight[i] == len(terms)
    np.testing.assert_allclose(loss[i], np.mean(terms) if terms else 0.0, rtol=1e-5)
  np.testing.assert_allclose(aux["terms"]["listwise"], loss)


def test_bpr_rerank_loss_equals_pairwise_logistic_loss():
  out = _random_outputs(seed=1)
  loss, weight, aux = make_rerank_loss("bpr")(out, None, {})
  labels = np.zeros(out["scores"].shape, np.float32)
  labels[..., 0] = 1.0
  per_position = np.asarray(losses.pairwise_logistic_loss(
      out["scores"], labels, where=out["where"]))
  valid = out["where"][..., 0]
  expected = (np.sum(np.where(valid, per_position, 0), -1)
              / np.maximum(valid.sum(-1), 1))
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_array_equal(weight, valid.sum(-1))
  # Equal scores: ln 2 per valid position that has a negative.
  flat = {"scores": np.zeros((1, 2, 4), np.float32), "where": np.ones((1, 2, 4), bool)}
  np.testing.assert_allclose(make_rerank_loss("bpr")(flat, None, {})[0], [math.log(2)],
                             rtol=1e-6)
  assert "bpr" in aux["terms"]


def test_rerank_loss_gradient_matches_finite_differences():
  out = _random_outputs(seed=2)
  for name in ("listwise", "bpr"):
    fn = make_rerank_loss(name)

    def total(scores):
      loss, weight, _ = fn({"scores": scores, "where": out["where"]}, None, {})
      return jnp.sum(loss * weight) / jnp.maximum(jnp.sum(weight), 1.0)

    x = jnp.asarray(out["scores"], jnp.float64) if jax.config.x64_enabled else \
        jnp.asarray(out["scores"])
    grad = np.asarray(jax.grad(total)(x))
    eps = 1e-2
    for idx in [(0, 1, 0), (0, 1, 3), (1, 2, 0), (1, 3, 5)]:
      e = np.zeros_like(out["scores"])
      e[idx] = eps
      numeric = (float(total(x + e)) - float(total(x - e))) / (2 * eps)
      np.testing.assert_allclose(grad[idx], numeric, atol=2e-3)


def test_unknown_rerank_loss_raises():
  with pytest.raises(ValueError, match="loss must be one of"):
    make_rerank_loss("hinge")
