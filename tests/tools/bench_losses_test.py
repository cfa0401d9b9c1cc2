"""Tests for tools/bench/losses.py: the --small run, like-with-like checks."""

import contextlib
import dataclasses
import io
import json
import math

import numpy as np
import pytest

from tools.bench import losses as bench

EXPECTED_ROWS = (
    ("softmax_focal_loss", "[16,3,4]"),
    ("softmax_focal_loss_with_integer_labels", "[16,3,4]"),
    ("softmax_cross_entropy_with_integer_labels", "[16,3,4]"),
    ("softmax_cross_entropy_with_integer_labels", "[16,3,4]"),
    ("sigmoid_focal_loss", "[16,8]"),
    ("supervised_contrastive_loss", "32x16"),
    ("supervised_contrastive_loss", "128x16"),
    ("supervised_contrastive_loss", "32x16 K=8"),
    ("supervised_contrastive_loss", "128x16 K=8"),
    ("ntxent_loss", "16x8"),
    ("listwise_softmax_loss", "[8,10]"),
    ("pairwise_logistic_loss", "[8,10]"),
    ("sequence_tagging_loss", "[4,6,7]"),
    ("balanced_softmax_cross_entropy", "[32,10]"),
    ("ldam_loss", "[32,10]"),
    ("logit_adjusted_softmax_cross_entropy", "[32,10]"),
)
OPTAX_ROWS = {"softmax_cross_entropy_with_integer_labels unweighted",
              "sigmoid_focal_loss alpha=0.25, gamma=2",
              "ntxent_loss tau=0.1",
              "listwise_softmax_loss one positive per list"}


def _has_torch():
  return bench._import_torch() is not None  # pylint: disable=protected-access


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
  """One in-process `--small` run: (results, printed table, JSON file)."""
  path = tmp_path_factory.mktemp("bench") / "bench.json"
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    results = bench.main(["--small", "--repeats", "2", "--json", str(path)])
  with open(path) as f:
    written = json.load(f)
  return results, out.getvalue(), written


def _name(row):
  return f"{row['loss']} {row['variant']}"


def test_one_row_per_loss_in_results_and_table(small_run):
  results, table, _ = small_run
  rows = results["rows"]
  assert [(r["loss"], r["size"]) for r in rows] == list(EXPECTED_ROWS)
  lines = table.splitlines()
  top = next(i for i, l in enumerate(lines) if l.startswith("loss "))
  for row in rows:
    matching = [l for l in lines
                if l.startswith(row["loss"] + " ") and row["variant"] in l
                and row["size"] in l]
    assert len(matching) == 1, (row["loss"], row["size"])
  # Column header, rule, then exactly one line per row and a blank line.
  assert lines[top].split()[:3] == ["loss", "variant", "size"]
  assert set(lines[top + 1]) <= {"-", " "}
  assert all(l.split()[0] in {r["loss"] for r in rows}
             for l in lines[top + 2:top + 2 + len(rows)])
  assert not lines[top + 2 + len(rows)].strip()


def test_every_loss_measured_with_finite_positive_times(small_run):
  results, table, _ = small_run
  assert not [l for l in table.splitlines() if l.startswith("n/a")]
  for row in results["rows"]:
    assert row["notes"] == [], row
    assert math.isfinite(row["jaxloss_ms"]) and row["jaxloss_ms"] > 0, row
    assert math.isfinite(row["jaxloss_mean"]), row
    for ref in ("optax", "torch"):
      if f"{ref}_ms" in row:
        assert math.isfinite(row[f"{ref}_ms"]) and row[f"{ref}_ms"] > 0
        assert row[f"{ref}_ratio"] == pytest.approx(
            row[f"{ref}_ms"] / row["jaxloss_ms"])


def test_optax_reference_computes_the_same_loss(small_run):
  results, _, _ = small_run
  with_optax = {_name(r) for r in results["rows"] if "optax_ms" in r}
  assert with_optax == OPTAX_ROWS
  for row in results["rows"]:
    if "optax_ms" in row:
      assert row["optax_max_abs_diff"] < 1e-5, row
      assert row["optax_grad_max_rel_diff"] < 1e-4, row
      assert row["optax_mean"] == pytest.approx(row["jaxloss_mean"],
                                                rel=1e-5, abs=1e-6)


@pytest.mark.skipif(not _has_torch(), reason="torch is not installed")
def test_torch_reference_computes_the_same_loss(small_run):
  results, _, _ = small_run
  for row in results["rows"]:
    assert "torch_ms" in row, row
    # LDAM's scale of 30 makes its losses ~30x larger than the others.
    assert row["torch_max_abs_diff"] < 1e-4 * max(1.0,
                                                  abs(row["jaxloss_mean"])), row
    assert row["torch_grad_max_rel_diff"] < 1e-4, row


def test_contrastive_rows_report_temp_memory_in_bb_units(small_run):
  results, table, _ = small_run
  contrastive = [r for r in results["rows"]
                 if r["loss"] in ("supervised_contrastive_loss", "ntxent_loss")]
  assert len(contrastive) == 5
  for row in contrastive:
    # B is the side of the similarity matrix: N anchors, 2N views for NT-Xent.
    n = int(row["size"].split("x")[0])
    assert row["bb"] == (2 * n if row["loss"] == "ntxent_loss" else n)
    assert row["temp_in_bb"] == pytest.approx(
        row["temp_bytes"] / (4 * row["bb"]**2))
    assert 0 < row["temp_in_bb"] < 100
    assert f"{row['loss']} {row['size']} (B={row['bb']}): jaxloss " in table
  assert "optax_temp_in_bb" in contrastive[-1]
  others = [r for r in results["rows"] if r not in contrastive]
  assert all("temp_in_bb" not in r for r in others)


def test_header_names_versions_backend_devices_and_cpus(small_run):
  results, table, written = small_run
  header = results["header"]
  first = table.splitlines()[0]
  assert first.startswith(f"jax {header['jax']} ({header['backend']}, ")
  assert f"{header['device_count']} device(s)" in first
  assert f"CPUs {header['cpu_count']}" in first
  assert "torch " in first
  if header["torch"] is None:
    assert "pip install torch==2.13.0" in table
  assert header["small"] is True and header["repeats"] == 2
  assert written["header"] == header
  assert [_name(r) for r in written["rows"]] == [
      _name(r) for r in results["rows"]]
  assert written["rows"][0]["jaxloss_ms"] == results["rows"][0]["jaxloss_ms"]


def test_only_filters_rows_by_substring():
  results = bench.run(small=True, repeats=1, only="LDAM", use_torch=False)
  assert [r["loss"] for r in results["rows"]] == ["ldam_loss"]
  assert results["rows"][0]["jaxloss_ms"] > 0
  assert "torch_ms" not in results["rows"][0]


def test_missing_loss_is_reported_as_na(monkeypatch):
  ghost = dataclasses.replace(bench.CASES[0], loss="no_such_loss")
  monkeypatch.setattr(bench, "CASES", (ghost,))
  results = bench.run(small=True, repeats=1, use_torch=False)
  (row,) = results["rows"]
  assert "jaxloss_ms" not in row
  assert "no_such_loss not found" in row["notes"][0]
  table = bench.format_table(results)
  line = next(l for l in table.splitlines() if l.startswith("no_such_loss"))
  assert line.split()[-8:] == ["n/a"] * 8
  assert "n/a no_such_loss" in table


@pytest.mark.skipif(not _has_torch(), reason="torch is not installed")
def test_diff_column_catches_a_reference_that_computes_another_loss(
    monkeypatch):
  case = next(c for c in bench.CASES
              if c.loss == "balanced_softmax_cross_entropy")
  # Plain cross-entropy instead of the balanced one: a like-for-unlike row.
  wrong = dataclasses.replace(
      case, torch=lambda t, F, x: F.cross_entropy(x["logits"], x["labels"],
                                                  reduction="none"))
  monkeypatch.setattr(bench, "CASES", (wrong,))
  (row,) = bench.run(small=True, repeats=1)["rows"]
  np.testing.assert_array_less(0.1, row["torch_max_abs_diff"])
  np.testing.assert_array_less(1e-2, row["torch_grad_max_rel_diff"])
