"""Joint intent/slot NLU builder: SNIPS (JointBERT layout) on the real files, small
JointBERT and JSONL fixtures for the vocabularies and UNK mapping, and the errors."""

import collections
import json
import os
import re

import numpy as np
import pytest

from jaxloss.data import joint_nlu

MANUAL = joint_nlu.default_manual_dir()
needs_data = pytest.mark.skipif(
    not os.path.isfile(os.path.join(MANUAL, "train", "seq.in")),
    reason=f"SNIPS (JointBERT layout) not found at {MANUAL} (../shared/data/snips "
           "beside the repository)")


@pytest.fixture(scope="module")
def snips(tfds_dir):
  # The session's TFDS folder (conftest.py): the recipe tests on this worker read the
  # same prepared data.
  return joint_nlu.load_joint_nlu(data_dir=tfds_dir)


def _raw_lines(*parts):
  """A file of the real data as plain lines, line ends removed."""
  with open(os.path.join(MANUAL, *parts), encoding="utf-8") as f:
    return f.read().split("\n")[:-1]  # every file ends with a newline


def _write(path, lines):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _jointbert(folder, splits, *, slot_labels=None, intent_labels=None):
  """A JointBERT-layout folder; ``splits[split]`` is a list of (text, tags, intent)."""
  for split, rows in splits.items():
    _write(folder / split / "seq.in", [r[0] for r in rows])
    _write(folder / split / "seq.out", [r[1] for r in rows])
    _write(folder / split / "label", [r[2] for r in rows])
  if slot_labels is not None:
    _write(folder / "slot_label.txt", slot_labels)
  if intent_labels is not None:
    _write(folder / "intent_label.txt", intent_labels)
  return folder


def _jsonl(folder, splits):
  folder.mkdir(parents=True, exist_ok=True)
  for split, objs in splits.items():
    _write(folder / f"{split}.jsonl",
           [o if isinstance(o, str) else json.dumps(o, ensure_ascii=False) for o in objs])
  return folder


_SMALL = {
    "train": [("play jazz now", "O B-genre O", "PlayMusic"),
              ("rate  this book 5 ", "O O B-type B-rating", "RateBook")],
    "dev": [("play some blues", "O O B-mood", "Dance")],
    "test": [("rate it", "O O", "RateBook")],
}


# ------------------------------------------------------------------- real SNIPS files


@needs_data
def test_snips_sizes_and_vocabularies_follow_the_label_files(snips):
  assert [len(snips[s]["tokens"]) for s in ("train", "dev", "test")] == [13084, 700, 700]
  assert snips["layout"] == "jointbert" and snips["label_fields"] == ("intent",)
  assert snips["manual_dir"] == MANUAL
  intents = _raw_lines("intent_label.txt")
  assert snips["label_names"]["intent"] == intents
  assert intents[0] == "UNK" and len(intents) == 8  # UNK + 7 intents
  slots = _raw_lines("slot_label.txt")
  assert snips["tag_names"] == slots and len(slots) == 74
  assert slots[:3] == ["PAD", "UNK", "O"]


@needs_data
def test_snips_train_line_1_by_hand(snips):
  train = snips["train"]
  assert train["tokens"][0] == ["listen", "to", "westbam", "alumb", "allergic", "on",
                                "google", "music"]
  assert train["tags"][0] == ["O", "O", "B-artist", "O", "B-album", "O", "B-service",
                              "I-service"]
  assert train["labels"]["intent"][0] == "PlayMusic"
  # Ids are the 0-based lines of slot_label.txt / intent_label.txt.
  slots = _raw_lines("slot_label.txt")
  assert (slots[2], slots[5], slots[3], slots[61], slots[62]) == (
      "O", "B-artist", "B-album", "B-service", "I-service")
  assert train["tag_ids"][0].tolist() == [2, 2, 5, 2, 3, 2, 61, 62]
  assert train["tag_ids"][0].dtype == np.int32
  assert _raw_lines("intent_label.txt")[4] == "PlayMusic"
  assert train["label_ids"]["intent"][0] == 4
  # Line 2 ends with a space in both files; it does not make a token.
  assert _raw_lines("train", "seq.in")[1].endswith(" ")
  assert train["tokens"][1] == ["add", "step", "to", "me", "to", "the", "50", "clásicos",
                                "playlist"]


@needs_data
@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_snips_every_row_equals_the_raw_lines(snips, split):
  texts, tags = _raw_lines(split, "seq.in"), _raw_lines(split, "seq.out")
  intents = _raw_lines(split, "label")
  slots, intent_names = _raw_lines("slot_label.txt"), _raw_lines("intent_label.txt")
  got = snips[split]
  assert got["index"].dtype == np.int64
  assert got["index"].tolist() == list(range(len(texts)))
  assert got["tokens"] == [t.split() for t in texts]
  assert got["tags"] == [t.split() for t in tags]
  assert got["labels"]["intent"] == [i.strip() for i in intents]
  unk_slot, unk_intent = slots.index("UNK"), intent_names.index("UNK")
  expected_tags = [[slots.index(t) if t in slots else unk_slot for t in line.split()]
                   for line in tags]
  assert [a.tolist() for a in got["tag_ids"]] == expected_tags
  expected_intents = [intent_names.index(i) if i in intent_names else unk_intent
                      for i in intents]
  assert got["label_ids"]["intent"].dtype == np.int32
  assert got["label_ids"]["intent"].tolist() == expected_intents


@needs_data
def test_snips_train_counts(snips):
  tags = [t for line in _raw_lines("train", "seq.out") for t in line.split()]
  counts = snips["tag_counts"]
  assert counts.dtype == np.int64 and counts.shape == (74,)
  assert counts.sum() == len(tags) == 117700
  assert counts[2] == tags.count("O") == 57288  # O is 48.7% of the train tokens
  assert counts[2] / counts.sum() == pytest.approx(0.4867, abs=1e-4)
  assert counts[0] == counts[1] == 0  # no PAD, no unknown tag in train
  slots = _raw_lines("slot_label.txt")
  assert counts[slots.index("B-artist")] == tags.count("B-artist")
  intents = collections.Counter(_raw_lines("train", "label"))
  names = snips["label_names"]["intent"]
  assert snips["label_counts"]["intent"].tolist() == [intents[n] for n in names]
  assert snips["label_counts"]["intent"][names.index("PlayMusic")] == 1914


# -------------------------------------------------------------------------- fixtures


def test_jointbert_unseen_intent_and_tag_map_to_unk(tmp_path):
  folder = _jointbert(tmp_path / "mini", _SMALL,
                      slot_labels=["PAD", "UNK", "O", "B-genre", "B-rating", "B-type"],
                      intent_labels=["UNK", "RateBook", "PlayMusic"])
  data = joint_nlu.load_joint_nlu(manual_dir=str(folder),
                                  data_dir=str(tmp_path / "tfds"))
  assert data["tag_names"] == ["PAD", "UNK", "O", "B-genre", "B-rating", "B-type"]
  assert data["label_names"] == {"intent": ["UNK", "RateBook", "PlayMusic"]}
  # Train: the label files' order gives the ids; doubled and trailing spaces vanish.
  assert data["train"]["tokens"][1] == ["rate", "this", "book", "5"]
  assert [a.tolist() for a in data["train"]["tag_ids"]] == [[2, 3, 2], [2, 2, 5, 4]]
  assert data["train"]["label_ids"]["intent"].tolist() == [2, 1]
  # Dev: intent "Dance" and tag "B-mood" are in no label file -> UNK (id 0 and 1).
  assert data["dev"]["labels"]["intent"] == ["Dance"]
  assert data["dev"]["tags"] == [["O", "O", "B-mood"]]
  assert data["dev"]["label_ids"]["intent"].tolist() == [0]
  assert data["dev"]["tag_ids"][0].tolist() == [2, 2, 1]
  assert data["tag_counts"].tolist() == [0, 0, 4, 1, 1, 1]
  assert data["label_counts"]["intent"].tolist() == [0, 1, 1]


def test_jointbert_without_label_files_builds_vocabularies_from_train(tmp_path):
  folder = _jointbert(tmp_path / "mini", _SMALL)
  data = joint_nlu.load_joint_nlu(manual_dir=str(folder),
                                  data_dir=str(tmp_path / "tfds"))
  assert data["tag_names"] == ["PAD", "UNK", "O", "B-genre", "B-rating", "B-type"]
  assert data["label_names"]["intent"] == ["UNK", "PlayMusic", "RateBook"]
  assert data["train"]["label_ids"]["intent"].tolist() == [1, 2]
  assert data["dev"]["label_ids"]["intent"].tolist() == [0]
  assert data["dev"]["tag_ids"][0].tolist() == [2, 2, 1]


def test_jsonl_fields_vocabularies_and_unk(tmp_path):
  folder = _jsonl(tmp_path / "Voice Cmds", {
      "train": [
          {"tokens": ["turn", "on", "the", "light"], "tags": ["O", "O", "O", "B-dev"],
           "intent": "switch", "command": "on"},
          {"tokens": ["dim", "the", "lámpara"], "tags": ["O", "O", "B-dev"],
           "command": "dim", "intent": "switch"},
          {"tokens": ["play", "new york", "jazz"], "tags": ["O", "B-city", "B-genre"],
           "intent": "music", "command": "play"},
      ],
      "dev": [{"tokens": ["light", "off"], "tags": ["B-dev", "O"], "intent": "switch",
               "command": "on"}],
      "test": [{"tokens": ["blink", "it"], "tags": ["O", "B-thing"], "intent": "switch",
                "command": "blink"}],
  })
  data = joint_nlu.load_joint_nlu(manual_dir=str(folder),
                                  data_dir=str(tmp_path / "tfds"))
  assert data["layout"] == "jsonl"
  assert data["label_fields"] == ("command", "intent")  # sorted by name
  assert data["tag_names"] == ["PAD", "UNK", "O", "B-city", "B-dev", "B-genre"]
  assert data["label_names"] == {"command": ["UNK", "dim", "on", "play"],
                                 "intent": ["UNK", "music", "switch"]}
  train = data["train"]
  # A token with a space and a non-ASCII token come back as written.
  assert train["tokens"] == [["turn", "on", "the", "light"], ["dim", "the", "lámpara"],
                             ["play", "new york", "jazz"]]
  assert train["labels"] == {"command": ["on", "dim", "play"],
                             "intent": ["switch", "switch", "music"]}
  assert train["label_ids"]["command"].tolist() == [2, 1, 3]
  assert [a.tolist() for a in train["tag_ids"]] == [[2, 2, 2, 4], [2, 2, 4], [2, 3, 5]]
  # Test: the command "blink" and the tag "B-thing" were not in train -> UNK.
  assert data["test"]["labels"]["command"] == ["blink"]
  assert data["test"]["label_ids"]["command"].tolist() == [0]
  assert data["test"]["label_ids"]["intent"].tolist() == [2]
  assert data["test"]["tag_ids"][0].tolist() == [2, 1]
  assert data["label_counts"]["command"].tolist() == [0, 1, 1, 1]
  assert data["label_counts"]["intent"].tolist() == [0, 1, 2]
  assert data["tag_counts"].tolist() == [0, 0, 6, 1, 2, 1]


def test_config_name_identifies_the_files(tmp_path):
  folder = _jointbert(tmp_path / "Mini-Set", _SMALL)
  first = joint_nlu.make_config(str(folder))
  assert re.fullmatch(r"mini_set_jointbert_[0-9a-f]{10}", first.name), first.name
  assert first.label_fields == ("intent",)
  # Editing a file changes the name, so a shared data_dir prepares it afresh.
  tfds_dir = str(tmp_path / "tfds")
  before = joint_nlu.load_joint_nlu(manual_dir=str(folder), data_dir=tfds_dir)
  _write(folder / "test" / "label", ["PlayMusic"])
  second = joint_nlu.make_config(str(folder))
  assert second.name != first.name and second.name.startswith("mini_set_jointbert_")
  after = joint_nlu.load_joint_nlu(manual_dir=str(folder), data_dir=tfds_dir)
  assert before["test"]["labels"]["intent"] == ["RateBook"]
  assert after["test"]["labels"]["intent"] == ["PlayMusic"]
  assert sorted(os.listdir(os.path.join(tfds_dir, "joint_nlu"))) == sorted(
      [first.name, second.name])


def test_config_validation():
  with pytest.raises(ValueError, match="name must be"):
    joint_nlu.JointNluConfig(name="snips", layout="jointbert")
  with pytest.raises(ValueError, match="name must be"):
    joint_nlu.JointNluConfig(name="snips_jsonl_0123456789", layout="jointbert")
  with pytest.raises(ValueError, match="layout must be one of"):
    joint_nlu.JointNluConfig(name="snips_csv_0123456789", layout="csv")
  with pytest.raises(ValueError, match="label_fields"):
    joint_nlu.JointNluConfig(name="snips_jointbert_0123456789", layout="jointbert",
                             label_fields=("intent", "command"))


# ---------------------------------------------------------------------------- errors


def test_jointbert_token_tag_mismatch_names_both_files_and_the_line(tmp_path):
  splits = dict(_SMALL, dev=[("play some blues", "O O B-mood", "PlayMusic"),
                             ("play it loud", "O O", "PlayMusic")])
  folder = _jointbert(tmp_path / "mini", splits)
  seq_in = os.path.join(str(folder), "dev", "seq.in")
  seq_out = os.path.join(str(folder), "dev", "seq.out")
  with pytest.raises(ValueError, match=re.escape(
      f"{seq_out} line 2: 2 tags for 3 tokens in {seq_in}")):
    joint_nlu.load_joint_nlu(manual_dir=str(folder), data_dir=str(tmp_path / "tfds"))


def test_jointbert_line_counts_and_empty_lines(tmp_path):
  folder = _jointbert(tmp_path / "a", _SMALL)
  _write(folder / "test" / "label", ["RateBook", "RateBook"])
  with pytest.raises(ValueError, match=r"line counts differ: .*test.seq\.in has 1, "
                                       r".*test.seq\.out has 1, .*test.label has 2"):
    joint_nlu.read_split(str(folder), "test", layout="jointbert")
  folder = _jointbert(tmp_path / "b", dict(_SMALL, test=[("rate it", "O O", "X"),
                                                         ("  ", "", "X")]))
  with pytest.raises(ValueError, match=r"test.seq\.in line 2: empty utterance"):
    joint_nlu.read_split(str(folder), "test", layout="jointbert")


def test_jsonl_errors_name_the_file_and_the_line(tmp_path):
  good = {"tokens": ["hi", "bob"], "tags": ["O", "B-name"], "intent": "greet"}
  cases = [
      (dict(good, tags=["O"]), "line 2: 1 tags for 2 tokens"),
      ({k: v for k, v in good.items() if k != "intent"},
       r"line 2: label fields \[\] differ from \['intent'\].*missing \['intent'\]"),
      (dict(good, command="go"), r"line 2: .*extra \['command'\]"),
      ('{"tokens": ["hi"], "tags": ["O"], "intent": "greet"', "line 2: not valid JSON"),
      ({"tokens": ["hi"], "intent": "greet"}, "line 2: lacks 'tags'"),
      (dict(good, intent=3), "line 2: label 'intent' must be a string, got 3"),
      (dict(good, tokens=[], tags=[]), "line 2: empty utterance"),
  ]
  for i, (bad, message) in enumerate(cases):
    folder = _jsonl(tmp_path / f"case{i}", {"train": [good], "dev": [good, bad],
                                            "test": [good]})
    path = re.escape(os.path.join(str(folder), "dev.jsonl"))
    with pytest.raises(ValueError, match=f"{path} {message}"):
      joint_nlu.load_joint_nlu(manual_dir=str(folder), data_dir=str(tmp_path / "tfds"))


def test_missing_layout_files_and_vocabulary_entries(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="expected train.jsonl .* or train/seq.in"):
    joint_nlu.load_joint_nlu(manual_dir=str(tmp_path / "empty"),
                             data_dir=str(tmp_path / "tfds"))
  with pytest.raises(FileNotFoundError, match="is not a folder"):
    joint_nlu.load_joint_nlu(manual_dir=str(tmp_path / "nowhere"))
  with pytest.raises(ValueError, match="layout must be 'auto' or one of"):
    joint_nlu.load_joint_nlu(manual_dir=str(tmp_path / "empty"), layout="csv")
  folder = _jointbert(tmp_path / "mini", {"train": _SMALL["train"]})
  with pytest.raises(FileNotFoundError, match=r"missing .*dev.seq\.in"):
    joint_nlu.make_config(str(folder))
  folder = _jointbert(tmp_path / "no_o", _SMALL, slot_labels=["PAD", "UNK", "B-genre"])
  with pytest.raises(ValueError, match=r"slot_label.txt: vocabulary lacks \['O'\]"):
    joint_nlu.load_joint_nlu(manual_dir=str(folder), data_dir=str(tmp_path / "tfds"))
  with pytest.raises(ValueError, match=r"lacks \['UNK'\]"):
    joint_nlu.encode_tags([["O"]], ["PAD", "O"])
  with pytest.raises(ValueError, match=r"intent_label.txt line 3: 'A' repeats line 2"):
    joint_nlu.read_label_file(str(_jointbert(tmp_path / "dup", {}, intent_labels=[
        "UNK", "A", "A"]) / "intent_label.txt"))
