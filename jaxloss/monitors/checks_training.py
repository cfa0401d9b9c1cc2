"""Checks of the optimisation: a diverged loss, non-finite steps, exploding or vanishing
gradients, clipping on every step, a loss that does not fall, a loss that oscillates.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from jaxloss.monitors.stream import (Finding, _Run, _episodes, _num, _pct, _rel_fall,
                                     _signed_pct, _steps_span, _times, _values,
                                     _window_episodes, lr_advice)


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
    span = (f"in the log period ending at step {first['step']}" if len(ep) == 1 else
            f"in the log periods ending at steps {first['step']}-{ep[-1]['step']}")
    msg = (f"{skipped} of {steps or '?'} steps {span} had a non-finite loss or "
           f"gradient and were skipped (params kept)")
    if elements:
      msg += f"; {elements:,} non-finite gradient elements"
    if prior_norm is not None:
      msg += f"; the largest gradient norm before was {prior_norm:.3g}"
    lower = lr_advice(run, first, 10)
    if prior_norm is not None and prior_norm > run.th["grad_explosion"]:
      advice = (f"The gradients exploded first: {_lower_first(lower)} and clip "
                "(max_grad_norm=1.0). If masks are involved, fill them with a finite "
                "value: jaxloss.losses.mask_invalid_logits (-1e9).")
    else:
      advice = ("Replace -inf in masked logits with a finite large negative "
                "(jaxloss.losses.mask_invalid_logits, -1e9; large_negative(float16) for "
                f"f16) and make every row keep one valid class; if no mask is involved, "
                f"{_lower_first(lower)} and clip gradients (max_grad_norm=1.0).")
    out.append(Finding("non_finite", "error", first["step"], msg, advice,
                       until=ep[-1]["step"]))
  return out


def check_grad_explosion(run: _Run) -> list[Finding]:
  """``grad_explosion``: pre-clip gradient norm above ``grad_explosion``.

  A warning, except for a spike that clipping contained: with ``max_grad_norm`` set, one
  log period above the threshold, no skipped step in it, and a train loss in the next
  period no higher than in the period before the spike (the first step's loss when the
  spike is in the first period). That is reported as ``info``
  with no advice to change the run: clipping did its job, and the warning's "lower the
  learning rate tenfold" would be wrong for a run that went on improving (a single
  pre-clip norm of 12-16 against period means of 1.5-3 in fine-tuning and in
  from-scratch NLU runs, issue 21).
  """
  th = run.th["grad_explosion"]
  key = lambda e: e.get("grad_norm_max", e.get("grad_norm"))
  clip = run.meta.get("max_grad_norm")
  train = run.train
  out = []
  for ep in _episodes(train, lambda e: (key(e) or 0) > th):
    peak = max(key(e) for e in ep)
    where = (f"in the log period ending at step {ep[0]['step']}" if len(ep) == 1 else
             f"in the log periods ending at steps {ep[0]['step']}-{ep[-1]['step']}")
    msg = (f"pre-clip global gradient norm reached {peak:.3g} {where} (threshold "
           f"{th:g}; period mean {_num(ep[0].get('grad_norm'))})")
    i = train.index(ep[0])
    # The loss before the spike: the previous period's, or the first step's.
    before = (train[i - 1] if i > 0 else run.init or {}).get("loss")
    after = train[i + 1].get("loss") if i + 1 < len(train) else None
    contained = (clip and len(ep) == 1 and not ep[0].get("skipped_steps")
                 and before is not None and after is not None
                 and np.isfinite(after) and after <= before)
    if contained:
      msg += (f"; one spike, clipped at {clip:g}, and the loss kept falling "
              f"({_num(before)} before, {_num(after)} after)")
      advice = ("Nothing to change: clipping contained it. If such spikes recur or the "
                "loss rises after one, lower the learning rate or lengthen the warm-up.")
      out.append(Finding("grad_explosion", "info", ep[0]["step"], msg, advice,
                         until=ep[-1]["step"]))
      continue
    advice = lr_advice(run, ep[0], 10)
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
    low = min(e["clipped_share"] for e in ep)
    share = "every step" if low >= 1 else f"at least {_pct(low)} of the steps"
    msg = (f"gradients clipped on {share} for {len(ep)} log periods (steps "
           f"{ep[0]['step']}-{ep[-1]['step']}); median pre-clip norm {_num(median)} vs "
           f"max_grad_norm {_num(clip)}")
    target = f"{1.5 * median:.2g}" if median else "the typical gradient norm"
    advice = (f"Clipping is rescaling every update, so it acts as a hidden LR cut: raise "
              f"max_grad_norm from {_num(clip)} to about {target} (1.5x the median norm) "
              "so that it only trims spikes, or lower the learning rate instead.")
    out.append(Finding("clipping_every_step", "warning", ep[0]["step"], msg, advice,
                       until=ep[-1]["step"]))
  return out


def _lower_first(text: str) -> str:
  return text[:1].lower() + text[1:]


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
           f"{_times(level / first)} the first loss {first:.4g}")
    tests = [e for e in run.test if w[0]["step"] <= e["step"] <= last[-1]["step"]
             and e.get("uar") is not None]
    num_classes = run.meta.get("num_classes")
    if tests:
      uar = float(np.mean([e["uar"] for e in tests]))
      msg += f"; test UAR {uar:.3f}"
      if num_classes:
        msg += f" (chance {1 / num_classes:.3f})"
    if level > first:  # above where it started: an LR too high, not too low
      tail = (f"then {_lower_first(lr_advice(run, last[-1], 10))}: the loss sits above "
              "its first value.")
    else:
      tail = f"then {_lower_first(lr_advice(run, last[-1], 3, verb='Raise'))}."
    advice = ("The model is not fitting the labels. Check that labels line up with "
              "the inputs (a shuffled or misaligned label column gives exactly this), "
              "that the loss sees the right logits, " + tail)
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
    msg = (f"train loss oscillates over steps {w[0]['step']}-{last[-1]['step']}: "
           f"{100 * flips:.0f}% direction changes, mean jump {jump:.3g} on a level of "
           f"{level:.3g} (range {min(span):.3g}-{max(span):.3g})")
    advice = (lr_advice(run, last[-1], 3)
              + ", or decay it sooner; a larger batch also smooths the updates.")
    out.append(Finding("loss_oscillating", "warning", w[0]["step"], msg, advice,
                       until=last[-1]["step"]))
  return out


def check_diverged(run: _Run) -> list[Finding]:
  """``loss_diverged`` (error): a log period's mean train loss above ``diverge_factor``
  times the first loss (the ``init`` event's, else the first period's) -- the loss
  went up by an order of magnitude instead of down. The episode lasts until the loss is
  back under the first loss (a dip between the two is the same divergence), one
  finding per episode; :func:`jaxloss.monitors.checks.reconcile` folds the findings
  the divergence causes (exploding gradients, oscillation, a flat loss, a collapsed
  head, ...) into it."""
  first = _first_loss(run)
  factor = run.th["diverge_factor"]
  if first is None or first <= 0 or factor <= 0:
    return []
  episodes, current = [], None
  for e in run.train:
    loss = e.get("loss")
    if loss is None or not np.isfinite(loss):
      if current is not None:
        current.append(e)
      continue
    if current is None and loss > factor * first:
      current = [e]
    elif current is not None:
      if loss <= first:
        episodes.append((current, e))
        current = None
      else:
        current.append(e)
  if current is not None:
    episodes.append((current, None))
  out = []
  for ep, back in episodes:
    start = ep[0]
    finite = [e for e in ep if e.get("loss") is not None and np.isfinite(e["loss"])]
    peak = max(finite, key=lambda e: e["loss"])
    msg = (f"train loss rose from {first:.4g} (first step) to {start['loss']:.4g} at "
           f"step {start['step']}, {_times(start['loss'] / first)} the first loss "
           f"(threshold {factor:g}x)")
    if peak is not start:
      msg += f", peaking at {peak['loss']:.4g} at step {peak['step']}"
    if back is not None:
      msg += (f"; back under the first loss at step {back['step']} "
              f"({back['loss']:.4g})")
    elif ep[-1] not in finite:
      msg += f"; non-finite at step {ep[-1]['step']}"
    elif len(ep) > 1:
      msg += (f"; still {_times(ep[-1]['loss'] / first)} the first loss at step "
              f"{ep[-1]['step']}")
    advice = (lr_advice(run, start, 10)
              + ": the updates are too large for this model and loss. If it still "
              "diverges, lower it 10x again or add a warm-up of a few epochs; clipping "
              "(max_grad_norm=1.0) bounds a step but does not remove the cause.")
    out.append(Finding("loss_diverged", "error", start["step"], msg, advice,
                       until=(ep[-1]["step"])))
  return out
