"""A run's files: the event stream (``metrics.jsonl``), atomic JSON, the run's facts.

Everything here is written by process 0 only and survives a kill at any moment: JSON
goes through a temporary file and a rename; the event stream drops on resume what the
interrupted run wrote after its last checkpoint (and a line a kill cut short).
"""

from __future__ import annotations

import json
import os
from typing import Any


def write_json(path: str, obj: Any, **kwargs) -> None:
  """Writes ``obj`` as JSON through a temporary file and a rename, so that a kill never
  leaves a half-written file."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, **kwargs)
  os.replace(tmp, path)


def read_json(path: str, default: Any = None) -> Any:
  """The JSON in ``path``, or ``default`` if there is no such file."""
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f)


class MetricsLog:
  """Appends one JSON object per event to ``metrics.jsonl`` and keeps the events in
  memory, so that the monitors re-read the stream at every log step without file I/O.

  On resume, events after the restored step are dropped first: they were written by
  the interrupted run after its last finalized checkpoint and will be written again.
  So is a last line cut short by a kill (no newline). With ``write=False`` (every
  process but the first of a multi-process run) the file is read, never written.
  """

  def __init__(self, path: str, resume_step: int, *, write: bool = True):
    self.path = path
    self.writes = write
    self.events: list[dict] = []
    if os.path.exists(path):
      with open(path) as f:
        lines = [line for line in f if line.strip() and line.endswith("\n")]
      kept = [line for line in lines if json.loads(line)["step"] <= resume_step]
      self.events = [json.loads(line) for line in kept]
      if write:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
          f.writelines(kept)
        os.replace(tmp, path)

  def write(self, event: dict) -> None:
    line = json.dumps(event)
    if self.writes:
      with open(self.path, "a") as f:
        f.write(line + "\n")
    self.events.append(json.loads(line))  # as a reader of the file would see it

  def read(self) -> list[dict]:
    """All events of the run so far (a copy of the list)."""
    return list(self.events)

  def has(self, split: str) -> bool:
    return any(e["split"] == split for e in self.events)


class RunFacts:
  """The facts of a whole run across its restarts (``facts.json``): wall time and train
  step compilations summed over every segment up to the last checkpoint, so that a
  resumed or no-op re-run reports the run's own totals, not the last segment's.

  A segment's facts are added at each checkpoint; a segment killed after its last
  checkpoint loses only what it did after it (and that work is redone, and counted, by
  the next segment).
  """

  def __init__(self, path: str, restored_step: int | None, *, write: bool = True):
    self.path = path
    self.writes = write
    saved = read_json(path, {}) if restored_step is not None else {}
    by_step = {int(k): v for k, v in saved.get("by_step", {}).items()}
    prior = by_step.get(restored_step) if restored_step is not None else None
    if prior is None and by_step and restored_step is not None:
      # The checkpoint outlived its facts (kill between the two writes): the newest
      # facts at or before it.
      earlier = [s for s in by_step if s <= restored_step]
      prior = by_step[max(earlier)] if earlier else None
    self.prior = prior or {"wall_s": 0.0, "train_step_compilations": 0, "segments": 0}
    self.by_step = {s: v for s, v in by_step.items()
                    if restored_step is not None and s <= restored_step}

  def totals(self, wall_s: float, compilations: int) -> dict:
    """The run's totals with this segment's ``wall_s`` and ``compilations`` added."""
    return {"wall_s": round(self.prior["wall_s"] + wall_s, 2),
            "train_step_compilations": self.prior["train_step_compilations"] + compilations,
            "segments": self.prior["segments"] + 1}

  def record(self, step: int, wall_s: float, compilations: int) -> dict:
    """Records the totals at checkpoint ``step`` and returns them."""
    totals = self.totals(wall_s, compilations)
    self.by_step[int(step)] = totals
    if self.writes:
      write_json(self.path, {"by_step": {str(s): v for s, v in sorted(self.by_step.items())}},
                 indent=1)
    return totals
