"""Checkpoints through orbax's CheckpointManager, restored against an abstract state.

Saves are asynchronous (training goes on while orbax writes) and atomic: orbax writes to
a temporary directory and renames it when complete, and only finalized steps are listed
or restored, so a run killed mid-save never leaves a half-written checkpoint that a
restart would read. Restoring goes through ``jax.eval_shape`` of the state constructor
(no real initialisation) with the target sharding on every leaf, so the state lands
where the run needs it (flax and big_vision do the same).

On the CPU backend, arrays are saved without orbax's *replica-parallel* mode, as orbax
itself does on GPU: that mode splits a replicated array into one slice per replica so
that the devices copy their parts to the host in parallel, which on CPU devices (one
memory) only adds an eager slice program per array shape and device, compiled on every
first save (about 630 of them for a BERT encoder's state on 8 simulated devices).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Optional

import jax
import orbax.checkpoint as ocp

_CPU_ARRAY_HANDLER = False


def _use_plain_array_saves_on_cpu() -> None:
  """Registers orbax's ``ArrayHandler(use_replica_parallel=False)`` for ``jax.Array``
  once per process when the default backend is the CPU (orbax's documented way to
  change how a type is saved; its own default on GPU)."""
  global _CPU_ARRAY_HANDLER
  if _CPU_ARRAY_HANDLER or jax.default_backend() != "cpu":
    return
  ocp.type_handlers.register_type_handler(
      jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False),
      override=True)
  _CPU_ARRAY_HANDLER = True


class Checkpointer:
  """A thin wrapper over ``ocp.CheckpointManager`` for one pytree train state.

  Args:
    directory: where checkpoints live (created if missing); made absolute.
    max_to_keep: keep the last ``max_to_keep`` checkpoints (>= 1).
    async_save: write in a background thread.

  Raises:
    ValueError: ``max_to_keep < 1``.
  """

  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
    if max_to_keep < 1:
      raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
    self.directory = os.path.abspath(directory)
    _use_plain_array_saves_on_cpu()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True,
        enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers=ocp.StandardCheckpointHandler())

  def save(self, step: int, state: Any) -> bool:
    """Starts saving ``state`` (its single global copy) as checkpoint ``step``.

    Returns whether a save was started (False if ``step`` is already saved).
    """
    if step in self._manager.all_steps():
      return False
    return self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def latest_step(self) -> Optional[int]:
    """The newest finalized checkpoint's step, or None if there is none."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Steps of all finalized checkpoints kept on disk, oldest first."""
    return sorted(self._manager.all_steps())

  def restore(self, abstract_state: Any, step: Optional[int] = None) -> Any:
    """Restores checkpoint ``step`` (default: the latest) into ``abstract_state``'s
    structure, shapes, dtypes and shardings.

    A checkpoint written before the state class gained a field that is None in
    ``abstract_state`` (e.g. ``TrainState.sampler_cache``) restores, with that field
    None; any other difference of structure raises orbax's error.

    Raises:
      FileNotFoundError: no checkpoint in the directory.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    added = _fields_added_since(abstract_state, self._manager.item_metadata(step))
    if not added:
      return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    # Written before the state had these fields, all None in ``abstract_state`` (no
    # values to restore): restore the others by name and leave these None.
    target = {f.name: getattr(abstract_state, f.name)
              for f in dataclasses.fields(abstract_state)
              if f.metadata.get("pytree_node", True) and f.name not in added}
    restored = self._manager.restore(step, args=ocp.args.StandardRestore(target))
    return abstract_state.replace(**restored, **{name: None for name in added})

  def restore_host(self, step: Optional[int] = None) -> Any:
    """Checkpoint ``step`` (default: the latest) as a tree of host NumPy arrays, read
    from its own metadata: no state constructor, and any topology (a checkpoint
    written by 2 processes x 4 devices reads on one device). For comparing and
    inspecting checkpoints; to train on, use :meth:`restore`.

    Raises:
      FileNotFoundError: no checkpoint in the directory.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        self._manager.item_metadata(step))
    restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    return jax.device_get(restored)

  def restore_or_init(self, init_fn: Callable[[], Any],
                      sharding: jax.sharding.Sharding) -> tuple[Any, bool]:
    """The latest checkpoint, restored into the structure of ``init_fn()`` placed by
    ``sharding`` (see :func:`abstract_like`; ``init_fn`` is not run), or ``init_fn()``
    when there is none.

    Returns:
      ``(state, restored)``: ``restored`` is True when the state came from a checkpoint.
    """
    if self.latest_step() is None:
      return init_fn(), False
    return self.restore(abstract_like(init_fn, sharding)), True

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves, then releases orbax's resources."""
    self._manager.wait_until_finished()
    self._manager.close()


def _fields_added_since(abstract_state: Any, metadata: Any) -> tuple[str, ...]:
  """The dataclass fields of ``abstract_state`` that are None and absent from a
  checkpoint's top-level ``metadata`` (fields added to the state class since it was
  written); () for any other state."""
  if not dataclasses.is_dataclass(abstract_state) or not hasattr(metadata, "keys"):
    return ()
  on_disk = set(metadata.keys())
  return tuple(f.name for f in dataclasses.fields(abstract_state)
               if f.metadata.get("pytree_node", True) and f.name not in on_disk
               and getattr(abstract_state, f.name) is None)


def abstract_like(init_fn: Callable[[], Any], sharding: jax.sharding.Sharding) -> Any:
  """The abstract (shape/dtype/sharding) tree of ``init_fn()``, without computing it."""
  shapes = jax.eval_shape(init_fn)
  return jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)
