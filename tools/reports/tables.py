"""What the results-table tools share: one workdir per row, reuse or resume, output.

``tools.reports.visfd_table``, ``tools.reports.nlu_table`` and ``tools.reports.rerank_table`` each list their
rows as ``(label, variant, config overrides)``; a row trains into
``<root>/<variant>_<k=v ...>_seed=<seed>``, a finished row (its ``summary.json``
exists) is reused if its ``config.json`` trains the row's config, and a partly trained
one resumes from its checkpoints.
"""

from __future__ import annotations

import json
import os
from typing import Callable


def row_dirname(variant: str, overrides: dict, seed: int) -> str:
  """The workdir name of a row: variant, sorted overrides and seed (no commas)."""
  parts = [variant] + [f"{k}={v}" for k, v in sorted(overrides.items())] + [f"seed={seed}"]
  return "_".join(parts).replace(",", "+")


def run_or_reuse(workdir: str, make_config: Callable, train_and_evaluate: Callable
                 ) -> dict:
  """The summary of the run in ``workdir``: read from its ``summary.json`` if it
  exists and the run's ``config.json`` trains what ``make_config()`` trains, else
  ``train_and_evaluate(make_config(), workdir)`` (which resumes, and refuses a
  partly trained run of another config itself).

  A finished run of another config (a default changed since it was made) is never
  tabulated under this row's label: the fields that differ are named. A finished run
  without a ``config.json`` (made elsewhere, copied without it) is reused with a line
  saying it could not be checked.

  Raises:
    ConfigChangedError: (a ValueError) the finished run's config differs in a
      training field (:func:`jaxloss.training.guard.recorded_changes`).
    RuntimeError: the run stopped without a summary (interrupted).
  """
  from jaxloss.training import guard  # pylint: disable=import-outside-toplevel
  path = os.path.join(workdir, "summary.json")
  if os.path.exists(path):
    changes = guard.recorded_changes(workdir, make_config())
    if changes:
      raise guard.ConfigChangedError(
          f"{workdir} holds a finished run of another config; changed: "
          f"{guard.describe(changes)}. Remove it or use another --root.")
    print(f"reusing {path}" if changes is not None else
          f"reusing {path} (no config.json beside it: its config is not checked)")
    with open(path) as f:
      return json.load(f)
  summary = train_and_evaluate(make_config(), workdir)
  if summary is None:
    raise RuntimeError(f"the run in {workdir} stopped before its summary")
  return summary


def configure(get_config: Callable, variant: str, seed: int, *overrides: dict):
  """``get_config(variant)`` with ``seed`` and each overrides dict applied in order."""
  config = get_config(variant)
  config.seed = seed
  for o in overrides:
    for k, v in (o or {}).items():
      config[k] = v
  return config


def write_outputs(out: str, table: str, payload: dict, command: str | None = None
                  ) -> None:
  """Writes ``<out>.md`` (the Markdown table, under ```command``` when given) and
  ``<out>.json`` (``payload``)."""
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  with open(out + ".md", "w") as f:
    f.write((f"`{command}`\n\n" if command else "") + table + "\n")
  with open(out + ".json", "w") as f:
    json.dump(payload, f, indent=2)


def monitors_cell(row: dict) -> str:
  """A table's monitors cell: ``errors/warnings`` of the run's diagnosis, with its
  finding codes in brackets, e.g. ``0/1 (term_saturated)``."""
  d = row["diagnosis"]
  codes = ", ".join(row.get("findings") or ())
  return f"{d['error']}/{d['warning']}" + (f" ({codes})" if codes else "")
