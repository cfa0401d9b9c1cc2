"""The monitors' vocabulary and their reading of a stream: codes, severities, the
default thresholds, :class:`Finding`, and the helpers every check shares (episodes,
windows, stage segments, number formatting). The checks themselves are in
``checks_training``, ``checks_terms`` and ``checks_predictions``; :mod:`.checks` runs them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

SEVERITIES = ("error", "warning", "info")

CODES = ("loss_diverged", "non_finite", "grad_explosion", "grad_vanishing", "clipping_every_step",
         "not_learning", "loss_oscillating", "term_stalled", "term_saturated",
         "prediction_collapse", "class_starved", "initial_loss_off",
         "eval_nondeterministic", "stage_expectation")

# name -> (default, meaning). Windows count log periods (train events).
THRESHOLDS: dict[str, tuple[Any, str]] = {
    "diverge_factor": (10.0, "a train loss above this multiple of the first loss has "
                             "diverged (loss_diverged; the findings it causes become "
                             "its symptoms)"),
    "grad_explosion": (10.0, "pre-clip global gradient norm above this is explosion"),
    "grad_vanishing": (1e-4, "mean global gradient norm below this is vanishing"),
    "grad_vanishing_patience": (2, "consecutive log periods of vanishing gradients"),
    "clipping_share": (0.99, "share of steps clipped that counts as every step"),
    "clipping_patience": (3, "consecutive log periods clipped on every step"),
    "window": (10, "log periods in a window (not_learning, oscillating, stalled)"),
    "flat_rel": (0.02, "relative change over a window below which a loss is flat"),
    "not_learning_level": (0.7, "flat and still above this share of the first loss"),
    "oscillation_flips": (0.6, "share of direction changes between log periods"),
    "oscillation_amplitude": (0.3, "mean |change| per period over the mean loss"),
    "oscillation_min_abs": (0.1, "mean |change| per period, absolute (nats)"),
    "stall_fall_rel": (0.1, "relative fall of another term while one is flat"),
    "weight_step": (0.1, "how much weight the advice moves to a stalled term"),
    "saturated_loss": (0.08, "a term below this early in training has saturated"),
    "saturated_before": (0.25, "'early': this share of the total steps"),
    "saturated_rel": (0.05, "a term of a combined loss must also be below this share "
                            "of its first value (terms have different scales)"),
    "collapse_others_ratio": (0.25, "with the labels' shares known (meta heads' "
                              "label_shares, or an event's label_share/<head>): the top "
                              "class is a collapse when the other classes get less than "
                              "this fraction of their real share of the predictions; for "
                              "a tagger, the same for O against the entity tags"),
    "collapse_share": (0.8, "without the labels' shares: a top predicted class share "
                            "above this is collapse"),
    "collapse_non_o_low": (0.001, "without the labels' shares: a tagger non-O share at "
                                  "or below this is collapse"),
    "collapse_non_o_high": (0.999, "without the labels' shares: a tagger non-O share at "
                                   "or above this is collapse"),
    "collapse_grace": (0.1, "share of the total steps ignored by prediction_collapse"),
    "collapse_patience": (2, "consecutive log periods of collapse"),
    "starved_ratio": (0.1, "class_starved: at the end of training a class gets less than "
                           "this fraction of its real share of the predictions"),
    "starved_min_share": (0.01, "class_starved: only classes at least this share of the "
                                "labels (rarer ones are left to the metrics)"),
    "initial_loss_tolerance": (0.25, "relative distance of the first loss from ln C"),
    "eval_tolerance": (0.0, "largest difference allowed between repeated evaluations"),
    "stage_evals": (3, "evaluations averaged at each end of a stage"),
    "stage_tolerance": (0.01, "change in WAR/UAR (fraction) that counts as a move"),
}

INTENTS = ("up", "down", "not_down", "not_up")

# Fields of config.monitor that are not thresholds.
CONFIG_KEYS = ("halt_on", "enabled", "fail_on_error")


def default_thresholds() -> dict[str, Any]:
  """The default thresholds as a plain dict (put it in the config under ``monitor``)."""
  return {k: v for k, (v, _) in THRESHOLDS.items()}


def resolve_thresholds(overrides: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
  """Defaults updated with ``overrides``; keys that are not thresholds are ignored if
  they are known config fields (``halt_on``, ``enabled``).

  Raises:
    ValueError: an unknown threshold name, or a negative value.
  """
  out = default_thresholds()
  for key, value in dict(overrides or {}).items():
    if key in CONFIG_KEYS:
      continue
    if key not in out:
      raise ValueError(f"unknown monitor threshold {key!r}; known: {sorted(out)}")
    if value is None or float(value) < 0:
      raise ValueError(f"monitor threshold {key} must be >= 0, got {value!r}")
    out[key] = type(out[key])(value)
  return out


def validate_halt_on(codes: Iterable[str]) -> tuple[str, ...]:
  """Checks a ``halt_on`` list.

  Raises:
    ValueError: a code that no monitor emits.
  """
  codes = tuple(codes or ())
  unknown = [c for c in codes if c not in CODES]
  if unknown:
    raise ValueError(f"halt_on has unknown codes {unknown}; known: {list(CODES)}")
  return codes


@dataclasses.dataclass(frozen=True)
class Finding:
  """One diagnosis.

  Attributes:
    code: one of :data:`CODES`.
    severity: ``"error"``, ``"warning"`` or ``"info"``.
    step: the train step at which the condition first held (a log step).
    message: what was seen, with the numbers.
    advice: the concrete change to make.
    subject: the term, head or stage concerned ("" for the whole run).
    until: last step of the episode (same as ``step`` for a one-off).
    related: findings folded into this one because they share its cause (e.g. the
      gradient explosion, oscillation and collapse after a divergence), each as
      ``{"code", "subject", "step", "until", "message"}``; their own advice is dropped
      (see :func:`jaxloss.monitors.checks.reconcile`).
  """
  code: str
  severity: str
  step: int
  message: str
  advice: str
  subject: str = ""
  until: Optional[int] = None
  related: tuple = ()

  @property
  def key(self) -> tuple:
    """Identity of the episode, stable while the run goes on."""
    return (self.code, self.subject, self.step)

  def to_dict(self) -> dict:
    """JSON-ready dict."""
    d = dataclasses.asdict(self)
    if d["until"] is None:
      d["until"] = d["step"]
    d["related"] = [dict(r) for r in self.related]
    return d


# --- Reading the stream ------------------------------------------------------------

@dataclasses.dataclass
class _Run:
  meta: dict
  init: Optional[dict]
  train: list
  th: dict
  evals: dict  # {split: [evaluation events]}, each sorted by step

  @property
  def test(self) -> list:
    return self.evals.get("test", [])

  @property
  def total_steps(self) -> Optional[int]:
    return self.meta.get("total_steps")

  @property
  def last_step(self) -> int:
    steps = [e["step"] for e in self.train + self.test]
    return max(steps) if steps else 0

  @property
  def finished(self) -> bool:
    return self.total_steps is not None and self.last_step >= self.total_steps

  def terms(self) -> list[dict]:
    return list(self.meta.get("terms") or [])

  def lr(self, event: Optional[dict] = None) -> Optional[float]:
    if event is not None and event.get("learning_rate") is not None:
      return float(event["learning_rate"])
    return self.meta.get("learning_rate")

  def field(self, name: str, default: str) -> str:
    return (self.meta.get("config_fields") or {}).get(name, default)

  def selection_after(self, step: int) -> Optional[dict]:
    """How the model-selection metric (the meta event's ``selection``, e.g. Dev
    ``score``) moved after ``step``: None without a selection or without an evaluation
    after ``step``; else ``{"name", "improved", "before", "before_step", "best",
    "best_step"}``, where ``before`` is the best value at or before ``step`` (or the
    first evaluation after it, when none came before) and ``improved`` says whether a
    later evaluation beat it."""
    sel = self.meta.get("selection") or {}
    split, key = sel.get("split"), sel.get("key")
    curve = [(e["step"], float(e[key])) for e in self.evals.get(split, [])
             if e.get(key) is not None] if split and key else []
    before = [c for c in curve if c[0] <= step]
    after = [c for c in curve if c[0] > step]
    if not after:
      return None
    if not before:
      before, after = after[:1], after[1:]
    b_step, b_val = max(before, key=lambda c: (c[1], -c[0]))
    best_step, best = max(after, key=lambda c: (c[1], -c[0])) if after else (b_step, b_val)
    return {"name": f"{split} {key}", "improved": best > b_val, "before": b_val,
            "before_step": b_step, "best": best, "best_step": best_step}


def _split_events(events: Sequence[Mapping], thresholds) -> _Run:
  meta, init, train, evals = {}, None, [], {}
  for e in events:
    split = e.get("split")
    if split == "meta":
      meta = dict(e)
    elif split == "init":
      init = dict(e)
    elif split == "train":
      train.append(dict(e))
    elif split is not None:
      evals.setdefault(split, []).append(dict(e))
  train.sort(key=lambda e: e["step"])
  for evs in evals.values():
    evs.sort(key=lambda e: e["step"])
  th = resolve_thresholds({**(meta.get("thresholds") or {}), **dict(thresholds or {})})
  return _Run(meta, init, train, th, evals)


def _episodes(events: list, predicate: Callable[[dict], bool]) -> list[list[dict]]:
  """Maximal runs of consecutive events satisfying ``predicate``."""
  out, current = [], []
  for e in events:
    if predicate(e):
      current.append(e)
    elif current:
      out.append(current)
      current = []
  if current:
    out.append(current)
  return out


def _stage_segments(events: list) -> list[list[dict]]:
  """Consecutive events of the same stage (a stage change changes what a loss means)."""
  out = []
  for e in events:
    if out and out[-1][-1].get("stage") == e.get("stage"):
      out[-1].append(e)
    else:
      out.append([e])
  return out


def _windows(events: list, size: int):
  """Sliding windows of ``size`` events inside each stage."""
  for segment in _stage_segments(events):
    for i in range(0, len(segment) - size + 1):
      yield segment[i:i + size]


def _window_episodes(events: list, size: int, flagged: Callable[[list], bool]
                     ) -> list[list[list[dict]]]:
  """Runs of consecutive flagged windows (same stage, each one period after the last):
  one episode per run, so a lasting condition is reported once."""
  out, prev_start = [], None
  for segment in _stage_segments(events):
    prev_start = None
    for i in range(0, len(segment) - size + 1):
      w = segment[i:i + size]
      if flagged(w):
        if prev_start is not None and prev_start == i - 1:
          out[-1].append(w)
        else:
          out.append([w])
        prev_start = i
  return out


def _rel_fall(values: Sequence[float]) -> float:
  """(mean of the first third - mean of the last third) / |mean of the first third|."""
  k = max(len(values) // 3, 1)
  first, last = float(np.mean(values[:k])), float(np.mean(values[-k:]))
  return (first - last) / max(abs(first), 1e-12)


def _steps_span(first: int, last: int) -> str:
  """``at step 8`` or ``between steps 8 and 40``."""
  return f"at step {first}" if first == last else f"between steps {first} and {last}"


def _times(ratio: float) -> str:
  """A ratio to a reference as people read it, before "the <reference>": ``62% of``,
  ``3.2x``, ``6.2e+05x``."""
  if ratio < 2:
    return f"{100 * ratio:.0f}% of"
  return f"{ratio:.2g}x" if ratio < 1e4 else f"{ratio:.1e}x"


def _lr(x: float) -> str:
  """A learning rate as written in a config: ``1000``, ``0.002``, ``5e-05``."""
  if 1e-4 <= abs(x) < 1e6:
    return np.format_float_positional(x, precision=3, unique=False, fractional=False,
                                      trim="-")
  return f"{x:.3g}"


def lr_advice(run: "_Run", event: Optional[Mapping], factor: float,
              verb: str = "Lower") -> str:
  """``Lower config.learning_rate from 1000 to 100``: the change to the config's own
  learning rate (the value the user sets), with the schedule's value at ``event``'s
  step in brackets when it differs (a decayed or stage-scaled rate)."""
  name = run.field("learning_rate", "learning_rate")
  base = run.meta.get("learning_rate")
  now = run.lr(event) if event is not None else None
  new = (lambda v: v / factor) if verb == "Lower" else (lambda v: v * factor)
  if base:
    text = f"{verb} {name} from {_lr(base)} to {_lr(new(base))}"
    if now and abs(now - base) > 1e-6 * abs(base):
      text += f" (the schedule was at {_lr(now)} at step {event['step']})"
    return text
  if now:
    return f"{verb} {name} from {_lr(now)} to {_lr(new(now))}"
  return f"{verb} {name} {factor:g}x"


def _num(x, fmt=".3g") -> str:
  return "n/a" if x is None else format(x, fmt)


def _pct(x) -> str:
  return "n/a" if x is None else f"{100 * x:.1f}%"


def _signed_pct(fraction: float) -> str:
  """``+1.5%`` / ``-0.4%``; never ``-0.0%``."""
  value = round(100 * fraction, 1)
  return f"{value + 0.0:+.1f}%"


def _values(events: list, key: str) -> Optional[list[float]]:
  vals = [e.get(key) for e in events]
  if any(v is None or not math.isfinite(v) for v in vals):
    return None
  return [float(v) for v in vals]
