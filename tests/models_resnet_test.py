"""``jaxloss.models.materialize`` and the CIFAR ResNet that uses it: the values and
gradients do not change, the CPU program stores each block's output in a conditional
(other platforms keep XLA's fusion), and the bad inputs are named."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import export

from jaxloss.models import resnet
from jaxloss.models.materialize import materialize


def test_materialize_is_the_identity_with_its_gradient():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4, 5)), jnp.float32)
  x = x.at[0, 0, 1].set(jnp.nan).at[1, 2, 3].set(-jnp.inf).at[2, 0, 0].set(-0.0)
  y = jax.jit(materialize)(x)
  np.testing.assert_array_equal(np.asarray(y), np.asarray(x))  # NaN, inf, -0.0 kept
  assert np.signbit(np.asarray(y)[2, 0, 0])
  w = jnp.arange(60.0).reshape(3, 4, 5)
  g = jax.grad(lambda v: jnp.sum(jnp.nan_to_num(materialize(v)) * w))(x)
  np.testing.assert_array_equal(np.asarray(g), np.where(np.isfinite(x), w, 0.0))
  # A NaN in the first element takes the other branch: still the identity.
  first_nan = x.at[0, 0, 0].set(jnp.nan)
  np.testing.assert_array_equal(np.asarray(jax.jit(materialize)(first_nan)),
                                np.asarray(first_nan))


@pytest.mark.parametrize("bad", [jnp.arange(4), jnp.zeros((0, 3))])
def test_materialize_rejects_what_it_cannot_store(bad):
  with pytest.raises(ValueError, match="non-empty floating-point"):
    materialize(bad)


def _hlo(fn, platform, *args):
  return export.export(jax.jit(fn), platforms=[platform])(*args).mlir_module()


def test_only_the_cpu_program_has_the_conditional():
  """``lax.platform_dependent`` keeps one branch per platform: the CPU one has the NaN
  test and the conditional's two branches; on GPU and TPU the value passes through."""
  x = jnp.ones((4, 8))

  def fn(v):
    return jnp.sin(materialize(jnp.cos(v)))

  counts = {}
  for platform in ("cpu", "cuda", "tpu"):
    text = _hlo(fn, platform, x)
    counts[platform] = (text.count("stablehlo.compare"), text.count("stablehlo.multiply"),
                        text.count("stablehlo.case"))
  assert counts["cpu"][:2] == (1, 1), counts
  assert counts["cuda"][:2] == counts["tpu"][:2] == (0, 0), counts
  assert counts["cpu"][2] == counts["cuda"][2] + 1, counts  # the conditional itself


def _resnet_grad(depth=8, batch=4):
  model = resnet.CifarResNet(num_classes=10, depth=depth)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.integers(0, 256, size=(batch, 32, 32, 3), dtype=np.uint8))
  y = jnp.asarray(rng.integers(0, 10, size=(batch,)))
  variables = model.init(jax.random.PRNGKey(0), x[:1], train=False)

  def loss(params):
    logits, new = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                              x, train=True, mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new

  fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
  return fn, variables


def test_resnet_gradient_is_unchanged_and_stores_the_blocks(monkeypatch):
  fn, variables = _resnet_grad()
  compiled = fn.lower(variables["params"]).compile()
  # ResNet-8: 3 blocks, each storing its inner activation and its output, in the
  # forward pass and again in the gradient's.
  assert compiled.as_text().count(" conditional(") >= 6
  (loss, stats), grads = compiled(variables["params"])
  monkeypatch.setattr(resnet, "materialize", lambda v: v)
  plain, _ = _resnet_grad()
  (loss0, stats0), grads0 = plain(variables["params"])
  assert " conditional(" not in plain.lower(variables["params"]).compile().as_text()
  # The same float32 operations; only the fusion boundaries move. Measured: equal to the
  # bit at batch 128; allow a few ulps of reassociation.
  assert float(loss) == pytest.approx(float(loss0), rel=1e-6)
  for a, b in zip(jax.tree.leaves((grads, stats)), jax.tree.leaves((grads0, stats0))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(np.abs(b).max() + 1))


def test_resnet_evaluation_keeps_xla_fusion():
  model = resnet.CifarResNet(num_classes=10, depth=8)
  x = jnp.zeros((2, 32, 32, 3), jnp.uint8)
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  text = jax.jit(lambda v: model.apply(v, x, train=False)).lower(
      variables).compile().as_text()
  assert " conditional(" not in text
