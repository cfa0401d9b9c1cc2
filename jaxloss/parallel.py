"""Data-parallel launchers: ``jax.shard_map`` under ``jax.jit`` (default) or ``jax.pmap``.

Both launch the *same* per-device step body, which reduces over the mesh axis
:data:`DATA_AXIS` with ``lax.psum`` / ``lax.pmean``. The shard_map launcher works on global
``jax.Array`` values (replicated state, batch sharded along ``data``), which is what
multi-host runs and orbax want; the pmap launcher keeps a leading device axis and is here
for compatibility (JAX >= 0.8 implements pmap with shard_map itself).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
LAUNCHERS = ("shard_map", "pmap")


def make_mesh(num_devices: Optional[int] = None,
              devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D mesh with axis ``"data"`` over the first ``num_devices`` devices.

  Raises:
    ValueError: ``num_devices`` < 1 or more than the devices available.
  """
  devices = list(devices if devices is not None else jax.devices())
  if num_devices is None:
    num_devices = len(devices)
  if not 1 <= num_devices <= len(devices):
    raise ValueError(
        f"num_devices must be in [1, {len(devices)}] (devices available), got "
        f"{num_devices}")
  return Mesh(np.asarray(devices[:num_devices]), (DATA_AXIS,))


class TraceCounter:
  """Counts how many times a wrapped function is traced (= compiled by jit/pmap)."""

  def __init__(self):
    self.count = 0

  def wrap(self, fn: Callable) -> Callable:
    """``fn`` with every call (= every trace, when jitted) counted in ``count``."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
      self.count += 1
      return fn(*args, **kwargs)
    return wrapped


@dataclasses.dataclass
class DataParallel:
  """Places values on a device mesh and launches per-device step bodies.

  Attributes:
    kind: ``"shard_map"`` (default) or ``"pmap"``.
    num_devices: devices on the ``data`` axis (None: all local devices).

  Raises:
    ValueError: unknown ``kind`` or bad ``num_devices``.
  """
  kind: str = "shard_map"
  num_devices: Optional[int] = None

  def __post_init__(self):
    if self.kind not in LAUNCHERS:
      raise ValueError(f"parallel must be one of {LAUNCHERS}, got {self.kind!r}")
    self.mesh = make_mesh(self.num_devices)
    self.num_devices = self.mesh.size
    self.devices = list(self.mesh.devices.flat)

  # --- placement -------------------------------------------------------------------
  @property
  def restore_sharding(self) -> jax.sharding.Sharding:
    """Where a single-copy state is restored before :meth:`replicate`: replicated over
    the mesh for ``shard_map``, on the first device for ``pmap``."""
    if self.kind == "pmap":
      return jax.sharding.SingleDeviceSharding(self.devices[0])
    return NamedSharding(self.mesh, P())

  def replicate(self, tree: Any) -> Any:
    """Puts a pytree on every device (state, small datasets)."""
    if self.kind == "pmap":
      # pmap wants a leading device axis: one copy per device, split along "data".
      return jax.tree.map(
          lambda x: jax.device_put(
              np.broadcast_to(np.asarray(x), (self.num_devices,) + np.shape(x)),
              NamedSharding(self.mesh, P(DATA_AXIS))),
          tree)
    return jax.device_put(tree, NamedSharding(self.mesh, P()))

  def unreplicate(self, tree: Any) -> Any:
    """The global (single-copy) view of a replicated pytree, e.g. to checkpoint."""
    if self.kind == "pmap":
      return jax.tree.map(lambda x: x[0], tree)
    return tree

  def shard_batch(self, batch: Any) -> Any:
    """Splits the leading axis of every leaf across devices (eval batches).

    Raises:
      ValueError: a leading dimension not divisible by ``num_devices``.
    """
    def put(x):
      x = np.asarray(x)
      if x.shape[0] % self.num_devices:
        raise ValueError(
            f"batch leading dimension {x.shape[0]} is not divisible by num_devices="
            f"{self.num_devices}; pad the batch first")
      if self.kind == "pmap":
        x = x.reshape((self.num_devices, -1) + x.shape[1:])
      return jax.device_put(x, NamedSharding(self.mesh, P(DATA_AXIS)))
    return jax.tree.map(put, batch)

  # --- launching -------------------------------------------------------------------
  def launch_train_step(self, body: Callable, counter: Optional[TraceCounter] = None
                        ) -> Callable:
    """``(state, data) -> (state, metrics)`` running ``body`` on every device.

    ``state`` and ``data`` are replicated; ``body`` must reduce over ``"data"`` so that
    its outputs are identical on every device. The state is donated.
    """
    if counter is not None:
      body = counter.wrap(body)
    if self.kind == "pmap":
      return jax.pmap(body, axis_name=DATA_AXIS, donate_argnums=0,
                      devices=self.devices)
    mapped = jax.shard_map(body, mesh=self.mesh, in_specs=(P(), P()),
                           out_specs=(P(), P()))
    return jax.jit(mapped, donate_argnums=0)

  def launch_eval_step(self, body: Callable) -> Callable:
    """``(state, batch) -> result``: replicated state, batch split along ``data``;
    ``body`` must psum its result over ``"data"``."""
    if self.kind == "pmap":
      fn = jax.pmap(body, axis_name=DATA_AXIS, devices=self.devices)
      return lambda state, batch: jax.tree.map(lambda x: x[0], fn(state, batch))
    mapped = jax.shard_map(body, mesh=self.mesh, in_specs=(P(), P(DATA_AXIS)),
                           out_specs=P())
    return jax.jit(mapped)

  def launch_predict_step(self, body: Callable) -> Callable:
    """``(state, batch) -> outputs``: replicated state, batch split along ``data``;
    ``body`` returns per-example arrays with the batch axis first (no reduction), and
    the result is the global ``[batch, ...]`` arrays in batch order."""
    if self.kind == "pmap":
      fn = jax.pmap(body, axis_name=DATA_AXIS, devices=self.devices)
      return lambda state, batch: jax.tree.map(
          lambda x: x.reshape((-1,) + x.shape[2:]), fn(state, batch))
    mapped = jax.shard_map(body, mesh=self.mesh, in_specs=(P(), P(DATA_AXIS)),
                           out_specs=P(DATA_AXIS))
    return jax.jit(mapped)


def pad_to_multiple(arrays: dict[str, np.ndarray], multiple: int
                    ) -> dict[str, np.ndarray]:
  """Pads every array's leading axis with zeros to a multiple of ``multiple`` and adds
  a boolean ``mask`` (True for real examples), so evaluation counts each example once
  and never drops a remainder."""
  n = len(next(iter(arrays.values())))
  padded_n = -(-n // multiple) * multiple
  out = {k: np.concatenate([v, np.zeros((padded_n - n,) + v.shape[1:], v.dtype)])
         for k, v in arrays.items()}
  out["mask"] = np.arange(padded_n) < n
  return out


def device_varying(tree: Any) -> Any:
  """Marks a replicated pytree as varying over ``data`` inside a mapped body.

  Under ``shard_map`` (JAX's varying-manual-axes typing) the gradient with respect to a
  *replicated* input is already summed over devices by autodiff; under ``pmap`` it is
  not. Differentiating with respect to a device-varying copy gives the local gradient
  under both launchers, so the step body sums it explicitly, once, the same way in both.
  """
  if hasattr(jax.lax, "pcast"):
    return jax.lax.pcast(tree, DATA_AXIS, to="varying")
  return jax.lax.pvary(tree, DATA_AXIS)  # JAX < 0.8 name


def global_positions(local_batch_size: int) -> jax.Array:
  """Positions in the global batch of this device's examples (inside a mapped body)."""
  device = jax.lax.axis_index(DATA_AXIS)
  return device * local_batch_size + jnp.arange(local_batch_size)
