"""Tokenisation and vocabularies for the text experiments (Vietnamese syllables).

Vietnamese writes one syllable per space-separated token, so words need no segmenter
for a model trained from scratch: :func:`tokenize` lower-cases (after Unicode NFC
normalisation, so that precomposed and combining diacritics agree), splits punctuation
off into tokens of its own and splits on whitespace. :class:`Vocabulary` is built from
the training split only, with a frequency cut-off; ids 0 and 1 are PAD and UNK. It is
saved as JSON in the workdir so that evaluation and resumed runs use the same ids.
"""

from __future__ import annotations

import collections
import json
import os
import re
import unicodedata
from typing import Iterable, Sequence

import numpy as np

__all__ = ["PAD", "UNK", "Vocabulary", "tokenize"]

PAD, UNK = "<pad>", "<unk>"
# A token is a run of word characters (letters with diacritics, digits, _) or a single
# other non-space character (punctuation, emoji).
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def tokenize(text: str) -> list[str]:
  """Lower-cased syllables and punctuation marks.

  Examples:
    >>> tokenize("Pin kém, còn lại MIỄN chê!! 88%")
    ['pin', 'kém', ',', 'còn', 'lại', 'miễn', 'chê', '!', '!', '88', '%']
  """
  return _TOKEN.findall(unicodedata.normalize("NFC", text).lower())


class Vocabulary:
  """Token <-> id map with PAD = 0 and UNK = 1.

  Build with :meth:`build` from the training texts; :meth:`encode` turns texts into a
  padded ``int32 [N, max_len]`` id matrix and ``int32 [N]`` lengths.

  Examples:
    >>> v = Vocabulary.build([["a", "b", "a"], ["a", "c"]], min_count=2)
    >>> v.tokens
    ['<pad>', '<unk>', 'a']
    >>> ids, lengths = v.encode([["a", "z", "a"]], max_len=4)
    >>> ids.tolist(), lengths.tolist()
    ([[2, 1, 2, 0]], [3])
  """

  def __init__(self, tokens: Sequence[str]):
    tokens = list(tokens)
    if tokens[:2] != [PAD, UNK]:
      raise ValueError(f"tokens must start with {[PAD, UNK]}, got {tokens[:2]}")
    if len(set(tokens)) != len(tokens):
      raise ValueError("tokens must be unique")
    self.tokens = tokens
    self.index = {t: i for i, t in enumerate(tokens)}

  def __len__(self) -> int:
    return len(self.tokens)

  @classmethod
  def build(cls, token_lists: Iterable[Sequence[str]], *, min_count: int = 2,
            max_size: int | None = None) -> "Vocabulary":
    """Tokens seen at least ``min_count`` times, most frequent first (ties by token).

    Raises:
      ValueError: ``min_count < 1`` or ``max_size < 3``.
    """
    if min_count < 1:
      raise ValueError(f"min_count must be >= 1, got {min_count}")
    if max_size is not None and max_size < 3:
      raise ValueError(f"max_size must be >= 3 (PAD, UNK and one token), got {max_size}")
    counts = collections.Counter(t for tokens in token_lists for t in tokens)
    kept = sorted((t for t, c in counts.items() if c >= min_count),
                  key=lambda t: (-counts[t], t))
    if max_size is not None:
      kept = kept[:max_size - 2]
    return cls([PAD, UNK] + kept)

  def encode(self, token_lists: Sequence[Sequence[str]], *, max_len: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """Ids ``int32 [N, max_len]`` (truncated, PAD-filled) and lengths ``int32 [N]``
    (at least 1, so that a pooled mean is defined for an empty text: it sees one PAD).

    Raises:
      ValueError: ``max_len < 1``.
    """
    if max_len < 1:
      raise ValueError(f"max_len must be >= 1, got {max_len}")
    ids = np.zeros((len(token_lists), max_len), np.int32)
    lengths = np.zeros((len(token_lists),), np.int32)
    unk = self.index[UNK]
    for i, tokens in enumerate(token_lists):
      row = [self.index.get(t, unk) for t in tokens[:max_len]]
      ids[i, :len(row)] = row
      lengths[i] = max(len(row), 1)
    return ids, lengths

  def save(self, path: str) -> None:
    """Writes the tokens as JSON (atomically: temp file, then rename)."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump({"tokens": self.tokens}, f, ensure_ascii=False)
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: str) -> "Vocabulary":
    """Reads a vocabulary written by :meth:`save`."""
    with open(path, encoding="utf-8") as f:
      return cls(json.load(f)["tokens"])
