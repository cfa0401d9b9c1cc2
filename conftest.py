"""Test-session setup, before jax is first imported: 8 simulated CPU devices, so the
data-parallel tests can compare 1 and 8 devices in one process, and one persistent
compilation cache for the session (jaxloss.training.compile_cache), which the
subprocesses the tests start inherit: a program compiled by one test (the tiny
recipe's step, a smoke run's evaluation, the many small eager operations of an
initialisation) is loaded from it by the next, in any worker, instead of compiled again. The cache
folders are made fresh for each session and removed at its end, so no test reads a
program an earlier session wrote.

The tests also compile with ``JAX_DISABLE_MOST_OPTIMIZATIONS`` (XLA's backend
optimisation level 0, as JAX's own test suite can): the suite's programs run a few
steps each, so compiling them costs more than running them. Measured on 2 cores, one
worker: the imbalance recipe's 2-process test 39.9 -> 21.8 s, the CIFAR smoke run
38.2 -> 31.1 s. Both sides of every equality test (1 vs 8 devices, 2 processes vs 1,
resumed vs uninterrupted) compile alike, subprocesses included (they inherit it);
``JAX_DISABLE_MOST_OPTIMIZATIONS=0`` runs the suite on the optimised code.

With jaxlib 0.10 the default ``XLA_FLAGS`` also turn off XLA:CPU's MLIR fusion emitters
(``--xla_cpu_use_fusion_emitters=false``: its older elemental emitter, the same
operations compiled faster). Measured on 2 cores: the CIFAR smoke run 45.4 -> 37.8 s
alone, four recipe test files 275 -> 189 CPU-s from a cold cache. A fusion may round
differently under it, so a comparison of two different programs holds to float32
rounding, not bit for bit. The flag is set only for the jaxlib versions it was measured
with (later XLA drops that emitter, and XLA aborts on a flag it does not know); an
``XLA_FLAGS`` of your own replaces these defaults."""

import atexit
import os
import shutil
import tempfile


def _default_xla_flags() -> str:
  flags = ["--xla_force_host_platform_device_count=8"]
  try:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    version = tuple(int(p) for p in metadata.version("jaxlib").split(".")[:2])
  except Exception:  # pylint: disable=broad-except
    version = ()
  if version == (0, 10):
    flags.append("--xla_cpu_use_fusion_emitters=false")
  return " ".join(flags)


os.environ.setdefault("XLA_FLAGS", _default_xla_flags())
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
if "JAXLOSS_TEST_CACHE_ROOT" not in os.environ and not os.environ.get(
    "JAX_COMPILATION_CACHE_DIR"):  # the session's first process; a folder of the user's wins
  _root = tempfile.mkdtemp(prefix="jaxloss-test-compilation-cache-")
  atexit.register(shutil.rmtree, _root, ignore_errors=True)
  os.environ["JAXLOSS_TEST_CACHE_ROOT"] = _root
if os.environ.get("JAXLOSS_TEST_CACHE_ROOT"):
  # One folder for the whole session: every pytest-xdist worker and the processes
  # they start read and write it. jaxloss writes each entry atomically
  # (jaxloss.training.compile_cache.atomic_writes, installed below and
  # by experiments.run), so no reader sees an entry half-written.
  os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["JAXLOSS_TEST_CACHE_ROOT"]
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  from jaxloss.training import compile_cache  # pylint: disable=g-import-not-at-top
  compile_cache.atomic_writes()
  # The cache key experiments.run uses (the CPU devices' fingerprint replaced by the
  # global device list): without it a program compiled in the test process got another
  # key than the same program in a subprocess the test starts (``-m experiments.run``
  # enables it), which then compiled it again (a 2-process NLU smoke run: 175 of 179
  # programs compiled; with it, loaded).
  compile_cache.shared_multi_process_compiles()
