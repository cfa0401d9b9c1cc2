"""tools.reports.nlu_table: workdir names and the Markdown table (the runs themselves are the
experiment; tests/nlu_test.py trains the smoke and collapse configs)."""

from tools.reports import nlu_table


def _row(label, i, s, a, skipped=0, findings=()):
  return {"label": label, "intent_accuracy": i, "slot_f1": s, "sentence_accuracy": a,
          "pred_non_o_share": 0.5, "true_non_o_share": 0.512, "top_intent_share": 0.15,
          "skipped_steps": skipped, "steps": 615, "findings": list(findings),
          "diagnosis": {"error": len(findings), "warning": 0, "info": 0}}


def test_markdown_rows_and_anchors():
  anchors = ({"model": "Slot-gated", "intent_accuracy": 0.97, "slot_f1": 0.888,
              "sentence_accuracy": 0.755},)
  table = nlu_table.markdown(
      [_row("recipe", 0.9814, 0.9021, 0.8, 0),
       _row("collapse", 0.1, 0.0, 0.0, 615, ["non_finite"])], anchors).splitlines()
  assert table[2] == ("| recipe | 98.14 | 90.21 | 80.00 | 50.0 (51.2) | 15.0 | 0/615 "
                      "| 0/0 |")
  assert table[3].endswith("| 615/615 | 1/0 (non_finite) |")
  assert table[-1] == "| Slot-gated, published | 97.0 | 88.8 | 75.5 | | | | |"


def test_dirnames_are_distinct_per_row():
  names = {nlu_table._dirname(v, o, 0) for _, v, o in nlu_table.ROWS}
  assert len(names) == len(nlu_table.ROWS)
