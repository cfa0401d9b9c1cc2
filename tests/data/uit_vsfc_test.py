"""UIT-VSFC builder: the real files (sizes, class counts, rows against the raw lines)
and small folders made here for the errors."""

import os

import numpy as np
import pytest

from jaxloss.data import uit_vsfc

MANUAL = uit_vsfc.default_manual_dir()
needs_data = pytest.mark.skipif(
    not os.path.isdir(os.path.join(MANUAL, "train")),
    reason=f"UIT-VSFC not found at {MANUAL} (../shared/data/uit_vsfc beside the "
           "repository)")


@pytest.fixture(scope="module")
def vsfc(tfds_dir):
  # The session's TFDS folder (conftest.py): the recipe tests on this worker read the
  # same prepared data.
  return uit_vsfc.load_uit_vsfc(data_dir=tfds_dir)


@needs_data
def test_sizes_and_training_counts(vsfc):
  assert [len(vsfc[s]["text"]) for s in uit_vsfc.SPLITS] == [11_426, 1_583, 3_166]
  assert vsfc["class_counts"]["sentiment"].tolist() == [5325, 458, 5643]
  assert vsfc["class_counts"]["topic"].tolist() == [8166, 2201, 497, 562]
  assert vsfc["class_names"]["sentiment"] == ["negative", "neutral", "positive"]
  assert vsfc["class_names"]["topic"][2] == "facility"


@needs_data
@pytest.mark.parametrize("split", uit_vsfc.SPLITS)
def test_every_row_equals_the_raw_lines(vsfc, split):
  folder = os.path.join(MANUAL, split)
  with open(os.path.join(folder, "sents.txt"), encoding="utf-8") as f:
    texts = f.read().splitlines()
  assert vsfc[split]["text"] == texts
  for field, (filename, _) in uit_vsfc.LABELS.items():
    with open(os.path.join(folder, filename), encoding="utf-8") as f:
      expected = [int(line) for line in f.read().split()]
    np.testing.assert_array_equal(vsfc[split][field], expected)
  np.testing.assert_array_equal(vsfc[split]["index"], np.arange(len(texts)))


def _folder(tmp_path, sents="a b\nc d\n", sentiments="0\n2\n", topics="0\n3\n"):
  for split in uit_vsfc.SPLITS:
    d = tmp_path / split
    d.mkdir(parents=True, exist_ok=True)
    (d / "sents.txt").write_text(sents, encoding="utf-8")
    (d / "sentiments.txt").write_text(sentiments, encoding="utf-8")
    (d / "topics.txt").write_text(topics, encoding="utf-8")
  return str(tmp_path)


def test_small_folder_reads(tmp_path):
  rows = uit_vsfc.read_split(_folder(tmp_path), "dev")
  assert rows == [{"index": 0, "text": "a b", "sentiment": 0, "topic": 0},
                  {"index": 1, "text": "c d", "sentiment": 2, "topic": 3}]


@pytest.mark.parametrize("kwargs,match", [
    ({"sentiments": "0\n3\n"}, r"sentiments\.txt line 2: expected a sentiment id in "
                               r"0\.\.2 \(negative, neutral, positive\), got '3'"),
    ({"topics": "x\n1\n"}, r"topics\.txt line 1: expected a topic id"),
    ({"topics": "0\n"}, r"topics\.txt has 1 lines but .*sents\.txt has 2"),
    ({"sents": "a b\n \n"}, r"sents\.txt line 2: empty sentence"),
])
def test_malformed_files_name_the_file_and_the_line(tmp_path, kwargs, match):
  with pytest.raises(ValueError, match=match):
    uit_vsfc.load_uit_vsfc(manual_dir=_folder(tmp_path / "data", **kwargs),
                           data_dir=str(tmp_path / "tfds"))


def test_missing_folder_names_manual_dir(tmp_path):
  with pytest.raises(FileNotFoundError, match="manual_dir"):
    uit_vsfc.read_split(str(tmp_path), "train")
