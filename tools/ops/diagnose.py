"""Re-derive a run's training-health findings from its metrics alone.

  python -m tools.ops.diagnose WORKDIR [--json] [--threshold NAME=VALUE ...] [--write]
                                [--selection SPLIT:KEY]

Reads ``WORKDIR/metrics.jsonl`` (never the model or a checkpoint), runs every monitor of
:mod:`jaxloss.monitors` with the thresholds recorded in the stream (overridable here),
and prints the findings as a table (or as the ``diagnosis.json`` document with
``--json``). ``--write`` also rewrites ``WORKDIR/diagnosis.json``. Exits 0 whatever the
findings are; 2 if the workdir has no metrics.

``--selection dev:score`` gives the model-selection metric to a stream whose meta event
has none (runs recorded before 2026-12-05); a stream's own selection is never replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from jaxloss import monitors


def _parse_threshold(text: str) -> tuple[str, float]:
  name, sep, value = text.partition("=")
  if not sep:
    raise argparse.ArgumentTypeError(f"--threshold expects NAME=VALUE, got {text!r}")
  try:
    return name.strip(), float(value)
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"--threshold {name}: value must be a number, got {value!r}") from None


def load_events(workdir: str) -> list[dict]:
  """The parsed lines of ``WORKDIR/metrics.jsonl``.

  Raises:
    FileNotFoundError: no ``metrics.jsonl`` in ``workdir``.
  """
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: WORKDIR must be the --workdir of "
                            "a run of python -m experiments.run")
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _parse_selection(text: str) -> dict:
  split, sep, key = text.partition(":")
  if not (sep and split and key):
    raise argparse.ArgumentTypeError(f"--selection expects SPLIT:KEY (e.g. dev:score), "
                                     f"got {text!r}")
  return {"split": split, "key": key}


def run(workdir: str, thresholds=None, selection=None) -> tuple[list, dict]:
  """Findings and the diagnosis document for ``workdir``; ``selection``
  (``{"split", "key"}``) applies only when the stream's meta event has none."""
  events = load_events(workdir)
  meta = next((e for e in events if e.get("split") == "meta"), {})
  if selection and meta and not meta.get("selection"):
    meta["selection"] = dict(selection)  # the events hold this same dict
  merged = {**(meta.get("thresholds") or {}), **dict(thresholds or {})}
  findings = monitors.diagnose(events, merged)
  doc = monitors.diagnosis_dict(findings, thresholds=monitors.resolve_thresholds(merged),
                                source=os.path.join(workdir, "metrics.jsonl"))
  return findings, doc


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m tools.ops.diagnose",
      description="Training-health findings re-derived from WORKDIR/metrics.jsonl.")
  parser.add_argument("workdir")
  parser.add_argument("--json", action="store_true", help="print diagnosis.json instead")
  parser.add_argument("--write", action="store_true",
                      help="also write WORKDIR/diagnosis.json")
  parser.add_argument("--threshold", action="append", default=[], type=_parse_threshold,
                      metavar="NAME=VALUE", help="override a monitor threshold")
  parser.add_argument("--width", type=int, default=110, help="table width")
  parser.add_argument("--selection", type=_parse_selection, metavar="SPLIT:KEY",
                      help="the model-selection metric, for a stream that does not "
                      "record one (e.g. dev:score)")
  args = parser.parse_args(argv)
  try:
    findings, doc = run(args.workdir, dict(args.threshold), args.selection)
  except FileNotFoundError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.write:
    monitors.write_diagnosis(os.path.join(args.workdir, "diagnosis.json"), findings,
                             thresholds=doc["thresholds"], source=doc["source"])
  if args.json:
    print(json.dumps(doc, indent=2))
  else:
    name = next((e.get("name") for e in load_events(args.workdir)
                 if e.get("split") == "meta"), None) or args.workdir
    print(f"Diagnosis of {name} ({doc['source']})\n")
    print(monitors.format_table(findings, width=args.width))
  return 0


if __name__ == "__main__":
  sys.exit(main())
