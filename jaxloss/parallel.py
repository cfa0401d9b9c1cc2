"""Data-parallel launchers: ``jax.shard_map`` under ``jax.jit`` (default) or ``jax.pmap``.

Both launch the *same* per-device step body, which reduces over the mesh axis
:data:`DATA_AXIS` with ``lax.psum`` / ``lax.pmean``. The shard_map launcher works on global
``jax.Array`` values (replicated state, batch sharded along ``data``), which is what
multi-host runs and orbax want; the pmap launcher keeps a leading device axis and is here
for compatibility (JAX >= 0.8 implements pmap with shard_map itself).

Several processes (:mod:`jaxloss.distributed`): the mesh spans every process' devices;
each process puts on its devices only its rows of a batch (:meth:`DataParallel.shard_batch`,
:meth:`DataParallel.assemble_batch`, :meth:`DataParallel.process_rows`) and every
process runs the same jitted step. Only the ``shard_map`` launcher supports it.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
LAUNCHERS = ("shard_map", "pmap")


def make_mesh(num_devices: Optional[int] = None,
              devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D mesh with axis ``"data"`` over the first ``num_devices`` devices.

  With several processes the mesh must span all of them (``num_devices`` None or
  ``jax.device_count()``), in process order, so that each process' rows of a batch are
  one contiguous block.

  Raises:
    ValueError: ``num_devices`` < 1 or more than the devices available, or a subset of
      the devices in a multi-process run.
  """
  devices = list(devices if devices is not None else jax.devices())
  if num_devices is None:
    num_devices = len(devices)
  if jax.process_count() > 1 and num_devices != len(devices):
    raise ValueError(
        f"num_devices must be None or {len(devices)} (every device of the "
        f"{jax.process_count()} processes) in a multi-process run, got {num_devices}")
  if jax.process_count() > 1:
    devices = sorted(devices, key=lambda d: (d.process_index, d.id))
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


@functools.lru_cache(maxsize=None)
def known_compiler_options(options: tuple) -> dict:
  """``dict(options)`` if this XLA accepts every option (``((name, value), ...)``), else
  ``{}`` with a warning naming the option: the options only change how fast XLA
  compiles, so a version of XLA without them compiles with its defaults instead of
  failing. Checked once per set of options by compiling a one-operation program.

  Raises:
    Any error of that compilation other than an unknown option (a bad value of a
    known option, for instance), unchanged.
  """
  try:
    jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(
        np.float32(0)).compile()
  except Exception as e:  # pylint: disable=broad-except
    if "compile option" not in str(e):
      raise
    warnings.warn(f"cpu_compiler_options {dict(options)}: {str(e).splitlines()[0]}; "
                  f"compiling with XLA's defaults", RuntimeWarning, stacklevel=3)
    return {}
  return dict(options)


@dataclasses.dataclass
class DataParallel:
  """Places values on a device mesh and launches per-device step bodies.

  Attributes:
    kind: ``"shard_map"`` (default) or ``"pmap"``.
    num_devices: devices on the ``data`` axis (None: all local devices).
    cpu_compiler_options: XLA options (``{name: value}``, e.g.
      ``{"xla_cpu_use_fusion_emitters": False}``) for the train, eval and predict steps
      of the ``shard_map`` launcher when the mesh is on the CPU; ignored on other
      backends and by ``pmap``, which takes no options. None or empty: XLA's defaults.
      They choose how XLA compiles the step, not what it computes (see
      ``docs/bench_compile.md`` for the option the image recipes set and why).

  Raises:
    ValueError: unknown ``kind`` or bad ``num_devices``.
  """
  kind: str = "shard_map"
  num_devices: Optional[int] = None
  cpu_compiler_options: Optional[Mapping[str, Any]] = None

  def __post_init__(self):
    if self.kind not in LAUNCHERS:
      raise ValueError(f"parallel must be one of {LAUNCHERS}, got {self.kind!r}")
    if self.kind == "pmap" and jax.process_count() > 1:
      raise ValueError("parallel='pmap' is single-process only here; use "
                       "parallel='shard_map' with several processes")
    self.mesh = make_mesh(self.num_devices)
    self.num_devices = self.mesh.size
    self.devices = list(self.mesh.devices.flat)
    options = dict(self.cpu_compiler_options or {})
    if options and self.devices[0].platform == "cpu" and self.kind == "shard_map":
      options = known_compiler_options(tuple(sorted(options.items())))
    else:
      options = {}
    self._jit_options = {"compiler_options": options} if options else {}

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
    if jax.process_count() > 1:
      # Every process holds the same host values; each places its own copies.
      tree = jax.device_get(tree)
    return jax.device_put(tree, NamedSharding(self.mesh, P()))

  def unreplicate(self, tree: Any) -> Any:
    """The global (single-copy) view of a replicated pytree, e.g. to checkpoint."""
    if self.kind == "pmap":
      return jax.tree.map(lambda x: x[0], tree)
    return tree

  @property
  def batch_sharding(self) -> NamedSharding:
    """A batch split along its leading axis over the ``data`` axis."""
    return NamedSharding(self.mesh, P(DATA_AXIS))

  def process_rows(self, global_batch_size: int) -> slice:
    """The rows of a ``[global_batch_size, ...]`` batch that live on this process'
    devices (all of them in a single-process run).

    Raises:
      ValueError: ``global_batch_size`` not divisible by ``num_devices``.
    """
    self._check_divisible(global_batch_size)
    if self.kind == "pmap" or jax.process_count() == 1:
      return slice(0, global_batch_size)
    spans = sorted((idx[0].start or 0, idx[0].stop or global_batch_size) for idx in
                   self.batch_sharding.addressable_devices_indices_map(
                       (global_batch_size,)).values())
    for (_, stop), (start, _) in zip(spans, spans[1:]):
      if stop != start:
        raise ValueError(f"process {jax.process_index()}'s devices hold rows {spans}, "
                         "not one block; build the mesh with make_mesh")
    return slice(spans[0][0], spans[-1][1])

  def _check_divisible(self, n: int) -> None:
    if n % self.num_devices:
      raise ValueError(
          f"batch leading dimension {n} is not divisible by num_devices="
          f"{self.num_devices}; pad the batch first")

  def shard_batch(self, batch: Any) -> Any:
    """Splits the leading axis of every leaf across devices (eval batches). Every
    process passes the whole batch and places only the rows of its own devices, so a
    test set split this way is counted once over all processes.

    Raises:
      ValueError: a leading dimension not divisible by ``num_devices``.
    """
    def put(x):
      x = np.asarray(x)
      self._check_divisible(x.shape[0])
      if self.kind == "pmap":
        x = x.reshape((self.num_devices, -1) + x.shape[1:])
        return jax.device_put(x, self.batch_sharding)
      if jax.process_count() == 1:
        return jax.device_put(x, self.batch_sharding)
      return jax.make_array_from_callback(x.shape, self.batch_sharding,
                                          lambda index: x[index])
    return jax.tree.map(put, batch)

  def assemble_batch(self, local: Any, global_batch_size: int) -> Any:
    """The global ``[global_batch_size, ...]`` arrays, split along ``data``, from this
    process' rows only (``local`` leaves are ``[rows, ...]`` for
    ``rows = process_rows(global_batch_size)``), through
    ``jax.make_array_from_process_local_data``.

    Raises:
      ValueError: a leaf whose leading dimension is not this process' row count.
    """
    rows = self.process_rows(global_batch_size)
    n_local = rows.stop - rows.start

    def put(x):
      x = np.asarray(x)
      if x.shape[0] != n_local:
        raise ValueError(f"process-local batch has {x.shape[0]} rows, expected "
                         f"{n_local} (rows {rows.start}:{rows.stop} of "
                         f"{global_batch_size})")
      if self.kind == "pmap":
        return jax.device_put(x.reshape((self.num_devices, -1) + x.shape[1:]),
                              self.batch_sharding)
      return jax.make_array_from_process_local_data(
          self.batch_sharding, x, (global_batch_size,) + x.shape[1:])
    return jax.tree.map(put, local)

  # --- launching -------------------------------------------------------------------
  def launch_train_step(self, body: Callable, counter: Optional[TraceCounter] = None,
                        *, batch_sharded: bool = False) -> Callable:
    """``(state, data) -> (state, metrics)`` running ``body`` on every device.

    ``state`` is replicated; ``data`` is replicated (the whole training set), or with
    ``batch_sharded`` the step's global batch split along ``data``
    (:meth:`assemble_batch`). ``body`` must reduce over ``"data"`` so that its outputs
    are identical on every device. The state is donated.
    """
    if counter is not None:
      body = counter.wrap(body)
    if self.kind == "pmap":
      return jax.pmap(body, axis_name=DATA_AXIS, donate_argnums=0,
                      devices=self.devices)
    data_spec = P(DATA_AXIS) if batch_sharded else P()
    mapped = jax.shard_map(body, mesh=self.mesh, in_specs=(P(), data_spec),
                           out_specs=(P(), P()))
    return jax.jit(mapped, donate_argnums=0, **self._jit_options)

  def launch_eval_step(self, body: Callable) -> Callable:
    """``(state, batch) -> result``: replicated state, batch split along ``data``;
    ``body`` must psum its result over ``"data"``."""
    if self.kind == "pmap":
      fn = jax.pmap(body, axis_name=DATA_AXIS, devices=self.devices)
      return lambda state, batch: jax.tree.map(lambda x: x[0], fn(state, batch))
    mapped = jax.shard_map(body, mesh=self.mesh, in_specs=(P(), P(DATA_AXIS)),
                           out_specs=P())
    return jax.jit(mapped, **self._jit_options)

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
    return jax.jit(mapped, **self._jit_options)


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
