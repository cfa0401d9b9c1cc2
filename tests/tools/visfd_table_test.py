"""tools.reports.visfd_table: workdir names and the Markdown table (the runs themselves are the
experiment; tests/absa_test.py trains the smoke config)."""

from tools.reports import visfd_table


def _row(label, a, s, members=None):
  return {"label": label, "aspect_f1": a, "sentiment_f1": s, "macro_f1_4class": 0.5,
          "selected_epoch": 12.0, "wall_s": 480.4,
          "diagnosis": {"error": 0, "warning": 1, "info": 0}, "members": members}


def test_markdown_rows_members_and_anchor():
  members = [{"focal_weight": 0.7, "contrastive_weight": 0.3, "seed": 0,
              "aspect_f1": 0.75, "sentiment_f1": 0.5},
             {"focal_weight": 0.8, "contrastive_weight": 0.2, "seed": 1,
              "aspect_f1": 0.76, "sentiment_f1": 0.51}]
  table = visfd_table.markdown([_row("CE", 0.7512, 0.4833),
                                _row("ensemble", 0.77, 0.53, members)]).splitlines()
  assert table[2] == "| CE | 75.12 | 48.33 | 50.00 | 12 | 0/1 |"
  assert table[4].startswith("| &nbsp;&nbsp;member 0: focal + SupCon 0.7/0.3, seed 0 | 75.00 | 50.00 |")
  assert table[5].startswith("| &nbsp;&nbsp;member 1: focal + SupCon 0.8/0.2, seed 1 | 76.00 | 51.00 |")
  assert table[-1].startswith("| Bi-LSTM + fastText") and "| 84.48 | 63.06 |" in table[-1]


def test_dirnames_are_distinct_per_row():
  names = {visfd_table._dirname(v, o, 0) for _, v, o in visfd_table.ROWS}
  assert len(names) == len(visfd_table.ROWS)
  assert "," not in "".join(names)
