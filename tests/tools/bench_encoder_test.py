"""tools.bench.encoder: the in-process measurement on MiniLM at a tiny size, the table,
the subprocess environments and the torch-less path."""

from __future__ import annotations

import json
import math

import pytest

from jaxloss.models.pretrained import shared_models_dir
from tools.bench import encoder as bench

MINILM = shared_models_dir() / "all-MiniLM-L6-v2"
needs_minilm = pytest.mark.skipif(
    not (MINILM / "model.safetensors").is_file(),
    reason=f"no pretrained encoder at {MINILM} (../shared/models is absent)")
TINY = dict(batch=2, length=8, steps=1, repeats=1)


def _has_torch():
  return bench._import_torch()[0] is not None  # pylint: disable=protected-access


@pytest.fixture(scope="module")
def minilm_rows():
  """One tiny in-process run: jaxloss and, when importable, torch eager (no compile; the
  flax-products contender is tested on a smaller encoder below)."""
  return bench.measure("all-MiniLM-L6-v2", threads=1, compile_torch=False,
                       flax_products=False, log=lambda _: None, **TINY)


@needs_minilm
def test_measure_rows_have_finite_positive_times(minilm_rows):
  names = [r["contender"] for r in minilm_rows]
  assert names == ([bench.JAX, bench.EAGER] if _has_torch() else [bench.JAX])
  for row in minilm_rows:
    assert row["status"] == "ok", row
    assert row["model"] == "all-MiniLM-L6-v2" and row["threads"] == 1
    assert (row["layers"], row["hidden"]) == (6, 384)
    assert (row["batch"], row["length"], row["steps"], row["repeats"]) == (2, 8, 1, 1)
    assert len(row["times_ms"]) == 1 and row["ms"] == row["min_ms"] > 0
    for key in ("ms", "tokens_per_s", "first_call_s", "loss", "grad_norm"):
      assert math.isfinite(row[key]) and row[key] > 0, (key, row)
    assert row["tokens_per_s"] == pytest.approx(2 * 8 / row["ms"] * 1e3)
  # 22.7 M parameters without the pooler (embeddings + 6 layers).
  assert minilm_rows[0]["num_params"] == 22_565_376


@needs_minilm
@pytest.mark.skipif(not _has_torch(), reason="torch / transformers not installed")
def test_torch_eager_computes_the_same_loss_and_gradient(minilm_rows):
  mine, eager = minilm_rows
  assert eager["num_params"] == mine["num_params"]  # no pooler on either side
  assert eager["loss_rel_diff"] < 1e-4, eager
  assert eager["grad_norm_rel_diff"] < 1e-4, eager
  assert eager["speedup"] == pytest.approx(eager["ms"] / mine["ms"])
  assert eager["attn_implementation"]


TINY_ROBERTA = shared_models_dir() / "tiny-random-roberta"


@pytest.mark.skipif(not (TINY_ROBERTA / "model.safetensors").is_file(),
                    reason=f"no encoder at {TINY_ROBERTA} (../shared/models is absent)")
def test_flax_products_compute_the_same_loss_and_gradient():
  rows = bench.measure(str(TINY_ROBERTA), threads=1, use_torch=False,
                       log=lambda _: None, **TINY)
  assert [r["contender"] for r in rows] == [bench.JAX, bench.FLAX_PRODUCTS]
  mine, flax_products = rows
  assert flax_products["status"] == "ok" and flax_products["ms"] > 0
  assert flax_products["num_params"] == mine["num_params"]
  # The same parameters and the same products in another layout: float32 rounding of
  # the sums in another order at most (measured 0 at this size).
  assert flax_products["loss_rel_diff"] < 1e-6, flax_products
  assert flax_products["grad_norm_rel_diff"] < 1e-6, flax_products
  assert flax_products["speedup"] == pytest.approx(flax_products["ms"] / mine["ms"])


@needs_minilm
def test_table_has_one_line_per_row(minilm_rows):
  table = bench.format_table({"header": {}, "rows": minilm_rows})
  lines = table.splitlines()
  assert lines[0] == "| " + " | ".join(bench.COLUMNS) + " |"
  assert lines[1].startswith("|---|")
  body = lines[2:]
  assert len(body) == len(minilm_rows)
  assert body[0].startswith("| all-MiniLM-L6-v2 | 1 | jaxloss | ")
  for line, row in zip(body, minilm_rows):
    assert f"{row['ms']:.2f}" in line and line.count("|") == len(bench.COLUMNS) + 1


def test_table_reports_failures_and_missing_torch():
  rows = [{"model": "m", "threads": 2, "contender": bench.JAX, "status": "ok",
           "ms": 10.0, "tokens_per_s": 1600.0, "first_call_s": 3.0},
          {"model": "m", "threads": 2, "contender": bench.COMPILED,
           "status": "failed: RuntimeError: no | compiler"}]
  header = {"jax": "0.0", "backend": "cpu", "torch": None, "python": "3",
            "cpu_count": 2, "load_avg_1min": 1.0, "load_avg_1min_end": 1.0,
            "torch_missing": "ModuleNotFoundError: No module named 'torch'"}
  table = bench.format_table({"header": header, "rows": rows})
  assert "| m | 2 | torch.compile | failed: RuntimeError: no / compiler | n/a |" in table
  assert "| m | 2 | jaxloss | 10.00 | 1,600 | - | 3.00 | - |" in table
  assert "torch comparison skipped" in table and "torch==2.13.0" in table


def test_worker_env_sets_single_thread_flags_only_for_one_thread():
  base = {"XLA_FLAGS": "--xla_foo=1", "PATH": "/bin"}
  one = bench.worker_env(1, base)
  assert one["XLA_FLAGS"] == "--xla_foo=1 " + bench.SINGLE_THREAD_XLA_FLAGS
  assert one["OMP_NUM_THREADS"] == "1" and one["JAX_PLATFORMS"] == "cpu"
  two = bench.worker_env(2, base)
  assert two["XLA_FLAGS"] == "--xla_foo=1" and two["OMP_NUM_THREADS"] == "2"
  assert two["PYTHONPATH"].split(":")[0] == str(bench.REPO)
  assert base == {"XLA_FLAGS": "--xla_foo=1", "PATH": "/bin"}  # not modified


@needs_minilm
def test_without_torch_only_jaxloss_is_timed(monkeypatch):
  monkeypatch.setattr(bench, "_import_torch",
                      lambda: (None, None, "ModuleNotFoundError: torch"))
  called = []
  monkeypatch.setattr(bench, "_prepare_jax",
                      lambda pre, ids, mask, flat_products=True: (
                          lambda: called.append((ids.shape, flat_products)),
                          {"first_call_s": 1.0, "loss": 2.0, "grad_norm": 3.0,
                           "num_params": 4}))
  rows = bench.measure(str(MINILM), log=lambda _: None, **TINY)
  assert [r["contender"] for r in rows] == [bench.JAX, bench.FLAX_PRODUCTS]
  assert sorted(called) == [((2, 8), False), ((2, 8), True)] and rows[0]["ms"] > 0
  called.clear()
  rows = bench.measure(str(MINILM), log=lambda _: None, flax_products=False, **TINY)
  assert [r["contender"] for r in rows] == [bench.JAX] and called == [((2, 8), True)]


def test_random_ids_skip_the_padding_id_and_are_reproducible():
  ids, mask = bench._random_ids(5, 1, 50, 4, seed=0)  # pylint: disable=protected-access
  assert ids.shape == mask.shape == (50, 4) and mask.min() == 1
  assert set(ids.ravel().tolist()) == {0, 2, 3, 4}
  again, _ = bench._random_ids(5, 1, 50, 4, seed=0)  # pylint: disable=protected-access
  assert (again == ids).all()


def test_main_without_torch_says_so_and_writes_json(monkeypatch, tmp_path, capsys):
  monkeypatch.setattr(bench, "_absent", lambda: ["torch"])
  seen = []

  def fake_worker(threads, models, argv):
    seen.append((threads, list(models), argv))
    header = {"threads": threads, "pinned_cpus": None, "cpus_used": 2, "jax": "0.0",
              "backend": "cpu", "torch": None, "transformers": None,
              "torch_missing": "ModuleNotFoundError: No module named 'torch'"}
    rows = [{"model": "tiny", "threads": threads, "contender": bench.JAX,
             "status": "ok", "ms": 2.0, "tokens_per_s": 8000.0, "first_call_s": 1.0}]
    return {"header": header, "rows": rows}

  monkeypatch.setattr(bench, "_run_worker", fake_worker)
  out = tmp_path / "encoder.json"
  folder = tmp_path / "tiny"
  folder.mkdir()
  assert bench.main(["--models", str(folder), "--threads", "1", "2", "--batch", "4",
                     "--length", "4", "--json", str(out)]) == 0
  printed = capsys.readouterr().out
  assert printed.startswith("torch comparison skipped: torch not installed")
  assert "| tiny | 1 | jaxloss | 2.00 | 8,000 | - | 1.00 | - |" in printed
  assert "| tiny | 2 | jaxloss |" in printed
  assert [s[0] for s in seen] == [1, 2] and seen[0][1] == [str(folder.resolve())]
  assert "--batch" in seen[0][2] and "--no-torch" not in seen[0][2]
  assert "--no-flax-products" not in seen[0][2]
  written = json.loads(out.read_text())
  assert [r["threads"] for r in written["rows"]] == [1, 2]
  assert written["header"]["torch_missing"].startswith("ModuleNotFoundError")


def test_unknown_model_is_a_usage_error(tmp_path):
  with pytest.raises(SystemExit):
    bench.main(["--models", str(tmp_path / "no-such-model"), "--threads", "1"])
