"""Average separately trained UIT-ViSFD runs into one ensemble:
``python -m experiments.absa.combine WORKDIR WORKDIR [...]``.

A vmapped ensemble (``config.ensemble_focal_weights``) trains its members in one step,
which needs every member's activations in memory at once and one machine for all of
them (on the 2 cores here the two-member e5 run took 12,229 s, one member 4,241 s).
``config.ensemble_member = k`` trains member k alone, the same model with the same
seed, weights and batch order; this command then averages the members' class
probabilities, which every run saves after each Dev and Test evaluation
(``WORKDIR/predictions/<split>_epoch_<e>.npz``), and reports the ensemble as the recipe
does: Test at the epoch whose averaged Dev score (mean of aspect and sentiment F1) is
best, the earliest on a tie, and Test at the last common epoch beside it.

Example::

  python -m experiments.run --config=experiments/absa/configs/visfd_absa.py:e5 \\
      --config.ensemble_member=0 --workdir=workdirs/e5_m0
  python -m experiments.run --config=experiments/absa/configs/visfd_absa.py:e5 \\
      --config.ensemble_member=1 --workdir=workdirs/e5_m1
  python -m experiments.absa.combine workdirs/e5_m0 workdirs/e5_m1 \\
      --out workdirs/e5_ensemble.json

Every workdir's members count (a vmapped ensemble's workdir brings all of its members).
The workdirs must hold the same Dev and Test labels (the same data and truncation); the
config fields in which they differ are listed in the output.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys

import ml_collections
import numpy as np

from jaxloss.training.guard import changed_fields, flatten
from jaxloss.training.recipe import Selection, select
from experiments.absa.recipe import ANCHORS, eval_report, parse_members

SPLITS = ("dev", "test")
_NAME = re.compile(r"^(dev|test)_epoch_([0-9.e+-]+)\.npz$")
# Fields that tell members apart; any other difference is listed as a warning.
MEMBER_FIELDS = ("seed", "focal_weight", "contrastive_weight", "ensemble_member")


def load_predictions(workdir: str) -> dict:
  """``{split: {epoch: {"probs": float32 [N, M, A, C], "labels": int [N, A]}}}`` from
  ``workdir/predictions``.

  Raises:
    FileNotFoundError: no ``predictions/`` folder or no prediction file in it (runs
      before predictions were saved, or a run that never evaluated).
  """
  folder = os.path.join(workdir, "predictions")
  out = {s: {} for s in SPLITS}
  for path in sorted(glob.glob(os.path.join(folder, "*.npz"))):
    m = _NAME.match(os.path.basename(path))
    if not m:
      continue
    with np.load(path) as z:
      out[m.group(1)][float(m.group(2))] = {"probs": z["probs"].astype(np.float32),
                                            "labels": z["labels"]}
  if not any(out.values()):
    raise FileNotFoundError(f"{folder}: no <split>_epoch_<e>.npz prediction files (the "
                            f"run never evaluated, or predates saved predictions)")
  return out


def _config(workdir: str) -> dict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _members(config: dict) -> list[tuple]:
  """Each member of a run as ``(the rest of its config, seed, focal_weight,
  contrastive_weight)``: equal tuples are the same model. No ABSA config: none known."""
  if "ensemble_focal_weights" not in config:  # no config.json, or not an ABSA run's
    return []
  rest = json.dumps({k: v for k, v in config.items()
                     if k not in MEMBER_FIELDS + ("ensemble_focal_weights",)},
                    sort_keys=True)
  members = parse_members(ml_collections.ConfigDict(config))
  return [(rest, m["seed"], m["focal_weight"], m["contrastive_weight"]) for m in members]


def config_differences(configs: list[dict]) -> dict:
  """``{dotted field: [value per workdir]}`` for the training fields whose values differ
  (:func:`jaxloss.training.guard.changed_fields` against the first config; runtime
  fields such as ``progress`` or the checkpoint cadence do not count)."""
  names = sorted(set().union(*[changed_fields(configs[0], c) for c in configs[1:]]))
  flat = [flatten(c) for c in configs]
  return {k: [f.get(k, "<absent>") for f in flat] for k in names}


def combine(workdirs: list[str]) -> dict:
  """The ensemble of ``workdirs``: per common epoch its Dev and Test reports, the
  Dev-selected and the last epoch.

  Raises:
    ValueError: fewer than two workdirs, one named twice, one member (the same config,
      seed and weights) in two workdirs, different labels in a split, or no epoch with Dev and
      Test predictions in every workdir.
    FileNotFoundError: a workdir without predictions (:func:`load_predictions`).
  """
  if len(workdirs) < 2:
    raise ValueError(f"need at least two workdirs to combine, got {len(workdirs)}")
  real = [os.path.realpath(w) for w in workdirs]
  if len(set(real)) < len(real):
    raise ValueError(f"a workdir is named twice: {workdirs}")
  configs = [_config(w) for w in workdirs]
  seen = {}
  for w, c in zip(workdirs, configs):
    for member in _members(c):
      if member in seen:
        raise ValueError(f"{seen[member]} and {w} both hold the member with seed "
                         f"{member[1]} and weights {member[2]}/{member[3]} of one config: "
                         f"the same model twice (train other members with "
                         f"--config.ensemble_member=k)")
      seen[member] = w
  preds = [load_predictions(w) for w in workdirs]
  epochs = sorted(set.intersection(*[set(p[s]) for p in preds for s in SPLITS]))
  if not epochs:
    raise ValueError("no epoch has Dev and Test predictions in every workdir: "
                     + "; ".join(f"{w}: dev {sorted(p['dev'])} test {sorted(p['test'])}"
                                 for w, p in zip(workdirs, preds)))
  for s in SPLITS:
    ref = preds[0][s][epochs[0]]["labels"]
    for w, p in zip(workdirs[1:], preds[1:]):
      if not np.array_equal(p[s][epochs[0]]["labels"], ref):
        raise ValueError(f"{w}: its {s} labels differ from {workdirs[0]}'s (other data, "
                         f"split or truncation); only runs on the same data combine")
  events, per_epoch = [], []
  for step, e in enumerate(epochs):
    row = {"epoch": e}
    for s in SPLITS:
      probs = np.concatenate([p[s][e]["probs"] for p in preds], axis=1).mean(axis=1)
      report = eval_report(preds[0][s][e]["labels"], probs)
      events.append({"step": step, "split": s, "epoch": e, **report})
      row[s] = {k: report[k] for k in ("aspect_f1", "sentiment_f1", "score")}
    per_epoch.append(row)
  best, last = select(events, Selection("dev", "score"))
  keys = ("aspect_f1", "sentiment_f1", "per_aspect_f1", "macro_f1_4class")
  members = sum(p["test"][epochs[0]]["probs"].shape[1] for p in preds)
  return {
      "workdirs": list(workdirs), "members": members, "epochs": epochs,
      "selected_epoch": best["dev"]["epoch"],
      **{k: best["test"][k] for k in keys},
      "dev_aspect_f1": best["dev"]["aspect_f1"],
      "dev_sentiment_f1": best["dev"]["sentiment_f1"],
      "last_epoch": {"epoch": last["test"]["epoch"], **{k: last["test"][k] for k in keys}},
      "per_epoch": per_epoch,
      "member_fields": [{k: c.get(k) for k in MEMBER_FIELDS if k in c} for c in configs],
      "config_differences": {k: v for k, v in config_differences(configs).items()
                             if k not in MEMBER_FIELDS},
      "anchors": list(ANCHORS),
  }


def report_lines(result: dict) -> list[str]:
  """The human-readable table of :func:`combine`'s result."""
  lines = [f"ensemble of {result['members']} member(s) from {len(result['workdirs'])} "
           f"workdirs", "| epoch | Dev aspect F1 | Dev sentiment F1 | Test aspect F1 | "
           "Test sentiment F1 |", "|---:|---:|---:|---:|---:|"]
  for row in result["per_epoch"]:
    mark = " ←" if row["epoch"] == result["selected_epoch"] else ""
    lines.append(f"| {row['epoch']:g}{mark} | {100 * row['dev']['aspect_f1']:.2f} | "
                 f"{100 * row['dev']['sentiment_f1']:.2f} | "
                 f"{100 * row['test']['aspect_f1']:.2f} | "
                 f"{100 * row['test']['sentiment_f1']:.2f} |")
  lines.append(f"Test aspect F1 {100 * result['aspect_f1']:.2f}  sentiment F1 "
               f"{100 * result['sentiment_f1']:.2f}  (Dev-selected epoch "
               f"{result['selected_epoch']:g})")
  for a in result["anchors"]:
    lines.append(f"  {a['model']}: aspect F1 {100 * a['aspect_f1']:.2f}  sentiment F1 "
                 f"{100 * a['sentiment_f1']:.2f}")
  for k, v in result["config_differences"].items():
    lines.append(f"  warning: config.{k} differs between the workdirs: {v}")
  return lines


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m experiments.absa.combine",
      description="Average the saved Dev/Test probabilities of separately trained "
                  "UIT-ViSFD runs into one ensemble, selected on Dev.")
  parser.add_argument("workdirs", nargs="+", help="run workdirs (two or more)")
  parser.add_argument("--out", help="write the result as JSON to this file")
  args = parser.parse_args(argv)
  try:
    result = combine(args.workdirs)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print("\n".join(report_lines(result)))
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
      json.dump(result, f, indent=1)
    os.replace(tmp, args.out)
    print(f"-> {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
