"""The Test sentences several NLU runs get wrong: ``python -m tools.reports.nlu_errors``.

  python -m tools.reports.nlu_errors WORKDIR [WORKDIR ...] [--field intent]
                                     [--min_runs 2] [--out PREFIX]

Reads each run's ``test_predictions.txt`` (written by the NLU recipe at its last
evaluation: one line a Test sentence, ``field=gold->predicted`` for each sentence-level
field, a tab, then ``token/gold tag/predicted tag``) and, for one label field, counts
each run's errors and how many runs get each sentence wrong: a sentence every seed gets
wrong (m of N) is a label the model cannot learn from this data, or a wrong label, and
an accuracy target above ``1 - m/N`` asks more than another seed can give. Prints the
per-run counts, the number of sentences wrong in exactly k runs for each k, and the
sentences wrong in at least ``--min_runs`` runs (gold label, the runs' predictions,
the words), most-shared first.

Errors (exit status 2, one line): a workdir without ``test_predictions.txt``; a line
that is not in that format (file and line named); runs whose Test sentences or gold
labels differ (not the same data); a field the file does not have.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
from typing import Sequence

from tools.reports import tables


class ErrorsInputError(ValueError):
  """A predictions file that cannot be read or compared."""


def read_predictions(path: str) -> list[dict]:
  """``[{"labels": {field: (gold, predicted)}, "words": [str]}]`` of a
  ``test_predictions.txt``, one entry a line.

  Raises:
    ErrorsInputError: the file is missing, or a line is not
      ``field=gold->pred ...<TAB>token/gold/pred ...`` (path and line number named).
  """
  if not os.path.exists(path):
    raise ErrorsInputError(f"{path}: not found (the recipe writes it at its last "
                           "evaluation)")
  out = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      line = line.rstrip("\n")
      head, sep, cells = line.partition("\t")
      labels = {}
      for item in head.split(" ") if sep else ():
        field, eq, pair = item.partition("=")
        gold, arrow, predicted = pair.partition("->")
        if not (eq and arrow and field):
          break
        labels[field] = (gold, predicted)
      else:
        words = [cell.rsplit("/", 2)[0] for cell in cells.split(" ") if cell]
        if labels:
          out.append({"labels": labels, "words": words})
          continue
      raise ErrorsInputError(f"{path}, line {number}: expected 'field=gold->predicted "
                             f"...<TAB>token/gold/predicted ...', got {line[:60]!r}")
  return out


def shared_errors(workdirs: Sequence[str], field: str = "intent") -> dict:
  """Each run's errors on ``field`` and the sentences several runs get wrong.

  Returns:
    ``{"field", "num_sentences", "runs": [{"workdir", "errors", "accuracy"}],
    "wrong_in": {k: sentences wrong in exactly k runs}, "sentences": [{"index",
    "words", "gold", "predicted": {label: runs}, "runs_wrong"}]}`` (the sentences any
    run gets wrong, most runs first, then by index).

  Raises:
    ErrorsInputError: no workdirs, a file as in :func:`read_predictions`, a field the
      first file does not have, or runs over other sentences or gold labels.
  """
  if not workdirs:
    raise ErrorsInputError("give at least one workdir")
  read = [read_predictions(os.path.join(w, "test_predictions.txt")) for w in workdirs]
  first = read[0]
  if field not in first[0]["labels"]:
    raise ErrorsInputError(f"{workdirs[0]}/test_predictions.txt has no field {field!r}; "
                           f"it has {sorted(first[0]['labels'])}")
  for workdir, table in zip(workdirs[1:], read[1:]):
    if len(table) != len(first) or any(
        a["words"] != b["words"] or a["labels"].get(field, ("",))[0]
        != b["labels"].get(field, ("",))[0] for a, b in zip(first, table)):
      raise ErrorsInputError(f"{workdir}: its Test sentences or gold {field} labels "
                             f"differ from {workdirs[0]}'s (not the same data)")
  runs, wrong = [], collections.defaultdict(list)
  for r, (workdir, table) in enumerate(zip(workdirs, read)):
    errors = 0
    for i, row in enumerate(table):
      gold, predicted = row["labels"][field]
      if gold != predicted:
        errors += 1
        wrong[i].append((r, predicted))
    runs.append({"workdir": workdir, "errors": errors,
                 "accuracy": 1.0 - errors / len(table)})
  counts = collections.Counter(len(v) for v in wrong.values())
  sentences = []
  for i in sorted(wrong, key=lambda i: (-len(wrong[i]), i)):
    predicted = collections.Counter(p for _, p in wrong[i])
    sentences.append({"index": i, "words": " ".join(first[i]["words"]),
                      "gold": first[i]["labels"][field][0],
                      "predicted": dict(predicted.most_common()),
                      "runs_wrong": len(wrong[i])})
  return {"field": field, "num_sentences": len(first), "runs": runs,
          "wrong_in": {k: counts.get(k, 0) for k in range(1, len(workdirs) + 1)},
          "sentences": sentences}


def markdown(result: dict, min_runs: int = 2) -> str:
  """The per-run counts, the ``wrong in k runs`` counts and the shared sentences."""
  n, total = len(result["runs"]), result["num_sentences"]
  lines = ["| run | errors (last evaluation) | accuracy (%) |", "|---|---:|---:|"]
  lines += [f"| `{r['workdir']}` | {r['errors']} | {100 * r['accuracy']:.2f} |"
            for r in result["runs"]]
  every = result["wrong_in"].get(n, 0)
  lines += ["", "| wrong in k of the runs | " + " | ".join(
      str(k) for k in range(1, n + 1)) + " |", "|---|" + "---:|" * n,
            "| sentences | " + " | ".join(str(result["wrong_in"][k])
                                        for k in range(1, n + 1)) + " |", "",
            f"{every} of {total} Test sentences are wrong in every run: with all of "
            f"them wrong and every other sentence right, `{result['field']}` accuracy "
            f"would be {100 * (1 - every / total):.2f} %.", "",
            f"| runs wrong | gold {result['field']} | predicted (runs) | words |",
            "|---:|---|---|---|"]
  for s in result["sentences"]:
    if s["runs_wrong"] >= min_runs:
      predicted = ", ".join(f"{k} ({v})" for k, v in s["predicted"].items())
      lines.append(f"| {s['runs_wrong']} | {s['gold']} | {predicted} | {s['words']} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m tools.reports.nlu_errors",
      description="The Test sentences several NLU runs get wrong on one label field.")
  parser.add_argument("workdirs", nargs="+")
  parser.add_argument("--field", default="intent", help="sentence-level label field")
  parser.add_argument("--min_runs", type=int, default=2,
                      help="list the sentences wrong in at least this many runs")
  parser.add_argument("--out", default=None,
                      help="also write OUT.md (the table) and OUT.json")
  args = parser.parse_args(argv)
  try:
    result = shared_errors(args.workdirs, args.field)
  except ErrorsInputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  table = markdown(result, args.min_runs)
  print(table)
  if args.out:
    given = argv if argv is not None else sys.argv[1:]
    tables.write_outputs(args.out, table, result, command=" ".join(
        ["python -m tools.reports.nlu_errors", *given]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
