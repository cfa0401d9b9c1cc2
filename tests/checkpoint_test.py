"""Checkpointer.restore_or_init: a fresh state without a checkpoint, the saved one with;
a checkpoint written before the state class gained a None-valued field."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxloss.checkpoint import Checkpointer
from jaxloss.parallel import DataParallel


def test_restore_or_init(tmp_path):
  calls = []

  def init():
    calls.append(1)
    return {"w": jnp.arange(6.0).reshape(2, 3), "step": jnp.int32(0)}

  dp = DataParallel("shard_map", 8)
  ckpt = Checkpointer(str(tmp_path / "ckpt"), max_to_keep=1)
  state, restored = ckpt.restore_or_init(init, dp.restore_sharding)
  assert not restored and len(calls) == 1
  ckpt.save(3, {"w": state["w"] * 2, "step": jnp.int32(3)})
  ckpt.wait()
  state, restored = ckpt.restore_or_init(init, dp.restore_sharding)
  assert restored and len(calls) == 2  # traced by jax.eval_shape for the structure
  np.testing.assert_array_equal(state["w"], np.arange(6.0).reshape(2, 3) * 2)
  assert int(state["step"]) == 3
  assert state["w"].sharding == dp.restore_sharding
  ckpt.close()
  pmap_dp = DataParallel("pmap", 8)
  assert pmap_dp.restore_sharding == jax.sharding.SingleDeviceSharding(jax.devices()[0])


@flax.struct.dataclass
class _Before:
  step: jax.Array
  params: Any
  tx: Any = flax.struct.field(pytree_node=False, default=None)


@flax.struct.dataclass
class _After:  # the same class with a field added since (as TrainState.sampler_cache)
  step: jax.Array
  params: Any
  tx: Any = flax.struct.field(pytree_node=False, default=None)
  cache: Any = None


def test_a_checkpoint_from_before_a_none_field_restores_and_nothing_else(tmp_path):
  dp = DataParallel("shard_map", 8)
  ckpt = Checkpointer(str(tmp_path / "ckpt"), max_to_keep=1)
  ckpt.save(4, _Before(step=jnp.int32(4), params={"w": jnp.arange(3.0)}))
  ckpt.wait()

  def init(cache=None):
    return _After(step=jnp.int32(0), params={"w": jnp.zeros(3)}, tx="static",
                  cache=cache)
  state, restored = ckpt.restore_or_init(init, dp.restore_sharding)
  assert restored and state.cache is None and state.tx == "static"
  assert int(state.step) == 4
  np.testing.assert_array_equal(state.params["w"], np.arange(3.0))
  # A field with values to restore is not papered over: orbax names the mismatch.
  with pytest.raises(ValueError, match="cache"):
    ckpt.restore_or_init(lambda: init(cache=jnp.zeros(2)), dp.restore_sharding)
  ckpt.close()
