"""JAX's persistent compilation cache for runs of the loop, and a count of XLA's work.

A run compiles its train step, its evaluation and (eagerly) every small operation of
initialisation and the recipe's checks: on this 2-core CPU that is most of a short
run's time. With the cache on, a rerun or a resumed run loads each program from disk
instead of compiling it again, and in a multi-process run the first process compiles a
program and hands it to the others (:func:`shared_multi_process_compiles`).

``python -m experiments.run`` turns it on by default in :func:`default_dir`
(``$JAXLOSS_COMPILATION_CACHE``, else ``$XDG_CACHE_HOME/jaxloss/jax_compilation_cache``,
else ``~/.cache/jaxloss/jax_compilation_cache``); ``--compilation_cache=off`` turns it
off. A cache folder already chosen through JAX's own ``JAX_COMPILATION_CACHE_DIR`` is
kept. JAX writes each entry once and never evicts: delete the folder to reclaim its
space (the main job adds about 2 MB). Source: JAX, "Persistent compilation cache"
(https://docs.jax.dev/en/latest/persistent_compilation_cache.html).

Entries are written atomically (:func:`atomic_writes`): JAX writes an entry in place, so
a process killed mid-write leaves a truncated entry that JAX never rewrites (it warns
and recompiles that program on every later run), and a process reading the folder
while another writes can load half a program. With atomic writes, several processes
(the hosts of a local multi-process run, pytest's workers) can share one folder.
"""

from __future__ import annotations

import collections
import os
import threading
import uuid

import jax

ENV = "JAXLOSS_COMPILATION_CACHE"

_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_CACHE_HITS = "/jax/compilation_cache/cache_hits"
_counts: collections.Counter = collections.Counter()
_lock = threading.Lock()
_listening = False


def default_dir() -> str:
  """The cache folder ``experiments.run`` uses unless told otherwise (see the module
  docstring for the order: ``$JAXLOSS_COMPILATION_CACHE``, ``$XDG_CACHE_HOME``, ``~``)."""
  if os.environ.get(ENV):
    return os.environ[ENV]
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(root, "jaxloss", "jax_compilation_cache")


def atomic_writes() -> bool:
  """Makes JAX's file cache write each new entry to a temporary file in the cache
  folder and rename it into place (``os.replace``, atomic on POSIX), so that an entry
  is either absent or whole. Applies to caches JAX creates after the call; idempotent.

  It replaces the ``put`` of JAX's private ``jax._src.lru_cache.LRUCache`` for caches
  without eviction (the default, ``jax_compilation_cache_max_size=-1``; with eviction
  JAX's own file lock serialises access) in a local folder (a remote one, such as
  ``gs://``, keeps JAX's write). Returns False, changing nothing, if that
  class is not found in this JAX version.
  """
  try:
    from jax._src import lru_cache  # pylint: disable=g-import-not-at-top
    cls, suffix = lru_cache.LRUCache, lru_cache._CACHE_SUFFIX  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    return False
  if getattr(cls.put, "_jaxloss_atomic", False):
    return True
  original = cls.put

  def put(self, key: str, value: bytes) -> None:
    folder = os.fspath(self.path)
    if (getattr(self, "eviction_enabled", True) or not key
        or "://" in folder):  # eviction's file lock, or a remote (epath) folder
      return original(self, key, value)
    path = os.path.join(folder, f"{key}{suffix}")
    if os.path.exists(path):
      return None
    tmp = os.path.join(folder, f".{key}.{uuid.uuid4().hex}.tmp")
    try:
      with open(tmp, "wb") as f:
        f.write(value)
      os.replace(tmp, path)
    finally:
      if os.path.exists(tmp):
        os.unlink(tmp)
    return None

  put._jaxloss_atomic = True  # pylint: disable=protected-access
  cls.put = put
  return True


def _hash_cpu_devices(hash_obj, devices) -> None:
  """The global CPU devices a program runs on (id, process, kind): the same list in
  every process of a run, and different for another topology (1 x 8 vs 2 x 4)."""
  for d in devices.flat:
    hash_obj.update(f"{d.id}:{d.process_index}:{d.device_kind};".encode())


def shared_multi_process_compiles() -> bool:
  """Lets the processes of a CPU multi-process run compile each program once.

  JAX keys a cache entry on, among others, a fingerprint of the devices' topology; on
  the CPU backend that fingerprint describes the calling process's own devices, so the
  same program gets another key in every process (measured with JAX 0.10: only that
  part of the key differs), and as only process 0 writes entries, process 1 recompiled
  every program of every run while process 0 waited for it at the first collective (a
  2-process SASRec smoke run: 116 programs, ~25 s). This replaces the CPU fingerprint
  with the global device list (ids, process indices, kinds: one list for all
  processes) and turns on JAX's ``jax_share_binary_between_hosts``, with which the
  first process compiles a program missing from the cache and hands the executable to
  the others through the distributed key-value store. Other backends keep JAX's key.
  Idempotent. Returns False, changing nothing, if JAX's private
  ``jax._src.cache_key._hash_accelerator_config`` is not found in this JAX version.
  """
  try:
    from jax._src import cache_key  # pylint: disable=g-import-not-at-top
    original = cache_key._hash_accelerator_config  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    return False
  if not getattr(original, "_jaxloss_cpu", False):

    def hash_accelerator_config(hash_obj, accelerators) -> None:
      if all(d.platform == "cpu" for d in accelerators.flat):
        return _hash_cpu_devices(hash_obj, accelerators)
      return original(hash_obj, accelerators)

    hash_accelerator_config._jaxloss_cpu = True  # pylint: disable=protected-access
    cache_key._hash_accelerator_config = hash_accelerator_config  # pylint: disable=protected-access
  try:
    jax.config.update("jax_share_binary_between_hosts", True)
  except AttributeError:  # not in this JAX version: each process compiles its own
    pass
  return True


def enable(path: str | None) -> str | None:
  """Turns on JAX's persistent compilation cache in folder ``path`` (created if
  missing) for every program, however short its compile; ``None``, ``""`` or
  ``"off"`` leaves it off. Call it before the first compilation of the process: JAX
  decides once per process whether the cache is used.

  A folder set through ``JAX_COMPILATION_CACHE_DIR`` (or ``jax.config``) before the
  call wins over ``path``. Returns the folder in use, or ``None`` when off.

  Entries are written atomically (:func:`atomic_writes`), in either folder, and the
  processes of a CPU multi-process run share their compiles
  (:func:`shared_multi_process_compiles`).

  Raises:
    ValueError: ``path`` exists and is not a folder, or cannot be created.
  """
  atomic_writes()
  chosen = jax.config.jax_compilation_cache_dir
  if chosen:
    shared_multi_process_compiles()
    return chosen
  if not path or str(path).lower() == "off":
    return None
  path = os.path.abspath(os.path.expanduser(str(path)))
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise ValueError(f"compilation cache folder {path!r} cannot be created ({e}); "
                     "choose another with --compilation_cache=DIR or turn it off with "
                     "--compilation_cache=off") from None
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  shared_multi_process_compiles()
  return path


def _listen() -> None:
  global _listening
  with _lock:
    if _listening:
      return
    _listening = True

  def on_duration(event: str, duration: float, **_) -> None:
    if event == _BACKEND_COMPILE:  # a program compiled, or loaded from the cache
      with _lock:
        _counts["programs"] += 1
        _counts["compile_s"] += duration

  def on_event(event: str, **_) -> None:
    if event == _CACHE_HITS:
      with _lock:
        _counts["compile_cache_hits"] += 1

  jax.monitoring.register_event_duration_secs_listener(on_duration)
  jax.monitoring.register_event_listener(on_event)


class XlaWork:
  """Counts, from its creation on, the programs this process needed (``programs``), how
  many of them XLA compiled (``xla_compilations``) and how many were loaded from the
  persistent cache instead (``compile_cache_hits``), and the seconds both took
  (``compile_s``). ``jax.jit`` calls that hit JAX's in-memory cache count in none.

  >>> x = jax.numpy.arange(3.0)
  >>> work = XlaWork()
  >>> _ = jax.jit(lambda v: v * 3 + 1)(x)
  >>> work.read()["programs"]
  1
  """

  def __init__(self):
    _listen()
    with _lock:
      self._start = dict(_counts)

  def read(self) -> dict:
    """``{"programs", "xla_compilations", "compile_cache_hits": int, "compile_s": float,
    "compile_cache": folder or None}`` since this object was made."""
    with _lock:
      now = dict(_counts)
    out = {k: now.get(k, 0) - self._start.get(k, 0)
           for k in ("programs", "compile_cache_hits", "compile_s")}
    out["xla_compilations"] = out["programs"] - out["compile_cache_hits"]
    out["compile_s"] = round(float(out["compile_s"]), 2)
    out["compile_cache"] = jax.config.jax_compilation_cache_dir or None
    return out
