"""Findings out: the live line, diagnosis.json and the printed table."""

import json
import os

from jaxloss.monitors import report
from jaxloss.monitors.checks import Finding, default_thresholds
from jaxloss.monitors.report import (counts, diagnosis_dict, format_live, format_table,
                                     write_diagnosis)

ERROR = Finding("non_finite", "error", 24, "3 of 8 steps between step 24 and 32 had a "
                "non-finite loss or gradient and were skipped (params kept)",
                "Lower config.learning_rate from 0.05 to 0.005 and clip gradients "
                "(max_grad_norm=1.0).", until=32)
WARNING = Finding("term_stalled", "warning", 8, "contrastive term flat over steps 8-80 "
                  "(4 -> 3.96, -1.0%) while classification fell 37% (2 -> 1.1); "
                  "weights contrastive 0.2, classification 0.8",
                  "Raise config.contrastive_weight from 0.2 to 0.3 and lower "
                  "config.classification_weight from 0.8 to 0.7 (0.8/0.2 -> 0.7/0.3).",
                  subject="contrastive", until=80)
INFO = Finding("stage_expectation", "info", 40, "stage warm-up: test WAR 50.0 -> 62.0 "
               "(+12.0 points; intended to rise): as intended", "None needed.",
               subject="warm-up/war")


# --- format_live --------------------------------------------------------------------

def test_format_live():
  assert format_live(WARNING) == (
      "WARN  term_stalled [contrastive] @ step 8: " + WARNING.message
      + "\n      -> " + WARNING.advice)
  line = format_live(ERROR)
  assert line.startswith("ERROR non_finite @ step 24: 3 of 8 steps")  # no subject
  assert line.splitlines()[1] == "      -> " + ERROR.advice
  assert format_live(INFO).startswith("info  stage_expectation [warm-up/war] @ step 40:")


# --- counts, diagnosis_dict ---------------------------------------------------------

def test_counts():
  assert counts([]) == {"error": 0, "warning": 0, "info": 0}
  assert counts([ERROR, WARNING, INFO, INFO]) == {"error": 1, "warning": 1, "info": 2}


def test_diagnosis_dict_healthy_only_without_error_or_warning():
  assert diagnosis_dict([])["healthy"] is True
  assert diagnosis_dict([INFO])["healthy"] is True
  assert diagnosis_dict([INFO, WARNING])["healthy"] is False
  assert diagnosis_dict([ERROR])["healthy"] is False


def test_finding_to_dict_fills_until():
  assert INFO.to_dict() == {
      "code": "stage_expectation", "severity": "info", "step": 40,
      "message": INFO.message, "advice": "None needed.", "subject": "warm-up/war",
      "until": 40, "related": []}  # a one-off: until = step; nothing folded in
  assert ERROR.to_dict()["until"] == 32
  assert INFO.key == ("stage_expectation", "warm-up/war", 40)


# --- write_diagnosis ----------------------------------------------------------------

def test_write_diagnosis_atomic_valid_json(tmp_path):
  path = str(tmp_path / "diagnosis.json")
  th = default_thresholds()
  doc = write_diagnosis(path, [WARNING, ERROR], thresholds=th, halted=ERROR,
                        source="/w/metrics.jsonl")
  assert os.listdir(tmp_path) == ["diagnosis.json"]  # no .tmp left behind
  with open(path) as f:
    loaded = json.load(f)
  assert loaded == doc
  assert set(loaded) == {"source", "healthy", "counts", "halted", "findings",
                         "thresholds"}
  assert loaded["source"] == "/w/metrics.jsonl"
  assert loaded["healthy"] is False
  assert loaded["counts"] == {"error": 1, "warning": 1, "info": 0}
  assert loaded["halted"] == ERROR.to_dict()
  assert loaded["findings"] == [WARNING.to_dict(), ERROR.to_dict()]
  assert loaded["thresholds"] == th


def test_write_diagnosis_replaces_previous_file(tmp_path):
  path = str(tmp_path / "diagnosis.json")
  write_diagnosis(path, [ERROR], halted=ERROR)
  doc = write_diagnosis(path, [])
  assert os.listdir(tmp_path) == ["diagnosis.json"]
  with open(path) as f:
    loaded = json.load(f)
  assert loaded == doc == {"source": "", "healthy": True,
                           "counts": {"error": 0, "warning": 0, "info": 0},
                           "halted": None, "findings": [], "thresholds": {}}


# --- format_table -------------------------------------------------------------------

def test_format_table_empty():
  assert format_table([]) == "No findings: no monitor fired (healthy)."


def test_format_table_rows_advice_and_counts():
  text = format_table([WARNING, ERROR, INFO], width=100)
  lines = text.splitlines()
  assert lines[0].split() == ["severity", "code", "step", "subject", "message"]
  assert lines[1] == "-" * 80
  rows = [l for l in lines if l.split() and l.split()[0] in ("error", "warning",
                                                             "info")]
  assert [r.split()[:4] for r in rows] == [
      ["warning", "term_stalled", "8", "contrastive"],
      ["error", "non_finite", "24", "3"],          # no subject: message follows
      ["info", "stage_expectation", "40", "warm-up/war"]]
  # Fixed columns: severity 8, code 22, step right-aligned in 7, subject 18.
  assert rows[0].startswith("warning  term_stalled           " + "      8  "
                            + "contrastive        contrastive term flat")
  assert all(len(l) <= 100 for l in lines)
  # The message and the advice are complete once the wrapping is undone.
  flat = " ".join(l.strip() for l in lines)
  assert WARNING.message in flat
  assert "advice: " + WARNING.advice in flat and "advice: None needed." in flat
  advice_lines = [l for l in lines if l.lstrip().startswith("advice:")]
  assert len(advice_lines) == 3 and all(l.startswith(" " * 8 + "advice: ")
                                        for l in advice_lines)
  assert lines[-2] == "-" * 80
  assert lines[-1] == "1 error, 1 warning, 1 info"  # not healthy: no "(healthy"


def test_format_table_healthy_counts_line():
  text = format_table([INFO])
  assert text.splitlines()[-1] == "0 error, 0 warning, 1 info  (healthy: no error or " \
      "warning)"
  assert "(healthy" not in format_table([INFO, WARNING]).splitlines()[-1]


def test_format_table_truncates_long_subject():
  long = Finding("prediction_collapse", "error", 48, "m", "a",
                 subject="a_very_long_head_name/train")
  row = format_table([long]).splitlines()[2]
  assert "a_very_long_head_n " in row and "a_very_long_head_name" not in row
  assert report.SEVERITIES == ("error", "warning", "info")
