"""The reranking results table: ``python -m tools.reports.rerank_table [--root DIR] [--seeds S ...]``.

Runs, one after the other and each into its own workdir under ``--root``, the rows of
the README table on Amazon Games: BPR and the listwise softmax at 50 candidates, then at
101 (the SASRec protocol: the true item and 100 negatives). The random and popularity
rows are the baselines each run scores on its own lists (the listwise run's; the lists
of a candidate count are the same for every run). A run whose ``summary.json`` exists
is reused, a partly trained one resumes. Prints a Markdown table of Test HR@1/5/10,
NDCG@5/10 and MRR (validation-selected epoch) with the first-step loss against
ln(num_candidates), beside the SASRec paper's row, and writes it to ``docs/rerank.md``
and ``docs/rerank.json``. ``--config.KEY=VALUE`` style overrides are not taken; pass
``--epochs`` to change the schedule of every row.

With several ``--seeds`` (training seeds; the evaluation lists stay those of
``data_seed`` 0) every row is run once per seed and the table gives mean ± sample std
over the seeds, with each seed's HR@10 / NDCG@10; ``--candidates 101`` keeps only the
rows of that candidate count, e.g.
``python -m tools.reports.rerank_table --seeds 0 1 2 --candidates 101 --out docs/rerank_seeds``.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

from tools.reports import tables

KEYS = ("hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10", "mrr")

# label, variant, config overrides
ROWS = (
    ("BPR", "bpr", {"num_candidates": 50}),
    ("listwise softmax", "listwise", {"num_candidates": 50}),
    ("BPR", "bpr", {"num_candidates": 101}),
    ("listwise softmax", "listwise", {"num_candidates": 101}),
)


def run_rows(root: str, seed: int, rows=ROWS, config_overrides=None) -> list[dict]:
  """Trains (or reuses) every row; returns one dict per row (the baselines of each
  run under ``baselines``)."""
  from experiments import recipes
  from experiments.rerank.configs import rerank as rerank_config
  out = []
  for label, variant, overrides in rows:
    workdir = os.path.join(root, tables.row_dirname(variant, overrides, seed))
    summary = tables.run_or_reuse(
        workdir, lambda: tables.configure(rerank_config.get_config, variant, seed,
                                          overrides, config_overrides),
        recipes.run)
    out.append({"label": label, "variant": variant, "overrides": overrides,
                "seed": seed, "workdir": workdir, **{k: summary[k] for k in KEYS},
                **{k: summary[k] for k in (
                    "loss", "num_candidates", "selected_epoch", "epochs", "last_epoch",
                    "baselines", "initial_loss", "initial_reference", "sanity",
                    "skipped_steps", "steps", "diagnosis", "findings", "wall_s",
                    "train_step_compilations", "final_train_loss")}})
  return out


def failed_checks(sanity: dict) -> list[str]:
  """Names of the sanity checks of a ``summary.json["sanity"]`` that did not pass."""
  failed = []
  for name, value in sanity.items():
    if name == "all_ok":
      continue
    if isinstance(value, bool):
      ok = value
    elif "ok" in value:
      ok = value["ok"]
    else:  # per split
      ok = all(v["ok"] for v in value.values())
    if not ok:
      failed.append(name)
  return failed


def _row(label, m, extra=("", "", "")) -> str:
  return (f"| {label} | " + " | ".join(f"{m[k]:.4f}" for k in KEYS) + " | "
          + " | ".join(extra) + " |")


def markdown(rows: list[dict], anchors=None) -> str:
  """One block per candidate count: random, popularity (from the first run of that
  count), then the trained rows; the anchor under the count it was measured at."""
  if anchors is None:
    from experiments.rerank.recipe import ANCHORS as anchors  # pylint: disable=g-import-not-at-top
  lines = ["| Games Test (validation-selected epoch) | HR@1 | HR@5 | HR@10 | NDCG@5 | "
           "NDCG@10 | MRR | first loss (equal-score loss) | epochs | sanity checks |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
  for count in sorted({r["num_candidates"] for r in rows}):
    block = [r for r in rows if r["num_candidates"] == count]
    base = block[0]["baselines"]["test"]
    lines.append(f"| **{count} candidates** | | | | | | | | | |")
    lines.append(_row("random", base["random"]))
    lines.append(_row("popularity (training counts)", base["popularity"]))
    for r in block:
      ref = ("ln " + str(count) if r["loss"] == "listwise" else "ln 2")
      first = (f"{r['initial_loss']:.4f} ({ref} = {r['initial_reference']:.4f})"
               if r["initial_loss"] is not None else "—")
      failed = failed_checks(r["sanity"])
      lines.append(_row(f"SASRec + {r['label']}", r,
                        (first, f"{r['epochs']:g}",
                         "FAILED: " + ", ".join(failed) if failed else "all ok")))
    for a in anchors:
      if a["num_candidates"] == count:
        lines.append(f"| {a['model']}, published | | | {a['hr@10']:.4f} | | "
                     f"{a['ndcg@10']:.4f} | | | | |")
  return "\n".join(lines)


def _mean_std(values) -> str:
  values = np.asarray(values, np.float64)
  if len(values) < 2:
    return f"{values[0]:.4f}"
  return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def spread_markdown(rows_by_seed: dict, anchors=None) -> str:
  """Mean ± sample std over seeds of every row (and of the baselines), per candidate
  count; ``rows_by_seed`` maps a seed to the rows :func:`run_rows` returned for it
  (the same rows in the same order for every seed)."""
  if anchors is None:
    from experiments.rerank.recipe import ANCHORS as anchors  # pylint: disable=g-import-not-at-top
  seeds = sorted(rows_by_seed)
  per_row = list(zip(*(rows_by_seed[s] for s in seeds)))  # one tuple of seeds per row
  lines = [f"| Games Test, mean ± std over seeds {', '.join(map(str, seeds))} | HR@1 | "
           "HR@5 | HR@10 | NDCG@5 | NDCG@10 | MRR | HR@10 / NDCG@10 per seed | "
           "sanity checks |",
           "|---|---:|---:|---:|---:|---:|---:|---|---|"]

  def line(label, ms, extra=("", "")):
    return (f"| {label} | " + " | ".join(_mean_std([m[k] for m in ms]) for k in KEYS)
            + " | " + " | ".join(extra) + " |")

  for count in sorted({r[0]["num_candidates"] for r in per_row}):
    block = [r for r in per_row if r[0]["num_candidates"] == count]
    lines.append(f"| **{count} candidates** | | | | | | | | |")
    for name, label in (("random", "random"),
                        ("popularity", "popularity (training counts)")):
      lines.append(line(label, [r["baselines"]["test"][name] for r in block[0]]))
    for runs in block:
      failed = sorted({f for r in runs for f in failed_checks(r["sanity"])})
      per_seed = ", ".join(f"{r['hr@10']:.4f} / {r['ndcg@10']:.4f}" for r in runs)
      lines.append(line(f"SASRec + {runs[0]['label']}", runs,
                        (per_seed, "FAILED: " + ", ".join(failed) if failed
                         else "all ok")))
    for a in anchors:
      if a["num_candidates"] == count:
        lines.append(f"| {a['model']}, published | | | {a['hr@10']:.4f} | | "
                     f"{a['ndcg@10']:.4f} | | | |")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", default="workdirs/rerank_table")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                      help="training seeds; several give mean ± std (default: 0)")
  parser.add_argument("--candidates", type=int, nargs="+", default=None,
                      help="only the rows of these candidate counts (default: all)")
  parser.add_argument("--epochs", type=int, default=None,
                      help="num_epochs of every row (default: the config's)")
  parser.add_argument("--out", default="docs/rerank")
  args = parser.parse_args(argv)
  t0 = time.time()
  overrides = {"num_epochs": args.epochs} if args.epochs else None
  selected = tuple(r for r in ROWS
                   if args.candidates is None or r[2]["num_candidates"] in args.candidates)
  if not selected:
    parser.error(f"--candidates {args.candidates}: no row has that count (rows: "
                 f"{sorted({r[2]['num_candidates'] for r in ROWS})})")
  rows_by_seed = {seed: run_rows(args.root, seed, rows=selected,
                                 config_overrides=overrides) for seed in args.seeds}
  if len(args.seeds) == 1:
    rows = rows_by_seed[args.seeds[0]]
    table = markdown(rows)
  else:
    rows = [r for seed in args.seeds for r in rows_by_seed[seed]]
    table = spread_markdown(rows_by_seed)
  print(table)
  from experiments.rerank.recipe import ANCHORS  # pylint: disable=g-import-not-at-top
  tables.write_outputs(args.out, table, {"seeds": args.seeds, "rows": rows,
                                         "anchors": list(ANCHORS),
                                         "ln": {c: math.log(c) for c in (50, 101)},
                                         "wall_s": round(time.time() - t0, 1)})
  print(f"-> {args.out}.md, {args.out}.json ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  main()
