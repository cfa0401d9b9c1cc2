"""Host memory for XLA:CPU's per-call buffers: glibc's ``malloc`` keeps what is freed.

XLA:CPU allocates a program's temporaries (one buffer for all of its live intermediates)
when a call starts and frees it when the call ends: 116 MiB for the gradient of the CIFAR
ResNet-8 at batch 128. glibc's ``malloc`` serves an allocation above its mmap threshold
(32 MiB at most on 64-bit Linux) with a fresh ``mmap`` and returns it with ``munmap``;
and the threads that run XLA's programs allocate from their own arenas, which are
themselves mapped memory that shrinks when freed. So every call meets its temporaries as
new pages, and the kernel maps and zeroes each 4 KiB page at its first touch: about
30,000 page faults a call for that gradient, which made its element-wise loops 4-6x
and its Eigen convolutions 1.6x slower than the same ops in the forward pass (whose
30 MiB stay in the heap). ``python -m tools.bench.conv_grad`` measures the gradient
with and without.

:func:`reuse_freed_memory` sets three of glibc's ``malloc`` parameters (``mallopt(3)``):

* ``M_ARENA_MAX`` = 1: every thread allocates from the main arena, the heap that grows
  with ``brk``;
* ``M_MMAP_MAX`` = 0: no allocation is served by its own ``mmap``;
* ``M_TRIM_THRESHOLD`` = ``trim_threshold_bytes``: freed memory at the top of the heap
  stays mapped up to this much (1 GiB by default), ready for the next call.

The values a program computes do not change, only where its buffers come from. The
cost: the process keeps the heap it has grown (up to the trim threshold beyond what is
live), and threads share one arena's lock (XLA allocates a few large buffers a call).
``python -m experiments.run`` calls it first thing; ``--noreuse_host_memory`` keeps the
system's defaults. The same three settings can be made before a process starts with
``MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824``.

Source: ``mallopt(3)`` and ``malloc(3)`` of the GNU C Library (``M_MMAP_THRESHOLD``,
``DEFAULT_MMAP_THRESHOLD_MAX``); TensorFlow and PyTorch users get the same effect by
preloading tcmalloc or jemalloc, which this avoids needing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import warnings

# mallopt(3) parameter numbers, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8

DEFAULT_TRIM_THRESHOLD_BYTES = 1 << 30

_applied: dict = {}


def _libc():
  name = ctypes.util.find_library("c") or "libc.so.6"
  return ctypes.CDLL(name)


def supported() -> bool:
  """Whether this process runs on glibc (Linux), whose ``malloc`` the settings are for."""
  return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def reuse_freed_memory(trim_threshold_bytes: int = DEFAULT_TRIM_THRESHOLD_BYTES) -> bool:
  """Makes glibc's ``malloc`` keep freed memory for the next allocation (see the module).

  Call it before JAX runs anything: a thread that has already allocated keeps its own
  arena. Calling it again changes nothing more.

  Args:
    trim_threshold_bytes: int, how much freed memory (bytes) may stay mapped at the top
      of the heap; 1 GiB by default. At most 2**31 - 1 (``mallopt`` takes a C int).

  Returns:
    True if the three settings were made; False, changing nothing, where the C library
    is not glibc (macOS, musl, Windows), which have other allocators.

  Raises:
    ValueError: ``trim_threshold_bytes`` is not an int in [0, 2**31 - 1].

  Warns:
    RuntimeWarning: JAX's backends are already initialised, so the threads that run
      its programs may keep arenas of their own.

  Examples:
    First thing in a training script, before JAX runs anything:

    >>> from jaxloss.training import host_memory
    >>> host_memory.reuse_freed_memory()  # doctest: +SKIP
    True
    >>> host_memory.reuse_freed_memory(trim_threshold_bytes=2**31)
    Traceback (most recent call last):
    ValueError: trim_threshold_bytes must be an int in [0, 2**31 - 1], got 2147483648
  """
  if (isinstance(trim_threshold_bytes, bool) or not isinstance(trim_threshold_bytes, int)
      or not 0 <= trim_threshold_bytes < 2**31):
    raise ValueError("trim_threshold_bytes must be an int in [0, 2**31 - 1], got "
                     f"{trim_threshold_bytes!r}")
  if _applied:
    return _applied["ok"]
  if not supported():
    _applied["ok"] = False
    return False
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    started = xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):
    started = False
  if started:
    warnings.warn("reuse_freed_memory() after JAX's backends started: the threads that "
                  "run its programs may keep arenas of their own; call it before JAX "
                  "runs anything", RuntimeWarning, stacklevel=2)
  libc = _libc()
  ok = all(libc.mallopt(param, value) == 1 for param, value in (
      (M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, trim_threshold_bytes)))
  _applied["ok"] = ok
  return ok


def applied() -> bool:
  """Whether :func:`reuse_freed_memory` made its settings in this process."""
  return bool(_applied.get("ok"))
