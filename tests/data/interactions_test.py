"""Interaction-sequence builder: SASRec's Video.txt (Amazon Video Games) on the real
file, small fixture files for the splits, the seeds and the errors, and pad_left."""

import collections
import os
import re

import numpy as np
import pytest
from scipy import stats

from jaxloss import metrics
from jaxloss.data import interactions

MANUAL = interactions.default_manual_dir()
REAL = os.path.join(MANUAL, "Video.txt")
needs_data = pytest.mark.skipif(
    not os.path.isfile(REAL),
    reason=f"SASRec Video.txt not found at {REAL} (../shared/data/sasrec_games beside "
           "the repository)")

NUM_INTERACTIONS, NUM_USERS, NUM_ITEMS, NUM_EVALUATED = 287_107, 31_013, 23_715, 30_901
EVAL_SPLITS = ("validation", "test")


@pytest.fixture(scope="session")
def games(tfds_dir):
  """The real file, prepared in the session's TFDS folder (conftest.py), which the
  reranking smoke run on this worker prepares too (the same builder config)."""
  return interactions.load_interactions(data_dir=tfds_dir)


@pytest.fixture(scope="module")
def raw():
  """The real file read plainly: {user: [items in line order]}."""
  sequences = collections.defaultdict(list)
  with open(REAL, encoding="utf-8") as f:
    for line in f:
      user, item = line.split()
      sequences[int(user)].append(int(item))
  return dict(sequences)


def _write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")
  return path


def _load(tmp_path, text, *, name="Video.txt", **kwargs):
  folder = tmp_path / "data"
  _write(folder / name, text)
  return interactions.load_interactions(manual_dir=str(folder), filename=name,
                                        data_dir=str(tmp_path / "tfds"), **kwargs)


def _interacted_mask(users, candidates, sequences, num_items):
  """[E, C] bool: candidate c of row e is an item its user ever interacted with."""
  base = num_items + 1
  keys = np.unique(np.concatenate(
      [u * base + np.asarray(s, np.int64) for u, s in sequences.items()]))
  wanted = np.asarray(users, np.int64)[:, None] * base + candidates
  at = np.minimum(np.searchsorted(keys, wanted), keys.size - 1)
  return keys[at] == wanted


# --------------------------------------------------------------------- real Video.txt


@needs_data
def test_games_counts(games):
  assert games["num_interactions"] == NUM_INTERACTIONS
  assert games["num_users"] == NUM_USERS and games["num_items"] == NUM_ITEMS
  assert games["train"]["user"].tolist() == list(range(1, NUM_USERS + 1))
  for split in EVAL_SPLITS:
    rows = games[split]
    assert rows["user"].shape == rows["target"].shape == (NUM_EVALUATED,)
    assert rows["candidates"].shape == (NUM_EVALUATED, 50)
    assert rows["candidates"].dtype == rows["label_index"].dtype == np.int32
    assert len(rows["history"]) == NUM_EVALUATED
  assert NUM_USERS - NUM_EVALUATED == 30 + 82  # users with 1 and 2 interactions
  lengths = np.array([a.size for a in games["train"]["items"]])
  assert lengths.sum() == NUM_INTERACTIONS - 2 * NUM_EVALUATED == 225_305
  assert all(a.dtype == np.int32 for a in games["train"]["items"])
  assert re.fullmatch(r"video_c50_s0_[0-9a-f]{10}", games["config_name"])
  assert games["path"] == REAL and games["manual_dir"] == MANUAL


@needs_data
def test_games_rows_by_hand(games):
  train, valid, test = games["train"], games["validation"], games["test"]
  # User 1: 9 lines, "1 6393" ... "1 1", "1 19263".
  assert train["items"][0].tolist() == [6393, 13504, 14087, 15116, 13755, 20163, 21823]
  assert (valid["user"][0], valid["target"][0], test["target"][0]) == (1, 1, 19263)
  assert valid["history"][0].tolist() == train["items"][0].tolist()
  assert test["history"][0].tolist() == [6393, 13504, 14087, 15116, 13755, 20163,
                                         21823, 1]
  # User 30 has 2 lines (3, 5935), user 3578 one (835): they train on all of them and
  # are not evaluated.
  assert train["items"][29].tolist() == [3, 5935]
  assert train["items"][3577].tolist() == [835]
  for split in EVAL_SPLITS:
    assert not {30, 938, 3578} & set(games[split]["user"].tolist())
  # The last user, 31013: "23525", "23467", "23512".
  assert train["items"][-1].tolist() == [23525]
  assert (valid["user"][-1], valid["target"][-1], test["target"][-1]) == (
      31013, 23467, 23512)


@needs_data
def test_games_every_row_equals_the_raw_lines(games, raw):
  assert sorted(raw) == games["train"]["user"].tolist()
  expected_train = [raw[u][:-2] if len(raw[u]) >= 3 else raw[u] for u in sorted(raw)]
  assert [a.tolist() for a in games["train"]["items"]] == expected_train
  evaluated = [u for u in sorted(raw) if len(raw[u]) >= 3]
  for split, offset in (("validation", 2), ("test", 1)):
    rows = games[split]
    assert rows["user"].tolist() == evaluated
    assert rows["target"].tolist() == [raw[u][-offset] for u in evaluated]
    assert [h.tolist() for h in rows["history"]] == [raw[u][:-offset] for u in evaluated]
  # The test history is the train sequence plus the validation item.
  by_user = dict(zip(games["train"]["user"].tolist(), games["train"]["items"]))
  for user, history, item in zip(games["test"]["user"], games["test"]["history"],
                                 games["validation"]["target"]):
    assert history.tolist() == by_user[user].tolist() + [item]


@needs_data
@pytest.mark.parametrize("split", EVAL_SPLITS)
def test_games_candidates(games, raw, split):
  rows = games[split]
  candidates, label_index = rows["candidates"], rows["label_index"]
  num = candidates.shape[0]
  assert candidates.min() >= 1 and candidates.max() <= NUM_ITEMS
  assert label_index.min() >= 0 and label_index.max() <= 49
  # The true item sits at label_index ...
  assert np.array_equal(candidates[np.arange(num), label_index], rows["target"])
  # ... and is the only candidate the user ever interacted with (whole sequence,
  # validation and test items included).
  interacted = _interacted_mask(rows["user"], candidates, raw, NUM_ITEMS)
  is_label = np.arange(50)[None, :] == label_index[:, None]
  assert np.array_equal(interacted, is_label)
  # Candidates are distinct within each list.
  ordered = np.sort(candidates, axis=1)
  assert (np.diff(ordered, axis=1) > 0).all()


@needs_data
@pytest.mark.parametrize("split", EVAL_SPLITS)
def test_games_label_index_is_uniform(games, split):
  counts = np.bincount(games[split]["label_index"], minlength=50)
  assert counts.shape == (50,) and counts.sum() == NUM_EVALUATED
  assert counts.min() > 0.8 * NUM_EVALUATED / 50  # about 618 a position
  assert stats.chisquare(counts).pvalue > 1e-3


@needs_data
def test_games_validation_and_test_draws_differ(games):
  valid, test = games["validation"], games["test"]
  assert not np.array_equal(valid["label_index"], test["label_index"])
  # Independent draws: the two lists of a user share almost no negatives.
  shared = [np.intersect1d(a, b).size for a, b in zip(valid["candidates"][:1000],
                                                      test["candidates"][:1000])]
  assert np.mean(shared) < 1.0  # 49 of ~23,700 items twice: ~0.1 expected


@needs_data
def test_games_item_counts(games, raw):
  counts = games["item_counts"]
  assert counts.dtype == np.int64 and counts.shape == (NUM_ITEMS + 1,)
  assert counts[0] == 0
  assert counts.sum() == NUM_INTERACTIONS - 2 * NUM_EVALUATED == 225_305
  train = [i for u in raw for i in (raw[u][:-2] if len(raw[u]) >= 3 else raw[u])]
  assert counts.tolist() == np.bincount(train, minlength=NUM_ITEMS + 1).tolist()
  assert counts[1] == train.count(1)


@needs_data
def test_games_are_deterministic_given_the_seed(games):
  # The stored lists are exactly what leave_one_out draws again from the parsed file
  # with the same seed (so a rebuild stores the same ones); another seed draws others.
  users, sequences = interactions.read_interactions(REAL)
  same = interactions.leave_one_out(users, sequences, num_candidates=50, seed=0)
  other = interactions.leave_one_out(users, sequences, num_candidates=50, seed=1)
  for split in EVAL_SPLITS:
    for key in ("user", "target", "candidates", "label_index"):
      assert np.array_equal(same[split][key], games[split][key]), (split, key)
    assert np.array_equal(other[split]["target"], games[split]["target"])
    assert (other[split]["candidates"] != games[split]["candidates"]).mean() > 0.9
    assert not np.array_equal(other[split]["label_index"], games[split]["label_index"])


@needs_data
def test_games_at_101_candidates_sample_without_error(raw):
  users, sequences = interactions.read_interactions(REAL)
  splits = interactions.leave_one_out(users, sequences, num_candidates=101, seed=0)
  test = splits["test"]
  assert test["candidates"].shape == (NUM_EVALUATED, 101)
  interacted = _interacted_mask(test["user"], test["candidates"], raw, NUM_ITEMS)
  assert interacted.sum() == NUM_EVALUATED
  assert np.array_equal(test["candidates"][np.arange(NUM_EVALUATED), test["label_index"]],
                        test["target"])
  # The true item's position is uniform, so scoring by position (first = best) gets
  # chance HR@1 and HR@10 (4 binomial standard errors).
  p = 1 / 101
  for split in EVAL_SPLITS:
    n = splits[split]["label_index"].size
    scores = np.tile(-np.arange(101, dtype=np.float64), (n, 1))
    m = metrics.ranking_metrics(scores, splits[split]["label_index"])
    assert abs(m["hr@1"] - p) < 4 * np.sqrt(p * (1 - p) / n), (split, m["hr@1"])
    assert abs(m["hr@10"] - 10 * p) < 4 * np.sqrt(10 * p * (1 - 10 * p) / n)


# -------------------------------------------------------------------------- fixtures

# Users interleaved and with a gap in their ids (no user 3); user 4 has 2 lines.
_SMALL = "5 7\n1 2\n5 1\n1 4\n4 9\n1 6\n5 3\n1 8\n4 2\n5 9\n2 1\n2 3\n2 5\n"


def test_small_file_splits(tmp_path):
  data = _load(tmp_path, _SMALL, num_candidates=3, seed=7)
  assert (data["num_users"], data["num_items"], data["num_interactions"]) == (4, 9, 13)
  assert data["train"]["user"].tolist() == [1, 2, 4, 5]
  assert [a.tolist() for a in data["train"]["items"]] == [[2, 4], [1], [9, 2], [7, 1]]
  valid, test = data["validation"], data["test"]
  assert valid["user"].tolist() == test["user"].tolist() == [1, 2, 5]
  assert valid["target"].tolist() == [6, 3, 3]
  assert test["target"].tolist() == [8, 5, 9]
  assert [h.tolist() for h in valid["history"]] == [[2, 4], [1], [7, 1]]
  assert [h.tolist() for h in test["history"]] == [[2, 4, 6], [1, 3], [7, 1, 3]]
  assert data["item_counts"].tolist() == [0, 2, 2, 0, 1, 0, 0, 1, 0, 1]
  sequences = {1: [2, 4, 6, 8], 2: [1, 3, 5], 4: [9, 2], 5: [7, 1, 3, 9]}
  for split in EVAL_SPLITS:
    rows = data[split]
    assert rows["candidates"].shape == (3, 3)
    assert np.array_equal(rows["candidates"][np.arange(3), rows["label_index"]],
                          rows["target"])
    interacted = _interacted_mask(rows["user"], rows["candidates"], sequences, 9)
    assert interacted.sum(axis=1).tolist() == [1, 1, 1]
  assert re.fullmatch(r"video_c3_s7_[0-9a-f]{10}", data["config_name"])


def _big_file(num_users=40, num_items=60, length=6):
  rng = np.random.default_rng(123)
  lines = []
  for user in range(1, num_users + 1):
    for item in rng.choice(np.arange(1, num_items + 1), size=length, replace=False):
      lines.append(f"{user} {item}\n")
  return "".join(lines)


_BIG = _big_file()


def test_small_file_seeds_and_config_names(tmp_path):
  first = _load(tmp_path / "a", _BIG, seed=0, num_candidates=20)
  again = _load(tmp_path / "b", _BIG, seed=0, num_candidates=20)
  other = _load(tmp_path / "c", _BIG, seed=1, num_candidates=20)
  assert first["config_name"] == again["config_name"] != other["config_name"]
  assert first["config_name"].replace("_s0_", "_s1_") == other["config_name"]
  for split in EVAL_SPLITS:
    assert np.array_equal(first[split]["candidates"], again[split]["candidates"])
    assert np.array_equal(first[split]["label_index"], again[split]["label_index"])
    assert not np.array_equal(first[split]["candidates"], other[split]["candidates"])
    assert np.array_equal(first[split]["target"], other[split]["target"])
  # One data_dir holds each (file, num_candidates, seed) apart.
  tfds_dir = str(tmp_path / "shared")
  folder = str(tmp_path / "a" / "data")
  names = {interactions.load_interactions(manual_dir=folder, data_dir=tfds_dir,
                                          num_candidates=c, seed=s)["config_name"]
           for c, s in ((20, 0), (20, 1), (21, 0))}
  assert sorted(os.listdir(os.path.join(tfds_dir, "interactions"))) == sorted(names)
  assert len(names) == 3


def test_edited_file_gets_a_new_config(tmp_path):
  folder = tmp_path / "data"
  _write(folder / "Video.txt", _SMALL)
  first = interactions.make_config(str(folder), num_candidates=3)
  _write(folder / "Video.txt", _SMALL + "2 2\n")
  second = interactions.make_config(str(folder), num_candidates=3)
  assert first.name != second.name
  assert first.name.startswith("video_c3_s0_") and second.name.startswith("video_c3_s0_")


def test_crlf_and_extra_spaces_are_accepted(tmp_path):
  data = _load(tmp_path, "1 2\r\n1\t3\r\n  1   4  \r\n", num_candidates=2)
  assert data["num_interactions"] == 3 and data["num_items"] == 4
  assert data["test"]["candidates"].tolist() in ([[1, 4]], [[4, 1]])


def test_sample_negatives_is_uniform_without_replacement():
  rng = np.random.default_rng(0)
  rows = 20_000
  negatives = interactions.sample_negatives([np.array([1, 2, 2])] * rows, 10, 3, rng)
  assert negatives.shape == (rows, 3) and negatives.dtype == np.int32
  assert (np.diff(np.sort(negatives, axis=1), axis=1) > 0).all()
  assert negatives.min() >= 3 and negatives.max() <= 10
  counts = np.bincount(negatives.ravel(), minlength=11)[3:]  # 8 allowed items
  assert stats.chisquare(counts).pvalue > 1e-3
  # Each position is uniform too (random order).
  assert stats.chisquare(np.bincount(negatives[:, 0], minlength=11)[3:]).pvalue > 1e-3


def test_sample_negatives_for_heavy_users_takes_the_exact_path():
  # 95 of 100 items seen: rejection keeps failing, the exact draw gives the other 5.
  rng = np.random.default_rng(0)
  seen = np.arange(1, 96)
  negatives = interactions.sample_negatives([seen, np.array([50])], 100, 5, rng)
  assert sorted(negatives[0].tolist()) == [96, 97, 98, 99, 100]
  assert 50 not in negatives[1] and len(set(negatives[1].tolist())) == 5


# ---------------------------------------------------------------------------- pad_left


def test_pad_left_by_hand():
  ids, lengths = interactions.pad_left([[5, 6, 7, 8, 9], [3, 4], [], np.array([7])], 4)
  assert ids.dtype == lengths.dtype == np.int32
  assert ids.tolist() == [[6, 7, 8, 9], [0, 0, 3, 4], [0, 0, 0, 0], [0, 0, 0, 7]]
  assert lengths.tolist() == [4, 2, 0, 1]
  ids, lengths = interactions.pad_left([[1, 2, 3]], 1)  # keeps the most recent item
  assert ids.tolist() == [[3]] and lengths.tolist() == [1]
  ids, lengths = interactions.pad_left([], 3)
  assert ids.shape == (0, 3) and lengths.shape == (0,)


def test_pad_left_errors():
  with pytest.raises(ValueError, match="max_len must be an integer >= 1"):
    interactions.pad_left([[1]], 0)
  with pytest.raises(ValueError, match=r"sequence 1: ids must be in 1\.\..*0 is padding"):
    interactions.pad_left([[1], [2, 0]], 3)
  with pytest.raises(ValueError, match="sequence 0: expected a 1-D integer sequence"):
    interactions.pad_left([[1.5]], 3)


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("text, line, message", [
    ("1 2\n1 3 4\n", 2, "expected two integer fields 'user item', got '1 3 4'"),
    ("1 2\n1 3\n7\n", 3, "expected two integer fields 'user item', got '7'"),
    ("1 2\n1 x\n", 2, "expected two integer fields 'user item', got '1 x'"),
    ("1 2.0\n", 1, "expected two integer fields 'user item', got '1 2.0'"),
    ("1 2\n\n1 3\n", 2, "expected two integer fields 'user item', got ''"),
    ("1 2\n0 3\n", 2, "ids must be in 1..2147483647, got user 0, item 3"),
    ("1 2\n1 3\n2 -4\n", 3, "ids must be in 1..2147483647, got user 2, item -4"),
    ("1 2\n1 2147483648\n", 2, "ids must be in 1..2147483647"),
    ("", 1, "empty file"),
])
def test_malformed_files_name_the_file_and_the_line(tmp_path, text, line, message):
  path = _write(tmp_path / "data" / "Video.txt", text)
  with pytest.raises(ValueError, match=re.escape(f"{path} line {line}: {message}")):
    interactions.load_interactions(manual_dir=str(path.parent),
                                   data_dir=str(tmp_path / "tfds"))


def test_missing_file_names_the_path_and_manual_dir(tmp_path):
  path = os.path.join(str(tmp_path), "Video.txt")
  with pytest.raises(FileNotFoundError, match=re.escape(path) + ".*manual_dir="):
    interactions.load_interactions(manual_dir=str(tmp_path),
                                   data_dir=str(tmp_path / "tfds"))
  _write(tmp_path / "Other.txt", "1 1\n")
  with pytest.raises(FileNotFoundError, match="manual_dir="):
    interactions.make_config(str(tmp_path), "Video.txt")


def test_num_candidates_and_seed_are_checked(tmp_path):
  for bad in (1, 0, -3, 2.5, True):
    with pytest.raises(ValueError, match="num_candidates must be an integer >= 2"):
      interactions.load_interactions(manual_dir=str(tmp_path), num_candidates=bad)
  with pytest.raises(ValueError, match="seed must be an integer >= 0"):
    interactions.load_interactions(manual_dir=str(tmp_path), seed=-1)
  with pytest.raises(ValueError, match="num_candidates"):
    interactions.InteractionsConfig(name="video_c1_s0_0123456789", num_candidates=1)
  with pytest.raises(ValueError, match="name must be"):
    interactions.InteractionsConfig(name="video_c50_s1_0123456789", num_candidates=50)


def test_too_few_never_interacted_items_names_the_user(tmp_path):
  # 6 items; user 2 saw 4 of them, so only 2 remain for the 3 negatives of 4 candidates.
  text = "1 1\n1 2\n1 3\n2 1\n2 2\n2 3\n2 4\n3 6\n3 5\n"
  path = _write(tmp_path / "data" / "Video.txt", text)
  with pytest.raises(ValueError, match=re.escape(
      f"{path}: user 2 interacted with 4 of the 6 items, leaving 2 never-interacted "
      "items for the 3 negatives of num_candidates=4")):
    interactions.load_interactions(manual_dir=str(path.parent),
                                   data_dir=str(tmp_path / "tfds"), num_candidates=4)
  # 3 candidates fit: 2 negatives for user 2.
  data = interactions.load_interactions(manual_dir=str(path.parent),
                                        data_dir=str(tmp_path / "tfds"), num_candidates=3)
  assert sorted(data["test"]["candidates"][1].tolist()) == [4, 5, 6]


def test_lazy_exports():
  import jaxloss.data as data  # pylint: disable=g-import-not-at-top
  assert data.pad_left is interactions.pad_left
  assert data.load_interactions is interactions.load_interactions
  assert data.Interactions is interactions.Interactions
  assert {"Interactions", "load_interactions", "pad_left"} <= set(data.__all__)
