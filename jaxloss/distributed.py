"""Several processes, one mesh: JAX's multi-controller runtime (``jax.distributed``).

Every process runs the same program. :func:`initialize` connects it to the others
(coordinator address, number of processes, this process' id) *before anything touches a
device*; afterwards ``jax.devices()`` lists every process' devices, one mesh spans them
all, and a jitted ``shard_map`` step runs as one program over the mesh (XLA's
collectives: NCCL on GPU, ICI on TPU, gloo over TCP on CPU). The configuration comes
from, in order:

1. ``config.distributed`` (``coordinator_address``, ``num_processes``, ``process_id``);
2. the environment: ``JAXLOSS_COORDINATOR_ADDRESS``, ``JAXLOSS_NUM_PROCESSES``,
   ``JAXLOSS_PROCESS_ID`` (what ``tests/distributed_test.py`` sets for local processes);
3. ``config.distributed.auto_detect=True`` (or ``JAXLOSS_DISTRIBUTED=auto``): JAX's own
   cluster detection, which fills all three on Cloud TPU pod slices, under SLURM, Open MPI
   and Kubernetes (``jax.distributed.initialize()`` with no arguments).

With none of them the run is a single process and nothing is initialised.

A lost process must not hang the others: every process publishes a heartbeat counter in
the coordination service's key-value store, and a watchdog thread exits the process
(code :data:`PEER_LOST_EXIT`, after printing which process stopped) when a peer's counter
has not moved for ``peer_timeout_s`` or the coordinator (process 0) is unreachable.
JAX's own heartbeat (``heartbeat_timeout_s``) is the backstop. Restarting every process
on the same workdir resumes from the last checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
import time
from typing import Any, Mapping, Optional

import jax

# The exit status of a process whose peer was lost: EX_TEMPFAIL ("try again"), so a
# scheduler can tell "restart the job" from a bug.
PEER_LOST_EXIT = 75

ENV_COORDINATOR = "JAXLOSS_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAXLOSS_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXLOSS_PROCESS_ID"
ENV_AUTO = "JAXLOSS_DISTRIBUTED"

_HEARTBEAT_KEY = "jaxloss/heartbeat/{}"
_DONE_KEY = "jaxloss/done/{}"


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
  """Where this process sits: ``coordinator_address`` (``host:port`` of process 0's
  coordination service), ``num_processes`` and ``process_id`` (0-based); all None for
  JAX's own cluster detection (``auto=True``)."""
  coordinator_address: Optional[str] = None
  num_processes: Optional[int] = None
  process_id: Optional[int] = None
  auto: bool = False


def _get(cfg: Any, name: str, default=None):
  """``cfg.get(name, default)`` for a ConfigDict or mapping; ``default`` for None."""
  return default if cfg is None else cfg.get(name, default)


def resolve(cfg: Any = None, environ: Optional[Mapping[str, str]] = None
            ) -> Optional[ProcessSpec]:
  """The :class:`ProcessSpec` from ``cfg`` (a ``config.distributed`` ConfigDict or
  mapping) or ``environ`` (default ``os.environ``); None for a single-process run.

  Raises:
    ValueError: an incomplete or inconsistent triple (e.g. a coordinator without
      ``num_processes``, ``process_id`` outside ``[0, num_processes)``), naming the
      setting and where it came from.
  """
  environ = os.environ if environ is None else environ
  address = _get(cfg, "coordinator_address")
  num = _get(cfg, "num_processes")
  pid = _get(cfg, "process_id")
  source = "config.distributed"
  if address is None and num is None and pid is None:
    address = environ.get(ENV_COORDINATOR)
    num = environ.get(ENV_NUM_PROCESSES)
    pid = environ.get(ENV_PROCESS_ID)
    source = "the environment"
  if address is None and num is None and pid is None:
    if _get(cfg, "auto_detect", False) or environ.get(ENV_AUTO, "") == "auto":
      return ProcessSpec(auto=True)
    return None
  names = {"coordinator_address": address, "num_processes": num, "process_id": pid}
  if source == "the environment":
    names = {ENV_COORDINATOR: address, ENV_NUM_PROCESSES: num, ENV_PROCESS_ID: pid}
  missing = [k for k, v in names.items() if v is None]
  if missing:
    raise ValueError(f"multi-process run from {source}: {', '.join(missing)} must be "
                     f"set too (got {names})")
  try:
    num, pid = int(num), int(pid)
  except (TypeError, ValueError):
    raise ValueError(f"num_processes and process_id from {source} must be integers, "
                     f"got {num!r} and {pid!r}") from None
  if num < 1:
    raise ValueError(f"num_processes from {source} must be >= 1, got {num}")
  if not 0 <= pid < num:
    raise ValueError(f"process_id from {source} must be in [0, {num}), got {pid}")
  if ":" not in str(address):
    raise ValueError(f"coordinator_address from {source} must be host:port, got "
                     f"{address!r}")
  return ProcessSpec(str(address), num, pid)


_STATE = {"initialized": False, "watchdog": None}


def initialize(cfg: Any = None, *, environ: Optional[Mapping[str, str]] = None
               ) -> bool:
  """Joins this process to the others (``jax.distributed.initialize``) if the config or
  the environment asks for several processes; starts the peer watchdog.

  Call it first, before any JAX computation or ``jax.devices()``. Idempotent. On CPU
  it selects gloo collectives (``jax_cpu_collectives_implementation``), without which
  CPU processes cannot run a cross-process ``psum``.

  Args:
    cfg: ``config.distributed`` (fields ``coordinator_address``, ``num_processes``,
      ``process_id``, ``auto_detect``, ``heartbeat_timeout_s``, ``peer_timeout_s``,
      ``initialization_timeout_s``, ``shutdown_timeout_s``) or None.
    environ: the environment to read (default ``os.environ``).

  Returns:
    True when this is (now) a multi-process run.

  Raises:
    ValueError: see :func:`resolve`.
    RuntimeError: JAX's backends were initialised before this call (some JAX
      computation ran first), when several processes were asked for.
  """
  if _STATE["initialized"]:
    return jax.process_count() > 1
  spec = resolve(cfg, environ)
  if spec is None:
    return False
  heartbeat = int(_get(cfg, "heartbeat_timeout_s", 30) or 30)
  peer_timeout = float(_get(cfg, "peer_timeout_s", 10.0) or 10.0)
  init_timeout = int(_get(cfg, "initialization_timeout_s", 120) or 120)
  # How long a finished process waits at exit for the others (JAX's default is 300 s).
  shutdown = int(_get(cfg, "shutdown_timeout_s", 120) or 120)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    if spec.auto:
      jax.distributed.initialize(initialization_timeout=init_timeout,
                                 heartbeat_timeout_seconds=heartbeat,
                                 shutdown_timeout_seconds=shutdown)
    else:
      jax.distributed.initialize(
          coordinator_address=spec.coordinator_address,
          num_processes=spec.num_processes, process_id=spec.process_id,
          initialization_timeout=init_timeout, heartbeat_timeout_seconds=heartbeat,
          shutdown_timeout_seconds=shutdown)
  except RuntimeError as e:
    if "before" in str(e) or "already" in str(e):
      raise RuntimeError(
          "jaxloss.distributed.initialize must run before any JAX computation (the "
          f"backends were already initialised): {e}") from e
    raise
  _STATE["initialized"] = True
  _STATE["orbax_barrier"] = _orbax_distributed_barrier()
  if jax.process_count() > 1:
    _STATE["watchdog"] = PeerWatchdog(peer_timeout)
    _STATE["watchdog"].start()
  return jax.process_count() > 1


def _orbax_distributed_barrier() -> bool:
  """Makes orbax synchronise processes through the coordination service
  (``--experimental_orbax_use_distributed_barrier``) instead of its default barrier, a
  jitted all-device ``psum``. That default runs from orbax's background save thread
  while the train step's collectives run on the main thread; when the two interleave
  differently on two processes, gloo receives one collective's message for another
  (seen here: "Received data size doesn't match expected size. 8 vs 4"). Returns
  whether the flag is on (False when absl flags are unparsed, as outside
  ``experiments.run``)."""
  try:
    from absl import flags  # pylint: disable=g-import-not-at-top
    import orbax.checkpoint  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    name = "experimental_orbax_use_distributed_barrier"
    if name not in flags.FLAGS or not flags.FLAGS.is_parsed():
      return False
    flags.FLAGS[name].value = True
    return bool(flags.FLAGS[name].value)
  except Exception:  # pylint: disable=broad-except
    return False


def async_checkpoints_safe() -> bool:
  """Whether orbax may save in a background thread: always with one process; with
  several only when orbax's barriers go through the coordination service (see
  :func:`initialize`), else saves must be synchronous so that every process issues
  the same collectives in the same order."""
  return jax.process_count() == 1 or bool(_STATE.get("orbax_barrier"))


def is_main_process() -> bool:
  """True on process 0, which alone writes logs, summaries and figures."""
  return jax.process_index() == 0


@contextlib.contextmanager
def main_process_first(name: str, timeout_s: float = 3600.0):
  """Runs the block on process 0 first and on the others after it is done: for work
  that writes a shared cache, such as building a TFDS dataset into a ``data_dir`` that
  every host sees (concurrent builders race on the final rename). A no-op in a
  single-process run.

  Raises:
    RuntimeError (from JAX): process 0 did not finish within ``timeout_s``.
  """
  if jax.process_count() == 1:
    yield
    return
  barrier = f"jaxloss/main_first/{name}"
  timeout_ms = int(timeout_s * 1000)
  if not is_main_process():
    _client().wait_at_barrier(barrier, timeout_ms)
  yield
  if is_main_process():
    _client().wait_at_barrier(barrier, timeout_ms)


def finish() -> None:
  """Marks this process as done (so that peers do not report it lost while it exits)
  and stops the watchdog. Call it when training and evaluation are over."""
  dog = _STATE.get("watchdog")
  if dog is not None:
    dog.stop()
    _STATE["watchdog"] = None


def _client():
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  return jax_distributed.global_state.client


def _lost(message: str) -> None:
  sys.stdout.flush()
  print(f"jaxloss.distributed: {message}; exiting with status {PEER_LOST_EXIT}. "
        "Restart every process with the same workdir to resume from the last "
        "checkpoint.", file=sys.stderr, flush=True)
  os._exit(PEER_LOST_EXIT)  # pylint: disable=protected-access


class PeerWatchdog:
  """A daemon thread: publishes this process' heartbeat counter every ``interval_s``
  and exits the process (status :data:`PEER_LOST_EXIT`, naming the process) when a
  peer's counter stood still for ``peer_timeout_s`` without the peer having called
  :func:`finish`, or when the coordination service (process 0) stops answering."""

  def __init__(self, peer_timeout_s: float = 10.0, interval_s: float = 1.0):
    self.peer_timeout_s = float(peer_timeout_s)
    self.interval_s = float(interval_s)
    self.index, self.count = jax.process_index(), jax.process_count()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, name="jaxloss-peer-watchdog",
                                    daemon=True)

  def start(self) -> None:
    self._thread.start()

  def stop(self) -> None:
    """Publishes "done" and stops the thread (peers stop watching this process)."""
    self._stop.set()
    self._thread.join(timeout=5 * self.interval_s)
    try:
      _client().key_value_set(_DONE_KEY.format(self.index), "1", allow_overwrite=True)
    except Exception:  # pylint: disable=broad-except
      pass

  def _run(self) -> None:
    client = _client()
    beat = 0
    peers = [p for p in range(self.count) if p != self.index]
    seen = {p: (None, time.monotonic()) for p in peers}
    unreachable_since = None
    while not self._stop.wait(self.interval_s):
      now = time.monotonic()
      beat += 1
      try:
        client.key_value_set(_HEARTBEAT_KEY.format(self.index), str(beat),
                             allow_overwrite=True)
        values = {p: _try_get(client, _HEARTBEAT_KEY.format(p)) for p in peers}
        done = {p for p in peers if _try_get(client, _DONE_KEY.format(p)) is not None}
        unreachable_since = None
      except Exception as e:  # pylint: disable=broad-except
        if self._stop.is_set():
          return
        unreachable_since = unreachable_since or now
        if now - unreachable_since >= self.peer_timeout_s:
          _lost(f"process {self.index} of {self.count} lost the coordinator (process 0"
                f" at the coordination service) for {now - unreachable_since:.0f} s: "
                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        continue
      for p in peers:
        if p in done:
          continue
        value = values[p]
        if value != seen[p][0]:
          seen[p] = (value, now)
        elif now - seen[p][1] >= self.peer_timeout_s:
          _lost(f"process {self.index} of {self.count} lost process {p}: no heartbeat "
                f"for {now - seen[p][1]:.0f} s (peer_timeout_s={self.peer_timeout_s:g})")


def _try_get(client, key: str) -> Optional[str]:
  try:
    return client.key_value_try_get(key)
  except Exception:  # pylint: disable=broad-except  (NOT_FOUND is an exception here)
    return None
