"""UIT-ViSFD builder on the real files, label parsing, tokenisation and vocabulary."""

import csv
import os

import numpy as np
import pytest

from jaxloss.data import text as text_lib
from jaxloss.data import uit_visfd

MANUAL = uit_visfd.default_manual_dir()
needs_data = pytest.mark.skipif(
    not os.path.isdir(MANUAL),
    reason=f"UIT-ViSFD CSV files not found at {MANUAL} (../shared/data/uit_visfd)")


@pytest.fixture(scope="module")
def visfd(tfds_dir):
  # The session's TFDS folder (conftest.py): the recipe tests on this worker read the
  # same prepared data.
  return uit_visfd.load_uit_visfd(data_dir=tfds_dir)


def _raw_rows(split_file):
  with open(os.path.join(MANUAL, split_file), encoding="utf-8", newline="") as f:
    return list(csv.DictReader(f))


def _independent_parse(label):
  """The label string parsed another way: split on ';', then on '#'."""
  names = {"Positive": 1, "Negative": 2, "Neutral": 3}
  out = [0] * 10
  for item in label.split(";"):
    item = item.strip().strip("{}")
    if "#" in item:
      aspect, polarity = item.split("#")
      out[uit_visfd.ASPECTS.index(aspect)] = names[polarity]
  return out


@needs_data
def test_split_sizes_and_every_row_against_its_raw_label(visfd):
  assert [len(visfd[s]["text"]) for s in ("train", "dev", "test")] == [7786, 1112, 2224]
  for split, filename in uit_visfd.SPLIT_FILES.items():
    raw = _raw_rows(filename)
    assert visfd[split]["text"] == [r["comment"] for r in raw]
    assert visfd[split]["index"].tolist() == [int(r["index"]) for r in raw]
    expected = np.array([_independent_parse(r["label"]) for r in raw])
    np.testing.assert_array_equal(visfd[split]["labels"], expected)


@needs_data
def test_one_row_by_hand(visfd):
  # Train.csv index 1: "{BATTERY#Negative};{GENERAL#Positive};{OTHERS};"
  assert visfd["train"]["text"][1].startswith("Pin kém còn lại miễn chê")
  assert visfd["train"]["labels"][1].tolist() == [2, 0, 0, 0, 1, 0, 0, 0, 0, 0]


@needs_data
def test_train_counts_match_the_published_table(visfd):
  # ../shared/data/README.md: train counts (pos/neg/neu) per aspect.
  published = {"BATTERY": (2027, 1228, 349), "CAMERA": (1231, 627, 288),
               "DESIGN": (999, 302, 77), "FEATURES": (785, 1659, 198),
               "GENERAL": (3627, 949, 290), "PERFORMANCE": (2253, 1496, 391),
               "PRICE": (609, 316, 1136), "SCREEN": (514, 379, 56),
               "SER&ACC": (1401, 487, 107), "STORAGE": (59, 21, 11)}
  counts = visfd["class_counts"]
  assert counts.shape == (10, 4)
  for a, name in enumerate(uit_visfd.ASPECTS):
    assert tuple(counts[a, 1:]) == published[name], name
    assert counts[a].sum() == 7786


def test_parse_label_and_errors():
  assert uit_visfd.parse_label("{OTHERS};").tolist() == [0] * 10
  assert uit_visfd.parse_label("{STORAGE#Neutral};{CAMERA#Positive};").tolist() == [
      0, 1, 0, 0, 0, 0, 0, 0, 0, 3]
  with pytest.raises(ValueError, match=r"row 7: malformed label item '\{BATTERY Negative\}'"):
    uit_visfd.parse_label("{BATTERY Negative};", where="row 7")
  with pytest.raises(ValueError, match="unknown aspect 'BATERY'"):
    uit_visfd.parse_label("{BATERY#Negative};")
  with pytest.raises(ValueError, match="unknown polarity 'Bad'"):
    uit_visfd.parse_label("{BATTERY#Bad};")
  with pytest.raises(ValueError, match="aspect 'PRICE' given twice"):
    uit_visfd.parse_label("{PRICE#Positive};{PRICE#Negative};")


def test_read_csv_names_the_malformed_row(tmp_path):
  path = tmp_path / "Train.csv"
  path.write_text("index,comment,n_star,date_time,label\n"
                  "0,tốt,5,x,{GENERAL#Positive};\n"
                  "1,pin,4,x,{BATTERY#Negativ};\n", encoding="utf-8")
  with pytest.raises(ValueError, match=r"Train.csv line 3 \(index 1\): unknown polarity"):
    uit_visfd.read_csv(str(path))
  with pytest.raises(FileNotFoundError, match="pass manual_dir"):
    uit_visfd.read_csv(str(tmp_path / "Dev.csv"))


def test_tokenize():
  assert text_lib.tokenize("Máy đẹp,pin TRÂU :) 4.5 sao") == [
      "máy", "đẹp", ",", "pin", "trâu", ":", ")", "4", ".", "5", "sao"]
  # NFC: a decomposed "ế" (e + combining marks) equals the precomposed one.
  assert text_lib.tokenize("tie\u0302\u0301t") == text_lib.tokenize("tiết") == ["tiết"]
  assert text_lib.tokenize("  ") == []


def test_vocabulary_build_encode_and_round_trip(tmp_path):
  vocab = text_lib.Vocabulary.build([["b", "a", "b"], ["a", "c", "b"]], min_count=2)
  assert vocab.tokens == ["<pad>", "<unk>", "b", "a"]  # b: 3, a: 2, c: 1 (cut)
  ids, lengths = vocab.encode([["a", "b", "c", "a"], []], max_len=3)
  assert ids.tolist() == [[3, 2, 1], [0, 0, 0]] and lengths.tolist() == [3, 1]
  path = str(tmp_path / "vocab.json")
  vocab.save(path)
  assert text_lib.Vocabulary.load(path).tokens == vocab.tokens
  assert not os.path.exists(path + ".tmp")
  assert len(text_lib.Vocabulary.build([["a"] * 5, ["b"] * 4, ["c"]], min_count=1,
                                       max_size=4)) == 4
  with pytest.raises(ValueError, match="min_count must be >= 1"):
    text_lib.Vocabulary.build([], min_count=0)
  with pytest.raises(ValueError, match="max_len must be >= 1"):
    vocab.encode([["a"]], max_len=0)
  with pytest.raises(ValueError, match="tokens must start with"):
    text_lib.Vocabulary(["a", "b"])
