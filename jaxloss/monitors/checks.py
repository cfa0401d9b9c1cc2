"""Host-side training-health monitors: read a run's metric stream, name the failure and
the fix.

Every monitor is a pure function of the events of a ``metrics.jsonl`` stream (the
``meta`` header, the first-step ``init`` event, one ``train`` event per log period and
one ``test`` event per evaluation) and the thresholds; :func:`diagnose` runs them all.
Because they need nothing but the stream, the same findings come out live during
training (:class:`Monitor`), at the end (``diagnosis.json``) and afterwards from
``python -m tools.diagnose WORKDIR``.

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
import math
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

SEVERITIES = ("error", "warning", "info")

CODES = ("non_finite", "grad_explosion", "grad_vanishing", "clipping_every_step",
         "not_learning", "loss_oscillating", "term_stalled", "term_saturated",
         "prediction_collapse", "initial_loss_off", "eval_nondeterministic",
         "stage_expectation")

# name -> (default, meaning). Windows count log periods (train events).
THRESHOLDS: dict[str, tuple[Any, str]] = {
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
    "collapse_share": (0.8, "top predicted class share above this is collapse"),
    "collapse_non_o_low": (0.001, "tagger non-O share at or below this is collapse"),
    "collapse_non_o_high": (0.999, "tagger non-O share at or above this is collapse"),
    "collapse_grace": (0.1, "share of the total steps ignored by prediction_collapse"),
    "collapse_patience": (2, "consecutive log periods of collapse"),
    "initial_loss_tolerance": (0.25, "relative distance of the first loss from ln C"),
    "eval_tolerance": (0.0, "largest difference allowed between repeated evaluations"),
    "stage_evals": (3, "evaluations averaged at each end of a stage"),
    "stage_tolerance": (0.01, "change in WAR/UAR (fraction) that counts as a move"),
}

INTENTS = ("up", "down", "not_down", "not_up")


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
    if key in ("halt_on", "enabled"):
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
  """
  code: str
  severity: str
  step: int
  message: str
  advice: str
  subject: str = ""
  until: Optional[int] = None

  @property
  def key(self) -> tuple:
    """Identity of the episode, stable while the run goes on."""
    return (self.code, self.subject, self.step)

  def to_dict(self) -> dict:
    """JSON-ready dict."""
    d = dataclasses.asdict(self)
    if d["until"] is None:
      d["until"] = d["step"]
    return d


# --- Reading the stream ------------------------------------------------------------

@dataclasses.dataclass
class _Run:
  meta: dict
  init: Optional[dict]
  train: list
  test: list
  th: dict

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


def _split_events(events: Sequence[Mapping], thresholds) -> _Run:
  meta, init, train, test = {}, None, [], []
  for e in events:
    split = e.get("split")
    if split == "meta":
      meta = dict(e)
    elif split == "init":
      init = dict(e)
    elif split == "train":
      train.append(dict(e))
    elif split == "test":
      test.append(dict(e))
  train.sort(key=lambda e: e["step"])
  test.sort(key=lambda e: e["step"])
  th = resolve_thresholds({**(meta.get("thresholds") or {}), **dict(thresholds or {})})
  return _Run(meta, init, train, test, th)


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


# --- The monitors ------------------------------------------------------------------

def check_non_finite(run: _Run) -> list[Finding]:
  """``non_finite`` (error): a log period with skipped (NaN/inf) steps or non-finite
  gradient elements."""
  out = []
  bad = lambda e: e.get("skipped_steps", 0) > 0 or (e.get("nonfinite_grads") or 0) > 0
  for ep in _episodes(run.train, bad):
    first = ep[0]
    skipped = sum(e.get("skipped_steps", 0) for e in ep)
    steps = sum(e.get("period_steps") or 0 for e in ep)
    elements = sum(e.get("nonfinite_grads") or 0 for e in ep)
    prior = [e for e in run.train if e["step"] < first["step"]]
    prior_norm = max((e.get("grad_norm_max") or e.get("grad_norm") or 0 for e in prior),
                     default=None)
    lr = run.lr(first)
    msg = (f"{skipped} of {steps or '?'} steps between step {ep[0]['step']} and "
           f"{ep[-1]['step']} had a non-finite loss or gradient and were skipped "
           f"(params kept)")
    if elements:
      msg += f"; {elements:,} non-finite gradient elements"
    if prior_norm is not None:
      msg += f"; the largest gradient norm before was {prior_norm:.3g}"
    lr_text = f"from {lr:.3g} to {lr / 10:.3g}" if lr else "10x"
    if prior_norm is not None and prior_norm > run.th["grad_explosion"]:
      advice = (f"The gradients exploded first: lower {run.field('learning_rate', 'learning_rate')} "
                f"{lr_text} and clip (max_grad_norm=1.0). If masks are involved, fill "
                "them with a finite value: jaxloss.losses.mask_invalid_logits (-1e9).")
    else:
      advice = ("Replace -inf in masked logits with a finite large negative "
                "(jaxloss.losses.mask_invalid_logits, -1e9; large_negative(float16) for "
                f"f16) and make every row keep one valid class; if no mask is involved, "
                f"lower {run.field('learning_rate', 'learning_rate')} {lr_text} and "
                "clip gradients (max_grad_norm=1.0).")
    out.append(Finding("non_finite", "error", first["step"], msg, advice,
                       until=ep[-1]["step"]))
  return out


def check_grad_explosion(run: _Run) -> list[Finding]:
  """``grad_explosion`` (warning): pre-clip gradient norm above ``grad_explosion``."""
  th = run.th["grad_explosion"]
  key = lambda e: e.get("grad_norm_max", e.get("grad_norm"))
  out = []
  for ep in _episodes(run.train, lambda e: (key(e) or 0) > th):
    peak = max(key(e) for e in ep)
    lr = run.lr(ep[0])
    clip = run.meta.get("max_grad_norm")
    msg = (f"pre-clip global gradient norm reached {peak:.3g} between steps "
           f"{ep[0]['step']} and {ep[-1]['step']} (threshold {th:g}; period mean "
           f"{_num(ep[0].get('grad_norm'))})")
    advice = f"Lower {run.field('learning_rate', 'learning_rate')}"
    advice += f" from {lr:.3g} to {lr / 10:.3g}" if lr else " by 10x"
    advice += (" and clip with max_grad_norm=1.0" if not clip else
               f"; clipping at {clip:g} bounds the step but not the cause")
    advice += " (a warm-up of a few epochs also helps)."
    out.append(Finding("grad_explosion", "warning", ep[0]["step"], msg, advice,
                       until=ep[-1]["step"]))
  return out


def check_grad_vanishing(run: _Run) -> list[Finding]:
  """``grad_vanishing`` (warning): mean gradient norm below ``grad_vanishing`` for
  ``grad_vanishing_patience`` periods."""
  th = run.th["grad_vanishing"]
  out = []
  for ep in _episodes(run.train, lambda e: e.get("grad_norm") is not None
                      and e["grad_norm"] < th):
    if len(ep) < run.th["grad_vanishing_patience"]:
      continue
    lo = min(e["grad_norm"] for e in ep)
    msg = (f"mean global gradient norm {lo:.2e} (below {th:g}) for {len(ep)} log "
           f"periods, steps {ep[0]['step']}-{ep[-1]['step']}; loss "
           f"{_num(ep[0].get('loss'))} -> {_num(ep[-1].get('loss'))}")
    advice = ("The loss gives no gradient: check the loss weights (a weight of 0 or a "
              "stop_gradient), lower the focal gamma (gamma > 5 flattens the loss for "
              "every example with p > 0.5), remove saturating activations before the "
              f"logits, and raise {run.field('learning_rate', 'learning_rate')} if the "
              "loss is still high.")
    out.append(Finding("grad_vanishing", "warning", ep[0]["step"], msg, advice,
                       until=ep[-1]["step"]))
  return out


def check_clipping(run: _Run) -> list[Finding]:
  """``clipping_every_step`` (warning): clipped share >= ``clipping_share`` for
  ``clipping_patience`` consecutive periods."""
  share = run.th["clipping_share"]
  out = []
  for ep in _episodes(run.train, lambda e: e.get("clipped_share", 0) >= share):
    if len(ep) < run.th["clipping_patience"]:
      continue
    norms = [e["grad_norm"] for e in ep if e.get("grad_norm") is not None]
    median = float(np.median(norms)) if norms else None
    clip = run.meta.get("max_grad_norm")
    msg = (f"gradients clipped on {_pct(min(e['clipped_share'] for e in ep))}+ of steps "
           f"for {len(ep)} log periods (steps {ep[0]['step']}-{ep[-1]['step']}); median "
           f"pre-clip norm {_num(median)} vs max_grad_norm {_num(clip)}")
    target = f"{1.5 * median:.2g}" if median else "the typical gradient norm"
    advice = (f"Clipping is rescaling every update, so it acts as a hidden LR cut: raise "
              f"max_grad_norm from {_num(clip)} to about {target} (1.5x the median norm) "
              "so that it only trims spikes, or lower the learning rate instead.")
    out.append(Finding("clipping_every_step", "warning", ep[0]["step"], msg, advice,
                       until=ep[-1]["step"]))
  return out


def _first_loss(run: _Run) -> Optional[float]:
  if run.init is not None and run.init.get("loss") is not None:
    return float(run.init["loss"])
  for e in run.train:
    if e.get("loss") is not None:
      return float(e["loss"])
  return None


def check_not_learning(run: _Run) -> list[Finding]:
  """``not_learning`` (warning): the loss flat (relative change below ``flat_rel``)
  over a window inside one stage while still above ``not_learning_level`` times the
  first loss. For a combined loss every term must also be above that share of its own
  first value: a term with a high floor (SupCon cannot go below the log of the number
  of in-batch positives) keeps the total high while the classifier learns."""
  first = _first_loss(run)
  if first is None:
    return []
  size, flat = int(run.th["window"]), run.th["flat_rel"]
  level = run.th["not_learning_level"]
  term_firsts = {}
  if len(run.terms()) > 1 and run.init is not None:
    for t in run.terms():
      v = run.init.get(f"term/{t['name']}")
      if v is not None and v > 0:
        term_firsts[t["name"]] = float(v)

  def flagged(w):
    vals = _values(w, "loss")
    if not (vals is not None and abs(_rel_fall(vals)) < flat
            and float(np.mean(vals)) >= level * first):
      return False
    for name, v0 in term_firsts.items():
      term = _values(w, f"term/{name}")
      if term is not None and float(np.mean(term)) < level * v0:
        return False
    return True

  out = []
  for episode in _window_episodes(run.train, size, flagged):
    w, last = episode[0], episode[-1]
    stage = w[0].get("stage", "")
    span = [e for e in run.train if w[0]["step"] <= e["step"] <= last[-1]["step"]]
    vals = [e["loss"] for e in span]
    level = float(np.mean(vals))
    msg = (f"train loss flat over steps {w[0]['step']}-{last[-1]['step']}: "
           f"{vals[0]:.4g} -> {vals[-1]:.4g} ({_signed_pct(-_rel_fall(vals))}), still "
           f"{100 * level / first:.0f}% of the first loss {first:.4g}")
    tests = [e for e in run.test if w[0]["step"] <= e["step"] <= last[-1]["step"]
             and e.get("uar") is not None]
    num_classes = run.meta.get("num_classes")
    if tests:
      uar = float(np.mean([e["uar"] for e in tests]))
      msg += f"; test UAR {uar:.3f}"
      if num_classes:
        msg += f" (chance {1 / num_classes:.3f})"
    lr = run.meta.get("learning_rate") or run.lr(last[-1])
    advice = ("The model is not fitting the labels. Check that labels line up with "
              "the inputs (a shuffled or misaligned label column gives exactly this), "
              "that the loss sees the right logits, then raise "
              f"{run.field('learning_rate', 'learning_rate')}"
              + (f" from {lr:.3g} to {3 * lr:.3g}." if lr else " 3x."))
    out.append(Finding("not_learning", "warning", w[0]["step"], msg, advice,
                       subject=stage, until=last[-1]["step"]))
  return out


def _oscillation(run: _Run, w: list) -> Optional[tuple[float, float, float]]:
  vals = _values(w, "loss")
  if vals is None or len(vals) < 3:
    return None
  d = np.diff(vals)
  flips = float(np.mean(np.sign(d[1:]) != np.sign(d[:-1])))
  jump = float(np.mean(np.abs(d)))
  level = float(np.mean(vals))
  if (flips >= run.th["oscillation_flips"] and jump >= run.th["oscillation_min_abs"]
      and jump >= run.th["oscillation_amplitude"] * level):
    return flips, jump, level
  return None


def check_oscillating(run: _Run) -> list[Finding]:
  """``loss_oscillating`` (warning): over a window inside one stage, the loss changes
  direction in at least ``oscillation_flips`` of the periods with a mean jump of at
  least ``oscillation_amplitude`` of its level (and ``oscillation_min_abs`` nats)."""
  size = int(run.th["window"])
  out = []
  for episode in _window_episodes(run.train, size,
                                  lambda w: _oscillation(run, w) is not None):
    w, last = episode[0], episode[-1]
    flips, jump, level = _oscillation(run, w)
    span = [e["loss"] for e in run.train
            if w[0]["step"] <= e["step"] <= last[-1]["step"]]
    lr = run.lr(last[-1])
    msg = (f"train loss oscillates over steps {w[0]['step']}-{last[-1]['step']}: "
           f"{100 * flips:.0f}% direction changes, mean jump {jump:.3g} on a level of "
           f"{level:.3g} (range {min(span):.3g}-{max(span):.3g})")
    advice = (f"Lower {run.field('learning_rate', 'learning_rate')}"
              + (f" from {lr:.3g} to {lr / 3:.3g}" if lr else " 3x")
              + ", or decay it sooner; a larger batch also smooths the updates.")
    out.append(Finding("loss_oscillating", "warning", w[0]["step"], msg, advice,
                       until=last[-1]["step"]))
  return out


def _weight_advice(run: _Run, stalled: dict, falling: dict) -> str:
  step = run.th["weight_step"]
  ws, wf = float(stalled.get("weight", 0.0)), float(falling.get("weight", 0.0))
  fs = stalled.get("weight_field") or f"{stalled['name']}_weight"
  ff = falling.get("weight_field") or f"{falling['name']}_weight"
  new_s = round(ws + step, 6)
  if abs(ws + wf - 1.0) < 1e-6 and wf - step > 0:
    change = (f"raise {fs} from {ws:g} to {new_s:g} and lower {ff} from {wf:g} to "
              f"{round(wf - step, 6):g} ({wf:g}/{ws:g} -> {round(wf - step, 6):g}/"
              f"{new_s:g})")
  else:
    change = f"raise {fs} from {ws:g} to {new_s:g}"
  why = (" It has weight 0, so it gets no gradient at all." if ws == 0 else "")
  return f"{change[0].upper()}{change[1:]}.{why}"


def _term_scale(run: _Run, name: str) -> Optional[float]:
  """A term's first-step value (its scale), from the init event or the first period."""
  if run.init is not None and run.init.get(f"term/{name}") is not None:
    return abs(float(run.init[f"term/{name}"]))
  for e in run.train:
    if e.get(f"term/{name}") is not None:
      return abs(float(e[f"term/{name}"]))
  return None


def check_term_stalled(run: _Run) -> list[Finding]:
  """``term_stalled`` (warning): one term of a combined loss flat while another falls
  over a window inside one stage. Changes are measured against each term's first-step
  value, so a term resting at its floor beside a term creeping towards 0 is not a stall:
  flat is a change below ``flat_rel`` of the first value, falling is a fall of at least
  ``stall_fall_rel`` of it."""
  terms = run.terms()
  if len(terms) < 2:
    return []
  size = int(run.th["window"])
  scales = {t["name"]: _term_scale(run, t["name"]) for t in terms}
  out, reported = [], {}
  for w in _windows(run.train, size):
    falls = {}
    for t in terms:
      vals = _values(w, f"term/{t['name']}")
      scale = scales[t["name"]]
      if vals is not None and scale:
        k = max(len(vals) // 3, 1)
        falls[t["name"]] = ((np.mean(vals[:k]) - np.mean(vals[-k:])) / scale, vals)
    for t in terms:
      name = t["name"]
      if name not in falls or abs(falls[name][0]) >= run.th["flat_rel"]:
        continue
      others = [(falls[o["name"]][0], o) for o in terms
                if o["name"] != name and o["name"] in falls
                and falls[o["name"]][0] >= run.th["stall_fall_rel"]]
      if not others:
        continue
      prev = reported.get(name)
      if prev is not None and prev.until >= w[0]["step"]:
        # The same stall goes on: extend the episode.
        reported[name] = dataclasses.replace(prev, until=w[-1]["step"])
        out[out.index(prev)] = reported[name]
        continue
      fall, other = max(others, key=lambda x: x[0])
      v, ov = falls[name][1], falls[other["name"]][1]
      msg = (f"{name} term flat over steps {w[0]['step']}-{w[-1]['step']} "
             f"({v[0]:.4g} -> {v[-1]:.4g}, {_signed_pct(-falls[name][0])} of its first "
             f"value {scales[name]:.4g}) while {other['name']} fell "
             f"{100 * fall:.0f}% of its first value ({ov[0]:.4g} -> {ov[-1]:.4g}); "
             f"weights {name} {t.get('weight', 'n/a')}, {other['name']} "
             f"{other.get('weight', 'n/a')}")
      finding = Finding("term_stalled", "warning", w[0]["step"], msg,
                        _weight_advice(run, t, other), subject=name,
                        until=w[-1]["step"])
      reported[name] = finding
      out.append(finding)
  return out


def check_term_saturated(run: _Run) -> list[Finding]:
  """``term_saturated`` (warning): a term (the loss itself for a single loss) below
  ``saturated_loss`` before ``saturated_before`` of the total steps. A term of a
  combined loss must also be below ``saturated_rel`` of its first value: a term scaled
  down by construction (a focal term with α = 0.25 and O weighted 0.1) is small from the
  start without being saturated."""
  total = run.total_steps
  if not total:
    return []
  limit = run.th["saturated_before"] * total
  terms = run.terms()
  keys = ([(f"term/{t['name']}", t) for t in terms] if len(terms) > 1
          else [("loss", None)])
  out = []
  for key, term in keys:
    scale = _term_scale(run, term["name"]) if term else None
    for e in run.train:
      if e["step"] > limit:
        break
      v = e.get(key)
      if (v is not None and v < run.th["saturated_loss"]
          and (not scale or v < run.th["saturated_rel"] * scale)):
        name = term["name"] if term else "loss"
        msg = (f"{name} {v:.4g} at step {e['step']} ({100 * e['step'] / total:.0f}% of "
               f"training), below {run.th['saturated_loss']:g}")
        if term:
          others = [f"{t['name']} {e.get('term/' + t['name']):.4g}" for t in terms
                    if t is not term and e.get("term/" + t["name"]) is not None]
          if others:
            msg += "; " + ", ".join(others)
          w = float(term.get("weight", 0))
          field = term.get("weight_field") or f"{name}_weight"
          advice = (f"The {name} head has saturated and no longer shapes the encoder: "
                    f"lower {field} from {w:g} to {max(w - run.th['weight_step'], 0):g} "
                    "(moving the weight to the other terms), or regularise it: label "
                    "smoothing 0.1, stronger augmentation, dropout.")
        else:
          advice = ("The model fits the training set this early, so it is memorising: "
                    "add regularisation (label smoothing 0.1, stronger augmentation, "
                    "weight decay, dropout), or train for fewer epochs; if the loss is ~0 "
                    "check for labels leaking into the inputs.")
        out.append(Finding("term_saturated", "warning", e["step"], msg, advice,
                           subject=name))
        break
  return out


def check_prediction_collapse(run: _Run) -> list[Finding]:
  """``prediction_collapse`` (error): after ``collapse_grace`` of training, one class
  above ``collapse_share`` of a head's predictions (train batches, or test), or a
  tagger's non-O share at ``collapse_non_o_low`` / ``collapse_non_o_high``, for
  ``collapse_patience`` consecutive log periods."""
  total = run.total_steps or 0
  start = run.th["collapse_grace"] * total
  patience = int(run.th["collapse_patience"])
  out = []
  heads = run.meta.get("heads") or {}
  sources = [(name, "train", run.train, f"top_share/{name}", f"top_class/{name}")
             for name in heads]
  sources += [(name, "test", run.test, f"top_share/{name}", f"top_class/{name}")
              for name in heads]
  for name, split, events, share_key, class_key in sources:
    late = [e for e in events if e["step"] > start]
    for ep in _episodes(late, lambda e: (e.get(share_key) or 0) > run.th["collapse_share"]):
      if len(ep) < patience:
        continue
      top = ep[0].get(class_key)
      names = (run.meta.get("class_names") or {}).get(name)
      label = names[top] if names and top is not None and top < len(names) else top
      msg = (f"head {name} ({split}): class {label} is {_pct(ep[0][share_key])} of the "
             f"predictions over steps {ep[0]['step']}-{ep[-1]['step']} (threshold "
             f"{_pct(run.th['collapse_share'])})")
      knob_text = ""
      e0 = ep[0]
      if e0.get("class_weight_cap") is not None or e0.get("tau") is not None:
        knob_text = (f" The curriculum had class_weight_cap {_num(e0.get('class_weight_cap'))}"
                     f", tau {_num(e0.get('tau'))}, sampler_mix "
                     f"{_num(e0.get('sampler_mix'))}: lower tau or the cap if the "
                     "collapsed class is a tail class.")
      advice = ("The model predicts one class for almost everything: lower the "
                "learning rate and weight decay, check that the class weights / logit "
                "adjustment are not pushing every example to one class, and that labels "
                f"vary in the batch.{knob_text}")
      out.append(Finding("prediction_collapse", "error", ep[0]["step"], msg, advice,
                         subject=f"{name}/{split}", until=ep[-1]["step"]))
  for name, head in heads.items():
    if head.get("o_index") is None:
      continue
    key = f"non_o_share/{name}"
    late = [e for e in run.train if e["step"] > start and e.get(key) is not None]
    for low in (True, False):
      pred = ((lambda e: e[key] <= run.th["collapse_non_o_low"]) if low else
              (lambda e: e[key] >= run.th["collapse_non_o_high"]))
      for ep in _episodes(late, pred):
        if len(ep) < patience:
          continue
        if low:
          msg = (f"tagger {name}: {_pct(ep[0][key])} of tokens predicted non-O over "
                 f"steps {ep[0]['step']}-{ep[-1]['step']} (every token O)")
          advice = ("Down-weight O in the tagger loss (class weight 0.1, entity tags up "
                    "to 5), use focal loss (gamma=2) on the tagger, raise the tagger's "
                    "loss weight, and mask invalid tags with -1e9, not -inf.")
        else:
          msg = (f"tagger {name}: {_pct(ep[0][key])} of tokens predicted non-O over "
                 f"steps {ep[0]['step']}-{ep[-1]['step']} (no token O)")
          advice = ("O is never predicted: its class weight is too low or a mask removes "
                    "it; keep O's weight near 0.1-1 and check the tag masks.")
        out.append(Finding("prediction_collapse", "error", ep[0]["step"], msg, advice,
                           subject=f"{name}/non_o", until=ep[-1]["step"]))
  return out


def check_initial_loss(run: _Run) -> list[Finding]:
  """``initial_loss_off`` (warning): the first step's loss (each term with a reference,
  e.g. ln C, ln num_candidates) more than ``initial_loss_tolerance`` (relative) away."""
  if run.init is None:
    return []
  tol = run.th["initial_loss_tolerance"]
  terms = run.terms()
  checks = [(f"term/{t['name']}", t["name"], t.get("initial_reference"),
             t.get("initial_reference_text")) for t in terms if len(terms) > 1]
  if len(terms) <= 1:
    ref = run.meta.get("initial_reference")
    if ref is None and terms:
      ref = terms[0].get("initial_reference")
    text = run.meta.get("initial_reference_text") or (
        terms[0].get("initial_reference_text") if terms else None)
    checks = [("loss", "loss", ref, text)]
  out = []
  for key, name, ref, text in checks:
    v = run.init.get(key)
    if ref is None or v is None:
      continue
    if abs(v - ref) > tol * ref:
      high = v > ref
      msg = (f"first-step {name} {v:.4g}, expected about {text or f'{ref:.4g}'} = "
             f"{ref:.4g} for an untrained model ({100 * (v - ref) / ref:+.0f}%, "
             f"tolerance {100 * tol:.0f}%)")
      if high:
        advice = ("The untrained model is confidently wrong: initialise the output "
                  "layer small (zero bias, kernel std <= 0.01) or scale the logits down, "
                  "and check num_classes / the label encoding. A listwise loss over K "
                  "candidates must start near ln K.")
      else:
        advice = ("The first loss is lower than chance allows: check for labels leaking "
                  "into the inputs, a loss averaged over padding, or a wrong number of "
                  "classes.")
      out.append(Finding("initial_loss_off", "warning", int(run.init["step"]), msg,
                         advice, subject=name))
  return out


def check_eval_deterministic(run: _Run) -> list[Finding]:
  """``eval_nondeterministic`` (error): evaluating the same parameters twice gave
  results differing by more than ``eval_tolerance``."""
  out = []
  for e in run.test:
    diff = e.get("eval_repeat_max_diff")
    if diff is None or diff <= run.th["eval_tolerance"]:
      continue
    msg = (f"evaluating the same parameters twice at step {e['step']} gave different "
           f"outputs (max |difference| {diff:.4g})")
    advice = ("Evaluate in inference mode: train=False (dropout off, batch-norm running "
              "averages), no RNG or a fixed key, and an unshuffled, padded test set; "
              "compare runs only once two evaluations agree.")
    out.append(Finding("eval_nondeterministic", "error", e["step"], msg, advice))
  return out


def check_stage_expectations(run: _Run) -> list[Finding]:
  """``stage_expectation``: for each finished curriculum stage with intents, whether
  test WAR/UAR moved as intended (info), did not move beyond the evaluation noise
  (info), or moved against the intent (warning). The mean of the last ``stage_evals``
  evaluations of the stage is compared with that of the previous stage (for the first
  stage, with its first evaluation); a move counts beyond ``max(stage_tolerance, 2 ·
  standard error of the difference)``."""
  stages = run.meta.get("stages") or []
  if not stages or not run.test:
    return []
  k = int(run.th["stage_evals"])
  tol = run.th["stage_tolerance"]
  out, prev_tail, prev_spread = [], None, None
  for i, stage in enumerate(stages):
    evs = [e for e in run.test if e.get("stage") == stage["name"]]
    finished = (i + 1 < len(stages) and any(
        e["step"] > stages[i + 1]["start_step"] for e in run.test)) or (
            i + 1 == len(stages) and run.finished)
    if not evs:
      continue
    tail = evs[-k:]
    # The spread comes from the stage's second half (at least k evaluations): three
    # values alone can agree by chance and understate the noise.
    spread = evs[-max(k, len(evs) // 2):]
    before = prev_tail if prev_tail is not None else evs[:1]
    before_spread = prev_spread if prev_tail is not None else evs[:1]
    prev_tail, prev_spread = tail, spread
    if not finished or not stage.get("expect"):
      continue
    for metric, intent in stage["expect"].items():
      b_vals = [e[metric] for e in before]
      a_vals = [e[metric] for e in tail]
      b, a = float(np.mean(b_vals)), float(np.mean(a_vals))
      delta = a - b
      # Evaluation noise: two standard errors of the difference of the two means
      # (each evaluation's variance from the spread over the stage's second half), at
      # least the configured tolerance. Only a move beyond it counts.
      b_var = _var([e[metric] for e in before_spread])
      a_var = _var([e[metric] for e in spread])
      se = math.sqrt(b_var / len(b_vals) + a_var / len(a_vals))
      noise = max(tol, 2 * se)
      moved_up, moved_down = delta >= noise, delta <= -noise
      verdict = {"up": (moved_up, moved_down), "down": (moved_down, moved_up),
                 "not_down": (not moved_down, moved_down),
                 "not_up": (not moved_up, moved_up)}[intent]
      ok, against = verdict
      verb = {"up": "rise", "down": "fall", "not_down": "not fall",
              "not_up": "not rise"}[intent]
      msg = (f"stage {stage['name']}: test {metric.upper()} {100 * b:.1f} -> "
             f"{100 * a:.1f} ({100 * delta:+.1f} points, noise +/-{100 * noise:.1f}; "
             f"intended to {verb})")
      if ok:
        out.append(Finding("stage_expectation", "info", tail[-1]["step"], msg + ": as "
                           "intended", "None needed.", subject=f"{stage['name']}/{metric}"))
      elif not against:
        out.append(Finding(
            "stage_expectation", "info", tail[-1]["step"],
            msg + ": no move beyond the evaluation noise",
            "The stage neither helped nor hurt measurably; lengthen it or strengthen "
            "its knobs if it matters.", subject=f"{stage['name']}/{metric}"))
      else:
        advice = (f"The stage did not do what it is for. Its knobs were "
                  f"{_knob_text(stage)}; "
                  + ("make it stronger (a higher class-weight cap or tau, a longer stage) "
                     "or check that its knobs reach the loss."
                     if intent in ("up", "not_down") and metric == "uar" else
                     "soften it (a lower cap or tau) or lengthen the warm-up / cooldown."))
        out.append(Finding("stage_expectation", "warning", tail[-1]["step"], msg,
                           advice, subject=f"{stage['name']}/{metric}"))
  return out


def _var(values: Sequence[float]) -> float:
  """Sample variance (ddof=1); 0 for fewer than two values."""
  return float(np.var(values, ddof=1)) if len(values) > 1 else 0.0


def _knob_text(stage: Mapping) -> str:
  knobs = stage.get("knobs") or {}
  return ", ".join(f"{k} {v:.3g}" for k, v in knobs.items()) or "not recorded"


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
