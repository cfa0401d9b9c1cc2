"""The joint NLU results table: ``python -m tools.reports.nlu_table [--root DIR] [--seed S]``.

Runs, one after the other and each into its own workdir under ``--root``, the rows of the
README table on SNIPS: the recipe (finite masks, a 2-layer BiLSTM, plain CE on every head
with λ 1, singleton replacement, 40 epochs), the notes' settings (λ warm-up, focal entity
loss with class weights), the notes' model with plain CE, and the collapse reproduction
(``-inf`` masks, entity λ 0.8, no O down-weighting). A run whose ``summary.json`` exists
is reused if its ``config.json`` trains the row's config
(:func:`tools.reports.tables.run_or_reuse`), a partly trained one resumes. Prints a
Markdown table of Test intent accuracy / slot F1 / sentence accuracy (Dev-selected
epoch) with the collapse signals, beside the published anchors, and writes it to
``docs/joint_nlu.md`` and ``docs/joint_nlu.json``.
"""

from __future__ import annotations

import argparse
import os
import time

from tools.reports import tables

# label, variant, config overrides
ROWS = (
    ("recipe: finite masks, 2-layer BiLSTM 256, CE on every head, λ 1, words seen once "
     "→ UNK at 0.5, 40 epochs, intent and tags decoded jointly", "recipe", {}),
    ("notes: 1-layer BiLSTM 128, λ warm-up, focal entities (O = 0.1)", "notes", {}),
    ("notes with plain CE on the entity head (same masks and λ)", "ce", {}),
    ("collapse: -inf masks, entity λ 0.8, no O down-weighting", "collapse", {}),
)


_dirname = tables.row_dirname


def run_rows(root: str, seed: int, rows=ROWS, config_overrides=None) -> list[dict]:
  """Trains (or reuses) every row; returns one dict per row."""
  from experiments import recipes
  from experiments.nlu.configs import joint_nlu
  out = []
  for label, variant, overrides in rows:
    workdir = os.path.join(root, _dirname(variant, overrides, seed))
    summary = tables.run_or_reuse(
        workdir, lambda: tables.configure(joint_nlu.get_config, variant, seed, overrides,
                                          config_overrides),
        recipes.run)
    out.append({"label": label, "variant": variant, "overrides": overrides,
                "workdir": workdir,
                **{k: summary[k] for k in (
                    "intent_accuracy", "slot_f1", "sentence_accuracy", "pred_non_o_share",
                    "true_non_o_share", "top_intent_share", "selected_epoch", "last_epoch",
                    "skipped_steps", "steps", "initial_loss", "initial_reference",
                    "diagnosis", "findings", "wall_s", "train_step_compilations",
                    "final_terms")}})
  return out


def _pct(x) -> str:
  return "—" if x is None else f"{100 * x:.1f}"


def markdown(rows: list[dict], anchors=None) -> str:
  if anchors is None:
    from experiments.nlu.recipe import ANCHORS as anchors  # pylint: disable=g-import-not-at-top
  lines = ["| SNIPS Test (Dev-selected epoch) | intent acc | slot F1 | sentence acc | "
           "pred non-O % (gold) | top intent % | skipped steps | monitors (error/warning) |",
           "|---|---:|---:|---:|---:|---:|---:|---|"]
  for r in rows:
    lines.append(
        f"| {r['label']} | {100 * r['intent_accuracy']:.2f} | {100 * r['slot_f1']:.2f} | "
        f"{100 * r['sentence_accuracy']:.2f} | {_pct(r['pred_non_o_share'])} "
        f"({_pct(r['true_non_o_share'])}) | {_pct(r['top_intent_share'])} | "
        f"{r['skipped_steps']}/{r['steps']} | {tables.monitors_cell(r)} |")
  for a in anchors:
    lines.append(f"| {a['model']}, published | {100 * a['intent_accuracy']:.1f} | "
                 f"{100 * a['slot_f1']:.1f} | {100 * a['sentence_accuracy']:.1f} | | | | |")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", default="workdirs/nlu_table")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="docs/joint_nlu")
  args = parser.parse_args(argv)
  t0 = time.time()
  rows = run_rows(args.root, args.seed)
  table = markdown(rows)
  print(table)
  from experiments.nlu.recipe import ANCHORS  # pylint: disable=g-import-not-at-top
  tables.write_outputs(args.out, table, {"seed": args.seed, "rows": rows,
                                         "anchors": list(ANCHORS),
                                         "wall_s": round(time.time() - t0, 1)})
  print(f"-> {args.out}.md, {args.out}.json ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  main()
