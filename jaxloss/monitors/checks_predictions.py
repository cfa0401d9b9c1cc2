"""Checks of the predictions: collapse onto one class (judged against the data's own
shares), non-deterministic evaluation, curriculum stages that do not do what they say.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from jaxloss.monitors.stream import (Finding, _Run, _episodes, _num, _pct)


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
