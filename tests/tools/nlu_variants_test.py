"""tools.reports.nlu_variants: the SNIPS copies it trains on (read back by the dataset
builder) and its table (the runs themselves are the experiment, on docs/results/nlu.md)."""

import collections
import json
import os

import numpy as np
import pytest

from tools.reports import nlu_variants
from tools.reports.failure_modes import SNIPS

needs_snips = pytest.mark.skipif(not os.path.isdir(SNIPS),
                                 reason=f"SNIPS not found at {SNIPS} (../shared/data)")


def _lines(path):
  with open(path) as f:
    return f.read().splitlines()


@needs_snips
def test_small_copy_draws_training_sentences_and_keeps_eval(tmp_path):
  out = nlu_variants.small_snips(SNIPS, str(tmp_path / "small"), size=300, seed=1)
  train = {n: _lines(os.path.join(out, "train", n)) for n in ("seq.in", "seq.out", "label")}
  assert {len(v) for v in train.values()} == {300}
  # Each kept sentence is a SNIPS training sentence with its own tags and intent.
  source = list(zip(*(_lines(os.path.join(SNIPS, "train", n))
                      for n in ("seq.in", "seq.out", "label"))))
  assert set(zip(*train.values())) <= set(source)
  for split in ("dev", "test"):
    assert _lines(os.path.join(out, split, "label")) == _lines(
        os.path.join(SNIPS, split, "label"))
  assert not os.path.exists(os.path.join(out, "intent_label.txt"))
  # Another seed draws other sentences.
  other = nlu_variants.small_snips(SNIPS, str(tmp_path / "other"), size=300, seed=2)
  assert _lines(os.path.join(other, "train", "seq.in")) != train["seq.in"]
  with pytest.raises(ValueError, match="size must be in"):
    nlu_variants.small_snips(SNIPS, str(tmp_path / "bad"), size=0)


@needs_snips
def test_many_field_copy_is_read_with_three_heads(tmp_path):
  from jaxloss.data.joint_nlu import read_split  # pylint: disable=import-outside-toplevel
  out = nlu_variants.many_field_snips(SNIPS, str(tmp_path / "many"), size=400)
  with open(os.path.join(out, "train.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  assert len(rows) == 400
  assert set(rows[0]) == {"tokens", "tags", "intent", "scenario", "time"}
  for r in rows:
    assert r["scenario"] == nlu_variants.SCENARIOS[r["intent"]]
    assert (r["time"] == "yes") == ("B-timeRange" in r["tags"])
    assert len(r["tokens"]) == len(r["tags"])
  # Both values of the time field occur, and the scenarios group the intents.
  assert set(collections.Counter(r["time"] for r in rows)) == {"yes", "no"}
  assert len({r["scenario"] for r in rows}) == 3
  examples = read_split(out, "test", layout="jsonl")
  assert len(examples) == 700
  assert set(examples[0]["labels"]) == {"intent", "scenario", "time"}


def test_markdown_lists_the_extra_fields():
  row = {"description": "1,600 training sentences, JSONL, fields intent + scenario + time",
         "label": "default", "intent_accuracy": 0.97, "slot_f1": 0.8512,
         "sentence_accuracy": 0.6, "pred_non_o_share": 0.5, "true_non_o_share": 0.516,
         "diagnosis": {"error": 0, "warning": 1, "info": 0},
         "findings": ["term_saturated"], "wall_s": 301.4,
         "field_accuracy": {"intent": 0.97, "scenario": 0.99, "time": 0.985}}
  table = nlu_variants.markdown([row]).splitlines()
  assert table[2] == ("| 1,600 training sentences, JSONL, fields intent + scenario + time "
                      "| default | 97.00 | 85.12 | 60.00 | scenario 99.00, time 98.50 | "
                      "50.0 (51.6) | 0/1 (term_saturated) | 301 s |")


def test_merge_replaces_rerun_rows_and_keeps_the_others_in_order():
  labels = [label for label, _, _ in nlu_variants.ROWS.values()]
  previous = [{"data": d, "label": label, "slot_f1": 0.1}
              for d in ("small", "dominant") for label in labels[:2]]
  rerun = [{"data": "dominant", "label": labels[0], "slot_f1": 0.9},
           {"data": "small", "label": labels[2], "slot_f1": 0.5}]
  merged = nlu_variants.merge(rerun, previous)
  assert [(r["data"], r["label"], r["slot_f1"]) for r in merged] == [
      ("small", labels[0], 0.1), ("small", labels[1], 0.1), ("small", labels[2], 0.5),
      ("dominant", labels[0], 0.9), ("dominant", labels[1], 0.1)]


def test_run_refuses_an_unknown_row():
  with pytest.raises(ValueError, match="rows must be keys of ROWS"):
    nlu_variants.run(variants=(), rows=("default", "bogus"))


@pytest.mark.parametrize("previous_seed, kept", [(0, True), (1, False)])
def test_main_keeps_the_previous_rows_of_the_same_seed_only(tmp_path, monkeypatch,
                                                            previous_seed, kept):
  labels = [label for label, _, _ in nlu_variants.ROWS.values()]
  base = {"description": "d", "intent_accuracy": 0.9, "slot_f1": 0.8,
          "sentence_accuracy": 0.7, "pred_non_o_share": 0.5, "true_non_o_share": 0.5,
          "diagnosis": {"error": 0, "warning": 0, "info": 0}, "findings": [],
          "wall_s": 1.0}
  out = str(tmp_path / "table")
  with open(out + ".json", "w") as f:
    json.dump({"seed": previous_seed,
               "rows": [{**base, "data": "small", "label": labels[1]}]}, f)
  monkeypatch.setattr(nlu_variants, "run", lambda *a: [{**base, "data": "small",
                                                        "label": labels[0]}])
  assert nlu_variants.main(["--variants", "small", "--rows", "default",
                            "--out", out]) == 0
  with open(out + ".json") as f:
    got = [r["label"] for r in json.load(f)["rows"]]
  assert got == (labels[:2] if kept else labels[:1])


def _mask_and_rows(folder, min_expected, tag_names):
  from jaxloss import decoding  # pylint: disable=import-outside-toplevel
  from jaxloss.data.joint_nlu import read_split  # pylint: disable=import-outside-toplevel
  train = read_split(folder, "train", layout="jointbert")
  intents = sorted({r["labels"]["intent"] for r in train})
  ids = {t: i for i, t in enumerate(tag_names)}
  mask = decoding.label_tag_mask(
      [intents.index(r["labels"]["intent"]) for r in train],
      [[ids[t] for t in r["tags"]] for r in train], tag_names, len(intents),
      min_expected=min_expected)
  return mask, intents, train


@needs_snips
def test_tail_copy_is_long_tailed_and_the_backed_off_mask_keeps_rare_intents_open(
    tmp_path):
  from jaxloss.data.joint_nlu import read_split  # pylint: disable=import-outside-toplevel
  out = nlu_variants.tail_snips(SNIPS, str(tmp_path / "tail"))
  labels = _lines(os.path.join(out, "train", "label"))
  # 1600 * 400^(-i/6), the intents with the fewest entity types first.
  assert collections.Counter(labels) == {
      "SearchCreativeWork": 1600, "AddToPlaylist": 589, "RateBook": 217,
      "SearchScreeningEvent": 80, "GetWeather": 29, "PlayMusic": 11,
      "BookRestaurant": 4}
  source = set(zip(*(_lines(os.path.join(SNIPS, "train", n))
                     for n in ("seq.in", "seq.out", "label"))))
  assert set(zip(*(_lines(os.path.join(out, "train", n))
                   for n in ("seq.in", "seq.out", "label")))) <= source
  for split in ("dev", "test"):
    assert _lines(os.path.join(out, split, "seq.in")) == _lines(
        os.path.join(SNIPS, split, "seq.in"))
  # The tag vocabulary of SNIPS; entity types of the Test sentences.
  tag_names = ["PAD", "UNK", "O"] + sorted(
      {t for r in read_split(SNIPS, "train", layout="jointbert") for t in r["tags"]}
      - {"O"})
  # On SNIPS (1,800+ sentences an intent) backing off changes nothing.
  full0, _, _ = _mask_and_rows(SNIPS, 0.0, tag_names)
  full3, _, _ = _mask_and_rows(SNIPS, 3.0, tag_names)
  np.testing.assert_array_equal(full0, full3)
  # On the tail copy the plain mask forbids, with their gold intent, an entity type
  # seen in training in 59 Test sentences; backed off at 3, none.
  test = read_split(SNIPS, "test", layout="jointbert")
  for min_expected, forbidden in ((0.0, 59), (3.0, 0)):
    mask, intents, train = _mask_and_rows(out, min_expected, tag_names)
    known = {t for r in train for t in r["tags"]}
    count = sum(
        any(t in known and not mask[intents.index(r["labels"]["intent"]),
                                    tag_names.index(t)]
            for t in r["tags"] if t != "O") for r in test)
    assert count == forbidden, min_expected
  with pytest.raises(ValueError, match="ratio must be >= 1"):
    nlu_variants.tail_snips(SNIPS, str(tmp_path / "bad"), ratio=0.5)
  with pytest.raises(ValueError, match="head must leave 1 to"):
    nlu_variants.tail_snips(SNIPS, str(tmp_path / "bad2"), head=5000)
