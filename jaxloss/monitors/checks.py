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

from typing import Callable, Iterable, Mapping, Optional, Sequence

from jaxloss.monitors.checks_predictions import (check_eval_deterministic,
                                                 check_prediction_collapse,
                                                 check_stage_expectations)
from jaxloss.monitors.checks_terms import (check_initial_loss, check_term_saturated,
                                           check_term_stalled)
from jaxloss.monitors.checks_training import (check_clipping, check_grad_explosion,
                                              check_grad_vanishing, check_non_finite,
                                              check_not_learning, check_oscillating)
from jaxloss.monitors.stream import (CODES, INTENTS, SEVERITIES, THRESHOLDS,  # noqa: F401
                                     Finding, _Run, _split_events, default_thresholds,
                                     resolve_thresholds, validate_halt_on)


MONITORS: tuple[Callable[[_Run], list[Finding]], ...] = (
    check_initial_loss, check_non_finite, check_grad_explosion, check_grad_vanishing,
    check_clipping, check_not_learning, check_oscillating, check_term_stalled,
    check_term_saturated, check_prediction_collapse, check_eval_deterministic,
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
  findings = [f for monitor in MONITORS for f in monitor(run)]
  order = {s: i for i, s in enumerate(SEVERITIES)}
  return sorted(findings, key=lambda f: (f.step, order[f.severity], f.code, f.subject))


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
                      if k not in ("halt_on", "enabled")}
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
    """The first of ``findings`` whose code is in ``halt_on``, or None."""
    return next((f for f in findings if f.code in self.halt_on), None)
