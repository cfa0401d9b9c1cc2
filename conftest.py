"""Test-session setup, before jax is first imported: 8 simulated CPU devices, so the
data-parallel tests can compare 1 and 8 devices in one process, and one persistent
compilation cache for the session (jaxloss.training.compile_cache), which the
subprocesses the tests start inherit: a program compiled by one test (the tiny
recipe's step, a smoke run's evaluation, the many small eager operations of an
initialisation) is loaded from it by the next, instead of compiled again. The cache
folder is made fresh for each session and removed at its end, so no test reads a
program an earlier session wrote."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  # pytest-xdist workers inherit the folder from the controller, which removes it.
  _cache = tempfile.mkdtemp(prefix="jaxloss-test-compilation-cache-")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
