"""Findings out: the live progress line, ``diagnosis.json`` and the printed table."""

from __future__ import annotations

import json
import os
import textwrap
from typing import Iterable, Optional, Sequence

from jaxloss.monitors.checks import SEVERITIES, Finding

_MARK = {"error": "ERROR", "warning": "WARN ", "info": "info "}


def format_live(finding: Finding) -> str:
  """One finding as two progress-output lines: what was seen, then the fix."""
  where = f" [{finding.subject}]" if finding.subject else ""
  text = (f"{_MARK[finding.severity]} {finding.code}{where} @ step {finding.step}: "
          f"{finding.message}\n      -> {finding.advice}")
  if finding.related:
    text += f"\n      symptoms folded in: {related_text(finding)}"
  return text


def related_text(finding: Finding) -> str:
  """``grad_explosion @ 8, loss_oscillating @ 56-568, ...``: the findings folded into
  ``finding`` (see :func:`jaxloss.monitors.checks.reconcile`)."""
  parts = []
  for r in finding.related:
    where = f" [{r['subject']}]" if r.get("subject") else ""
    span = (f"{r['step']}" if r["until"] == r["step"] else f"{r['step']}-{r['until']}")
    parts.append(f"{r['code']}{where} @ {span}")
  return ", ".join(parts)


def counts(findings: Iterable[Finding]) -> dict[str, int]:
  """``{"error": n, "warning": n, "info": n}``."""
  out = {s: 0 for s in SEVERITIES}
  for f in findings:
    out[f.severity] += 1
  return out


def diagnosis_dict(findings: Sequence[Finding], *, thresholds: Optional[dict] = None,
                   halted: Optional[Finding] = None, source: str = "") -> dict:
  """The JSON document written to ``diagnosis.json``.

  Keys: ``findings`` (list of :meth:`Finding.to_dict`), ``counts`` per severity,
  ``healthy`` (no error and no warning), ``halted`` (the finding that stopped the run,
  or None), ``thresholds`` and ``source``.
  """
  c = counts(findings)
  return {
      "source": source,
      "healthy": c["error"] == 0 and c["warning"] == 0,
      "counts": c,
      "halted": halted.to_dict() if halted else None,
      "findings": [f.to_dict() for f in findings],
      "thresholds": thresholds or {},
  }


def write_diagnosis(path: str, findings: Sequence[Finding], **kwargs) -> dict:
  """Writes :func:`diagnosis_dict` to ``path`` atomically (temp file, then rename), so
  a reader never sees half a file. Returns the document."""
  doc = diagnosis_dict(findings, **kwargs)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(doc, f, indent=2)
  os.replace(tmp, path)
  return doc


def format_table(findings: Sequence[Finding], *, width: int = 100) -> str:
  """Findings as a fixed-width table: severity, code, step, subject and message, with
  the advice on an indented line below each row; then the counts."""
  if not findings:
    return "No findings: no monitor fired (healthy)."
  head = f"{'severity':<8} {'code':<22} {'step':>7}  {'subject':<18} message"
  lines = [head, "-" * min(width, max(len(head), 80))]
  indent = " " * 8
  for f in findings:
    row = f"{f.severity:<8} {f.code:<22} {f.step:>7}  {f.subject[:18]:<18} "
    body = textwrap.wrap(f.message, max(width - len(row), 30))
    lines.append(row + (body[0] if body else ""))
    lines += [" " * len(row) + b for b in body[1:]]
    lines += textwrap.wrap("advice: " + f.advice, width, initial_indent=indent,
                           subsequent_indent=indent + "        ")
    if f.related:
      lines += textwrap.wrap("symptoms folded in: " + related_text(f), width,
                             initial_indent=indent, subsequent_indent=indent + "    ")
  c = counts(findings)
  lines.append("-" * min(width, max(len(head), 80)))
  lines.append(f"{c['error']} error, {c['warning']} warning, {c['info']} info"
               + ("  (healthy: no error or warning)"
                  if c["error"] == 0 and c["warning"] == 0 else ""))
  return "\n".join(lines)
