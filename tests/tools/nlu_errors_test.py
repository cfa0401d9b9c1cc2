"""tools.reports.nlu_errors: the Test sentences several NLU runs get wrong."""

import json
import os

import pytest

from tools.reports import nlu_errors

SENTENCES = [  # words, gold intent
    (["play", "24/7", "song"], "PlayMusic"),
    (["find", "now", "and", "forever"], "SearchScreeningEvent"),
    (["rate", "this", "book"], "RateBook"),
    (["will", "it", "rain"], "GetWeather"),
]
# Predicted intents per run (3 runs).
PREDICTED = [
    ["SearchCreativeWork", "SearchCreativeWork", "RateBook", "GetWeather"],
    ["SearchCreativeWork", "SearchCreativeWork", "RateBook", "GetWeather"],
    ["AddToPlaylist", "SearchScreeningEvent", "RateBook", "PlayMusic"],
]


def _write(root, name, predicted, sentences=SENTENCES, extra=""):
  path = os.path.join(str(root), name)
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "test_predictions.txt"), "w", encoding="utf-8") as f:
    for (words, gold), pred in zip(sentences, predicted):
      cells = " ".join(f"{w}/O/O" for w in words)
      f.write(f"intent={gold}->{pred} command=none->none\t{cells}\n")
    f.write(extra)
  return path


def test_counts_and_shared_sentences_by_hand(tmp_path, capsys):
  dirs = [_write(tmp_path, f"s{r}", p) for r, p in enumerate(PREDICTED)]
  result = nlu_errors.shared_errors(dirs, "intent")
  assert [r["errors"] for r in result["runs"]] == [2, 2, 2]
  assert result["runs"][0]["accuracy"] == 0.5
  # Sentence 0 wrong in 3 runs, sentence 1 in 2, sentence 3 in 1, sentence 2 in none.
  assert result["wrong_in"] == {1: 1, 2: 1, 3: 1}
  first, second, third = result["sentences"]
  assert (first["index"], first["runs_wrong"], first["words"]) == (0, 3, "play 24/7 song")
  assert first["predicted"] == {"SearchCreativeWork": 2, "AddToPlaylist": 1}
  assert (second["index"], second["gold"]) == (1, "SearchScreeningEvent")
  assert (third["index"], third["predicted"]) == (3, {"PlayMusic": 1})
  # Another field of the same files.
  other = nlu_errors.shared_errors(dirs, "command")
  assert other["wrong_in"] == {1: 0, 2: 0, 3: 0} and other["sentences"] == []
  out_json = tmp_path / "e.json"
  assert nlu_errors.main([*dirs, "--min_runs", "2", "--out", str(tmp_path / "e")]) == 0
  printed = capsys.readouterr().out
  assert "1 of 4 Test sentences are wrong in every run" in printed
  assert "would be 75.00 %" in printed
  row = "| 3 | PlayMusic | SearchCreativeWork (2), AddToPlaylist (1) | play 24/7 song |"
  assert row in printed
  assert "| 2 | SearchScreeningEvent | SearchCreativeWork (2) |" in printed
  assert "will it rain" not in printed  # wrong in one run only, below --min_runs
  assert json.loads(out_json.read_text())["wrong_in"] == {"1": 1, "2": 1, "3": 1}
  assert (tmp_path / "e.md").read_text().startswith(
      "`python -m tools.reports.nlu_errors " + " ".join(dirs) + " --min_runs 2 --out ")


@pytest.mark.parametrize("case, message", [
    ("missing", "test_predictions.txt: not found"),
    ("bad_line", "line 5: expected 'field=gold->predicted"),
    ("other_data", "differ from"),
    ("no_field", "has no field 'scenario'"),
])
def test_errors_name_the_file_line_or_field(tmp_path, capsys, case, message):
  first = _write(tmp_path, "a", PREDICTED[0],
                 extra="not a prediction line\n" if case == "bad_line" else "")
  if case == "missing":
    second = os.path.join(str(tmp_path), "empty")
    os.makedirs(second)
  elif case == "other_data":
    changed = [(["play", "a", "song"], "PlayMusic")] + SENTENCES[1:]
    second = _write(tmp_path, "b", PREDICTED[1], sentences=changed)
  else:
    second = _write(tmp_path, "b", PREDICTED[1])
  argv = [first, second] + (["--field", "scenario"] if case == "no_field" else [])
  assert nlu_errors.main(argv) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and message in err
