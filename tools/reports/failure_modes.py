"""Provoke every failure mode of ``experiments/imbalance/configs/failures.py`` on real data and
check that its monitor reports it; then the healthy reference runs report silence.

  python -m tools.reports.failure_modes [--only VARIANT ...] [--workdir-root DIR] [--json PATH]
                                [--markdown PATH] [--no-healthy]

Each variant trains the main job with one thing broken (see ``failures.EXPECTED``) into
``WORKDIR_ROOT/<variant>``; the healthy references are the main job (``digits_lt.py``)
and its SupCon variant (``digits_lt.py:supcon``). Prints, and writes as JSON and as a
Markdown table (the README's), for each run: the expected code, whether it was
reported, every error/warning code reported, and the expected finding's message and
advice. Exit status 1 if an expected code is missing or a healthy run has an error or a
warning. Existing finished workdirs are re-diagnosed, not retrained.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from tqdm import tqdm

HEALTHY = {"main_job": "experiments/imbalance/configs/digits_lt.py",
           "main_job_supcon": "experiments/imbalance/configs/digits_lt.py:supcon"}


def _train(config, workdir):
  from experiments import recipes
  if not os.path.exists(os.path.join(workdir, "summary.json")):
    recipes.run(config, workdir)


def _diagnosis(workdir):
  from jaxloss import monitors
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    events = [json.loads(line) for line in f if line.strip()]
  return monitors.diagnose(events)


def run(variants, root, healthy=True) -> list[dict]:
  """Trains (or re-reads) each run and returns one row per run."""
  from experiments.imbalance.configs import digits_lt, failures
  rows = []
  jobs = [(v, failures.get_config(v), failures.EXPECTED[v]) for v in variants]
  if healthy:
    jobs += [(name, digits_lt.get_config(path.partition(":")[2] or None), (None, "none"))
             for name, path in HEALTHY.items()]
  for name, config, (code, how) in tqdm(jobs, desc="failure modes", unit="run"):
    config.progress = False
    workdir = os.path.join(root, name)
    t = time.time()
    _train(config, workdir)
    findings = _diagnosis(workdir)
    serious = [f for f in findings if f.severity in ("error", "warning")]
    hit = next((f for f in serious if f.code == code), None) if code else None
    with open(os.path.join(workdir, "summary.json")) as f:
      summary = json.load(f)
    rows.append({
        "run": name, "provoked_by": how, "expected": code,
        "reported": (hit is not None) if code else not serious,
        "codes": sorted({f"{f.code} ({f.severity})" for f in serious}),
        "message": hit.message if hit else "",
        "advice": hit.advice if hit else "",
        "step": hit.step if hit else None,
        "war": summary["war"], "uar": summary["uar"],
        "wall_s": round(time.time() - t, 1),
    })
  return rows


def markdown(rows) -> str:
  """The README table."""
  out = ["| code | provoked by (on digits-LT) | reported at step | what the monitor "
         "said | advice | also reported | final WAR / UAR |",
         "|---|---|---|---|---|---|---|"]
  for r in rows:
    if r["expected"] is None:
      continue
    at = str(r["step"]) if r["reported"] else "**not reported**"
    also = ", ".join(f"`{c.split(' ')[0]}`" for c in r["codes"]
                     if not c.startswith(r["expected"] + " ")) or "-"
    out.append(f"| `{r['expected']}` | {r['provoked_by']} | {at} | {r['message']} | "
               f"{r['advice']} | {also} | {100 * r['war']:.1f} / {100 * r['uar']:.1f} |")
  healthy = [r for r in rows if r["expected"] is None]
  if healthy:
    out += ["", "| healthy run | errors + warnings | WAR | UAR |", "|---|---|---|---|"]
    for r in healthy:
      out.append(f"| {r['run']} | {', '.join(r['codes']) or 'none'} | "
                 f"{100 * r['war']:.2f} | {100 * r['uar']:.2f} |")
  return "\n".join(out)


def main(argv=None) -> int:
  from experiments.imbalance.configs import failures
  parser = argparse.ArgumentParser(prog="python -m tools.reports.failure_modes",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--only", nargs="*", choices=failures.VARIANTS,
                      default=list(failures.VARIANTS))
  parser.add_argument("--workdir-root", default="workdirs/failures")
  parser.add_argument("--json", default=None, help="write the rows as JSON here")
  parser.add_argument("--markdown", default=None, help="write the table here")
  parser.add_argument("--no-healthy", action="store_true",
                      help="skip the healthy reference runs")
  args = parser.parse_args(argv)
  from absl import logging
  logging.set_verbosity(logging.WARNING)
  rows = run(args.only, args.workdir_root, healthy=not args.no_healthy)
  table = markdown(rows)
  print(table)
  for r in rows:
    print(f"{r['run']:<26} expected {str(r['expected']):<22} "
          f"{'ok' if r['reported'] else 'MISSING'}  also: {', '.join(r['codes'])}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(rows, f, indent=2)
  if args.markdown:
    with open(args.markdown, "w") as f:
      f.write(table + "\n")
  return 0 if all(r["reported"] for r in rows) else 1


if __name__ == "__main__":
  sys.exit(main())
