"""``jaxloss.models.dense``: the flattened products equal ``lax.dot_general`` (values and
both gradients), the layers keep flax's parameters and names, and every product in a
dense layer's gradient is a 2-D one in the CPU program and flax's own elsewhere."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export, lax

from jaxloss.models import BertEncoder, EncoderConfig, SASRec
from jaxloss.models.dense import Dense, attention_kwargs, flat_dot_general

# (lhs shape, rhs shape, dimension numbers): the products flax's dense layers make.
FLATTENED = [
    ((4, 7, 6), (6, 5), (((2,), (0,)), ((), ()))),            # Dense on [B, T, D]
    ((3, 4, 7, 6), (6, 5), (((3,), (0,)), ((), ()))),         # Dense on [B, S, T, D]
    ((4, 7, 6), (6, 2, 3), (((2,), (0,)), ((), ()))),         # attention's query / key
    ((4, 7, 2, 3), (2, 3, 6), (((2, 3), (0, 1)), ((), ()))),  # attention's output
]
# Products that are not a dense layer's: passed to lax.dot_general as they are.
UNCHANGED = [
    ((5, 6), (6, 4), (((1,), (0,)), ((), ()))),               # already 2-D
    ((4, 7, 6), (4, 6, 5), (((2,), (1,)), ((0,), (0,)))),     # batch axes
    ((6, 7), (6, 5), (((0,), (0,)), ((), ()))),               # contracts a leading axis
    ((4, 6, 7), (6, 5), (((1,), (0,)), ((), ()))),            # not the trailing axis
]


def _operands(lhs_shape, rhs_shape):
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  return (jax.random.normal(k1, lhs_shape), jax.random.normal(k2, rhs_shape), k3)


@pytest.mark.parametrize("lhs_shape,rhs_shape,dims", FLATTENED)
def test_flattened_product_and_gradients_equal_dot_general(lhs_shape, rhs_shape, dims):
  lhs, rhs, key = _operands(lhs_shape, rhs_shape)
  ref = lax.dot_general(lhs, rhs, dims)
  out = flat_dot_general(lhs, rhs, dims)
  assert out.shape == ref.shape and out.dtype == ref.dtype
  # Each output entry sums K = 6 products: two summation orders differ by at most
  # 2 (K - 1) u sum|terms| <= K eps sum|terms| (u = eps / 2, float32's unit roundoff).
  bound = 6 * np.finfo(np.float32).eps * lax.dot_general(jnp.abs(lhs), jnp.abs(rhs), dims)
  assert np.all(np.abs(np.asarray(out) - np.asarray(ref)) <= np.asarray(bound))
  cotangent = jax.random.normal(key, ref.shape)
  grads = jax.vjp(lambda a, b: flat_dot_general(a, b, dims), lhs, rhs)[1](cotangent)
  refs = jax.vjp(lambda a, b: lax.dot_general(a, b, dims), lhs, rhs)[1](cotangent)
  # Each gradient entry sums at most K = 84 products (B * T for the kernel's): two
  # summation orders differ by at most 2 (K - 1) u sum|terms| <= K eps sum|terms|.
  sums = jax.vjp(lambda a, b: lax.dot_general(a, b, dims), jnp.abs(lhs), jnp.abs(rhs))[1](
      jnp.abs(cotangent))
  for g, r, total in zip(grads, refs, sums):
    assert g.shape == r.shape
    assert np.all(np.abs(np.asarray(g) - np.asarray(r))
                  <= 84 * np.finfo(np.float32).eps * np.asarray(total))


@pytest.mark.parametrize("lhs_shape,rhs_shape,dims", UNCHANGED)
def test_other_products_go_to_dot_general_unchanged(lhs_shape, rhs_shape, dims):
  lhs, rhs, _ = _operands(lhs_shape, rhs_shape)
  np.testing.assert_array_equal(flat_dot_general(lhs, rhs, dims),
                                lax.dot_general(lhs, rhs, dims))
  jaxpr = jax.make_jaxpr(lambda a, b: flat_dot_general(a, b, dims))(lhs, rhs)
  assert [e.primitive.name for e in jaxpr.eqns] == ["dot_general"]


def test_mismatched_shapes_raise_dot_generals_error():
  with pytest.raises(TypeError, match="dot_general"):
    flat_dot_general(jnp.ones((2, 3, 4)), jnp.ones((5, 6)), (((2,), (0,)), ((), ())))


def test_dense_keeps_flaxs_parameters_names_and_values():
  class Ours(nn.Module):
    @nn.compact
    def __call__(self, x):
      return Dense(3, name="head")(Dense(5)(x))

  class Flax(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(3, name="head")(nn.Dense(5)(x))

  x = jax.random.normal(jax.random.key(1), (2, 7, 4))
  ours, theirs = Ours().init(jax.random.key(2), x), Flax().init(jax.random.key(2), x)
  assert jax.tree.structure(ours) == jax.tree.structure(theirs)
  assert set(ours["params"]) == {"Dense_0", "head"}
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(Ours().apply(ours, x), Flax().apply(theirs, x),
                             rtol=1e-6, atol=1e-6)


_DOT = re.compile(r"stablehlo\.dot_general .*?(?:batching_dims = \[([\d, ]*)\] x "
                  r"\[[\d, ]*\], )?contracting_dims = \[([\d, ]*)\] x \[([\d, ]*)\].*"
                  r": \(tensor<([\dx]+)x\w+>, tensor<([\dx]+)x\w+>\)")


def _products(fn, *args, platform="cpu"):
  """``(lhs rank, rhs rank, contracted axes, batch axes)`` of every ``dot_general`` in the
  StableHLO that ``jax.jit(fn)`` lowers to for ``platform`` (``jax.export`` lowers for
  a platform this machine does not have)."""
  text = export.export(jax.jit(fn), platforms=[platform])(*args).mlir_module()
  found = []
  for line in text.splitlines():
    if "stablehlo.dot_general" not in line:
      continue
    m = _DOT.search(line)
    assert m, line
    batch, lc, _, lhs, rhs = m.groups()
    count = lambda dims: len([d for d in (dims or "").split(",") if d.strip()])
    found.append((lhs.count("x") + 1, rhs.count("x") + 1, count(lc), count(batch)))
  return found


def _is_2d(product):
  return product == (2, 2, 1, 0)


def test_every_product_of_a_dense_layers_gradient_is_2d_on_the_cpu_only():
  layer = Dense(5)
  x = jax.random.normal(jax.random.key(3), (4, 7, 6))
  params = layer.init(jax.random.key(4), x)
  grad = jax.grad(lambda p, x: jnp.sum(layer.apply(p, x) ** 2), argnums=(0, 1))
  products = _products(grad, params, x)
  assert len(products) == 3  # forward, input gradient, kernel gradient
  assert all(_is_2d(p) for p in products), products
  flax_layer = nn.Dense(5)
  flax_grad = jax.grad(lambda p, x: jnp.sum(flax_layer.apply(p, x) ** 2), argnums=(0, 1))
  # flax's own kernel gradient contracts two axes (B and T): what this module avoids on
  # the CPU; GPU and TPU get exactly flax's products.
  assert (3, 3, 2, 0) in _products(flax_grad, params, x)
  for platform in ("cuda", "tpu"):
    assert (_products(grad, params, x, platform=platform)
            == _products(flax_grad, params, x, platform=platform))


def test_attention_and_encoder_gradients_are_2d_products_but_the_attention_scores():
  cfg = EncoderConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=16,
                      max_position_embeddings=16)
  encoder = BertEncoder(cfg, add_pooler=False)
  ids = jnp.arange(12, dtype=jnp.int32).reshape(2, 6) + 1
  params = encoder.init(jax.random.key(5), ids, deterministic=True)
  loss = lambda p: jnp.sum(encoder.apply(p, ids, deterministic=True) ** 2)
  products = _products(jax.grad(loss), params)
  batched = [p for p in products if p[3]]
  # 6 dense layers (query, key, value, attention output, intermediate, output) x 3
  # products; the attention's scores and weighted sum (batched over B and heads) x 3.
  assert len(products) - len(batched) == 18 and len(batched) == 6
  assert all(_is_2d(p) for p in products if not p[3]), products
  # flat_products=False: flax's own products, a kernel gradient contracting B and T.
  plain = encoder.clone(flat_products=False)
  loss = lambda p: jnp.sum(plain.apply(p, ids, deterministic=True) ** 2)
  assert (3, 3, 2, 0) in _products(jax.grad(loss), params)
  sasrec = SASRec(num_items=30, max_len=6, hidden=8, num_heads=2, num_blocks=1,
                  dropout_rate=0.0)
  items = jnp.arange(12, dtype=jnp.int32).reshape(2, 6) % 30 + 1
  sp = sasrec.init(jax.random.key(6), items, train=False, method=SASRec.encode)
  sloss = lambda p: jnp.sum(
      sasrec.apply(p, items, train=False, method=SASRec.encode) ** 2)
  dense = [p for p in _products(jax.grad(sloss), sp) if not p[3]]
  assert dense and all(_is_2d(p) for p in dense), dense
  assert attention_kwargs()["qkv_dot_general"] is flat_dot_general
