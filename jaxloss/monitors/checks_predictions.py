"""Checks of the predictions: collapse onto one class (judged against the data's own
shares), classes the model stops predicting, non-deterministic evaluation, curriculum
stages that do not do what they say.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np

from jaxloss.monitors.stream import (Finding, _Run, _episodes, _num, _pct)


def _real_shares(run: _Run, head: str, event: Mapping) -> Optional[Sequence[float]]:
  """The labels' class shares a prediction share is judged against: the evaluated
  split's own (``label_share/<head>`` in the event) where known, else the training
  labels' (``meta.heads[head].label_shares``); None when neither is given."""
  shares = event.get(f"label_share/{head}")
  if shares is None:
    shares = ((run.meta.get("heads") or {}).get(head) or {}).get("label_shares")
  return shares


def _crowds_out(p_top: float, r_top: float, ratio: float) -> bool:
  """The top class crowds the others out: they get less than ``ratio`` of their real
  share of the predictions (``1 - p_top < ratio (1 - r_top)``)."""
  rest = 1.0 - r_top
  return rest > 1e-9 and (1.0 - p_top) < ratio * rest


def check_prediction_collapse(run: _Run) -> list[Finding]:
  """``prediction_collapse`` (error): after ``collapse_grace`` of training, for
  ``collapse_patience`` consecutive log periods, on train batches or on evaluation:

  * one class swallows the others *relative to the data*: with the labels' shares
    known, the top class leaves the other classes less than ``collapse_others_ratio``
    of their real share of the predictions (a majority class at its natural share is
    silent); without them, the top class is above ``collapse_share``;
  * a tagger collapses either way: every token O (non-O predictions below
    ``collapse_others_ratio`` of the labels' non-O share) or no token O (O below that
    fraction of its share); without the shares, non-O at ``collapse_non_o_low`` /
    ``collapse_non_o_high``."""
  total = run.total_steps or 0
  start = run.th["collapse_grace"] * total
  patience = int(run.th["collapse_patience"])
  ratio = float(run.th["collapse_others_ratio"])
  out = []
  heads = run.meta.get("heads") or {}
  splits = (("train", run.train), ("test", run.test))
  for name in heads:
    share_key, class_key = f"top_share/{name}", f"top_class/{name}"
    for split, events in splits:
      late = [e for e in events if e["step"] > start and e.get(share_key) is not None]

      def collapsed(e, name=name, share_key=share_key, class_key=class_key):
        real = _real_shares(run, name, e)
        top = e.get(class_key)
        if real is not None and top is not None and 0 <= int(top) < len(real):
          return _crowds_out(e[share_key], float(real[int(top)]), ratio)
        return e[share_key] > run.th["collapse_share"]

      for ep in _episodes(late, collapsed):
        if len(ep) < patience:
          continue
        e0 = ep[0]
        top = e0.get(class_key)
        names = (run.meta.get("class_names") or {}).get(name)
        label = names[top] if names and top is not None and top < len(names) else top
        real = _real_shares(run, name, e0)
        where = _steps_text(ep)
        if real is not None and top is not None and 0 <= int(top) < len(real):
          r = float(real[int(top)])
          msg = (f"head {name} ({split}): class {label} is {_pct(e0[share_key])} of the "
                 f"predictions {where}, against {_pct(r)} of the labels: the other "
                 f"classes get {_pct((1 - e0[share_key]) / (1 - r))} of their share "
                 f"(threshold {_pct(ratio)})")
        else:
          msg = (f"head {name} ({split}): class {label} is {_pct(e0[share_key])} of the "
                 f"predictions {where} (threshold {_pct(run.th['collapse_share'])})")
        knob_text = ""
        if e0.get("class_weight_cap") is not None or e0.get("tau") is not None:
          knob_text = (f" The curriculum had class_weight_cap "
                       f"{_num(e0.get('class_weight_cap'))}, tau {_num(e0.get('tau'))}, "
                       f"sampler_mix {_num(e0.get('sampler_mix'))}: lower tau or the cap "
                       "if the collapsed class is a tail class.")
        advice = ("The model predicts one class for almost everything: lower the "
                  "learning rate and weight decay, check that the class weights / logit "
                  "adjustment are not pushing every example to one class, and that "
                  f"labels vary in the batch.{knob_text}")
        out.append(Finding("prediction_collapse", "error", e0["step"], msg, advice,
                           subject=f"{name}/{split}", until=ep[-1]["step"]))
  for name, head in heads.items():
    o_index = head.get("o_index")
    if o_index is None:
      continue
    shares = head.get("label_shares")
    train_non_o = None if shares is None else 1.0 - float(shares[o_index])
    sources = [("train", run.train, f"non_o_share/{name}", lambda e: train_non_o),
               ("test", run.test, "pred_non_o_share",
                lambda e: e.get("true_non_o_share", train_non_o))]
    for split, events, key, real_of in sources:
      late = [e for e in events if e["step"] > start and e.get(key) is not None]
      for low in (True, False):
        def collapsed(e, key=key, real_of=real_of, low=low):
          real = real_of(e)
          if real is None:
            return (e[key] <= run.th["collapse_non_o_low"] if low else
                    e[key] >= run.th["collapse_non_o_high"])
          if low:  # every token O: entities below ratio of their share
            return real > 1e-9 and e[key] < ratio * real
          return (1 - real) > 1e-9 and (1 - e[key]) < ratio * (1 - real)
        for ep in _episodes(late, collapsed):
          if len(ep) < patience:
            continue
          e0 = ep[0]
          real = real_of(e0)
          gold = "" if real is None else f" against {_pct(real)} of the labels"
          if low:
            msg = (f"tagger {name} ({split}): {_pct(e0[key])} of tokens predicted "
                   f"non-O{gold} {_steps_text(ep)} (every token O)")
            advice = ("Down-weight O in the tagger loss (class weight 0.1, entity tags "
                      "up to 5), use focal loss (gamma=2) on the tagger, raise the "
                      "tagger's loss weight, and mask invalid tags with -1e9, not -inf.")
          else:
            msg = (f"tagger {name} ({split}): {_pct(e0[key])} of tokens predicted "
                   f"non-O{gold} {_steps_text(ep)} (O almost never predicted)")
            advice = ("The entity tags swallow O: lower the entity tags' class weights "
                      "or O's down-weighting (keep O's weight near 0.1-1), lower a focal "
                      "gamma on the tagger, and check the tag masks.")
          out.append(Finding("prediction_collapse", "error", e0["step"], msg, advice,
                             subject=f"{name}/non_o/{split}", until=ep[-1]["step"]))
  return out


def check_class_starved(run: _Run) -> list[Finding]:
  """``class_starved`` (warning): at the end of a finished run, averaged over its last
  ``collapse_patience`` evaluations, a class of a head that is at least
  ``starved_min_share`` of the labels gets less than ``starved_ratio`` of its real share
  of the predictions (``p_c < starved_ratio · r_c``, ``r`` the evaluated split's
  ``label_share/<head>`` where given, else the training labels' shares): the model has
  all but stopped predicting it, the failure that a class-balanced metric (UAR, macro
  F1) shows and accuracy hides. Judged at the end only, because a curriculum's first
  stage may starve the tail on purpose and later stages lift it. One finding per head
  names every starved class; a head that collapsed (``prediction_collapse`` on the same
  evaluations) is left to that finding."""
  if not run.finished:
    return []
  patience = max(int(run.th["collapse_patience"]), 1)
  ratio, min_share = float(run.th["starved_ratio"]), float(run.th["starved_min_share"])
  collapse_ratio = float(run.th["collapse_others_ratio"])
  out = []
  for name in run.meta.get("heads") or {}:
    key = f"pred_share/{name}"
    evals = [e for e in run.test if e.get(key) is not None][-patience:]
    if len(evals) < patience:
      continue
    preds, reals = [], []
    for e in evals:
      real, pred = _real_shares(run, name, e), e[key]
      if real is None or len(real) != len(pred):
        break
      top = int(np.argmax(pred))
      if _crowds_out(float(pred[top]), float(real[top]), collapse_ratio):
        break  # a collapse: prediction_collapse names it
      preds.append(np.asarray(pred, np.float64))
      reals.append(np.asarray(real, np.float64))
    if len(preds) < patience:
      continue
    # Means over the last evaluations: one evaluation's few predictions of a small
    # class are noisy (3 against 2 of 300 moves the share by a third).
    pred, real = np.mean(preds, axis=0), np.mean(reals, axis=0)
    starved = [c for c in range(len(real))
               if real[c] >= min_share and pred[c] < ratio * real[c]]
    if not starved:
      continue
    last = evals[-1]
    names = (run.meta.get("class_names") or {}).get(name)
    parts = [f"class {names[c] if names and c < len(names) else c} gets {_pct(pred[c])} "
             f"of the predictions against {_pct(real[c])} of the labels "
             f"({100 * pred[c] / real[c]:.3g}% of its share)" for c in starved]
    msg = (f"head {name} (test): {'; '.join(parts)} on the last {len(evals)} "
           f"evaluations ({_steps_text(evals)}, the end of training; threshold "
           f"{_pct(ratio)} of the share)")
    # Which way to push: a class that is rare in the training data needs more weight;
    # one that is frequent there lost out to a re-weighting that is too strong.
    train_shares = ((run.meta.get("heads") or {}).get(name) or {}).get("label_shares")
    frequent = (train_shares is not None and len(train_shares) == len(real)
                and all(train_shares[c] >= 1.0 / len(real) for c in starved))
    knobs = next((e for e in reversed(run.train) if e.get("tau") is not None
                  or e.get("class_weight_cap") is not None), None)
    knob_text = "" if knobs is None else (
        f" The last stage had class_weight_cap {_num(knobs.get('class_weight_cap'))}, "
        f"tau {_num(knobs.get('tau'))}, sampler_mix {_num(knobs.get('sampler_mix'))}.")
    if frequent:
      advice = ("These are frequent classes in the training data, so the re-weighting "
                "towards the rare ones is too strong: lower the logit adjustment tau, the "
                "class-weight cap or the class-balanced sampler's share, or end with a "
                f"stage that eases them.{knob_text}")
    else:
      advice = ("The model has all but stopped predicting these classes: give them more "
                "weight, with class weights from the counts (inverse or square-root "
                "inverse frequency), logit adjustment (tau 1, Menon et al.), a "
                "class-balanced sampler or a deferred re-weighting (LDAM-DRW); then "
                f"check their recall, not only accuracy.{knob_text}")
    out.append(Finding("class_starved", "warning", evals[0]["step"], msg, advice,
                       subject=f"{name}/test", until=last["step"]))
  return out


def _steps_text(episode: Sequence[Mapping]) -> str:
  first, last = episode[0]["step"], episode[-1]["step"]
  return f"at step {first}" if first == last else f"over steps {first}-{last}"


def check_eval_deterministic(run: _Run) -> list[Finding]:
  """``eval_nondeterministic`` (error): evaluating the same parameters twice gave
  results differing by more than ``eval_tolerance``."""
  out = []
  for e in run.test:
    diff = e.get("eval_repeat_max_diff")
    # NaN: a stream written before NaN outputs compared equal to themselves (a
    # diverged model's), which says nothing about determinism.
    if diff is None or math.isnan(diff) or diff <= run.th["eval_tolerance"]:
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
             f"{100 * a:.1f} (means of {len(b_vals)} and {len(a_vals)} evaluations, "
             f"{100 * delta:+.1f} points, noise +/-{100 * noise:.1f}; intended to "
             f"{verb})")
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
