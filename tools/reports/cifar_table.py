"""The CIFAR-10-LT and UIT-VSFC results tables:
``python -m tools.reports.cifar_table [--size cpu|full] [--root DIR] [--seed S]
[--reuse_only]`` and ``python -m tools.reports.cifar_table --vsfc``.

CIFAR-10-LT (ρ = 100): runs, one after the other and each into its own workdir under
``--root``, the five methods of ``experiments/imbalance/configs/cifar10_lt.py`` at one size
(``cpu``: ResNet-8, 30 epochs, this machine; ``full``: ResNet-32, 200 epochs, an
accelerator), as one series. Prints a Markdown table of WAR, UAR, balanced error
(100 − UAR), many / medium / few-shot accuracy and the monitors' findings beside the
published ResNet-32 rows, and writes ``docs/cifar10_lt_<size>.md`` / ``.json``.

``--vsfc`` runs ERM and the four-stage curriculum on UIT-VSFC sentiment and topic
(``experiments/imbalance/configs/vsfc.py``) and writes ``docs/vsfc.md`` / ``.json``.

A run whose ``summary.json`` exists is reused; a partly trained one resumes.
``--reuse_only`` trains nothing: the table holds the rows whose run has finished under
``--root`` (e.g. runs made on an accelerator by ``tools/ops/gpu_check.sh``), and the rows
not run are listed below it.
"""

from __future__ import annotations

import argparse
import os
import time

from tools.reports import tables

# Balanced error % of ResNet-32 on CIFAR-10-LT, ρ = 100, 200 epochs (published).
ANCHORS = (
    ("ERM (Menon et al., ICLR 2021, Table 3)", "erm", 27.16),
    ("focal (Cao et al., NeurIPS 2019, Table 2)", "focal", 29.62),
    ("logit-adjusted loss τ = 1 (Menon et al., ICLR 2021, Table 3)", "la", 22.33),
    ("LDAM-DRW (Cao et al., NeurIPS 2019, Table 2)", "ldam_drw", 22.97),
)
CIFAR_METHODS = (  # label, method, config overrides
    ("ERM (cross-entropy)", "erm", {}),
    ("focal (γ = 1)", "focal", {}),
    ("logit-adjusted loss (τ = 1)", "la", {}),
    ("LDAM-DRW (s = 30, m = 0.5, DRW from 80 %)", "ldam_drw", {}),
    ("four-stage curriculum", "four_stage", {}),
)
# After the series: the four-stage curriculum without its class-balanced sampler (the
# class weights and logit adjustment of its stages only), to measure the over-correction
# of re-balancing three times.
CIFAR_EXTRA = (
    ("four-stage, data sampler in every stage (sampler_mix 0)", "four_stage",
     {"sampler_mix": 0.0}),
)
VSFC_ROWS = tuple((f"{task}: {label}", f"{method},{task}", {})
                  for task in ("sentiment", "topic")
                  for label, method in (("ERM (cross-entropy)", "erm"),
                                        ("four-stage curriculum", "four_stage")))
SHOTS = ("many_shot", "medium_shot", "few_shot")
KEPT = ("war", "uar", "accuracy", "macro_f1", "per_class_recall", "stage_end", "steps",
        "steps_per_epoch",
        "wall_s", "train_step_compilations", "skipped_steps", "diagnosis",
        "class_counts", *SHOTS)


def run_rows(rows, get_config, root: str, seed: int, reuse_only: bool = False,
             missing: list | None = None) -> list[dict]:
  """Trains (or reuses) ``rows`` of ``(label, variant, overrides)``; one dict per row.
  With ``reuse_only`` a row without a finished run is left out (its label appended to
  ``missing``) instead of trained."""
  from experiments import recipes  # pylint: disable=g-import-not-at-top
  out = []
  for label, variant, overrides in rows:
    workdir = os.path.join(root, tables.row_dirname(variant, overrides, seed))
    if reuse_only and not os.path.exists(os.path.join(workdir, "summary.json")):
      if missing is not None:
        missing.append(f"{label} ({workdir})")
      continue
    summary = tables.run_or_reuse(
        workdir, lambda: tables.configure(get_config, variant, seed, overrides),
        recipes.run)
    findings = _findings(workdir)
    out.append({"label": label, "variant": variant, "overrides": overrides,
                "seed": seed, "workdir": workdir, "findings": findings,
                **{k: summary.get(k) for k in KEPT}})
  return out


def _findings(workdir: str) -> list[str]:
  """The error and warning codes of a run's ``diagnosis.json``."""
  import json  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "diagnosis.json")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    findings = json.load(f)["findings"]
  return sorted({f["code"] for f in findings if f["severity"] in ("error", "warning")})


def _pct(x) -> str:
  return "—" if x is None else f"{100 * x:.2f}"


def _monitors(r) -> str:
  d = r["diagnosis"]
  text = f"{d['error']}/{d['warning']}"
  return text + (f" ({', '.join(r['findings'])})" if r["findings"] else "")


def _measured(r) -> str:
  epochs = r["steps"] / r["steps_per_epoch"]
  return (f"| {r['label']} | {_pct(r['war'])} | {_pct(r['uar'])} | "
          f"{100 - 100 * r['uar']:.2f} | " + " | ".join(_pct(r[k]) for k in SHOTS)
          + f" | {epochs:g} | {_monitors(r)} |")


def cifar_markdown(rows: list[dict], size: str, extra=()) -> str:
  """The CIFAR-10-LT table: the measured series, the published ResNet-32 rows, then any
  ``extra`` measured rows (variants outside the series)."""
  lines = [f"| CIFAR-10-LT ρ = 100, Test, `{size}` size | WAR % | UAR % | "
           "balanced error % | many % | medium % | few % | epochs | monitors "
           "(error/warning) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
  lines += [_measured(r) for r in rows]
  for label, _, error in ANCHORS:
    lines.append(f"| ResNet-32, 200 epochs: {label}, published | | {100 - error:.2f} | "
                 f"{error:.2f} | | | | 200 | |")
  for r in extra:
    lines.append(_measured(r))
  return "\n".join(lines)


def vsfc_markdown(rows: list[dict]) -> str:
  lines = ["| UIT-VSFC Test (last epoch) | WAR % (accuracy) | UAR % | macro F1 % | "
           "per-class recall % | monitors (error/warning) |",
           "|---|---:|---:|---:|---|---|"]
  for r in rows:
    recall = " / ".join(_pct(x) for x in r["per_class_recall"])
    lines.append(f"| {r['label']} | {_pct(r['war'])} | {_pct(r['uar'])} | "
                 f"{_pct(r['macro_f1'])} | {recall} | {_monitors(r)} |")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", choices=("cpu", "full"), default="cpu")
  parser.add_argument("--vsfc", action="store_true",
                      help="UIT-VSFC sentiment and topic instead of CIFAR-10-LT")
  parser.add_argument("--root", default=None)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=None)
  parser.add_argument("--reuse_only", action="store_true",
                      help="train nothing: tabulate the finished runs under --root")
  args = parser.parse_args(argv)
  missing: list = []
  t0 = time.time()
  if args.vsfc:
    from experiments.imbalance.configs import vsfc  # pylint: disable=g-import-not-at-top
    rows = run_rows(VSFC_ROWS, vsfc.get_config, args.root or "workdirs/vsfc_table",
                    args.seed, args.reuse_only, missing)
    table, out = vsfc_markdown(rows), args.out or "docs/vsfc"
    payload = {"seed": args.seed, "rows": rows}
  else:
    from experiments.imbalance.configs import cifar10_lt  # pylint: disable=g-import-not-at-top
    root = args.root or f"workdirs/cifar10_lt_{args.size}"
    series = run_rows(tuple((label, f"{m},{args.size}", o) for label, m, o in CIFAR_METHODS),
                      cifar10_lt.get_config, root, args.seed, args.reuse_only, missing)
    extra = run_rows(tuple((label, f"{m},{args.size}", o) for label, m, o in CIFAR_EXTRA),
                     cifar10_lt.get_config, root, args.seed, args.reuse_only, missing)
    rows = series + extra
    table = cifar_markdown(series, args.size, extra=extra)
    out = args.out or f"docs/cifar10_lt_{args.size}"
    payload = {"seed": args.seed, "size": args.size, "rows": rows,
               "anchors": [{"label": a, "method": m, "balanced_error": e}
                           for a, m, e in ANCHORS]}
    by_method = {r["variant"].split(",")[0]: r for r in series}
    erm, four = by_method.get("erm"), by_method.get("four_stage")
    if erm and four:
      payload["four_stage_minus_erm_uar"] = four["uar"] - erm["uar"]
      payload["uar_rank_of_four_stage"] = 1 + sum(r["uar"] > four["uar"] for r in series)
      table += (f"\n\nFour-stage minus ERM: {100 * (four['uar'] - erm['uar']):+.2f} UAR "
                f"points; four-stage ranks {payload['uar_rank_of_four_stage']} of "
                f"{len(series)} on UAR.")
  if missing:
    payload["not_run"] = missing
    table += "\n\nNot run (no finished run under --root): " + "; ".join(missing) + "."
  payload["wall_s"] = round(time.time() - t0, 1)
  print(table)
  tables.write_outputs(out, table, payload)
  print(f"-> {out}.md, {out}.json ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  main()
