"""tools.reports.seeds: one config's runs over seeds against the published anchors."""

import json
import math
import os

import numpy as np
import pytest

from tools.reports import seeds

ANCHORS = [{"model": "Stack-Propagation", "intent_accuracy": 0.98, "slot_f1": 0.942,
            "sentence_accuracy": 0.869},
           {"model": "intent only", "intent_accuracy": 0.97}]
# Sentences right of 700 (intent, sentence) and slot F1, per seed.
RUNS = {0: (683, 0.9457, 612), 1: (686, 0.9427, 608), 2: (685, 0.9431, 605),
        3: (687, 0.9449, 611)}


def _workdir(root, seed, config=None, summary=None):
  path = os.path.join(str(root), f"s{seed}")
  os.makedirs(path, exist_ok=True)
  intent, slot, sentence = RUNS[seed]
  base_config = {"seed": seed, "num_epochs": 40, "progress": seed % 2 == 0,
                 "monitor": {"halt_on": []}, "label_tag_min_expected": 3.0,
                 "runtime_fields": ["label_tag_min_expected"]}
  base_summary = {"intent_accuracy": intent / 700, "slot_f1": slot,
                  "sentence_accuracy": sentence / 700, "selected_epoch": 30.0 + seed,
                  "wall_s": 4000.0 + seed, "anchors": ANCHORS}
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump({**base_config, **(config or {})}, f)
  if summary is not False:
    with open(os.path.join(path, "summary.json"), "w") as f:
      json.dump({**base_summary, **(summary or {})}, f)
  return path


def test_mean_spread_interval_and_anchors_against_an_independent_computation(tmp_path):
  dirs = [_workdir(tmp_path, s) for s in RUNS]
  # Runtime fields (progress) and a config's own runtime_fields may differ.
  dirs[3] = _workdir(tmp_path, 3, config={"label_tag_min_expected": 1.0})
  runs = seeds.load_runs(dirs)
  keys = seeds.default_keys(runs)
  assert keys == ["intent_accuracy", "slot_f1", "sentence_accuracy"]
  result = seeds.summarize(runs, keys)
  intent = np.array([RUNS[s][0] / 700 for s in RUNS])
  assert math.isclose(result["mean"]["intent_accuracy"], (683 + 686 + 685 + 687) / 2800,
                      rel_tol=1e-12)
  # Sample standard deviation by hand: deviations of the counts from their mean 685.25.
  dev = np.array([683, 686, 685, 687]) - 685.25
  assert math.isclose(result["std"]["intent_accuracy"],
                      math.sqrt((dev ** 2).sum() / 3) / 700, rel_tol=1e-12)
  # t(0.975, 3) = 3.182446305 (tables); half width = t * sd / sqrt(4).
  half = 3.182446305 * intent.std(ddof=1) / 2
  low, high = result["ci95"]["intent_accuracy"]
  assert math.isclose(low, intent.mean() - half, rel_tol=1e-9)
  assert math.isclose(high, intent.mean() + half, rel_tol=1e-9)
  assert result["percent"] == {k: True for k in keys}
  stack, only = result["anchors"]
  # Seed 1: 686/700 = 98.0 %, 94.27, 608/700 = 86.86 % -> 86.9 at the 0.1 point: reaches.
  # Seed 2: 685/700 = 97.86 % < 98.0. Seed 3: 98.14 / 94.49 / 87.29. Seed 0: 97.57.
  assert stack["reached_by"] == [1, 3]
  assert math.isclose(stack["mean_minus_anchor"]["slot_f1"],
                      (0.9457 + 0.9427 + 0.9431 + 0.9449) / 4 - 0.942, rel_tol=1e-9)
  assert only["reached_by"] == [0, 1, 2, 3] and set(only["mean_minus_anchor"]) == {
      "intent_accuracy"}
  table = seeds.markdown(result)
  lines = table.splitlines()
  assert len(lines) == 2 + 4 + 3 + 2
  assert lines[2].startswith(f"| `{dirs[0]}` | 0 | 30 | 97.57 | 94.57 | 87.43 |")
  assert "**mean of 4**" in lines[6] and "**97.89**" in lines[6]
  assert "2 of 4 reach all" in lines[9] and "98.00 (-0.11)" in lines[9]
  assert lines[10].endswith("| 97.00 (+0.89) | — | — |")


def test_main_writes_json_and_markdown_and_takes_keys(tmp_path, capsys):
  dirs = [_workdir(tmp_path, s) for s in (0, 1)]
  out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
  assert seeds.main([*dirs, "--keys", "slot_f1", "wall_s", "--out",
                     str(tmp_path / "r")]) == 0
  printed = capsys.readouterr().out
  result = json.loads(out_json.read_text())
  assert result["keys"] == ["slot_f1", "wall_s"]
  assert result["percent"] == {"slot_f1": True, "wall_s": False}
  assert result["mean"]["wall_s"] == 4000.5
  assert out_md.read_text().startswith(
      f"`python -m tools.reports.seeds {dirs[0]} {dirs[1]} --keys slot_f1 wall_s --out ")
  assert "| 4000 |" in printed and "| 94.57 |" in printed


@pytest.mark.parametrize("case, message", [
    ("other_config", "trains another config than"),
    ("same_seed", "seed 0 appears more than once"),
    ("unfinished", "summary.json: not found (the run has not finished)"),
    ("no_key", "'uar' is not a number"),
    ("no_anchors", "give --keys"),
    ("nan", "'slot_f1' is not a number"),
])
def test_errors_name_the_workdir_or_field(tmp_path, capsys, case, message):
  first = _workdir(tmp_path, 0, summary={"anchors": []} if case == "no_anchors" else None)
  keys = ["uar"] if case == "no_key" else []
  if case == "other_config":
    second = _workdir(tmp_path, 1, config={"num_epochs": 20})
  elif case == "same_seed":
    second = _workdir(tmp_path, 1, config={"seed": 0})
  elif case == "unfinished":
    second = _workdir(tmp_path, 1, summary=False)
  elif case == "nan":
    second = _workdir(tmp_path, 1, summary={"slot_f1": float("nan")})
  else:
    second = _workdir(tmp_path, 1, summary={"anchors": []} if case == "no_anchors"
                      else None)
  argv = [first, second] + (["--keys", *keys] if keys else [])
  assert seeds.main(argv) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and message in err
  if case == "other_config":
    assert "num_epochs (40 -> 20)" in err and second in err
