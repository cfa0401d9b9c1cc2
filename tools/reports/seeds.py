"""One recipe over several seeds: ``python -m tools.reports.seeds WORKDIR [WORKDIR ...]``.

Reads the ``summary.json`` and ``config.json`` of finished runs of one config that
differ only in ``seed`` and prints, as a Markdown table, each run's reported numbers
(the recipe's selected evaluation, e.g. the Dev-selected epoch), their mean, sample
standard deviation and the 95 % Student-t interval of the mean, and for each published
anchor in the summaries how many runs reach it on every metric (a percentage at the
0.1 point the published tables give) and the mean's distance to it: is the default
at the published row over seeds, or only on a lucky one?

  python -m tools.reports.seeds /work/runs/nlu_joint_s{0,1,2,3,4,5} \\
      [--keys intent_accuracy slot_f1 sentence_accuracy] [--out PREFIX]

``--keys`` defaults to the metrics the summaries' anchors give (the recipe's published
rows: intent accuracy / slot F1 / sentence accuracy for the NLU recipe); a recipe
without anchors needs ``--keys``. Metrics in [0, 1] in every run are shown in percent.

Errors (exit status 2, one line naming the workdir or the field): a workdir without
``summary.json`` (not finished) or ``config.json``; a training field other than
``seed`` that differs between the runs (``jaxloss.training.guard.changed_fields``:
fields that change only how a run is executed, and a config's own ``runtime_fields``,
may differ); two runs with the same seed; a key missing from a summary or not a number.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Sequence

import numpy as np

from jaxloss.training import guard
from tools.reports import tables


class SeedsError(ValueError):
  """The workdirs are not runs of one config over distinct seeds."""


def _read(workdir: str, name: str) -> dict:
  path = os.path.join(workdir, name)
  if not os.path.exists(path):
    what = "the run has not finished" if name == "summary.json" else "not a workdir"
    raise SeedsError(f"{path}: not found ({what})")
  with open(path) as f:
    return json.load(f)


def load_runs(workdirs: Sequence[str]) -> list[dict]:
  """``[{"workdir", "seed", "config", "summary"}]`` of each workdir, checked to be one
  config over distinct seeds.

  Raises:
    SeedsError: a missing file, a training field that differs from the first run's
      (named, with both values), or a repeated seed.
  """
  if not workdirs:
    raise SeedsError("give at least one workdir")
  runs = []
  for workdir in workdirs:
    config, summary = _read(workdir, "config.json"), _read(workdir, "summary.json")
    runs.append({"workdir": workdir, "seed": config.get("seed"), "config": config,
                 "summary": summary})
  first = runs[0]
  for run in runs[1:]:
    runtime = (tuple(guard.RUNTIME_FIELDS) + ("seed",)
               + tuple(first["config"].get("runtime_fields") or ())
               + tuple(run["config"].get("runtime_fields") or ()))
    changes = guard.changed_fields(first["config"], run["config"], runtime)
    if changes:
      raise SeedsError(f"{run['workdir']} trains another config than {first['workdir']}: "
                       f"{guard.describe(changes)}")
  seeds = [run["seed"] for run in runs]
  repeated = sorted({s for s in seeds if seeds.count(s) > 1}, key=str)
  if repeated:
    raise SeedsError(f"seed {repeated[0]} appears more than once: "
                     f"{[r['workdir'] for r in runs if r['seed'] == repeated[0]]}")
  return runs


def default_keys(runs: Sequence[dict]) -> list[str]:
  """The metric names of the first run's anchors (keys other than ``model``), in
  order; [] when it has none."""
  keys: list[str] = []
  for anchor in runs[0]["summary"].get("anchors") or ():
    for key, value in anchor.items():
      if key != "model" and isinstance(value, (int, float)) and key not in keys:
        keys.append(key)
  return keys


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
  """The Student-t interval of the mean of ``values`` (``scipy.stats.t.interval`` with
  the standard error of the mean), ``(low, high)``; ``(mean, mean)`` for one value.

  >>> [round(v, 4) for v in t_interval([1.0, 2.0, 3.0])]
  [-0.4841, 4.4841]
  """
  from scipy import stats  # pylint: disable=import-outside-toplevel
  x = np.asarray(values, np.float64)
  if x.size < 2:
    return float(x.mean()), float(x.mean())
  low, high = stats.t.interval(level, x.size - 1, loc=x.mean(), scale=stats.sem(x))
  return float(low), float(high)


def _at_least(value: float, anchor: float, percent: bool) -> bool:
  """``value >= anchor``; in percent at the published tables' 0.1 point.

  >>> _at_least(608 / 700, 0.869, True), _at_least(685 / 700, 0.98, True)
  (True, False)
  """
  if percent:
    return round(100 * value, 1) >= round(100 * anchor, 1)
  return value >= anchor


def summarize(runs: Sequence[dict], keys: Sequence[str]) -> dict:
  """Per-run values, mean, standard deviation (ddof 1), 95 % t-interval of each key,
  and each anchor's comparison: ``{"keys", "percent", "runs", "mean", "std", "ci95",
  "anchors"}``; an anchor row has ``reached_by`` (the seeds of the runs at or above it
  on every key it gives, a metric in percent compared at the 0.1 point the
  published tables give: 608 of 700 sentences, 86.857 %, reach Stack-Propagation's
  86.9 %) and
  ``mean_minus_anchor`` per key.

  Raises:
    SeedsError: no keys, or a key missing from a summary or not a finite number.
  """
  if not keys:
    raise SeedsError("the summaries have no anchors to take metric names from: give "
                     "--keys")
  table = {}
  for key in keys:
    column = []
    for run in runs:
      value = run["summary"].get(key)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
          math.isfinite(value)):
        numeric = sorted(k for k, v in run["summary"].items()
                         if isinstance(v, float) and math.isfinite(v))
        raise SeedsError(f"{run['workdir']}/summary.json: {key!r} is not a number "
                         f"(got {value!r}); numeric fields: {', '.join(numeric)}")
      column.append(float(value))
    table[key] = column
  percent = {k: all(0.0 <= v <= 1.0 for v in table[k]) for k in keys}
  out = {
      "keys": list(keys), "percent": percent,
      "runs": [{"workdir": r["workdir"], "seed": r["seed"],
                "selected_epoch": r["summary"].get("selected_epoch"),
                **{k: table[k][i] for k in keys}} for i, r in enumerate(runs)],
      "mean": {k: float(np.mean(table[k])) for k in keys},
      "std": {k: float(np.std(table[k], ddof=1)) if len(runs) > 1 else 0.0
              for k in keys},
      "ci95": {k: t_interval(table[k]) for k in keys},
      "anchors": [],
  }
  for anchor in runs[0]["summary"].get("anchors") or ():
    shared = [k for k in keys if isinstance(anchor.get(k), (int, float))]
    if not shared:
      continue
    reached = [r["seed"] for i, r in enumerate(runs)
               if all(_at_least(table[k][i], float(anchor[k]), percent[k])
                      for k in shared)]
    out["anchors"].append({
        "model": anchor.get("model", "?"), **{k: float(anchor[k]) for k in shared},
        "reached_by": reached,
        "mean_minus_anchor": {k: out["mean"][k] - float(anchor[k]) for k in shared}})
  return out


def markdown(result: dict) -> str:
  """The result as a Markdown table: runs, mean, standard deviation, interval, anchors."""
  keys, percent = result["keys"], result["percent"]

  def fmt(key, value):
    return f"{100 * value:.2f}" if percent[key] else f"{value:.4g}"

  def diff(key, value):
    return f"{100 * value:+.2f}" if percent[key] else f"{value:+.4g}"

  head = ["run", "seed", "selected epoch", *[k + (" (%)" if percent[k] else "")
                                             for k in keys]]
  lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|" + "---:|" * len(keys)]
  for run in result["runs"]:
    epoch = run["selected_epoch"]
    lines.append("| " + " | ".join(
        [f"`{run['workdir']}`", str(run["seed"]),
         "—" if epoch is None else f"{epoch:g}",
         *[fmt(k, run[k]) for k in keys]]) + " |")
  n = len(result["runs"])
  lines.append("| " + " | ".join([f"**mean of {n}**", "", "",
                                   *[f"**{fmt(k, result['mean'][k])}**" for k in keys]])
               + " |")
  lines.append("| " + " | ".join(["standard deviation", "", "",
                                   *[fmt(k, result["std"][k]) for k in keys]]) + " |")
  lines.append("| " + " | ".join(["95 % interval of the mean (t)", "", "",
                                   *[f"{fmt(k, result['ci95'][k][0])} – "
                                     f"{fmt(k, result['ci95'][k][1])}" for k in keys]])
               + " |")
  for anchor in result["anchors"]:
    cells = [fmt(k, anchor[k]) + f" ({diff(k, anchor['mean_minus_anchor'][k])})"
             if k in anchor["mean_minus_anchor"] else "—" for k in keys]
    lines.append("| " + " | ".join(
        [f"{anchor['model']} (mean − it)", "", f"{len(anchor['reached_by'])} of {n} "
         "reach all", *cells]) + " |")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m tools.reports.seeds",
      description="Mean, standard deviation and 95 %% interval of one config's runs "
                  "over seeds, against the recipe's published anchors.")
  parser.add_argument("workdirs", nargs="+", help="finished runs of one config")
  parser.add_argument("--keys", nargs="+", default=None,
                      help="summary.json metrics (default: the anchors' metrics)")
  parser.add_argument("--out", default=None,
                      help="also write OUT.md (the table) and OUT.json")
  args = parser.parse_args(argv)
  try:
    runs = load_runs(args.workdirs)
    result = summarize(runs, args.keys or default_keys(runs))
  except SeedsError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  table = markdown(result)
  print(table)
  if args.out:
    tables.write_outputs(args.out, table, result, command=" ".join(
        ["python -m tools.reports.seeds", *(argv if argv is not None else sys.argv[1:])]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
