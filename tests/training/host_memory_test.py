"""glibc's malloc told to keep freed memory (jaxloss.training.host_memory): a program
whose temporaries are larger than malloc's largest mmap threshold stops page-faulting at
every call, and computes the same values."""

import json
import os
import statistics
import subprocess
import sys

import pytest
from jaxloss.training import host_memory

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A fresh process (the setting is process-wide and must come before JAX starts): a jitted
# program with a [4096, 4096] float32 temporary (64 MiB, above glibc's 32 MiB mmap
# threshold maximum), called 15 times after 5 warm-up calls; the minor page faults of
# each of the 15 calls, the program's temp size and the first values and the sum of its
# result.
_PROBE = """
import json, resource, sys
from jaxloss.training import host_memory
ok = host_memory.reuse_freed_memory() if sys.argv[1] == "reuse" else None
import jax, jax.numpy as jnp
def f(a, b, v):
  return jnp.tanh(jnp.outer(a, b)) @ v
a = jnp.linspace(-1.0, 1.0, 4096)
b = jnp.linspace(0.5, 1.5, 4096)
v = jnp.cos(jnp.arange(4096.0))
g = jax.jit(f)
temp = g.lower(a, b, v).compile().memory_analysis().temp_size_in_bytes
for _ in range(5):
  out = g(a, b, v).block_until_ready()
faults = []
for _ in range(15):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  out = g(a, b, v).block_until_ready()
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"ok": ok, "faults": faults, "temp_bytes": temp,
                  "result": [float(x) for x in out[:4]] + [float(out.sum())]}))
"""


def _probe(mode):
  env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  proc = subprocess.run([sys.executable, "-c", _PROBE, mode], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _huge_pages_always():
  try:
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
      return "[always]" in f.read()
  except OSError:
    return False


@pytest.mark.skipif(not host_memory.supported(), reason="the setting is glibc's "
                    "(Linux); other C libraries have other allocators and the call is "
                    "a no-op there")
def test_a_large_temporary_stops_faulting_and_the_values_are_the_same():
  reuse, system = _probe("reuse"), _probe("system")
  assert reuse["ok"] is True
  pages = reuse["temp_bytes"] / 4096
  assert reuse["temp_bytes"] >= 48 * 2**20, reuse  # the probe's premise: > 32 MiB
  # Kept memory: a typical call touches (almost) no new page. Now and then the heap still
  # grows by one temporary (a hole left by the last one is a few bytes too small for an
  # aligned allocation), so the median call is asserted, with 1/16 of the temporary's
  # pages left for the interpreter's own allocations.
  assert statistics.median(reuse["faults"]) < pages / 16, (reuse, system)
  if not _huge_pages_always():  # with 2 MiB pages a fresh mapping faults 512x less
    # The system's settings: each call maps its temporary anew and faults on most of it.
    assert statistics.median(system["faults"]) > pages / 2, (reuse, system)
  assert reuse["result"] == system["result"]


def test_bad_trim_threshold_is_a_clear_error():
  for bad in (-1, 2**31, 1.5, True, "1"):
    with pytest.raises(ValueError, match="trim_threshold_bytes"):
      host_memory.reuse_freed_memory(trim_threshold_bytes=bad)


def test_elsewhere_it_changes_nothing(monkeypatch):
  monkeypatch.setattr(host_memory, "_applied", {})
  monkeypatch.setattr(host_memory.platform, "system", lambda: "Darwin")
  assert host_memory.reuse_freed_memory() is False
  assert host_memory.applied() is False
