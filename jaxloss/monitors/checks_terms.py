"""Checks of the loss terms: a term that stalls while its partner falls, a term that
saturates, a first loss far from the loss at uniform outputs for these data.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from jaxloss.monitors.stream import (Finding, _Run, _signed_pct, _values,
                                     _windows)


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
  ``stall_fall_rel`` of it. A term that ends the window below ``saturated_loss`` has
  reached its floor, not stalled (that is ``term_saturated``, whose advice -- less
  weight -- a stall's "more weight" would contradict)."""
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
      vals = falls[name][1]
      if np.mean(vals[-max(len(vals) // 3, 1):]) < run.th["saturated_loss"]:
        continue  # at its floor
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
  start without being saturated.

  When every term of a combined loss saturates, that is one finding (subject ``all``):
  the model fits the whole training set, and moving weight from one term to the others
  (the advice for a single saturated head) would only move it between saturated terms.

  With a model-selection metric in the stream (the meta event's ``selection``, e.g.
  Dev ``score``), a saturation after which that metric still improved is ``info``: the
  head stopped shaping the model and the run went on getting better, so there is
  nothing to change. When the metric did not improve after it, the finding stays a
  warning and says so.
  """
  total = run.total_steps
  if not total:
    return []
  limit = run.th["saturated_before"] * total
  terms = run.terms()
  keys = ([(f"term/{t['name']}", t) for t in terms] if len(terms) > 1
          else [("loss", None)])
  memorising = ("The model fits the training set this early, so it is memorising: add "
                "regularisation (label smoothing 0.1, stronger augmentation, weight decay, "
                "dropout), or train for fewer epochs; if the loss is ~0 check for labels "
                "leaking into the inputs.")
  hits = []  # (key, term, event)
  for key, term in keys:
    scale = _term_scale(run, term["name"]) if term else None
    for e in run.train:
      if e["step"] > limit:
        break
      v = e.get(key)
      if (v is not None and v < run.th["saturated_loss"]
          and (not scale or v < run.th["saturated_rel"] * scale)):
        hits.append((key, term, e))
        break
  def after(step):
    """(severity, message suffix, advice prefix) from the selection metric after step."""
    moved = run.selection_after(step)
    if moved is None:
      return "warning", "", ""
    if moved["improved"]:
      return ("info", f"; {moved['name']} still rose after it, {moved['before']:.4g} at "
              f"step {moved['before_step']} -> {moved['best']:.4g} at step "
              f"{moved['best_step']}", "Nothing to change while the selection metric "
              "keeps improving (model selection keeps the best evaluation). If it stops: ")
    return ("warning", f"; {moved['name']} did not improve after it (best "
            f"{moved['before']:.4g} at step {moved['before_step']})", "")

  if len(terms) > 1 and len(hits) == len(keys):
    last = max(e["step"] for _, _, e in hits)
    parts = ", ".join(f"{term['name']} {e[key]:.4g} at step {e['step']}"
                      for key, term, e in hits)
    severity, suffix, prefix = after(last)
    msg = (f"every term fell below {run.th['saturated_loss']:g} by step {last} "
           f"({100 * last / total:.0f}% of training): {parts}{suffix}")
    advice = ("Every head fits the training set: no loss weight can help. Harmless while "
              "the Dev metric still improves (model selection picks the evaluation); "
              "once it stops, add regularisation (dropout, weight decay, label smoothing "
              "0.1, augmentation) or train for fewer steps.")
    return [Finding("term_saturated", severity, min(e["step"] for _, _, e in hits),
                    msg, advice, subject="all", until=last)]
  out = []
  for key, term, e in hits:
    v = e[key]
    name = term["name"] if term else "loss"
    severity, suffix, prefix = after(e["step"])
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
      advice = memorising
    if prefix:
      advice = prefix + advice[0].lower() + advice[1:]
    out.append(Finding("term_saturated", severity, e["step"], msg + suffix, advice,
                       subject=name))
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
