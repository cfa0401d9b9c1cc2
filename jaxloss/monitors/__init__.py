"""Training-health monitors: on-device statistics and host-side verdicts.

* :mod:`~jaxloss.monitors.stats` — what the jitted step measures (:class:`MonitorSpec`,
  :func:`zero_sums`), accumulated in ``TrainState.train_sums`` between log steps.
* :mod:`~jaxloss.monitors.checks` — the monitors: pure functions of a ``metrics.jsonl``
  stream that return :class:`Finding` s (``code``, ``severity``, ``step``, ``message``,
  ``advice``); :func:`diagnose` runs them all, :class:`Monitor` does it live.
* :mod:`~jaxloss.monitors.report` — progress lines, ``diagnosis.json``, the table that
  ``python -m tools.ops.diagnose WORKDIR`` prints.
"""

from jaxloss.monitors.checks import (
    CODES,
    MONITORS,
    SEVERITIES,
    THRESHOLDS,
    Finding,
    Monitor,
    default_thresholds,
    diagnose,
    resolve_thresholds,
    validate_halt_on,
)
from jaxloss.monitors.report import (
    counts,
    diagnosis_dict,
    format_live,
    format_table,
    write_diagnosis,
)
from jaxloss.monitors.stats import (
    HeadSpec,
    MonitorSpec,
    accumulate,
    nonfinite_count,
    period_summary,
    predicted_class_counts,
    zero_sums,
)

__all__ = [
    "CODES", "MONITORS", "SEVERITIES", "THRESHOLDS", "Finding", "HeadSpec", "Monitor",
    "MonitorSpec", "accumulate", "counts", "default_thresholds", "diagnose",
    "diagnosis_dict", "format_live", "format_table", "nonfinite_count",
    "period_summary", "predicted_class_counts", "resolve_thresholds",
    "validate_halt_on", "write_diagnosis", "zero_sums",
]
