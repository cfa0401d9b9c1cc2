"""Checkpointer.restore_or_init: a fresh state without a checkpoint, the saved one with."""

import jax
import jax.numpy as jnp
import numpy as np

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
