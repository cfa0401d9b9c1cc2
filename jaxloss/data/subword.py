"""Sub-word tokenisation for the pretrained-encoder recipes (``tokenizers`` library).

:func:`encode_batch` turns texts into padded ``int32`` id and mask arrays whose length
is a *bucket*: the smallest of a few fixed lengths that holds the longest sequence, so
a jitted step compiles once per bucket rather than once per batch length
(:func:`bucket_length`, :func:`bucket_indices` split a dataset by bucket). Sequences
longer than ``max_length`` are truncated by the tokenizer itself, which keeps the
special tokens (``[CLS] ... [SEP]``, ``<s> ... </s>``) its post-processor adds.

:func:`align_word_labels` tokenises pre-split words (token tagging, e.g. BIO slots)
and puts each word's label on its *first* sub-word; the later sub-words of a word,
the special tokens and the padding get ``ignore_label``, as JointBERT (and BERT's NER
recipe) do. :func:`subword_to_word_predictions` maps per-sub-word predictions back
to one per word, so tagging is scored on words, as ``seqeval`` does.

References:
  J. Devlin et al., *BERT*, NAACL 2019, Section 5.3 (first sub-word labelling for
  NER). Q. Chen et al., *BERT for Joint Intent Classification and Slot Filling*,
  arXiv:1902.10909, 2019 (JointBERT).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import numpy as np

if TYPE_CHECKING:
  import tokenizers

DEFAULT_BUCKETS = (16, 32, 64, 128)
# Padding tokens looked up, in this order, when the tokenizer has no padding set.
PAD_TOKENS = ("[PAD]", "<pad>", "<PAD>", "<|pad|>")


@dataclasses.dataclass(frozen=True, eq=False)
class Encoded:
  """A padded batch of token ids.

  Attributes:
    input_ids: int32 ``[N, T]``, padded with the pad id on the right.
    attention_mask: int32 ``[N, T]``, 1 on real tokens (special ones included), 0 on
      padding.
    lengths: int32 ``[N]``, real tokens a row (after truncation).
    num_truncated: rows the tokenizer cut to ``max_length``.
    word_ids: int32 ``[N, T]`` word index of each token, -1 on special tokens and
      padding (pre-tokenised input only, else None).
    num_words_lost: words left with no sub-word (:func:`align_word_labels` only; cut
      off by truncation, or, rarely, a word the tokenizer's normaliser deletes
      entirely, such as a lone control character).
  """
  input_ids: np.ndarray
  attention_mask: np.ndarray
  lengths: np.ndarray
  num_truncated: int
  word_ids: Optional[np.ndarray] = None
  num_words_lost: int = 0

  @property
  def length(self) -> int:
    """T, the padded length (a bucket, or ``max_length``)."""
    return int(self.input_ids.shape[1])


def _check_buckets(buckets: Sequence[int]) -> Tuple[int, ...]:
  b = tuple(int(x) for x in buckets)
  if not b or any(x < 1 for x in b) or list(b) != sorted(set(b)):
    raise ValueError(f"buckets must be increasing positive ints, got {tuple(buckets)}")
  return b


def bucket_length(n: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> int:
  """The smallest bucket ``>= n``; beyond the largest bucket ``B``, ``n`` rounded up to
  a multiple of ``B`` (so even unexpected lengths compile a bounded number of times).

  Raises:
    ValueError: ``n < 0`` or ``buckets`` not increasing positive ints.

  Examples:
    >>> bucket_length(10), bucket_length(16), bucket_length(17), bucket_length(200)
    (16, 16, 32, 256)
  """
  b = _check_buckets(buckets)
  if n < 0:
    raise ValueError(f"length must be >= 0, got {n}")
  for x in b:
    if n <= x:
      return x
  return -(-n // b[-1]) * b[-1]


def bucket_indices(lengths: Sequence[int], buckets: Sequence[int] = DEFAULT_BUCKETS,
                   *, max_length: Optional[int] = None) -> Dict[int, np.ndarray]:
  """Split a dataset by bucket: ``{T: indices}`` (int64 arrays, ascending) of the
  sequences whose :func:`bucket_length` is T (capped at ``max_length``), for T in
  increasing order; buckets with no sequence are left out.

  Examples:
    >>> bucket_indices([3, 20, 15, 40], (16, 32))
    {16: array([0, 2]), 32: array([1]), 64: array([3])}
    >>> bucket_indices([3, 20, 15, 40], (16, 32), max_length=24)
    {16: array([0, 2]), 24: array([1, 3])}
  """
  lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
  target = np.array([bucket_length(int(n), buckets) for n in lengths], dtype=np.int64)
  if max_length is not None:
    target = np.minimum(target, int(max_length))
  return {int(t): np.flatnonzero(target == t) for t in np.unique(target)}


def resolve_pad_id(tokenizer: "tokenizers.Tokenizer",
                   pad_id: Optional[int] = None) -> int:
  """``pad_id`` if given; else the tokenizer's padding id if it has padding set; else
  the id of the first of :data:`PAD_TOKENS` in its vocabulary.

  Raises:
    ValueError: none of these gives an id (pass ``pad_id``).
  """
  if pad_id is not None:
    return int(pad_id)
  padding = tokenizer.padding
  if padding and padding.get("pad_id") is not None:
    return int(padding["pad_id"])
  for token in PAD_TOKENS:
    found = tokenizer.token_to_id(token)
    if found is not None:
      return int(found)
  raise ValueError(f"the tokenizer has no padding set and none of {PAD_TOKENS} in its "
                   "vocabulary; pass pad_id")


def _encode(tokenizer, inputs, *, max_length, is_pretokenized):
  """The tokenizer's encodings, with its own truncation (special tokens kept) on a
  copy, so the caller's tokenizer is not changed."""
  import tokenizers  # pylint: disable=import-outside-toplevel
  tok = tokenizers.Tokenizer.from_str(tokenizer.to_str())
  tok.no_padding()
  if max_length is None:
    tok.no_truncation()
  else:
    tok.enable_truncation(int(max_length))
  return tok.encode_batch(list(inputs), is_pretokenized=is_pretokenized)


def _pad(encodings, *, buckets, max_length, pad_id):
  n = len(encodings)
  lengths = np.array([len(e.ids) for e in encodings], dtype=np.int32).reshape(n)
  t = bucket_length(int(lengths.max()) if n else 0, buckets)
  if max_length is not None:
    t = min(t, int(max_length))
  ids = np.full((n, t), pad_id, dtype=np.int32)
  mask = np.zeros((n, t), dtype=np.int32)
  for i, e in enumerate(encodings):
    ids[i, :lengths[i]] = e.ids
    mask[i, :lengths[i]] = 1
  truncated = sum(1 for e in encodings if e.overflowing)
  return ids, mask, lengths, truncated


def encode_batch(tokenizer: "tokenizers.Tokenizer", texts: Sequence, *,
                 buckets: Sequence[int] = DEFAULT_BUCKETS,
                 max_length: Optional[int] = None, pad_id: Optional[int] = None,
                 is_pretokenized: bool = False) -> Encoded:
  """Tokenise ``texts`` (with the tokenizer's special tokens) and pad to a bucket.

  Args:
    tokenizer: a ``tokenizers.Tokenizer`` (e.g. ``load_pretrained(...).tokenizer``);
      its own padding and truncation settings are ignored and it is not modified.
    texts: N strings (or N lists of words with ``is_pretokenized``).
    buckets: the allowed padded lengths (increasing).
    max_length: truncate longer sequences to it (the tokenizer's truncation, which
      keeps the special tokens) and cap T at it; None = no truncation.
    pad_id: the padding id; None = :func:`resolve_pad_id`.
    is_pretokenized: ``texts`` are lists of words.

  Returns:
    :class:`Encoded` with T = the smallest bucket ``>=`` the longest (truncated)
    sequence (see :func:`bucket_length`), capped at ``max_length``.

  Raises:
    ValueError: ``max_length < 1``, bad ``buckets``, or no pad id.
  """
  if max_length is not None and int(max_length) < 1:
    raise ValueError(f"max_length must be >= 1, got {max_length}")
  _check_buckets(buckets)
  pad = resolve_pad_id(tokenizer, pad_id)
  encodings = _encode(tokenizer, texts, max_length=max_length,
                      is_pretokenized=is_pretokenized)
  ids, mask, lengths, truncated = _pad(encodings, buckets=buckets,
                                       max_length=max_length, pad_id=pad)
  word_ids = _word_ids(encodings, ids.shape) if is_pretokenized else None
  return Encoded(ids, mask, lengths, truncated, word_ids)


def _word_ids(encodings, shape) -> np.ndarray:
  out = np.full(shape, -1, dtype=np.int32)
  for i, e in enumerate(encodings):
    out[i, :len(e.word_ids)] = [-1 if w is None else w for w in e.word_ids]
  return out


def align_word_labels(tokenizer: "tokenizers.Tokenizer", words: Sequence[Sequence[str]],
                      labels: Sequence[Sequence[int]], *, max_length: int,
                      ignore_label: int = -1,
                      buckets: Sequence[int] = DEFAULT_BUCKETS,
                      pad_id: Optional[int] = None
                      ) -> Tuple[Encoded, np.ndarray, np.ndarray]:
  """Tokenise pre-split words and put each word's label on its first sub-word.

  Args:
    tokenizer: a ``tokenizers.Tokenizer`` (not modified).
    words: N sentences, each a list of words.
    labels: N lists of int labels, one per word.
    max_length: truncate to this many tokens (special tokens included and kept).
    ignore_label: the label of every other position: later sub-words of a word,
      special tokens, padding (-1 here; -100 is PyTorch's convention).
    buckets, pad_id: as :func:`encode_batch`.

  Returns:
    ``(encoded, subword_labels, first_subword_mask)``: the :class:`Encoded` batch (with
    ``word_ids`` and ``num_words_lost``, the words whose sub-words truncation cut off),
    int32 ``[N, T]`` labels, and bool ``[N, T]``, True at each word's first sub-word.

  Raises:
    ValueError: ``words`` and ``labels`` differ in length (the sentence is named), or
      as :func:`encode_batch`.

  Examples: "robin redbreast" with the MiniLM tokenizer is ``[CLS] robin red ##bre
  ##ast [SEP]``; labels ``[3, 5]`` become ``[-1, 3, 5, -1, -1, -1]``.
  """
  if len(words) != len(labels):
    raise ValueError(f"{len(words)} sentences of words but {len(labels)} of labels")
  for i, (w, l) in enumerate(zip(words, labels)):
    if len(w) != len(l):
      raise ValueError(f"sentence {i} has {len(w)} words but {len(l)} labels")
  enc = encode_batch(tokenizer, [list(w) for w in words], buckets=buckets,
                     max_length=max_length, pad_id=pad_id, is_pretokenized=True)
  wid = enc.word_ids
  previous = np.concatenate([np.full((wid.shape[0], 1), -1, np.int32), wid[:, :-1]], 1)
  first = (wid >= 0) & (wid != previous)
  out = np.full(wid.shape, ignore_label, dtype=np.int32)
  lost = 0
  for i, sentence_labels in enumerate(labels):
    cols = np.flatnonzero(first[i])
    lab = np.asarray(sentence_labels, dtype=np.int32).reshape(-1)
    out[i, cols] = lab[wid[i, cols]]
    lost += len(lab) - len(cols)
  enc = dataclasses.replace(enc, num_words_lost=int(lost))
  return enc, out, first


def subword_to_word_predictions(pred, first_subword_mask, num_words: Sequence[int], *,
                                word_ids=None, fill: int = 0) -> List[List[int]]:
  """One prediction per word: the prediction at each word's first sub-word.

  Args:
    pred: int ``[N, T]`` per-sub-word predictions (e.g. ``argmax`` of tag logits).
    first_subword_mask: bool ``[N, T]`` from :func:`align_word_labels`.
    num_words: N word counts (the original sentences' lengths).
    word_ids: the ``encoded.word_ids`` ``[N, T]``: puts each prediction at its word.
      Without it the k-th first sub-word is taken to be word k, which holds unless a
      word had no sub-word at all in the middle of a sentence.
    fill: the prediction for words with no sub-word (cut by truncation), e.g. the
      id of ``"O"``, so each list has ``num_words[i]`` entries as seqeval needs.

  Returns:
    N lists of ints, list i of length ``num_words[i]``.

  Raises:
    ValueError: shapes that disagree, or more first sub-words than words in a row.
  """
  pred = np.asarray(pred)
  first = np.asarray(first_subword_mask, dtype=bool)
  if pred.shape != first.shape or pred.ndim != 2 or len(num_words) != pred.shape[0]:
    raise ValueError(f"pred {pred.shape}, first_subword_mask {first.shape} and "
                     f"{len(num_words)} word counts disagree")
  out = []
  for i, n in enumerate(num_words):
    cols = np.flatnonzero(first[i])
    if len(cols) > n:
      raise ValueError(f"row {i} has {len(cols)} first sub-words but {n} words")
    row = [int(fill)] * int(n)
    targets = (np.asarray(word_ids)[i, cols] if word_ids is not None
               else np.arange(len(cols)))
    for col, w in zip(cols, targets):
      row[int(w)] = int(pred[i, col])
    out.append(row)
  return out


def first_subword_index(encoded: Encoded, num_words: Sequence[int], max_words: int
                        ) -> Tuple[np.ndarray, int]:
  """Where each word starts among the sub-words: int32 ``[N, max_words]``, entry
  ``[i, j]`` the position in ``encoded.input_ids[i]`` of word j's first sub-word
  (JointBERT reads the word's tag there); 0 (the first special token) for padding
  words and for words with no sub-word (cut by truncation), which are counted.

  Args:
    encoded: a pre-tokenised :class:`Encoded` (``encode_batch(...,
      is_pretokenized=True)`` or :func:`align_word_labels`), with ``word_ids``.
    num_words: N word counts.
    max_words: the word axis' length (>= every count).

  Returns:
    ``(index, num_words_lost)``.

  Raises:
    ValueError: no ``word_ids`` on ``encoded``, or a count above ``max_words``.

  Examples: "[CLS] robin red ##bre ##ast [SEP]" of the words "robin redbreast" gives
  ``[1, 2]`` (and 0 for padding words).
  """
  if encoded.word_ids is None:
    raise ValueError("encoded has no word_ids: encode pre-tokenised words "
                     "(is_pretokenized=True)")
  wid = np.asarray(encoded.word_ids)
  counts = np.asarray(num_words, dtype=np.int64).reshape(-1)
  if counts.size and int(counts.max()) > max_words:
    raise ValueError(f"a sentence has {int(counts.max())} words, more than "
                     f"max_words={max_words}")
  index = np.zeros((wid.shape[0], max_words), np.int32)
  previous = np.concatenate([np.full((wid.shape[0], 1), -1, wid.dtype), wid[:, :-1]], 1)
  rows, cols = np.nonzero((wid >= 0) & (wid != previous))
  index[rows, wid[rows, cols]] = cols
  found = np.zeros((wid.shape[0], max_words), bool)
  found[rows, wid[rows, cols]] = True
  lost = int(sum(counts[i] - found[i, :counts[i]].sum() for i in range(len(counts))))
  return index, lost
