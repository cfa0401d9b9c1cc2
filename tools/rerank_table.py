"""The reranking results table: ``python -m tools.rerank_table [--root DIR] [--seed S]``.

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
"""

from __future__ import annotations

import argparse
import math
import os
import time

from tools import tables

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
  from experiments import rerank
  from experiments.configs import rerank as rerank_config
  out = []
  for label, variant, overrides in rows:
    workdir = os.path.join(root, tables.row_dirname(variant, overrides, seed))
    summary = tables.run_or_reuse(
        workdir, lambda: tables.configure(rerank_config.get_config, variant, seed,
                                          overrides, config_overrides),
        rerank.train_and_evaluate)
    out.append({"label": label, "variant": variant, "overrides": overrides,
                "workdir": workdir, **{k: summary[k] for k in KEYS},
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
    from experiments.rerank import ANCHORS as anchors  # pylint: disable=g-import-not-at-top
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


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", default="workdirs/rerank_table")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--epochs", type=int, default=None,
                      help="num_epochs of every row (default: the config's)")
  parser.add_argument("--out", default="docs/rerank")
  args = parser.parse_args(argv)
  t0 = time.time()
  overrides = {"num_epochs": args.epochs} if args.epochs else None
  rows = run_rows(args.root, args.seed, config_overrides=overrides)
  table = markdown(rows)
  print(table)
  from experiments.rerank import ANCHORS  # pylint: disable=g-import-not-at-top
  tables.write_outputs(args.out, table, {"seed": args.seed, "rows": rows,
                                         "anchors": list(ANCHORS),
                                         "ln": {c: math.log(c) for c in (50, 101)},
                                         "wall_s": round(time.time() - t0, 1)})
  print(f"-> {args.out}.md, {args.out}.json ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  main()
