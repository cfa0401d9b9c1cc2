"""tools.reports.failure_modes: the dominant-intent SNIPS copy and the table (the runs
themselves are the experiment; tests/monitors replays their recorded streams)."""

import collections
import os

import pytest

from tools.reports import failure_modes


@pytest.mark.skipif(not os.path.isdir(failure_modes.SNIPS),
                    reason=f"SNIPS not found at {failure_modes.SNIPS}")
def test_dominant_intent_copy_has_the_share_and_aligned_files(tmp_path):
  out = failure_modes.dominant_intent_snips(failure_modes.SNIPS, str(tmp_path), share=0.74)
  with open(os.path.join(failure_modes.SNIPS, "train", "label")) as f:
    source = f.read().split()
  for split in ("train", "dev", "test"):
    lines = {}
    for name in ("seq.in", "seq.out", "label"):
      with open(os.path.join(out, split, name)) as f:
        lines[name] = f.read().splitlines()
    assert len(lines["seq.in"]) == len(lines["seq.out"]) == len(lines["label"])
    for words, tags in zip(lines["seq.in"], lines["seq.out"]):
      assert len(words.split()) == len(tags.split())
    counts = collections.Counter(lines["label"])
    # round() of the others' count: within half a sentence of 74 %.
    assert abs(counts["PlayMusic"] / len(lines["label"]) - 0.74) <= 0.5 / len(
        lines["label"]) + 1e-9
  # Every PlayMusic sentence of the training split is kept.
  with open(os.path.join(out, "train", "label")) as f:
    kept = collections.Counter(f.read().split())["PlayMusic"]
  assert kept == collections.Counter(source)["PlayMusic"] == 1914


def _row(**kw):
  row = {"run": "x", "provoked_by": "how", "expected": None, "silent_on": None,
         "reported": True, "codes": [], "message": "", "advice": "", "folded": [],
         "step": None, "exit_status": 0, "war": 0.9611, "uar": 0.94}
  row.update(kw)
  return row


def test_markdown_rows_incident_and_silent_cases():
  rows = [
      _row(run="lr_far_too_high", expected="loss_diverged", step=8,
           codes=["loss_diverged (error)"], message="rose", advice="Lower",
           folded=["non_finite", "grad_explosion", "non_finite"], exit_status=3,
           war=0.024, uar=0.1),
      _row(run="nlu_majority_intent", provoked_by="74 %", silent_on="prediction_collapse",
           war=None, uar=None, intent_accuracy=0.98, slot_f1=0.9, sentence_accuracy=0.8,
           pred_non_o_share=0.5, true_non_o_share=0.51, top_intent_share=0.73),
  ]
  rows[1].pop("war")
  rows[1].pop("uar")
  table = failure_modes.markdown(rows).splitlines()
  assert table[2] == ("| `loss_diverged` | how | 8 | rose | Lower | `grad_explosion`, "
                      "`non_finite` | - | WAR / UAR 2.4 / 10.0 | 3 |")
  assert table[-1] == ("| nlu_majority_intent: 74 % | prediction_collapse | none | intent "
                       "98.0, slot F1 90.0; non-O 50.0% (gold 51.0%), top intent 73.0% | "
                       "0 | yes |")
