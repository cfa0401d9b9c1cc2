"""Host-side training-health monitors: read a run's metric stream, name the failure and
the fix.

Every monitor is a pure function of the events of a ``metrics.jsonl`` stream (the
``meta`` header, the first-step ``init`` event, one ``train`` event per log period and
one ``test`` event per evaluation) and the thresholds; :func:`diagnose` runs them all.
Because they need nothing but the stream, the same findings come out live during
training (:class:`Monitor`), at the end (``diagnosis.json``) and afterwards from
``python -m tools.ops.diagnose WORKDIR``.

A finding has a ``code``, a ``severity`` (``error``, ``warning``, ``info``), the
``step`` at which it first held, a ``message`` with the numbers and ``advice`` with the
concrete change. Conditions that last (clipping on every step, a stalled term) are
reported once per episode, with the episode's last step in ``until``.

The default thresholds are the rules of thumb practitioners use when they read these
logs by hand: a gradient norm above 10 is explosion; clipping on every batch means the
threshold is too tight; a first loss far from ln C (ln of the number of candidates for a
listwise loss) means a bad initialisation or label encoding; one class taking more than
80 % of the predictions, or a tagger at 0 % / 100 % non-``O``, is collapse; a
classification loss under 0.08 early in training has saturated; when one term of a
combined loss is flat while another falls, raise its weight by 0.1 (0.8/0.2 -> 0.7/0.3).
"""

from __future__ import annotations

import dataclasses

from typing import Callable, Iterable, Mapping, Optional, Sequence

from jaxloss.monitors.checks_predictions import (check_class_starved,
                                                 check_eval_deterministic,
                                                 check_prediction_collapse,
                                                 check_stage_expectations)
from jaxloss.monitors.checks_terms import (check_initial_loss, check_term_saturated,
                                           check_term_stalled)
from jaxloss.monitors.checks_training import (check_clipping, check_diverged,
                                              check_grad_explosion,
                                              check_grad_vanishing, check_non_finite,
                                              check_not_learning, check_oscillating)
from jaxloss.monitors.stream import (CODES, CONFIG_KEYS, INTENTS,  # noqa: F401
                                     SEVERITIES, THRESHOLDS, Finding, _Run,
                                     _split_events, default_thresholds,
                                     resolve_thresholds, validate_halt_on)


MONITORS: tuple[Callable[[_Run], list[Finding]], ...] = (
    check_initial_loss, check_diverged, check_non_finite, check_grad_explosion, check_grad_vanishing,
    check_clipping, check_not_learning, check_oscillating, check_term_stalled,
    check_term_saturated, check_prediction_collapse, check_class_starved,
    check_eval_deterministic,
    check_stage_expectations,
)


def diagnose(events: Sequence[Mapping], thresholds: Optional[Mapping] = None
             ) -> list[Finding]:
  """Runs every monitor over a metric stream.

  Args:
    events: the parsed lines of a ``metrics.jsonl`` (any order).
    thresholds: overrides of the thresholds recorded in the stream's ``meta`` event
      (which override :func:`default_thresholds`).

  Returns:
    Findings sorted by step, then severity.

  Raises:
    ValueError: unknown or negative thresholds.

  Examples:
    >>> events = [{"split": "meta", "step": 0, "total_steps": 100},
    ...           {"split": "train", "step": 10, "loss": 2.3, "grad_norm": 57.0,
    ...            "clipped_share": 0.0, "skipped_steps": 0}]
    >>> [f.code for f in diagnose(events)]
    ['grad_explosion']
  """
  run = _split_events(events, thresholds)
  findings = reconcile([f for monitor in MONITORS for f in monitor(run)], run)
  order = {s: i for i, s in enumerate(SEVERITIES)}
  return sorted(findings, key=lambda f: (f.step, order[f.severity], f.code, f.subject))


# What a diverging loss brings with it: reported inside the loss_diverged finding, not
# beside it with advice of their own (which would contradict it: "raise the LR" from a
# flat loss, "raise max_grad_norm" from clipping on every step).
DIVERGENCE_SYMPTOMS = ("non_finite", "grad_explosion", "grad_vanishing",
                       "clipping_every_step", "not_learning", "loss_oscillating",
                       "term_stalled", "term_saturated", "prediction_collapse",
                       "class_starved", "stage_expectation")


def reconcile(findings: Sequence[Finding], run: Optional[_Run] = None
              ) -> list[Finding]:
  """One incident, one finding: folds the findings a divergence causes into it.

  For each ``loss_diverged`` finding (an episode from its ``step`` to ``until``), every
  finding whose code is in :data:`DIVERGENCE_SYMPTOMS` and whose episode overlaps the
  divergence -- from two log periods before the loss crossed the threshold (the
  gradients explode first) to the step it came back under it (the end of the run if
  it never did) -- is removed from the list and recorded in the divergence's
  ``related`` field with its message; its advice is dropped, so the diagnosis carries
  one advice (lower the learning rate) and none that contradicts it. Findings outside
  the divergence, and those of other codes (``initial_loss_off``,
  ``eval_nondeterministic``), stay as they are.

  Args:
    findings: the monitors' findings, any order.
    run: the stream they came from (for the log steps before a divergence); None
      folds only findings that start at or after it.

  Returns:
    The reconciled findings (input order kept).
  """
  diverged = [f for f in findings if f.code == "loss_diverged"]
  if not diverged:
    return list(findings)
  steps = sorted(e["step"] for e in run.train) if run is not None else []
  windows = []  # (divergence, first step of its window, last step)
  for d in diverged:
    before = [s for s in steps if s < d.step][-2:]
    windows.append((d, before[0] if before else d.step,
                    d.until if d.until is not None else d.step))
  folded: dict[int, list[Finding]] = {id(d): [] for d in diverged}
  absorbed = set()
  for f in findings:
    if f.code not in DIVERGENCE_SYMPTOMS:
      continue
    f_until = f.until if f.until is not None else f.step
    for d, start, end in windows:
      if f.step <= end and f_until >= start:
        folded[id(d)].append(f)
        absorbed.add(id(f))
        break
  out = []
  for f in findings:
    if id(f) in absorbed:
      continue
    if f.code == "loss_diverged" and folded[id(f)]:
      related = tuple({"code": r.code, "subject": r.subject, "step": r.step,
                       "until": r.until if r.until is not None else r.step,
                       "message": r.message} for r in folded[id(f)])
      f = dataclasses.replace(f, related=related)
    out.append(f)
  return out


class Monitor:
  """Live use: feed the stream at each log step, get the findings not seen before.

  Args:
    thresholds: threshold overrides (see :func:`diagnose`).
    halt_on: codes that should stop training (see :meth:`halting`).

  Raises:
    ValueError: unknown thresholds or ``halt_on`` codes.
  """

  def __init__(self, thresholds: Optional[Mapping] = None,
               halt_on: Iterable[str] = ()):
    # Kept as overrides (not expanded to the defaults), so that thresholds recorded in
    # the stream's meta event apply exactly as they do for diagnose().
    self.overrides = {k: v for k, v in dict(thresholds or {}).items()
                      if k not in CONFIG_KEYS}
    self.thresholds = resolve_thresholds(self.overrides)
    self.halt_on = validate_halt_on(halt_on)
    self._seen: set = set()
    self.findings: list[Finding] = []

  def update(self, events: Sequence[Mapping]) -> list[Finding]:
    """Re-diagnoses the whole stream; returns the findings whose episode is new."""
    self.findings = diagnose(events, self.overrides)
    new = [f for f in self.findings if f.key not in self._seen]
    self._seen.update(f.key for f in new)
    return new

  def halting(self, findings: Iterable[Finding]) -> Optional[Finding]:
    """The first of ``findings`` whose code, or the code of a finding folded into it
    (its ``related``), is in ``halt_on``; or None."""
    return next((f for f in findings if f.code in self.halt_on
                 or any(r["code"] in self.halt_on for r in f.related)), None)
