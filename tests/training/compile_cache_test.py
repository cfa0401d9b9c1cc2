"""JAX's persistent compilation cache through ``python -m experiments.run``: a rerun with
a warm cache compiles nothing and trains the same parameters (also with the system's
malloc settings, ``--noreuse_host_memory``), ``off`` turns it off, and a folder that
cannot be made is a one-line error."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from jaxloss.checkpoint import Checkpointer
from jaxloss.training import compile_cache, host_memory

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(workdir, cache, *extra):
  # The test session's own cache (conftest.py) is left out of this process' env.
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  env.update(JAX_PLATFORMS="cpu")  # and the session's XLA_FLAGS (8 devices)
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.run", "--config=tests/training/tiny_recipe.py",
       f"--workdir={workdir}", f"--compilation_cache={cache}", "--config.progress=False",
       *extra],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
  return proc


def _summary_and_params(workdir):
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    return summary, ckpt.restore_host()["params"]
  finally:
    ckpt.close()


def test_a_warm_cache_compiles_nothing_and_trains_the_same(tmp_path):
  cache = str(tmp_path / "cache")
  runs = {}
  for name in ("cold", "warm"):
    # The warm run also keeps the system's malloc settings: the same training either way.
    extra = ("--noreuse_host_memory",) if name == "warm" else ()
    proc = _run(str(tmp_path / name), cache, *extra)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs[name] = (*_summary_and_params(str(tmp_path / name)), proc.stdout)
  cold, warm = (runs[k][0]["compilation"] for k in ("cold", "warm"))
  assert cold["compile_cache"] == cache and cold["compile_cache_hits"] == 0
  assert cold["xla_compilations"] == cold["programs"] > 0
  assert os.listdir(cache)
  # The same programs, every one of them loaded from the cache, and the same training.
  assert warm["programs"] == cold["programs"]
  assert warm["xla_compilations"] == 0
  assert warm["compile_cache_hits"] == warm["programs"]
  assert f"0 compiled, {warm['programs']} loaded" in runs["warm"][2]
  jax.tree.map(np.testing.assert_array_equal, runs["cold"][1], runs["warm"][1])
  assert runs["warm"][0]["last_uar"] == runs["cold"][0]["last_uar"]
  assert runs["cold"][0]["host_memory_reused"] is host_memory.supported()
  assert runs["warm"][0]["host_memory_reused"] is False


def test_off_leaves_the_cache_off_and_jaxs_own_folder_wins(tmp_path):
  chosen = jax.config.jax_compilation_cache_dir
  try:
    jax.config.update("jax_compilation_cache_dir", None)
    for off in (None, "", "off", "OFF"):
      assert compile_cache.enable(off) is None
    assert jax.config.jax_compilation_cache_dir is None
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "jax_own"))
    assert compile_cache.enable(str(tmp_path / "ours")) == str(tmp_path / "jax_own")
    assert not (tmp_path / "ours").exists()
  finally:
    jax.config.update("jax_compilation_cache_dir", chosen)


def test_a_cache_folder_that_cannot_be_made_is_a_short_error(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  proc = _run(str(tmp_path / "run"), str(blocker / "cache"))
  assert proc.returncode == 2
  assert proc.stderr.startswith("error: compilation cache folder")
  assert "--compilation_cache=off" in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1


def test_default_folder_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "mine"))
  assert compile_cache.default_dir() == str(tmp_path / "mine")
  monkeypatch.delenv(compile_cache.ENV)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert compile_cache.default_dir() == str(
      tmp_path / "xdg" / "jaxloss" / "jax_compilation_cache")


def test_entries_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
  from jax._src import lru_cache  # pylint: disable=g-import-not-at-top
  assert compile_cache.atomic_writes() and compile_cache.atomic_writes()  # idempotent
  cache = lru_cache.LRUCache(str(tmp_path / "c"), max_size=-1)
  cache.put("k", b"program")
  assert cache.get("k") == b"program"
  cache.put("k", b"other")  # an existing key is kept, as JAX does
  assert cache.get("k") == b"program"
  assert sorted(os.listdir(tmp_path / "c")) == ["k-cache"]
  # The entry appears by one rename of a whole file; a write that dies before it (as a
  # killed process would) leaves no entry behind, and no temporary file.
  renames = []

  def rename_dies(src, dst):
    renames.append((open(src, "rb").read(), os.path.exists(dst)))
    raise OSError("killed")
  monkeypatch.setattr(compile_cache.os, "replace", rename_dies)
  with pytest.raises(OSError, match="killed"):
    cache.put("j", b"program")
  monkeypatch.undo()
  assert renames == [(b"program", False)]
  assert cache.get("j") is None
  assert sorted(os.listdir(tmp_path / "c")) == ["k-cache"]


class _Device:
  def __init__(self, id_, process_index, platform="cpu", device_kind="cpu"):
    self.id, self.process_index = id_, process_index
    self.platform, self.device_kind = platform, device_kind


def _key_part(devices):
  from jax._src import cache_key  # pylint: disable=g-import-not-at-top
  import hashlib  # pylint: disable=g-import-not-at-top
  h = hashlib.sha256()
  cache_key._hash_accelerator_config(h, np.array(devices, dtype=object))  # pylint: disable=protected-access
  return h.hexdigest()


def test_cpu_programs_get_one_key_in_every_process():
  assert compile_cache.shared_multi_process_compiles()
  assert compile_cache.shared_multi_process_compiles()  # idempotent
  assert jax.config.jax_share_binary_between_hosts
  two_by_four = [_Device(i, i // 4) for i in range(8)]
  # The key's device part is a function of the global device list alone (JAX's own
  # topology fingerprint on CPU describes the calling process' devices instead), ...
  assert _key_part(two_by_four) == _key_part([_Device(i, i // 4) for i in range(8)])
  # ... and tells topologies apart: 1 x 8, 4 x 2 and another process's local devices.
  others = [[_Device(i, 0) for i in range(8)], [_Device(i, i // 2) for i in range(8)],
            two_by_four[4:], two_by_four[:4]]
  assert len({_key_part(d) for d in [two_by_four, *others]}) == 5
  # This process's real CPU devices hash as the same list written out.
  real = jax.devices()
  assert _key_part(real) == _key_part(
      [_Device(d.id, d.process_index, d.platform, d.device_kind) for d in real])
