"""ERM vs four-stage over several seeds, as a table: ``python -m tools.reports.compare``.

Runs ``experiments/imbalance/configs/digits_lt.py`` (variants ``erm`` and ``four_stage``) for each
seed in one process, then prints a Markdown table of WAR and UAR (mean ± std over the
seeds), the WAR/UAR at the end of each curriculum stage, and writes everything to
``OUT/results.json``. Workdirs are ``OUT/<variant>_seed<k>``; finished runs are reused
(each run resumes from its checkpoints), so an interrupted comparison continues.

Example::

  python -m tools.reports.compare --seeds 0 1 2 --out workdirs/compare
  python -m tools.reports.compare --seeds 0 --num_epochs 20   # quicker look
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np


def _mean_std(xs):
  xs = 100 * np.asarray(xs, np.float64)
  return float(xs.mean()), float(xs.std(ddof=1)) if len(xs) > 1 else 0.0


def _fmt(ms):
  return f"{ms[0]:.2f} ± {ms[1]:.2f}"


def run(seeds, out, num_epochs=None, variants=("erm", "four_stage"), data_dir=None):
  """Trains every (variant, seed) and returns the aggregated results dict."""
  from experiments import recipes
  from experiments.imbalance.configs import digits_lt

  runs = {v: [] for v in variants}
  for variant in variants:
    for seed in seeds:
      config = digits_lt.get_config(variant)
      config.seed = seed
      config.progress = False
      if num_epochs is not None:
        config.num_epochs = num_epochs
      if data_dir is not None:
        config.data_dir = data_dir
      workdir = os.path.join(out, f"{variant}_seed{seed}")
      summary = recipes.run(config, workdir)
      runs[variant].append(summary)
  results = {"seeds": list(seeds), "num_epochs": num_epochs, "variants": {}}
  for variant, summaries in runs.items():
    entry = {"war": _mean_std([s["war"] for s in summaries]),
             "uar": _mean_std([s["uar"] for s in summaries]),
             "per_seed": [{"seed": seed, "war": s["war"], "uar": s["uar"],
                           "wall_s": s["wall_s"]} for seed, s in zip(seeds, summaries)],
             "stage_end": {}}
    for stage in summaries[0]["stage_end"]:
      entry["stage_end"][stage] = {
          "war": _mean_std([s["stage_end"][stage]["war"] for s in summaries]),
          "uar": _mean_std([s["stage_end"][stage]["uar"] for s in summaries])}
    results["variants"][variant] = entry
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  return results


def table(results) -> str:
  """The Markdown tables for the README."""
  lines = ["| method | WAR % | UAR % |", "|---|---|---|"]
  for variant, e in results["variants"].items():
    lines.append(f"| {variant} | {_fmt(e['war'])} | {_fmt(e['uar'])} |")
  lines += ["", "| four-stage, end of stage | WAR % | UAR % |", "|---|---|---|"]
  for stage, e in results["variants"].get("four_stage", {}).get("stage_end", {}).items():
    lines.append(f"| {stage} | {_fmt(e['war'])} | {_fmt(e['uar'])} |")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  parser.add_argument("--out", default="workdirs/compare")
  parser.add_argument("--num_epochs", type=int, default=None)
  parser.add_argument("--data_dir", default=None)
  args = parser.parse_args(argv)
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  results = run(args.seeds, args.out, args.num_epochs, data_dir=args.data_dir)
  print(table(results))
  print(f"\nresults: {os.path.join(args.out, 'results.json')}")


if __name__ == "__main__":
  main()
