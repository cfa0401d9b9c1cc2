"""The host-side monitors on hand-made metric streams: every code fires when it must and
stays quiet just on the healthy side of its threshold, with the numbers and the concrete
fix in the finding."""

import json
import math

import pytest

from jaxloss.monitors import checks
from jaxloss.monitors.checks import CODES, Monitor, diagnose, validate_halt_on

LN10 = math.log(10)
PERIOD = 8  # train steps per log period: event i is at step 8 * (i + 1)

ONE_TERM = [{"name": "classification", "weight": 1.0,
             "weight_field": "config.classification_weight",
             "initial_reference": LN10, "initial_reference_text": "ln 10"}]


def two_terms(cls_weight=0.8, con_weight=0.2):
  return [{**ONE_TERM[0], "weight": cls_weight},
          {"name": "contrastive", "weight": con_weight,
           "weight_field": "config.contrastive_weight"}]


# A healthy run: falls every period (>= 40 % over any window of 10), never flips.
HEALTHY = [2.2, 2.0, 1.85, 1.7, 1.6, 1.5, 1.4, 1.3, 1.2, 1.1, 1.0, 0.9]


def make_stream(losses, *, grad_norms=None, grad_norm_max=None, clipped=None,
                skipped=None, nonfinite=None, stages=None, fields=None, tests=(),
                init=None, meta=None):
  """A metrics.jsonl stream as the training loop writes it.

  Args:
    losses: the train loss of each log period (event i at step 8 * (i + 1)).
    grad_norms, grad_norm_max, clipped, skipped, nonfinite: per-period columns
      (defaults 1.0, = grad_norms, 0.0, 0, 0).
    stages: per-period stage names (default "constant").
    fields: extra per-period columns, name -> list (``term/...``, ``top_share/...``).
    tests: test events (dicts; ``split`` and a default ``stage`` are added).
    init: the first-step event's values (default ``{"loss": 2.3}``).
    meta: overrides of the meta event.
  """
  n = len(losses)

  def col(values, default):
    return list(values) if values is not None else [default] * n

  grad_norms = col(grad_norms, 1.0)
  grad_norm_max = col(grad_norm_max, None)
  clipped, skipped, nonfinite = col(clipped, 0.0), col(skipped, 0), col(nonfinite, 0)
  stages = col(stages, "constant")
  stage_list = []
  for i, name in enumerate(stages):
    if not stage_list or stage_list[-1]["name"] != name:
      stage_list.append({"name": name, "start_step": PERIOD * i, "expect": {},
                         "knobs": {}})
  events = [{
      "split": "meta", "step": 0, "total_steps": PERIOD * n, "num_classes": 10,
      "learning_rate": 0.05, "max_grad_norm": 5.0, "terms": ONE_TERM,
      "heads": {"class": {"num_classes": 10, "o_index": None}},
      "stages": stage_list, "initial_reference": LN10,
      "initial_reference_text": "ln 10",
      "config_fields": {"learning_rate": "config.learning_rate"},
      **(meta or {})}]
  events.append({"split": "init", "step": 1, "stage": stages[0] if n else "constant",
                 **(init if init is not None else {"loss": 2.3})})
  for i, loss in enumerate(losses):
    e = {"split": "train", "step": PERIOD * (i + 1), "stage": stages[i],
         "loss": loss, "grad_norm": grad_norms[i],
         "grad_norm_max": (grad_norms[i] if grad_norm_max[i] is None
                           else grad_norm_max[i]),
         "clipped_share": clipped[i], "skipped_steps": skipped[i],
         "period_steps": PERIOD, "nonfinite_grads": nonfinite[i],
         "top_share/class": 0.2, "top_class/class": 0}
    for key, values in (fields or {}).items():
      e[key] = values[i]
    events.append(e)
  for t in tests:
    events.append({"split": "test", "stage": "constant", **t})
  return events


def codes(findings):
  return [f.code for f in findings]


def only(findings, code):
  return [f for f in findings if f.code == code]


def the(findings, code):
  """The one finding with ``code`` (and asserts that it is the only one)."""
  found = only(findings, code)
  assert len(found) == 1, [f.code for f in findings]
  return found[0]


def test_every_code_has_tests_below():
  # A guard for this file: a new code needs new tests here.
  assert set(CODES) == {
      "loss_diverged", "non_finite", "grad_explosion", "grad_vanishing", "clipping_every_step",
      "not_learning", "loss_oscillating", "term_stalled", "term_saturated",
      "prediction_collapse", "class_starved", "initial_loss_off",
      "eval_nondeterministic", "stage_expectation"}


def test_healthy_stream_has_no_findings():
  events = make_stream(HEALTHY, tests=[{"step": 48, "war": 0.5, "uar": 0.4,
                                        "eval_repeat_max_diff": 0.0}])
  assert diagnose(events) == []


# --- loss_diverged and the one-incident reconciliation --------------------------------

# First loss 2.3; the loss jumps past 10 x 2.3 = 23 at step 24, dips to 15 (between 1x
# and 10x: still the same divergence), peaks at 400 and is back under 2.3 at step 72.
DIVERGING = [2.2, 2.0, 50.0, 15.0, 400.0, 300.0, 80.0, 30.0, 2.1, 1.9, 1.8, 1.7]


def test_loss_diverged_one_episode_with_peak_and_recovery():
  findings = diagnose(make_stream(DIVERGING))
  f = the(findings, "loss_diverged")
  assert (f.severity, f.step, f.until, f.subject) == ("error", 24, 64, "")
  assert f.message == ("train loss rose from 2.3 (first step) to 50 at step 24, 22x the "
                       "first loss (threshold 10x), peaking at 400 at step 40; back under "
                       "the first loss at step 72 (2.1)")
  assert f.advice.startswith("Lower config.learning_rate from 0.05 to 0.005: the updates "
                             "are too large")


@pytest.mark.parametrize("losses", [
    [2.2, 2.0, 22.0, 2.0] + [1.9] * 8,   # 22 < 10 x 2.3 = 23
    HEALTHY,
])
def test_loss_diverged_quiet_below_the_factor(losses):
  assert not only(diagnose(make_stream(losses)), "loss_diverged")


def test_divergence_folds_its_symptoms_into_one_finding_with_one_advice():
  # The divergence brings exploding gradients (from step 16, one period before the
  # loss crosses: folded), clipping on every step and a collapsed head; a grad
  # explosion at step 88, after the recovery, is a separate incident and stays.
  n = len(DIVERGING)
  gmax = [None, 40.0, 80.0, 60.0, 90.0] + [None] * 5 + [50.0, None]
  clipped = [0.0, 1.0, 1.0, 1.0, 1.0, 1.0] + [0.0] * 6
  top = [0.2, 0.2, 0.95, 0.97, 0.99, 0.99, 0.2] + [0.2] * 5
  events = make_stream(DIVERGING, grad_norm_max=gmax, clipped=clipped,
                       fields={"top_share/class": top, "top_class/class": [3] * n},
                       meta={"heads": {"class": {"num_classes": 10, "o_index": None,
                                                 "label_shares": [0.1] * 10}}})
  unreconciled = [f for m in checks.MONITORS for f in m(checks._split_events(events, None))]
  assert {"grad_explosion", "clipping_every_step", "prediction_collapse"} <= set(
      codes(unreconciled))
  findings = diagnose(events)
  assert codes(findings) == ["loss_diverged", "grad_explosion"]
  f = findings[0]
  assert [(r["code"], r["step"]) for r in f.related] == [
      ("grad_explosion", 16), ("clipping_every_step", 16), ("prediction_collapse", 24)]
  assert all(set(r) == {"code", "subject", "step", "until", "message"}
             for r in f.related)
  assert findings[1].step == 88  # after the recovery: its own incident
  # Halting on a folded code stops the run at the incident.
  assert Monitor(halt_on=("clipping_every_step",)).halting(findings) is f
  assert Monitor(halt_on=("grad_vanishing",)).halting(findings) is None


def test_lr_advice_never_contradicts_a_loss_above_its_start():
  # Flat far above the first loss (a run at a hopeless LR, under the divergence
  # factor): not_learning must not say "raise the learning rate".
  flat_high = [9.0, 9.1, 9.0, 9.1, 9.0, 9.1, 9.0, 9.1, 9.0, 9.1, 9.0, 9.1]
  f = the(diagnose(make_stream(flat_high)), "not_learning")
  assert "raise" not in f.advice.lower().split("then")[-1]
  assert f.advice.endswith("then lower config.learning_rate from 0.05 to 0.005: the loss "
                           "sits above its first value.")
  assert "still 3.9x the first loss 2.3" in f.message


# --- non_finite ---------------------------------------------------------------------

def test_non_finite_fires_with_counts_and_lr_cut():
  skipped = [0, 0, 3] + [0] * 9
  nonfinite = [0, 0, 1234] + [0] * 9
  findings = diagnose(make_stream(HEALTHY, skipped=skipped, nonfinite=nonfinite))
  assert codes(findings) == ["non_finite"]
  f = findings[0]
  assert (f.severity, f.step, f.until, f.subject) == ("error", 24, 24, "")
  assert f.message == (
      "3 of 8 steps in the log period ending at step 24 had a non-finite loss or "
      "gradient and were skipped (params kept); 1,234 non-finite gradient elements; the largest gradient "
      "norm before was 1")
  # No explosion before (largest norm 1 <= 10): masks first, then the LR / 10.
  assert f.advice.startswith("Replace -inf in masked logits")
  assert "lower config.learning_rate from 0.05 to 0.005" in f.advice
  assert "max_grad_norm=1.0" in f.advice


def test_non_finite_elements_alone_fire():
  # Non-finite gradient elements with no skipped step (the counter alone) fire too.
  findings = diagnose(make_stream(HEALTHY, nonfinite=[0] * 5 + [7] + [0] * 6))
  f = the(findings, "non_finite")
  assert f.step == 48 and "0 of 8 steps" in f.message and "; 7 non-finite" in f.message


def test_non_finite_episode_after_explosion():
  # Steps 24 and 32 both skipped: one episode, 3 + 8 = 11 of 2 * 8 = 16 steps. Step 16
  # had a gradient norm of 50 > 10 first, so the advice is the LR, not the masks.
  n = len(HEALTHY)
  losses = list(HEALTHY)
  losses[3] = None  # the whole period skipped: no finite step, no mean
  norms = [1.0] * n
  norms[3] = None
  gmax = [None] * n
  gmax[1] = 50.0
  findings = diagnose(make_stream(losses, grad_norms=norms, grad_norm_max=gmax,
                                  skipped=[0, 0, 3, 8] + [0] * 8))
  assert codes(findings) == ["grad_explosion", "non_finite"]
  f = the(findings, "non_finite")
  assert (f.step, f.until) == (24, 32)
  assert "11 of 16 steps in the log periods ending at steps 24-32" in f.message
  assert "the largest gradient norm before was 50" in f.message
  assert f.advice.startswith("The gradients exploded first: lower "
                             "config.learning_rate from 0.05 to 0.005 and clip "
                             "(max_grad_norm=1.0).")


def test_lr_advice_changes_the_configured_rate_and_names_the_schedules():
  # The advice changes config.learning_rate (0.05 here), so it quotes that value and
  # adds the schedule's value where it differs (the run saw 0.2 at that step) ...
  findings = diagnose(make_stream(
      HEALTHY, skipped=[0, 2] + [0] * 10,
      fields={"learning_rate": [0.2] * len(HEALTHY)}))
  assert ("lower config.learning_rate from 0.05 to 0.005 (the schedule was at 0.2 at "
          "step 16)") in the(findings, "non_finite").advice
  # ... and falls back to the events' value when the stream does not record it.
  findings = diagnose(make_stream(
      HEALTHY, skipped=[0, 2] + [0] * 10, meta={"learning_rate": None},
      fields={"learning_rate": [0.2] * len(HEALTHY)}))
  assert "lower config.learning_rate from 0.2 to 0.02 and" in the(
      findings, "non_finite").advice


def test_non_finite_quiet_without_skips():
  # Healthy side: zero skipped steps and zero (or unrecorded) non-finite elements.
  events = make_stream(HEALTHY, skipped=[0] * 12, nonfinite=[0] * 12)
  for e in events:
    if e["split"] == "train":
      e.pop("nonfinite_grads")  # monitors off: the field is absent
  assert only(diagnose(events), "non_finite") == []


# --- grad_explosion -----------------------------------------------------------------

def test_grad_explosion_fires_with_peak_and_lr_cut():
  # The loss after the spike (2.3) is above the loss before it (2.2): not contained.
  gmax = [None, 12.5] + [None] * 10
  losses = [2.2, 2.0, 2.3] + HEALTHY[3:]
  findings = diagnose(make_stream(losses, grad_norm_max=gmax))
  assert codes(findings) == ["grad_explosion"]
  f = findings[0]
  assert (f.severity, f.step, f.until, f.subject) == ("warning", 16, 16, "")
  assert f.message == ("pre-clip global gradient norm reached 12.5 in the log period "
                       "ending at step 16 (threshold 10; period mean 1)")
  assert f.advice == ("Lower config.learning_rate from 0.05 to 0.005; clipping at 5 "
                      "bounds the step but not the cause (a warm-up of a few epochs "
                      "also helps).")


def test_grad_explosion_contained_by_clipping_is_info_without_lr_advice():
  # One clipped spike (clipping at 5) and the loss kept falling (2.2 before, 1.85
  # after): info, and no advice to cut the learning rate.
  gmax = [None, 12.5] + [None] * 10
  findings = diagnose(make_stream(HEALTHY, grad_norm_max=gmax))
  assert codes(findings) == ["grad_explosion"]
  f = findings[0]
  assert (f.severity, f.step, f.until) == ("info", 16, 16)
  assert f.message == ("pre-clip global gradient norm reached 12.5 in the log period "
                       "ending at step 16 (threshold 10; period mean 1); one spike, "
                       "clipped at 5, and the loss kept falling (2.2 before, 1.85 after)")
  assert "learning_rate from" not in f.advice and f.advice.startswith("Nothing to change")
  # In the first period the loss before is the first step's (2.3 by default).
  first = diagnose(make_stream(HEALTHY, grad_norm_max=[12.5] + [None] * 11))
  assert [(f.severity, f.step) for f in first] == [("info", 8)]
  assert "(2.3 before, 2 after)" in first[0].message
  # The same spike without clipping, or two periods long, or with a skipped step,
  # stays a warning.
  for stream in (make_stream(HEALTHY, grad_norm_max=gmax, meta={"max_grad_norm": None}),
                 make_stream(HEALTHY, grad_norm_max=[None, 12.5, 12.5] + [None] * 9),
                 make_stream(HEALTHY, grad_norm_max=gmax, skipped=[0, 1] + [0] * 10)):
    assert [f.severity for f in diagnose(stream) if f.code == "grad_explosion"] == [
        "warning"]


def test_grad_explosion_episode_reports_the_peak_once():
  # Three consecutive periods above 10 (12, 30, 11): one finding 32..48, peak 30. No
  # clipping configured: the advice adds it.
  gmax = [None] * 3 + [12.0, 30.0, 11.0] + [None] * 6
  findings = diagnose(make_stream(HEALTHY, grad_norm_max=gmax,
                                  meta={"max_grad_norm": None}))
  f = the(findings, "grad_explosion")
  assert (f.step, f.until) == (32, 48)
  assert "reached 30 in the log periods ending at steps 32-48" in f.message
  assert f.advice == ("Lower config.learning_rate from 0.05 to 0.005 and clip with "
                      "max_grad_norm=1.0 (a warm-up of a few epochs also helps).")


def test_grad_explosion_quiet_at_threshold():
  gmax = [None, 10.0] + [None] * 10  # not above 10
  assert diagnose(make_stream(HEALTHY, grad_norm_max=gmax)) == []


# --- grad_vanishing -----------------------------------------------------------------

def test_grad_vanishing_fires_after_patience():
  norms = [1.0] * 4 + [5e-5, 5e-5] + [1.0] * 6
  findings = diagnose(make_stream(HEALTHY, grad_norms=norms))
  assert codes(findings) == ["grad_vanishing"]
  f = findings[0]
  assert (f.severity, f.step, f.until, f.subject) == ("warning", 40, 48, "")
  assert f.message == ("mean global gradient norm 5.00e-05 (below 0.0001) for 2 log "
                       "periods, steps 40-48; loss 1.6 -> 1.5")
  assert "raise config.learning_rate" in f.advice
  assert "a weight of 0" in f.advice


@pytest.mark.parametrize("norms", [
    [1.0] * 4 + [5e-5] + [1.0] * 7,          # one period < patience 2
    [1.0] * 4 + [1e-4, 1e-4] + [1.0] * 6,    # at the threshold, not below
])
def test_grad_vanishing_quiet_near_miss(norms):
  assert diagnose(make_stream(HEALTHY, grad_norms=norms)) == []


def test_grad_vanishing_patience_override():
  norms = [1.0] * 4 + [5e-5] + [1.0] * 7
  findings = diagnose(make_stream(HEALTHY, grad_norms=norms),
                      thresholds={"grad_vanishing_patience": 1})
  assert [(f.code, f.step) for f in findings] == [("grad_vanishing", 40)]


# --- clipping_every_step ------------------------------------------------------------

def test_clipping_fires_with_one_and_a_half_median():
  # Median pre-clip norm of (5.5, 6, 7) is 6: suggest 1.5 * 6 = 9.
  clipped = [1.0, 0.995, 1.0] + [0.0] * 9
  norms = [5.5, 6.0, 7.0] + [1.0] * 9
  findings = diagnose(make_stream(HEALTHY, clipped=clipped, grad_norms=norms))
  assert codes(findings) == ["clipping_every_step"]
  f = findings[0]
  assert (f.severity, f.step, f.until, f.subject) == ("warning", 8, 24, "")
  assert f.message == ("gradients clipped on at least 99.5% of the steps for 3 log "
                       "periods (steps 8-24); median pre-clip norm 6 vs max_grad_norm 5")
  assert "raise max_grad_norm from 5 to about 9 (1.5x the median norm)" in f.advice


def test_clipping_episode_is_one_finding():
  # Clipped on every step for 6 periods: one episode 8..48, median of 4,4,4,8,8,8 = 6.
  clipped = [1.0] * 6 + [0.0] * 6
  norms = [4.0] * 3 + [8.0] * 3 + [1.0] * 6
  f = the(diagnose(make_stream(HEALTHY, clipped=clipped, grad_norms=norms)),
          "clipping_every_step")
  assert (f.step, f.until) == (8, 48)
  assert "for 6 log periods" in f.message and "about 9 " in f.advice


@pytest.mark.parametrize("clipped", [
    [0.985] * 3 + [0.0] * 9,        # below the 0.99 share
    [1.0] * 2 + [0.0] * 10,         # 2 periods < patience 3
])
def test_clipping_quiet_near_miss(clipped):
  norms = [6.0] * 3 + [1.0] * 9
  assert diagnose(make_stream(HEALTHY, clipped=clipped, grad_norms=norms)) == []


# --- not_learning -------------------------------------------------------------------

# Mean of the first third 2.25, of the last third 2.22: (2.25 - 2.22) / 2.25 = 1.3 %
# < 2 % (flat); level (7 * 2.25 + 3 * 2.22) / 10 = 2.241 = 97 % of the first loss 2.3.
FLAT = [2.25] * 7 + [2.22] * 3


def test_not_learning_fires_with_level_uar_and_lr():
  events = make_stream(FLAT, tests=[{"step": 40, "war": 0.1, "uar": 0.1},
                                    {"step": 80, "war": 0.1, "uar": 0.1}])
  findings = diagnose(events)
  assert codes(findings) == ["not_learning"]
  f = findings[0]
  assert (f.severity, f.step, f.until, f.subject) == ("warning", 8, 80, "constant")
  assert f.message == ("train loss flat over steps 8-80: 2.25 -> 2.22 (-1.3%), still 97% "
                       "of the first loss 2.3; test UAR 0.100 (chance 0.100)")
  assert f.advice.endswith("raise config.learning_rate from 0.05 to 0.15.")
  assert "labels line up with the inputs" in f.advice


def test_not_learning_advice_names_the_configured_learning_rate():
  # The advice changes config.learning_rate, so it quotes the configured (peak) value,
  # not the decayed value of the schedule at the flat window ...
  findings = diagnose(make_stream(FLAT, fields={"learning_rate": [0.01] * 10},
                                  meta={"learning_rate": 0.05}))
  assert the(findings, "not_learning").advice.endswith(
      "from 0.05 to 0.15 (the schedule was at 0.01 at step 80).")
  # ... and falls back to the events' value when the stream does not record it.
  findings = diagnose(make_stream(FLAT, fields={"learning_rate": [0.01] * 10},
                                  meta={"learning_rate": None}))
  assert the(findings, "not_learning").advice.endswith("from 0.01 to 0.03.")


def test_not_learning_ignores_a_term_with_a_high_floor():
  # Total flat at 1.2 of a first 1.4 (86 %), but the classification term fell to a
  # quarter of its first value: the contrastive term's floor holds the total up.
  terms = [{"name": "focal", "weight": 0.7}, {"name": "contrastive", "weight": 0.3}]
  init = {"split": "init", "step": 1, "loss": 1.4, "term/focal": 0.34,
          "term/contrastive": 4.0}
  fields = {"term/focal": [0.08] * 10, "term/contrastive": [3.8] * 10}
  stream = make_stream([1.2] * 10, fields=fields, init=init, meta={"terms": terms})
  assert not only(diagnose(stream), "not_learning")
  # Every term flat near its first value: not learning.
  fields = {"term/focal": [0.33] * 10, "term/contrastive": [3.95] * 10}
  stream = make_stream([1.2] * 10, fields=fields, init=init, meta={"terms": terms})
  assert only(diagnose(stream), "not_learning")


@pytest.mark.parametrize("last,fires", [
    (1.958, False),  # (2.0 - 1.958) / 2.0 = 2.1 % fall: learning (slowly)
    (1.962, True),   # (2.0 - 1.962) / 2.0 = 1.9 % fall: flat
])
def test_not_learning_flatness_boundary(last, fires):
  losses = [2.0] * 3 + [1.98] * 4 + [last] * 3
  assert bool(only(diagnose(make_stream(losses)), "not_learning")) == fires


@pytest.mark.parametrize("level,fires", [
    (1.60, False),  # below 0.7 * 2.3 = 1.61: flat, but low enough (converged)
    (1.62, True),
])
def test_not_learning_level_boundary(level, fires):
  assert bool(only(diagnose(make_stream([level] * 10)), "not_learning")) == fires


def test_not_learning_window_never_spans_stages():
  stages = ["a"] * 5 + ["b"] * 5
  events = make_stream(FLAT, stages=stages)
  # 5 + 5 periods, window 10: no window fits in one stage.
  assert only(diagnose(events), "not_learning") == []
  # Window 5 fits in each stage: one finding per stage, each inside its stage.
  findings = only(diagnose(events, thresholds={"window": 5}), "not_learning")
  assert [(f.subject, f.step, f.until) for f in findings] == [("a", 8, 40),
                                                              ("b", 48, 80)]


def test_not_learning_episode_until_is_last_flat_step():
  f = the(diagnose(make_stream([2.25] * 20)), "not_learning")
  assert (f.step, f.until) == (8, 160)


# --- loss_oscillating ---------------------------------------------------------------

def test_oscillation_fires_with_flips_and_jump():
  # 2, 1, 2, 1, ...: every one of the 8 consecutive pairs of changes flips (100 %),
  # mean |jump| 1 >= 0.1 and >= 0.3 * level 1.5 = 0.45.
  findings = diagnose(make_stream([2.0, 1.0] * 5))
  assert codes(findings) == ["loss_oscillating"]
  f = findings[0]
  assert (f.severity, f.step, f.until, f.subject) == ("warning", 8, 80, "")
  assert f.message == ("train loss oscillates over steps 8-80: 100% direction changes, "
                       "mean jump 1 on a level of 1.5 (range 1-2)")
  assert f.advice == ("Lower config.learning_rate from 0.05 to 0.0167, or decay it "
                      "sooner; a larger batch also smooths the updates.")


def test_oscillation_five_of_eight_flips_fires():
  # Changes -,-,+,-,+,-,-,+,+ : 5 of 8 flips = 62.5 % >= 60 %; jump 0.5 >= 0.3 * 1.25.
  losses = [2.0, 1.5, 1.0, 1.5, 1.0, 1.5, 1.0, 0.5, 1.0, 1.5]
  f = the(diagnose(make_stream(losses)), "loss_oscillating")
  assert "62% direction changes" in f.message  # 62.5 rounded half to even
  assert "mean jump 0.5 on a level of 1.25" in f.message


@pytest.mark.parametrize("losses", [
    # Changes -,-,+,+,-,-,+,+,- : 4 of 8 flips = 50 % < 60 % (jump 0.5 >= 0.465).
    [2.0, 1.5, 1.0, 1.5, 2.0, 1.5, 1.0, 1.5, 2.0, 1.5],
    # Flips 100 %, jump 0.5 < 0.3 * level 1.75 = 0.525.
    [2.0, 1.5] * 5,
    # Flips 100 %, jump 0.09 >= 0.3 * 0.255 but < 0.1 nats.
    [0.3, 0.21] * 5,
])
def test_oscillation_quiet_near_miss(losses):
  assert only(diagnose(make_stream(losses)), "loss_oscillating") == []


def test_oscillation_jump_at_stage_change_is_not_oscillation():
  # Flat 1.0 in stage a, then 3.0 falling by 0.1 in stage b. With window 3 a window
  # across the change (1, 1, 3: changes 0, +2) would count as oscillating; inside each
  # stage the loss never flips.
  losses = [1.0] * 5 + [3.0, 2.9, 2.8, 2.7, 2.6]
  th = {"window": 3}
  one_stage = only(diagnose(make_stream(losses), thresholds=th), "loss_oscillating")
  assert [f.step for f in one_stage] == [32]  # the proof that the jump would fire
  staged = make_stream(losses, stages=["a"] * 5 + ["b"] * 5)
  assert only(diagnose(staged, thresholds=th), "loss_oscillating") == []


def test_oscillation_episode_is_one_finding():
  findings = only(diagnose(make_stream([2.0, 1.0] * 10)), "loss_oscillating")
  assert [(f.step, f.until) for f in findings] == [(8, 160)]


# --- term_stalled -------------------------------------------------------------------

# Changes are measured against each term's first-step value (init: classification 2.3,
# contrastive 4.1). classification falls 2.0 -> 1.1; first-third mean 1.9, last-third
# mean 1.2: (1.9 - 1.2) / 2.3 = 30 % >= 10 %. contrastive: (4.0 - 3.96) / 4.1 = 1 % < 2 %.
CLS = [2.0 - 0.1 * i for i in range(12)]
CON = [4.0] * 3 + [3.98] * 6 + [3.96] * 3


def stalled_stream(cls, con, terms, n=10):
  cls, con = cls[:n], con[:n]
  w = {t["name"]: t["weight"] for t in terms}
  losses = [w["classification"] * a + w["contrastive"] * b for a, b in zip(cls, con)]
  return make_stream(losses, meta={"terms": terms},
                     fields={"term/classification": cls, "term/contrastive": con},
                     init={"loss": 2.64, "term/classification": 2.3,
                           "term/contrastive": 4.1})


def test_term_stalled_fires_with_weight_shift():
  con = [4.0] * 3 + [3.98] * 4 + [3.96] * 3
  findings = diagnose(stalled_stream(CLS, con, two_terms(0.8, 0.2)))
  assert codes(findings) == ["term_stalled"]
  f = findings[0]
  assert (f.severity, f.step, f.until, f.subject) == ("warning", 8, 80, "contrastive")
  assert f.message == ("contrastive term flat over steps 8-80 (4 -> 3.96, -1.0% of its "
                       "first value 4.1) while classification fell 30% of its first "
                       "value (2 -> 1.1); weights contrastive 0.2, classification 0.8")
  assert f.advice == ("Raise config.contrastive_weight from 0.2 to 0.3 and lower "
                      "config.classification_weight from 0.8 to 0.7 (0.8/0.2 -> 0.7/0.3).")


def test_term_stalled_zero_weight():
  con = [4.0] * 10
  f = the(diagnose(stalled_stream(CLS, con, two_terms(1.0, 0.0))), "term_stalled")
  assert f.advice == ("Raise config.contrastive_weight from 0 to 0.1 and lower "
                      "config.classification_weight from 1 to 0.9 (1/0 -> 0.9/0.1). It "
                      "has weight 0, so it gets no gradient at all.")


def test_term_stalled_weights_not_summing_to_one_only_raise():
  f = the(diagnose(stalled_stream(CLS, CON, two_terms(1.0, 0.5))), "term_stalled")
  assert f.advice == "Raise config.contrastive_weight from 0.5 to 0.6."


def test_term_stalled_weight_step_override():
  f = the(diagnose(stalled_stream(CLS, CON, two_terms(0.8, 0.2)),
                   thresholds={"weight_step": 0.2}), "term_stalled")
  assert "from 0.2 to 0.4 and lower config.classification_weight from 0.8 to 0.6" \
      in f.advice


def test_term_stalled_episode_extends():
  # 12 periods: windows starting at steps 8, 16, 24 all stalled -> one finding 8..96.
  findings = diagnose(stalled_stream(CLS, CON, two_terms(), n=12))
  f = the(findings, "term_stalled")
  assert (f.step, f.until) == (8, 96)


@pytest.mark.parametrize("cls_last,con_last,fires", [
    (1.2, 3.916, False),   # contrastive (4.0 - 3.916) / 4.1 = 2.05 %: not flat
    (1.2, 3.924, True),    # 0.076 / 4.1 = 1.85 %: flat
    (1.772, 4.0, False),   # classification (2.0 - 1.772) / 2.3 = 9.9 % < 10 %
    (1.768, 4.0, True),    # 0.232 / 2.3 = 10.1 %
])
def test_term_stalled_boundaries(cls_last, con_last, fires):
  cls = [2.0] * 3 + [1.9] * 4 + [cls_last] * 3
  con = [4.0] * 3 + [4.0] * 4 + [con_last] * 3
  findings = only(diagnose(stalled_stream(cls, con, two_terms())), "term_stalled")
  assert [f.subject for f in findings] == (["contrastive"] if fires else [])


# --- term_saturated -----------------------------------------------------------------

def test_term_saturated_single_loss():
  # 0.05 < 0.08 at step 40 of 400 (10 % < 25 %).
  findings = diagnose(make_stream([2.0, 1.0, 0.5, 0.3, 0.05, 0.04],
                                  meta={"total_steps": 400}))
  assert codes(findings) == ["term_saturated"]
  f = findings[0]
  assert (f.severity, f.step, f.until, f.subject) == ("warning", 40, None, "loss")
  assert f.message == "loss 0.05 at step 40 (10% of training), below 0.08"
  assert "label smoothing 0.1" in f.advice and "memorising" in f.advice


def test_term_saturated_one_term_of_two():
  n = 6
  cls = [2.0, 0.05, 0.04, 0.03, 0.03, 0.03]
  con = [4.0, 3.9, 3.8, 3.7, 3.6, 3.5]
  events = make_stream([0.8 * a + 0.2 * b for a, b in zip(cls, con)],
                       meta={"total_steps": 400, "terms": two_terms()},
                       fields={"term/classification": cls, "term/contrastive": con},
                       init={"loss": 2.64, "term/classification": 2.3})
  assert len(cls) == n
  f = the(diagnose(events), "term_saturated")
  assert (f.step, f.subject) == (16, "classification")
  assert f.message == ("classification 0.05 at step 16 (4% of training), below 0.08; "
                       "contrastive 3.9")
  assert "lower config.classification_weight from 0.8 to 0.7" in f.advice


def test_every_term_saturated_is_one_finding_without_weight_advice():
  # Both terms below 0.08 early (steps 16 and 24 of 400): the model fits the training
  # set; one finding, and no advice to move weight between two saturated terms.
  cls = [2.0, 0.05, 0.04, 0.03, 0.03, 0.03]
  con = [4.0, 0.5, 0.06, 0.05, 0.05, 0.05]
  events = make_stream([0.8 * a + 0.2 * b for a, b in zip(cls, con)],
                       meta={"total_steps": 400, "terms": two_terms()},
                       fields={"term/classification": cls, "term/contrastive": con},
                       init={"loss": 2.64, "term/classification": 2.3,
                             "term/contrastive": 4.1})
  findings = only(diagnose(events), "term_saturated")
  assert [(f.step, f.until, f.subject) for f in findings] == [(16, 24, "all")]
  assert findings[0].message == (
      "every term fell below 0.08 by step 24 (6% of training): classification 0.05 at "
      "step 16, contrastive 0.06 at step 24")
  assert "config." not in findings[0].advice  # no loss weight to change
  assert "no loss weight can help" in findings[0].advice
  assert "Dev metric" in findings[0].advice


def _with_dev(events, scores):
  """``events`` with a selection rule (Dev ``score``) and Dev evaluations
  ``{step: score}``."""
  events[0]["selection"] = {"split": "dev", "key": "score"}
  return events + [{"split": "dev", "stage": "constant", "step": step, "score": v}
                   for step, v in scores.items()]


def _all_saturated_stream():
  cls = [2.0, 0.05, 0.04, 0.03, 0.03, 0.03]
  con = [4.0, 0.5, 0.06, 0.05, 0.05, 0.05]
  return make_stream([0.8 * a + 0.2 * b for a, b in zip(cls, con)],
                     meta={"total_steps": 400, "terms": two_terms()},
                     fields={"term/classification": cls, "term/contrastive": con},
                     init={"loss": 2.64, "term/classification": 2.3,
                           "term/contrastive": 4.1})


def test_saturation_followed_by_a_better_dev_score_is_info():
  # Every term saturated by step 24; Dev score 0.80 at step 16, 0.85 at 24, 0.91 at 48:
  # the run kept improving, nothing to change.
  events = _with_dev(_all_saturated_stream(), {16: 0.80, 24: 0.85, 48: 0.91, 40: 0.88})
  f = the(diagnose(events), "term_saturated")
  assert (f.severity, f.subject) == ("info", "all")
  assert f.message.endswith("; dev score still rose after it, 0.85 at step 24 -> 0.91 "
                            "at step 48")
  # One head of two, with the same Dev curve: info, and the weight advice waits.
  cls = [2.0, 0.05, 0.04, 0.03, 0.03, 0.03]
  con = [4.0, 3.9, 3.8, 3.7, 3.6, 3.5]
  events = _with_dev(make_stream([0.8 * a + 0.2 * b for a, b in zip(cls, con)],
                                 meta={"total_steps": 400, "terms": two_terms()},
                                 fields={"term/classification": cls,
                                         "term/contrastive": con},
                                 init={"loss": 2.64, "term/classification": 2.3}),
                     {8: 0.5, 16: 0.80, 48: 0.91})
  f = the(diagnose(events), "term_saturated")
  assert (f.severity, f.subject) == ("info", "classification")
  assert f.advice.startswith("Nothing to change while the selection metric keeps "
                             "improving (model selection keeps the best evaluation). If "
                             "it stops: the classification head has saturated")
  assert "lower config.classification_weight from 0.8 to 0.7" in f.advice


def test_saturation_after_which_dev_stops_improving_stays_a_warning():
  # Best Dev score 0.85 at step 24, when the last term saturated; later ones are lower
  # (a tie is not an improvement).
  events = _with_dev(_all_saturated_stream(), {16: 0.80, 24: 0.85, 40: 0.85, 48: 0.84})
  f = the(diagnose(events), "term_saturated")
  assert (f.severity, f.subject) == ("warning", "all")
  assert f.message.endswith("; dev score did not improve after it (best 0.85 at step 24)")
  # No evaluation after the saturation yet (a live run): a warning without a verdict.
  events = _with_dev(_all_saturated_stream(), {16: 0.80, 24: 0.85})
  f = the(diagnose(events), "term_saturated")
  assert f.severity == "warning" and "dev score" not in f.message
  # No evaluation at or before it: the first one after is the reference.
  events = _with_dev(_all_saturated_stream(), {32: 0.80, 48: 0.79})
  assert the(diagnose(events), "term_saturated").severity == "warning"
  events = _with_dev(_all_saturated_stream(), {32: 0.80, 48: 0.81})
  assert the(diagnose(events), "term_saturated").severity == "info"


def test_diagnose_tool_takes_a_selection_for_an_older_stream(tmp_path, capsys):
  from tools.ops import diagnose as diagnose_tool  # pylint: disable=g-import-not-at-top
  events = _all_saturated_stream() + [
      {"split": "dev", "stage": "constant", "step": step, "score": v}
      for step, v in {24: 0.85, 48: 0.91}.items()]
  with open(tmp_path / "metrics.jsonl", "w") as f:
    f.write("\n".join(json.dumps(e) for e in events) + "\n")
  findings, _ = diagnose_tool.run(str(tmp_path))
  assert the(findings, "term_saturated").severity == "warning"  # no selection recorded
  findings, _ = diagnose_tool.run(str(tmp_path), selection={"split": "dev",
                                                            "key": "score"})
  assert the(findings, "term_saturated").severity == "info"
  assert diagnose_tool.main([str(tmp_path), "--selection", "dev:score"]) == 0
  assert "0 error, 0 warning, 1 info" in capsys.readouterr().out
  with pytest.raises(SystemExit):
    diagnose_tool.main([str(tmp_path), "--selection", "dev"])
  assert "--selection expects SPLIT:KEY" in capsys.readouterr().err
  # A stream's own selection is never replaced.
  events[0]["selection"] = {"split": "dev", "key": "missing"}
  with open(tmp_path / "metrics.jsonl", "w") as f:
    f.write("\n".join(json.dumps(e) for e in events) + "\n")
  findings, _ = diagnose_tool.run(str(tmp_path), selection={"split": "dev",
                                                            "key": "score"})
  assert the(findings, "term_saturated").severity == "warning"


def test_a_term_at_its_floor_is_not_stalled():
  # The contrastive term sits at ~0.05 (below saturated_loss) while classification
  # still falls: it is done, not stalled, so no "raise its weight" beside the
  # saturation finding's "lower it".
  con = [4.0, 0.06, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05]
  findings = diagnose(stalled_stream(CLS, con, two_terms(0.8, 0.2)))
  assert only(findings, "term_stalled") == []
  assert [f.subject for f in only(findings, "term_saturated")] == ["contrastive"]


# Monotone, >= 0.08 up to step 96, then 0.05 at step 104.
LATE = [2.0, 1.6, 1.3, 1.0, 0.8, 0.6, 0.45, 0.35, 0.27, 0.2, 0.15, 0.1, 0.05]


@pytest.mark.parametrize("losses,total,fires", [
    ([2.0, 1.0, 0.5, 0.3, 0.08], 400, False),  # 0.08 is not below 0.08
    (LATE, 400, False),                        # step 104 > 0.25 * 400 = 100
    (LATE, 416, True),                         # step 104 <= 0.25 * 416 = 104
])
def test_term_saturated_boundaries(losses, total, fires):
  findings = only(diagnose(make_stream(losses, meta={"total_steps": total})),
                  "term_saturated")
  assert [f.step for f in findings] == ([104] if fires else [])


# --- prediction_collapse ------------------------------------------------------------

def collapse_stream(shares, *, top=3, meta=None, fields=None, **kwargs):
  n = len(shares)
  return make_stream([2.0 - 0.1 * i for i in range(n)],
                     meta={"total_steps": 400, **(meta or {})},
                     fields={"top_share/class": shares, "top_class/class": [top] * n,
                             **(fields or {})}, **kwargs)


def test_prediction_collapse_fires_after_grace_and_patience():
  # Grace 0.1 * 400 = 40: steps 48 and 56 count; 2 periods = patience.
  findings = diagnose(collapse_stream([0.2] * 5 + [0.9, 0.95]))
  assert codes(findings) == ["prediction_collapse"]
  f = findings[0]
  assert (f.severity, f.step, f.until, f.subject) == ("error", 48, 56, "class/train")
  assert f.message == ("head class (train): class 3 is 90.0% of the predictions over "
                       "steps 48-56 (threshold 80.0%)")
  assert "predicts one class for almost everything" in f.advice


def test_prediction_collapse_names_class_and_curriculum_knobs():
  n = 7
  names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
           "nine"]
  f = the(diagnose(collapse_stream(
      [0.2] * 5 + [0.9, 0.95], meta={"class_names": {"class": names}},
      fields={"class_weight_cap": [10.0] * n, "tau": [1.2] * n,
              "sampler_mix": [1.0] * n})), "prediction_collapse")
  assert "class three is 90.0%" in f.message
  assert f.advice.endswith(" The curriculum had class_weight_cap 10, tau 1.2, "
                           "sampler_mix 1: lower tau or the cap if the collapsed class "
                           "is a tail class.")


def test_prediction_collapse_on_test_predictions():
  tests = [{"step": 48, "top_share/class": 0.95, "top_class/class": 0},
           {"step": 56, "top_share/class": 0.97, "top_class/class": 0}]
  f = the(diagnose(collapse_stream([0.2] * 7, tests=tests)), "prediction_collapse")
  assert (f.step, f.until, f.subject) == (48, 56, "class/test")
  assert "head class (test): class 0 is 95.0%" in f.message


@pytest.mark.parametrize("shares", [
    [0.2] * 5 + [0.8, 0.8],          # at the share threshold, not above
    [0.2] * 6 + [0.9],               # one period < patience 2
    [0.2] * 2 + [0.9] * 3 + [0.2] * 2,  # steps 24..40, all inside the grace (<= 40)
    [0.2] * 4 + [0.9, 0.9, 0.2],     # steps 40, 48: only 48 is after the grace
])
def test_prediction_collapse_quiet_near_miss(shares):
  assert only(diagnose(collapse_stream(shares)), "prediction_collapse") == []


def test_prediction_collapse_grace_override():
  shares = [0.2] * 2 + [0.9] * 3 + [0.2] * 2
  findings = diagnose(collapse_stream(shares), thresholds={"collapse_grace": 0.0})
  assert [(f.code, f.step, f.until) for f in findings] == [
      ("prediction_collapse", 24, 40)]


TAGGER = {"heads": {"class": {"num_classes": 10, "o_index": None},
                    "tags": {"num_classes": 5, "o_index": 0}}}


@pytest.mark.parametrize("value,text,advice", [
    (0.0, "tagger tags (train): 0.0% of tokens predicted non-O over steps 48-56 "
     "(every token O)", "Down-weight O in the tagger loss"),
    (1.0, "tagger tags (train): 100.0% of tokens predicted non-O over steps 48-56 "
     "(O almost never predicted)", "The entity tags swallow O"),
])
def test_prediction_collapse_tagger(value, text, advice):
  findings = diagnose(collapse_stream(
      [0.2] * 7, meta=TAGGER,
      fields={"non_o_share/tags": [0.3] * 5 + [value, value]}))
  assert codes(findings) == ["prediction_collapse"]
  f = findings[0]
  assert (f.severity, f.step, f.until, f.subject) == ("error", 48, 56,
                                                      "tags/non_o/train")
  assert f.message == text
  assert f.advice.startswith(advice)


@pytest.mark.parametrize("values", [
    [0.002, 0.002],   # above the 0.001 low bound
    [0.998, 0.998],   # below the 0.999 high bound
    [0.3, 0.0],       # one period < patience
])
def test_prediction_collapse_tagger_near_miss(values):
  events = collapse_stream([0.2] * 7, meta=TAGGER,
                           fields={"non_o_share/tags": [0.3] * 5 + values})
  assert only(diagnose(events), "prediction_collapse") == []


def test_prediction_collapse_tagger_needs_o_index():
  heads = {"heads": {"tags": {"num_classes": 5, "o_index": None}}}
  events = collapse_stream([0.2] * 7, meta=heads,
                           fields={"non_o_share/tags": [0.0] * 7})
  assert only(diagnose(events), "prediction_collapse") == []


def test_prediction_collapse_tagger_grace():
  # 0 % non-O at steps 8..40 only: all inside the grace of 0.1 * 400 = 40 steps.
  events = collapse_stream([0.2] * 7, meta=TAGGER,
                           fields={"non_o_share/tags": [0.0] * 5 + [0.3, 0.3]})
  assert only(diagnose(events), "prediction_collapse") == []


# --- class_starved ----------------------------------------------------------------------

# Ten classes; class 9 is 5 % of the labels.
STARVE_REAL = [0.1] * 9 + [0.05]
STARVE_REAL = [r / sum(STARVE_REAL) for r in STARVE_REAL]


def starve_stream(preds, *, real=STARVE_REAL, steps=None, n_train=7, meta=None,
                  test_fields=None, train_fields=None):
  """Train periods of a healthy run (400 steps in all unless ``n_train`` reaches
  further) and one evaluation per prediction-share vector in ``preds``."""
  steps = steps or [400 - 100 * (len(preds) - 1 - i) for i in range(len(preds))]
  tests = [{"step": s, "pred_share/class": list(p), "label_share/class": list(real),
            "top_share/class": max(p), "top_class/class": list(p).index(max(p)),
            **(test_fields or {})} for s, p in zip(steps, preds)]
  return make_stream([2.0 - 0.1 * i for i in range(n_train)],
                     meta={"total_steps": 400, **(meta or {})}, tests=tests,
                     fields={k: [v] * n_train for k, v in (train_fields or {}).items()})


def _starving(p9):
  """Predictions giving class 9 the share ``p9``, the rest spread over classes 0-8."""
  return [(1 - p9) / 9] * 9 + [p9]


def test_class_starved_fires_at_the_end_of_training():
  r9 = STARVE_REAL[9]
  # Class 9 at 0.4 % of the predictions against 5.3 % of the labels (7.6 % of its
  # share < 10 %) on the last two evaluations.
  events = starve_stream([_starving(0.05), _starving(0.004), _starving(0.004)],
                         meta={"class_names": {"class": [str(i) for i in range(10)]}})
  f = the(diagnose(events), "class_starved")
  assert (f.severity, f.step, f.until, f.subject) == ("warning", 300, 400, "class/test")
  assert f.message == (f"head class (test): class 9 gets 0.4% of the predictions against "
                       f"{100 * r9:.1f}% of the labels ({100 * 0.004 / r9:.3g}% of its "
                       f"share) on the last 2 evaluations (over steps 300-400, the end "
                       f"of training; threshold 10.0% of the share)")
  assert "logit adjustment (tau 1" in f.advice


def test_class_starved_names_every_starved_class_and_the_last_stage():
  real = [0.3, 0.3, 0.2, 0.1, 0.1]
  pred = [0.45, 0.45, 0.095, 0.005, 0.0]  # classes 3 and 4 starved, 2 at 48 % of share
  knobs = {"tau": 0.0, "class_weight_cap": 1.0, "sampler_mix": 0.0}
  f = the(diagnose(starve_stream([pred, pred], real=real, train_fields=knobs)),
          "class_starved")
  assert f.message.startswith("head class (test): class 3 gets 0.5% of the predictions "
                              "against 10.0% of the labels (5% of its share); class 4 "
                              "gets 0.0% of the predictions against 10.0% of the labels "
                              "(0% of its share) on the last 2 evaluations")
  assert f.advice.startswith("The model has all but stopped predicting these classes")
  assert f.advice.endswith("The last stage had class_weight_cap 1, tau 0, sampler_mix 0.")


def test_class_starved_frequent_classes_blame_the_reweighting():
  # Classes 3 and 4 are the training set's head (30 % each) but a too-strong logit
  # adjustment leaves them 0.5 % / 0 % of the balanced test predictions.
  real = [0.2] * 5
  pred = [0.33, 0.33, 0.335, 0.005, 0.0]
  train = [0.05, 0.15, 0.2, 0.3, 0.3]
  f = the(diagnose(starve_stream([pred, pred], real=real, meta=_heads(train),
                                 train_fields={"tau": 6.0, "class_weight_cap": 10.0,
                                               "sampler_mix": 1.0})), "class_starved")
  assert "class 3 gets 0.5%" in f.message and "class 4 gets 0.0%" in f.message
  assert f.advice.startswith("These are frequent classes in the training data, so the "
                             "re-weighting towards the rare ones is too strong")
  assert f.advice.endswith("The last stage had class_weight_cap 10, tau 6, sampler_mix 1.")


@pytest.mark.parametrize("preds,thresholds", [
    ([_starving(0.006), _starving(0.006)], {}),      # 11 % of its share: above 10 %
    ([_starving(0.0), _starving(0.012)], {}),        # the mean: 11 % of its share
    ([_starving(0.0), _starving(0.05)], {}),         # recovered at the last evaluation
    ([_starving(0.0), _starving(0.0), _starving(0.012)], {}),  # only the last 2 count
    ([_starving(0.0)], {}),                          # one evaluation < patience 2
    ([_starving(0.0), _starving(0.0)], {"starved_min_share": 0.06}),  # too rare to judge
    ([_starving(0.004), _starving(0.004)], {"starved_ratio": 0.05}),  # 7.6 % > 5 %
])
def test_class_starved_quiet_near_miss(preds, thresholds):
  assert only(diagnose(starve_stream(preds), thresholds=thresholds),
              "class_starved") == []


def test_class_starved_only_when_finished_and_not_on_a_collapse():
  preds = [_starving(0.0), _starving(0.0)]
  # The run is at step 400 of 800: a curriculum may still lift the class.
  assert only(diagnose(starve_stream(preds, meta={"total_steps": 800})),
              "class_starved") == []
  # One class takes 96 % of the predictions: prediction_collapse's finding, not this.
  collapsed = [[0.96] + [0.04 / 9] * 9] * 2
  findings = diagnose(starve_stream(collapsed))
  assert only(findings, "class_starved") == []
  assert codes(only(findings, "prediction_collapse")) == ["prediction_collapse"]


def test_class_starved_judged_against_training_shares_without_eval_shares():
  events = starve_stream([_starving(0.0), _starving(0.0)],
                         meta=_heads(STARVE_REAL))
  for e in events:
    e.pop("label_share/class", None)
  assert the(diagnose(events), "class_starved").subject == "class/test"


# Calibrated by the labels' own shares (issue 21): the cases measured on held-out data.

def _heads(shares, o_index=None, name="class"):
  return {"heads": {name: {"num_classes": len(shares), "o_index": o_index,
                           "label_shares": shares}}}


def test_majority_class_at_its_natural_share_is_silent():
  # A held-out JointBERT-layout set: the majority intent is 73.9 % of the training
  # labels and 86.8 % of the predictions: above the fixed 80 %, yet the other
  # intents keep 13.2 / 26.1 = 51 % of their share.
  shares = [0.739] + [0.261 / 6] * 6
  events = collapse_stream([0.2] * 5 + [0.868, 0.868], top=0, meta=_heads(shares))
  assert only(diagnose(events), "prediction_collapse") == []
  # Without the shares the fixed threshold fires: the false alarm the shares remove.
  assert codes(diagnose(collapse_stream([0.2] * 5 + [0.868, 0.868], top=0))) == [
      "prediction_collapse"]


def test_a_class_swallowing_the_others_relative_to_its_share_fires():
  # Balanced labels, one class 75 % of the predictions: under the fixed 80 %, but
  # the other three classes get 25 / 75 = 33 %... and at 82 %: 24 % < 25 %.
  shares = [0.25] * 4
  quiet = collapse_stream([0.2] * 5 + [0.75, 0.75], top=1, meta=_heads(shares))
  assert only(diagnose(quiet), "prediction_collapse") == []
  f = the(diagnose(collapse_stream([0.2] * 5 + [0.82, 0.82], top=1,
                                   meta=_heads(shares))), "prediction_collapse")
  assert f.message == ("head class (train): class 1 is 82.0% of the predictions over "
                       "steps 48-56, against 25.0% of the labels: the other classes "
                       "get 24.0% of their share (threshold 25.0%)")


def test_evaluation_label_shares_override_the_training_shares():
  # Long-tailed training (class 0: 60 %), balanced test (10 %): 79 % of the test
  # predictions on class 0 leave the other classes 21 / 90 = 23 % of their test share
  # (against the training share, 21 / 40 = 52 %: silent).
  meta = _heads([0.6] + [0.4 / 9] * 9)
  tests = [{"step": s, "top_share/class": 0.79, "top_class/class": 0,
            "label_share/class": [0.1] * 10} for s in (48, 56)]
  assert only(diagnose(collapse_stream(
      [0.2] * 7, top=0, meta=meta,
      tests=[{k: v for k, v in t.items() if k != "label_share/class"} for t in tests])),
      "prediction_collapse") == []
  f = the(diagnose(collapse_stream([0.2] * 7, top=0, meta=meta, tests=tests)),
          "prediction_collapse")
  assert f.subject == "class/test" and "against 10.0% of the labels" in f.message


@pytest.mark.parametrize("non_o,gold_o,fires,text", [
    # The held-out JSONL set: 99.6 % predicted entities, 21.8 % gold.
    (0.996, 0.782, True, "(O almost never predicted)"),
    # SNIPS :smoke: 96 % predicted non-O against 51 % gold.
    (0.96, 0.49, True, "(O almost never predicted)"),
    # Everything O: 1 % non-O against 21.8 % gold.
    (0.01, 0.782, True, "(every token O)"),
    # A held-out JointBERT-layout run: 52.4 % non-O against 40.0 % gold: a bias, not
    # a collapse.
    (0.524, 0.60, False, None),
])
def test_tagger_collapse_either_way_against_the_gold_share(non_o, gold_o, fires, text):
  meta = _heads([gold_o] + [(1 - gold_o) / 4] * 4, o_index=0, name="tags")
  events = collapse_stream([0.2] * 7, meta=meta,
                           fields={"non_o_share/tags": [0.3] * 5 + [non_o] * 2})
  found = only(diagnose(events), "prediction_collapse")
  assert bool(found) == fires
  if fires:
    assert found[0].subject == "tags/non_o/train" and found[0].message.endswith(text)
    assert f"against {100 * (1 - gold_o):.1f}% of the labels" in found[0].message


def test_tagger_collapse_on_evaluation_uses_the_split_gold_share():
  meta = {"heads": {"tags": {"num_classes": 5, "o_index": 0}}}
  tests = [{"step": s, "pred_non_o_share": 0.96, "true_non_o_share": 0.51}
           for s in (48, 56)]
  f = the(diagnose(collapse_stream([0.2] * 7, meta=meta, tests=tests)),
          "prediction_collapse")
  assert f.subject == "tags/non_o/test"
  assert f.message == ("tagger tags (test): 96.0% of tokens predicted non-O against "
                       "51.0% of the labels over steps 48-56 (O almost never "
                       "predicted)")


# --- initial_loss_off ---------------------------------------------------------------

@pytest.mark.parametrize("loss,fires,text,advice", [
    # |2.9 - 2.3026| = 0.597 > 0.25 * 2.3026 = 0.576; (2.9 - 2.3026) / 2.3026 = +26 %.
    (2.9, True, "first-step loss 2.9, expected about ln 10 = 2.303 for an untrained "
     "model (+26%, tolerance 25%)", "confidently wrong"),
    (2.85, False, None, None),   # 0.547 < 0.576
    # |1.7 - 2.3026| = 0.603 > 0.576; -26 %.
    (1.7, True, "first-step loss 1.7, expected about ln 10 = 2.303 for an untrained "
     "model (-26%, tolerance 25%)", "lower than chance allows"),
    (1.75, False, None, None),   # 0.553 < 0.576
])
def test_initial_loss(loss, fires, text, advice):
  findings = diagnose(make_stream(HEALTHY, init={"loss": loss}))
  if not fires:
    assert findings == []
    return
  assert codes(findings) == ["initial_loss_off"]
  f = findings[0]
  assert (f.severity, f.step, f.subject) == ("warning", 1, "loss")
  assert f.message == text
  assert advice in f.advice


def test_initial_loss_per_term():
  # Two terms: each term with a reference is checked (classification vs ln 10);
  # contrastive has none, so even 40 is not judged, nor is the total loss.
  # (3.5 - 2.3026) / 2.3026 = +52 %.
  events = make_stream(HEALTHY, meta={"terms": two_terms()},
                       init={"loss": 99.0, "term/classification": 3.5,
                             "term/contrastive": 40.0})
  findings = diagnose(events)
  assert codes(findings) == ["initial_loss_off"]
  assert findings[0].subject == "classification"
  assert findings[0].message.startswith(
      "first-step classification 3.5, expected about ln 10 = 2.303 for an untrained "
      "model (+52%")


def test_initial_loss_tolerance_from_meta_thresholds():
  # The meta event's thresholds apply: 0.597 <= 0.3 * 2.3026 = 0.691.
  events = make_stream(HEALTHY, init={"loss": 2.9},
                       meta={"thresholds": {"initial_loss_tolerance": 0.3}})
  assert diagnose(events) == []
  # diagnose(thresholds=...) overrides the meta event's.
  assert codes(diagnose(events, thresholds={"initial_loss_tolerance": 0.25})) == [
      "initial_loss_off"]


# --- eval_nondeterministic ----------------------------------------------------------

REPEAT = {"step": 16, "war": 0.5, "uar": 0.5, "eval_repeat_max_diff": 2.0}


def test_eval_nondeterministic_fires():
  findings = diagnose(make_stream(HEALTHY, tests=[REPEAT]))
  assert codes(findings) == ["eval_nondeterministic"]
  f = findings[0]
  assert (f.severity, f.step, f.subject) == ("error", 16, "")
  assert f.message == ("evaluating the same parameters twice at step 16 gave different "
                       "outputs (max |difference| 2)")
  assert "train=False" in f.advice


def test_eval_nondeterministic_quiet_near_miss():
  assert diagnose(make_stream(HEALTHY, tests=[{**REPEAT,
                                               "eval_repeat_max_diff": 0.0}])) == []
  # Tolerance raised to the difference: not above it.
  assert diagnose(make_stream(HEALTHY, tests=[REPEAT]),
                  thresholds={"eval_tolerance": 2.0}) == []
  # NaN: an older stream's difference of a diverged model's NaN outputs (now 0).
  assert diagnose(make_stream(HEALTHY, tests=[{**REPEAT,
                                               "eval_repeat_max_diff": math.nan}])) == []
  # inf: one evaluation finite where the other is not is a real difference.
  assert codes(diagnose(make_stream(HEALTHY, tests=[{
      **REPEAT, "eval_repeat_max_diff": math.inf}]))) == ["eval_nondeterministic"]


# --- stage_expectation --------------------------------------------------------------

STAGES = [
    {"name": "warm-up", "start_step": 0, "expect": {"war": "up"},
     "knobs": {"class_weight_cap": 1.5, "tau": 0.0, "sampler_mix": 0.0}},
    {"name": "margin", "start_step": 40, "expect": {"uar": "up"},
     "knobs": {"class_weight_cap": 3.0, "tau": 0.5, "sampler_mix": 1.0}},
]


def stage_stream(margin_uar, *, last_step=80):
  """Evaluations at steps 8..80; warm-up at 8..40, margin at 48..80 (total 80)."""
  war = {8: 0.50, 16: 0.55, 24: 0.60, 32: 0.62, 40: 0.64}
  tests = [{"step": s, "stage": "warm-up", "war": w, "uar": 0.40}
           for s, w in war.items()]
  tests += [{"step": s, "stage": "margin", "war": 0.6, "uar": margin_uar}
            for s in (48, 56, 64, 72, 80) if s <= last_step]
  n = last_step // PERIOD
  return make_stream(HEALTHY[:n], stages=["warm-up"] * 5 + ["margin"] * (n - 5),
                     tests=tests, meta={"stages": STAGES, "total_steps": 80})


def test_stage_expectation_met_is_info():
  # warm-up WAR: first evaluation 0.50 -> mean of the last 3 (0.60, 0.62, 0.64) = 0.62.
  # Noise: the variance of (0.60, 0.62, 0.64) is 0.0004 (ddof 1), one evaluation
  # before: 2 * sqrt(0 + 0.0004 / 3) = 0.0231 -> +/-2.3 points.
  # margin UAR: warm-up's last 3 mean 0.40 -> 0.411 with no spread: noise = the 1-point
  # tolerance, +1.1 points >= 1 point.
  findings = only(diagnose(stage_stream(0.411)), "stage_expectation")
  assert [(f.severity, f.step, f.subject) for f in findings] == [
      ("info", 40, "warm-up/war"), ("info", 80, "margin/uar")]
  # The numbers are means of evaluations, and say so (summary.json has single ones).
  assert findings[0].message == ("stage warm-up: test WAR 50.0 -> 62.0 (means of 1 and 3 "
                                 "evaluations, +12.0 points, noise +/-2.3; intended to "
                                 "rise): as intended")
  assert findings[0].advice == "None needed."
  assert findings[1].message == ("stage margin: test UAR 40.0 -> 41.1 (means of 3 and 3 "
                                 "evaluations, +1.1 points, noise +/-1.0; intended to "
                                 "rise): as intended")


def test_stage_expectation_within_noise_is_info():
  # margin UAR 0.40 -> 0.409: +0.9 points, inside the 1-point noise: no verdict.
  findings = only(diagnose(stage_stream(0.409)), "stage_expectation")
  f = [f for f in findings if f.subject == "margin/uar"][0]
  assert (f.severity, f.step) == ("info", 80)
  assert f.message.endswith("no move beyond the evaluation noise")


def test_stage_expectation_noise_from_the_stage_spread():
  # A margin stage whose UAR swings 0.50 / 0.30 over its 5 evaluations (last 3 = 0.50,
  # 0.30, 0.50 -> mean 0.4333, var 0.01333): noise 2 * sqrt(0.01333 / 3) = 0.133, so
  # +3.3 points is inside it.
  stream = stage_stream(0.40)
  swings = iter([0.50, 0.30, 0.50, 0.30, 0.50, 0.30])
  for e in stream:
    if e["split"] == "test" and e["stage"] == "margin":
      e["uar"] = next(swings)
  findings = only(diagnose(stream), "stage_expectation")
  f = [f for f in findings if f.subject == "margin/uar"][0]
  assert f.severity == "info" and "evaluations, +3.3 points, noise +/-13.3" in f.message


def test_stage_expectation_missed_is_warning():
  # margin UAR 0.40 -> 0.38: -2.0 points, beyond the 1-point noise, against "up".
  findings = only(diagnose(stage_stream(0.38)), "stage_expectation")
  f = [f for f in findings if f.subject == "margin/uar"][0]
  assert (f.severity, f.step) == ("warning", 80)
  assert f.message == ("stage margin: test UAR 40.0 -> 38.0 (means of 3 and 3 "
                       "evaluations, -2.0 points, noise +/-1.0; intended to rise)")
  assert f.advice == ("The stage did not do what it is for. Its knobs were "
                      "class_weight_cap 3, tau 0.5, sampler_mix 1; make it stronger (a "
                      "higher class-weight cap or tau, a longer stage) or check that its "
                      "knobs reach the loss.")


def test_stage_expectation_unfinished_stage_not_judged():
  # Stopped at step 64 of 80: the margin stage is not over, the warm-up is.
  findings = only(diagnose(stage_stream(0.30, last_step=64)), "stage_expectation")
  assert [f.subject for f in findings] == ["warm-up/war"]
  # Stopped at step 40: no evaluation after the margin stage began, nothing is over.
  assert only(diagnose(stage_stream(0.30, last_step=40)), "stage_expectation") == []


# --- thresholds, halt_on, Monitor, ordering -----------------------------------------

EXPLODING = [None, 12.5] + [None] * 10


def test_threshold_overrides_change_firing():
  events = make_stream(HEALTHY, grad_norm_max=EXPLODING)
  assert codes(diagnose(events)) == ["grad_explosion"]
  assert diagnose(events, thresholds={"grad_explosion": 20.0}) == []
  # The same through the meta event ...
  quiet = make_stream(HEALTHY, grad_norm_max=EXPLODING,
                      meta={"thresholds": {"grad_explosion": 20.0}})
  assert diagnose(quiet) == []
  # ... which diagnose's own thresholds override.
  assert codes(diagnose(quiet, thresholds={"grad_explosion": 10.0})) == [
      "grad_explosion"]
  # Config-only keys are ignored.
  assert codes(diagnose(events, thresholds={"halt_on": ["non_finite"],
                                            "enabled": True})) == ["grad_explosion"]


def test_unknown_or_negative_threshold_raises():
  events = make_stream(HEALTHY)
  with pytest.raises(ValueError, match="grad_explosoin"):
    diagnose(events, thresholds={"grad_explosoin": 5.0})
  with pytest.raises(ValueError, match="'nope'"):
    diagnose(make_stream(HEALTHY, meta={"thresholds": {"nope": 1}}))
  with pytest.raises(ValueError, match="window must be >= 0"):
    diagnose(events, thresholds={"window": -1})
  with pytest.raises(ValueError, match="'bad'"):
    Monitor(thresholds={"bad": 1.0})


def test_validate_halt_on():
  assert validate_halt_on(["non_finite", "grad_explosion"]) == ("non_finite",
                                                                 "grad_explosion")
  assert validate_halt_on(None) == ()
  with pytest.raises(ValueError, match="nope"):
    validate_halt_on(["nope"])
  with pytest.raises(ValueError, match="nope"):
    Monitor(halt_on=["non_finite", "nope"])


def test_default_thresholds_match_table():
  th = checks.default_thresholds()
  assert th == {k: v for k, (v, _) in checks.THRESHOLDS.items()}
  assert th["grad_explosion"] == 10.0 and th["window"] == 10


def test_monitor_reports_each_episode_once():
  monitor = Monitor(halt_on=["non_finite"])
  skipped = [0, 0, 3, 0] + [0] * 8
  events = make_stream(HEALTHY[:4], skipped=skipped[:4])
  new = monitor.update(events)
  assert [(f.code, f.step, f.until) for f in new] == [("non_finite", 24, 24)]
  assert monitor.halting(new) is new[0]
  assert monitor.update(events) == []  # the same stream again: nothing new
  # The stream grows: the episode goes on (same key, until 32) and an explosion starts.
  grown = make_stream(HEALTHY[:6], skipped=[0, 0, 3, 2, 0, 0],
                      grad_norm_max=[None] * 5 + [15.0])
  new = monitor.update(grown)
  assert [(f.code, f.step) for f in new] == [("grad_explosion", 48)]
  assert monitor.halting(new) is None  # grad_explosion is not in halt_on
  # All current findings are kept, the episode with its new end.
  assert [(f.code, f.step, f.until) for f in monitor.findings] == [
      ("non_finite", 24, 32), ("grad_explosion", 48, 48)]
  # A second episode of non_finite is new.
  again = make_stream(HEALTHY[:8], skipped=[0, 0, 3, 2, 0, 0, 0, 1],
                      grad_norm_max=[None] * 5 + [15.0, None, None])
  new = monitor.update(again)
  assert [(f.code, f.step) for f in new] == [("non_finite", 64)]
  assert monitor.halting(new).step == 64


def test_monitor_respects_meta_thresholds_like_diagnose():
  events = make_stream(HEALTHY, grad_norm_max=EXPLODING,
                       meta={"thresholds": {"grad_explosion": 20.0}})
  assert diagnose(events) == []
  assert Monitor().update(events) == []


def test_findings_sorted_by_step_then_severity():
  # Step 16: an explosion (warning) and skipped steps (error): the error first.
  events = make_stream(HEALTHY, grad_norm_max=EXPLODING, skipped=[0, 1] + [0] * 10,
                       init={"loss": 3.5})
  assert [(f.step, f.code) for f in diagnose(events)] == [
      (1, "initial_loss_off"), (16, "non_finite"), (16, "grad_explosion")]


def test_events_in_any_order():
  events = make_stream(FLAT)
  assert diagnose(events[::-1]) == diagnose(events)
