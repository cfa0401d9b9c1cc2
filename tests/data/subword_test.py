"""Sub-word tokenising for the pretrained encoders: bucketed padding against the
reference ids of ../shared/models, truncation that keeps the special tokens, and
first-sub-word labels with the round trip back to words. Skipped, with the reason,
when ../shared/models is absent."""

import json
from pathlib import Path

import numpy as np
import pytest
import tokenizers

from jaxloss.data.subword import (align_word_labels, bucket_indices, bucket_length,
                                  encode_batch, resolve_pad_id,
                                  subword_to_word_predictions)

MODELS = Path(__file__).resolve().parents[2] / ".." / "shared" / "models"
MINILM, E5 = "all-MiniLM-L6-v2", "multilingual-e5-small"

pytestmark = pytest.mark.skipif(
    not all((MODELS / n / "tokenizer.json").is_file() for n in (MINILM, E5)),
    reason="needs the tokenizers of ../shared/models beside the repository "
    f"({MINILM}, {E5})")


@pytest.fixture(scope="module")
def tok():
  """``tok(name) -> (tokenizers.Tokenizer as the file has it, reference dict)``."""
  cache = {}

  def get(name):
    if name not in cache:
      with open(MODELS / name / "reference_outputs.json", encoding="utf-8") as f:
        ref = json.load(f)
      cache[name] = (tokenizers.Tokenizer.from_file(str(MODELS / name /
                                                        "tokenizer.json")), ref)
    return cache[name]
  return get


def test_bucket_length_and_indices():
  assert [bucket_length(n) for n in (0, 1, 16, 17, 64, 65, 128, 129, 300)] == [
      16, 16, 16, 32, 64, 128, 128, 256, 384]
  assert bucket_length(5, (8,)) == 8 and bucket_length(9, (8,)) == 16
  for bad in ((), (0, 8), (16, 8), (8, 8)):
    with pytest.raises(ValueError, match="increasing positive ints"):
      bucket_length(3, bad)
  with pytest.raises(ValueError, match=">= 0"):
    bucket_length(-1)
  got = bucket_indices([5, 40, 16, 17, 200, 3], (16, 32, 64))
  assert list(got) == [16, 32, 64, 256]
  np.testing.assert_array_equal(got[16], [0, 2, 5])
  np.testing.assert_array_equal(got[32], [3])
  np.testing.assert_array_equal(got[64], [1])
  np.testing.assert_array_equal(got[256], [4])
  capped = bucket_indices([5, 40, 17, 200], (16, 32, 64), max_length=48)
  assert {k: v.tolist() for k, v in capped.items()} == {16: [0], 32: [2], 48: [1, 3]}


def test_encode_batch_pads_to_the_bucket(tok):
  t, ref = tok(MINILM)
  before = (t.padding, t.truncation)  # the file's own: Fixed 128 padding
  enc = encode_batch(t, ref["sentences"], buckets=(8, 16, 32))
  assert (t.padding, t.truncation) == before  # not modified
  assert enc.length == 16 and enc.num_truncated == 0  # longest is exactly 16
  assert enc.input_ids.dtype == np.int32 and enc.attention_mask.dtype == np.int32
  np.testing.assert_array_equal(enc.input_ids, ref["input_ids"])
  np.testing.assert_array_equal(enc.attention_mask, ref["attention_mask"])
  np.testing.assert_array_equal(enc.lengths, np.sum(ref["attention_mask"], 1))
  # XLM-R: pad id 1 (found as <pad>: the file sets no padding); 17 tokens -> 32.
  t, ref = tok(E5)
  assert t.padding is None and resolve_pad_id(t) == 1
  enc = encode_batch(t, ref["sentences"])
  assert enc.length == 32
  np.testing.assert_array_equal(enc.input_ids[:, :17], ref["input_ids"])
  assert np.all(enc.input_ids[:, 17:] == 1) and np.all(enc.attention_mask[:, 17:] == 0)
  assert enc.word_ids is None


def test_truncation_keeps_the_special_tokens(tok):
  t, ref = tok(MINILM)
  ids, lengths = ref["input_ids"], np.sum(ref["attention_mask"], 1)
  enc = encode_batch(t, ref["sentences"], max_length=8)
  assert enc.length == 8  # the bucket (16) capped at max_length
  assert enc.num_truncated == int(np.sum(lengths > 8)) == 5
  for i, n in enumerate(lengths):
    want = ids[i][:n] if n <= 8 else ids[i][:7] + [102]  # ... [SEP]
    np.testing.assert_array_equal(enc.input_ids[i, :min(n, 8)], want)
    assert enc.lengths[i] == min(n, 8)
  enc = encode_batch(t, ref["sentences"], max_length=100, buckets=(4, 12))
  assert enc.length == 24 and enc.num_truncated == 0  # 16 > 12: a multiple of 12


def test_pad_id_is_required_when_none_is_found():
  vocab = tokenizers.Tokenizer(tokenizers.models.WordLevel({"a": 0, "[UNK]": 1},
                                                           unk_token="[UNK]"))
  vocab.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  with pytest.raises(ValueError, match="pass pad_id"):
    encode_batch(vocab, ["a a"])
  enc = encode_batch(vocab, ["a a", "a"], pad_id=7, buckets=(3,))
  np.testing.assert_array_equal(enc.input_ids, [[0, 0, 7], [0, 7, 7]])


def test_first_subword_labels_and_round_trip(tok):
  t, _ = tok(MINILM)
  words = [["play", "the", "song", "little", "robin", "redbreast"],
           ["book", "a", "table"]]
  labels = [[1, 0, 0, 2, 3, 3], [4, 0, 5]]
  enc, sub, first = align_word_labels(t, words, labels, max_length=64, buckets=(16,))
  assert enc.length == 16 and enc.num_truncated == 0 and enc.num_words_lost == 0
  assert sub.dtype == np.int32 and first.dtype == bool
  toks = [t.id_to_token(i) for i in enc.input_ids[0, :10]]
  assert toks == ["[CLS]", "play", "the", "song", "little", "robin", "red", "##bre",
                  "##ast", "[SEP]"]
  #                      CLS play the song little robin red ##bre ##ast SEP, padding
  np.testing.assert_array_equal(sub[0], [-1, 1, 0, 0, 2, 3, 3, -1, -1, -1] + [-1] * 6)
  np.testing.assert_array_equal(first[0, :10], [0, 1, 1, 1, 1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(enc.word_ids[0, :10],
                                [-1, 0, 1, 2, 3, 4, 5, 5, 5, -1])
  np.testing.assert_array_equal(sub[1, :5], [-1, 4, 0, 5, -1])
  assert np.all(sub[~first] == -1) and not first[enc.attention_mask == 0].any()
  # The round trip: the gold sub-word labels back to words are the word labels.
  pred = np.where(first, sub, 9)  # whatever sits at the other positions is ignored
  assert subword_to_word_predictions(pred, first, [6, 3]) == labels
  assert subword_to_word_predictions(pred, first, [6, 3], word_ids=enc.word_ids) == labels


def test_words_lost_to_truncation_or_normalisation(tok):
  t, _ = tok(MINILM)
  words = [["play", "the", "redbreast", "song", "little", "robin", "x"],
           ["a", "\u200b", "b"]]  # the normaliser deletes a zero-width space
  labels = [[1, 2, 3, 4, 5, 6, 7], [1, 2, 3]]
  enc, sub, first = align_word_labels(t, words, labels, max_length=6,
                                      ignore_label=-100)
  # [CLS] play the red ##bre [SEP]: words 3..6 cut; "redbreast" keeps its first piece.
  assert enc.length == 6 and enc.num_truncated == 1 and enc.num_words_lost == 4 + 1
  np.testing.assert_array_equal(sub, [[-100, 1, 2, 3, -100, -100],
                                      [-100, 1, 3, -100, -100, -100]])
  got = subword_to_word_predictions(sub, first, [7, 3], word_ids=enc.word_ids, fill=0)
  assert got == [[1, 2, 3, 0, 0, 0, 0], [1, 0, 3]]
  with pytest.raises(ValueError, match="sentence 1 has 3 words but 2 labels"):
    align_word_labels(t, words, [labels[0], [1, 2]], max_length=8)
  with pytest.raises(ValueError, match="row 0 has 3 first sub-words but 2 words"):
    subword_to_word_predictions(sub, first, [2, 3])


def test_sentencepiece_words_round_trip(tok):
  t, _ = tok(E5)
  words = [["pin", "trâu,", "camera", "chụp", "đẹp"], ["phòng", "học", "không"]]
  labels = [[0, 1, 2, 2, 3], [4, 5, 0]]
  enc, sub, first = align_word_labels(t, words, labels, max_length=32)
  assert enc.input_ids[0, 0] == 0 and enc.num_words_lost == 0
  assert first.sum(1).tolist() == [5, 3]
  assert subword_to_word_predictions(sub, first, [5, 3]) == labels
