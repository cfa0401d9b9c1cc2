"""User-item interaction sequences with leave-one-out splits and stored sampled
negatives (TFDS builder over a SASRec-layout file).

The builder reads one text file from a manual directory, by default
``../shared/data/sasrec_games/Video.txt`` beside the repository: ``user item`` a line,
whitespace separated, integer ids from 1, each user's lines in chronological order
(the layout of kang205/SASRec's ``data/*.txt``). It writes ``array_record`` files that
:func:`load_interactions` reads back through ``tfds`` data sources (no TensorFlow).

Splits, as SASRec's ``data_partition``: a user with ``n >= 3`` interactions trains on
``items[:-2]``, is validated on ``items[-2]`` and tested on ``items[-1]``; a user with
fewer trains on all of them and is not evaluated. The validation input history is
the training sequence; the test history is the training sequence plus the validation
item. ``num_items`` is the largest item id in the file.

Every evaluated example stores its ranking candidates: ``num_candidates - 1``
negatives drawn uniformly without replacement from the items ``1..num_items`` the
user never interacted with (the whole sequence, validation and test items included
are excluded), and the true item at a uniformly random position ``label_index``. The
draws use ``np.random.default_rng([seed, 0])`` for validation and ``[seed, 1]`` for
test, users in ascending id order, so a config always prepares the same candidates.

The prepared data sit under a config name that identifies them:
``{stem}_c{num_candidates}_s{seed}_{sha1[:10]}`` (e.g. ``video_c50_s0_<10 hex>``),
the file's stem reduced to ``[a-z0-9_]`` and the first 10 hex digits of the SHA-1 of
its bytes, so different files, candidate counts or seeds never share a cache.

References:
  W.-C. Kang and J. McAuley, *Self-Attentive Sequential Recommendation*, ICDM 2018
  (the data layout, the leave-one-out protocol and the sampled-negative ranking;
  https://github.com/kang205/SASRec).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

__all__ = [
    "DEFAULT_FILENAME", "DEFAULT_NUM_CANDIDATES", "DEFAULT_SEED", "Interactions",
    "InteractionsConfig", "SPLITS", "default_manual_dir", "fingerprint", "leave_one_out",
    "load_interactions", "make_candidates", "make_config", "pad_left",
    "read_interactions", "sample_negatives",
]

SPLITS = ("train", "validation", "test")
DEFAULT_FILENAME = "Video.txt"
DEFAULT_NUM_CANDIDATES = 50
DEFAULT_SEED = 0
_MIN_EVALUATED = 3  # interactions a user needs to get a validation and a test item
_INT32_MAX = np.iinfo(np.int32).max
_LINE = re.compile(r"\s*(-?\d+)\s+(-?\d+)\s*", re.ASCII)

_CITATION = r"""
@inproceedings{kang2018sasrec,
  author    = {Kang, Wang-Cheng and McAuley, Julian},
  title     = {Self-Attentive Sequential Recommendation},
  booktitle = {IEEE International Conference on Data Mining (ICDM)},
  pages     = {197--206},
  year      = {2018}
}
"""


def default_manual_dir() -> str:
  """``../shared/data/sasrec_games`` beside the repository that holds this package."""
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return os.path.normpath(os.path.join(repo, "..", "shared", "data", "sasrec_games"))


# ----------------------------------------------------------------------------- the file


def _check_file(path: str) -> None:
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path} not found: pass manual_dir= (the folder that holds the interaction "
        f"file; default {default_manual_dir()}) and filename= (default "
        f"{DEFAULT_FILENAME!r})")


def fingerprint(path: str) -> str:
  """SHA-1 (hex) of the bytes of the interaction file ``path``.

  Raises:
    FileNotFoundError: ``path`` is not a file (the message names it and
      ``manual_dir``).
  """
  _check_file(path)
  digest = hashlib.sha1()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def read_interactions(path: str) -> tuple[np.ndarray, list[np.ndarray]]:
  """Parses a ``user item`` file into one chronological sequence per user.

  Args:
    path: the file: one interaction a line, two whitespace-separated integer ids
      ``>= 1`` (user, item); a user's lines in chronological order (they need not be
      contiguous). ``\\r\\n`` line ends are accepted; a blank line is an error.

  Returns:
    ``(users, sequences)``: ``users`` int32 ``[U]``, the distinct user ids in
    ascending order; ``sequences[i]`` int32 ``[n_i]``, the items of ``users[i]`` in
    file order.

  Raises:
    FileNotFoundError: ``path`` is not a file (``manual_dir`` is named).
    ValueError: the file is empty, not UTF-8, a line lacks exactly two integer
      fields, or an id is ``< 1`` or above ``2**31 - 1``; the message names the file
      and the 1-based line.

  Examples:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "mini.txt")
    >>> with open(path, "w") as f:
    ...   _ = f.write("2 7\\n1 5\\n2 3\\n1 6\\n")
    >>> users, sequences = read_interactions(path)
    >>> users.tolist(), [s.tolist() for s in sequences]
    ([1, 2], [[5, 6], [7, 3]])
  """
  _check_file(path)
  with open(path, "rb") as f:
    raw = f.read()
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    line = raw[:e.start].count(b"\n") + 1
    raise ValueError(f"{path} line {line}: not UTF-8 ({e.reason})") from e
  if not text:
    raise ValueError(f"{path} line 1: empty file (no interactions)")
  lines = text.split("\n")
  if lines[-1] == "":  # the newline that ends the last line
    lines.pop()
  users: list[int] = []
  items: list[int] = []
  for i, line in enumerate(lines):
    m = _LINE.fullmatch(line)
    if m is None:
      raise ValueError(f"{path} line {i + 1}: expected two integer fields 'user item', "
                       f"got {line!r}")
    users.append(int(m.group(1)))
    items.append(int(m.group(2)))
  # Python ints first: an id beyond int64 must not overflow before it is checked.
  for i, (user, item) in enumerate(zip(users, items)):
    if not (1 <= user <= _INT32_MAX and 1 <= item <= _INT32_MAX):
      raise ValueError(f"{path} line {i + 1}: ids must be in 1..{_INT32_MAX}, got user "
                       f"{user}, item {item}")
  user_ids = np.asarray(users, np.int32)
  item_ids = np.asarray(items, np.int32)
  order = np.argsort(user_ids, kind="stable")  # keeps each user's file order
  distinct, starts = np.unique(user_ids[order], return_index=True)
  return distinct.astype(np.int32), np.split(item_ids[order], starts[1:])


# ----------------------------------------------------------------------- the sampling


def _sampling_keys(exclude: Sequence[np.ndarray], num_items: int) -> np.ndarray:
  """Sorted distinct ``row * (num_items + 1) + item`` over every row's excluded items."""
  flat_rows = [np.asarray(e, np.int64).reshape(-1) for e in exclude]
  lengths = np.array([r.size for r in flat_rows], np.int64)
  rows = np.repeat(np.arange(len(flat_rows), dtype=np.int64), lengths)
  flat = np.concatenate(flat_rows) if flat_rows else np.zeros(0, np.int64)
  if flat.size and (flat.min() < 1 or flat.max() > num_items):
    row = int(rows[np.flatnonzero((flat < 1) | (flat > num_items))[0]])
    raise ValueError(f"row {row}: excluded ids must be in 1..{num_items}")
  return np.unique(rows * (num_items + 1) + flat)


def sample_negatives(exclude: Sequence[np.ndarray], num_items: int, num_negatives: int,
                     rng: np.random.Generator) -> np.ndarray:
  """Per row, ``num_negatives`` distinct items of ``1..num_items`` not in ``exclude``.

  Each row is a uniformly random ``num_negatives``-subset of its allowed items, in
  random order. Rows are drawn together by rejection: ``ceil(1.25 k) + 16`` uniform
  draws a row, of which the first ``k`` distinct allowed ones are kept; rows with too
  few are drawn again with twice as many draws (4 rounds), and any still short take
  ``rng.choice`` over their allowed items. Conditioning on a row having enough draws
  does not bias it, since that event is symmetric in the allowed items. The result
  depends only on the inputs and the state of ``rng``.

  Args:
    exclude: per row, int item ids in ``1..num_items`` (repeats allowed).
    num_items: the largest item id.
    num_negatives: ``k >= 0``, the negatives a row.
    rng: the generator; it is advanced.

  Returns:
    int32 ``[len(exclude), num_negatives]``.

  Raises:
    ValueError: a row has fewer than ``num_negatives`` allowed items (the first such
      row is named), or an excluded id is outside ``1..num_items``.

  Examples:
    >>> rng = np.random.default_rng(0)
    >>> negatives = sample_negatives([np.array([1, 2]), np.array([3])], 5, 3, rng)
    >>> [sorted(row) for row in negatives.tolist()]
    [[3, 4, 5], [2, 4, 5]]
  """
  num_rows, k = len(exclude), int(num_negatives)
  out = np.zeros((num_rows, k), np.int32)
  if k < 0:
    raise ValueError(f"num_negatives must be >= 0, got {num_negatives}")
  if num_rows == 0 or k == 0:
    return out
  num_items = int(num_items)
  base = num_items + 1
  keys = _sampling_keys(exclude, num_items)
  allowed = num_items - np.bincount(keys // base, minlength=num_rows)
  short = np.flatnonzero(allowed < k)
  if short.size:
    row = int(short[0])
    raise ValueError(f"row {row} has {allowed[row]} allowed items of {num_items}, fewer "
                     f"than the {k} negatives asked for")

  pending = np.arange(num_rows)
  draws = -(-5 * k // 4) + 16
  for _ in range(4):
    if not pending.size:
      break
    sample = rng.integers(1, num_items + 1, size=(pending.size, draws), dtype=np.int64)
    wanted = pending[:, None] * base + sample
    at = np.minimum(np.searchsorted(keys, wanted), keys.size - 1)
    valid = keys[at] != wanted if keys.size else np.ones(sample.shape, bool)
    # Drop repeats within a row, keeping the first draw (stable sort keeps it first).
    order = np.argsort(sample, axis=1, kind="stable")
    ordered = np.take_along_axis(sample, order, axis=1)
    repeat = np.zeros(sample.shape, bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    repeated = np.empty_like(repeat)
    np.put_along_axis(repeated, order, repeat, axis=1)
    valid &= ~repeated
    done = valid.sum(axis=1) >= k
    keep = valid[done] & (np.cumsum(valid[done], axis=1) <= k)
    out[pending[done]] = sample[done][keep].reshape(-1, k)
    pending = pending[~done]
    draws *= 2
  everything = np.arange(1, num_items + 1, dtype=np.int64)
  for row in pending:  # heavy users whose allowed items are few: exact draws
    choices = np.setdiff1d(everything, np.asarray(exclude[row], np.int64))
    out[row] = rng.choice(choices, size=k, replace=False)
  return out


def make_candidates(exclude: Sequence[np.ndarray], targets: np.ndarray, num_items: int,
                    num_candidates: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Ranking candidates: sampled negatives with the true item at a random position.

  Args:
    exclude: per row, the items the user interacted with (they include the target).
    targets: int ``[E]``, the true item of each row.
    num_items: the largest item id.
    num_candidates: ``C >= 2``, the list length.
    rng: the generator; :func:`sample_negatives` draws first, then the positions
      (``rng.integers(0, C, E)``).

  Returns:
    ``(candidates, label_index)``: int32 ``[E, C]`` and int32 ``[E]``, with
    ``candidates[e, label_index[e]] == targets[e]`` and the other ``C - 1`` entries
    the negatives in their drawn order.

  Raises:
    ValueError: ``num_candidates < 2``, a length mismatch, or a row with fewer than
      ``C - 1`` allowed items.

  Examples:
    >>> rng = np.random.default_rng(0)
    >>> candidates, label_index = make_candidates(
    ...     [np.array([1, 2, 3])], np.array([3]), 6, 4, rng)
    >>> candidates.shape, int(candidates[0, label_index[0]])
    ((1, 4), 3)
    >>> sorted(candidates[0].tolist())
    [3, 4, 5, 6]
  """
  _check_num_candidates(num_candidates)
  targets = np.asarray(targets, np.int32).reshape(-1)
  if targets.size != len(exclude):
    raise ValueError(f"{targets.size} targets for {len(exclude)} rows")
  negatives = sample_negatives(exclude, num_items, num_candidates - 1, rng)
  label_index = rng.integers(0, num_candidates, size=targets.size).astype(np.int32)
  column = np.arange(num_candidates)[None, :]
  position = label_index[:, None]
  source = np.minimum(column - (column > position), num_candidates - 2)
  candidates = np.take_along_axis(negatives, source, axis=1)
  candidates = np.where(column == position, targets[:, None], candidates)
  return candidates.astype(np.int32), label_index


def _check_num_candidates(num_candidates: Any) -> None:
  if (isinstance(num_candidates, bool) or not isinstance(num_candidates, (int, np.integer))
      or num_candidates < 2):
    raise ValueError(f"num_candidates must be an integer >= 2 (the true item and at "
                     f"least one negative), got {num_candidates!r}")


def _check_seed(seed: Any) -> None:
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be an integer >= 0, got {seed!r}")


def leave_one_out(users: np.ndarray, sequences: Sequence[np.ndarray], *,
                  num_candidates: int = DEFAULT_NUM_CANDIDATES, seed: int = DEFAULT_SEED,
                  num_items: Optional[int] = None,
                  where: str = "interactions") -> dict[str, dict[str, Any]]:
  """SASRec's leave-one-out splits with stored candidates (no TFDS involved).

  Args:
    users: int ``[U]``, ascending user ids (as :func:`read_interactions`).
    sequences: per user, its items in chronological order.
    num_candidates: ``C >= 2``, the candidates of an evaluated example.
    seed: ``>= 0``; validation draws from ``np.random.default_rng([seed, 0])``, test
      from ``[seed, 1]``.
    num_items: the largest item id; default the largest in ``sequences``.
    where: what to name in errors (the file).

  Returns:
    ``{"train": {"user": int32 [U], "items": list of int32 arrays}, "validation":
    {...}, "test": {...}}``, each evaluated split ``{"user": int32 [E], "history":
    list of int32 arrays, "target": int32 [E], "candidates": int32 [E, C],
    "label_index": int32 [E]}``; ``E`` counts the users with ``>= 3`` items.

  Raises:
    ValueError: ``num_candidates < 2``, a bad seed, or an evaluated user with fewer
      than ``C - 1`` items it never interacted with (the user and ``where`` named).

  Examples:
    >>> splits = leave_one_out(np.array([1, 2]), [np.array([4, 1, 2, 3]), np.array([5])],
    ...                        num_candidates=2, seed=0)
    >>> [a.tolist() for a in splits["train"]["items"]]
    [[4, 1], [5]]
    >>> splits["validation"]["target"].tolist(), splits["test"]["target"].tolist()
    ([2], [3])
    >>> [h.tolist() for h in splits["test"]["history"]]
    [[4, 1, 2]]
    >>> splits["validation"]["candidates"].tolist()  # 5: the one item user 1 never had
    [[5, 2]]
  """
  _check_num_candidates(num_candidates)
  _check_seed(seed)
  users = np.asarray(users, np.int32).reshape(-1)
  sequences = [np.asarray(s, np.int32).reshape(-1) for s in sequences]
  if users.size != len(sequences):
    raise ValueError(f"{users.size} users for {len(sequences)} sequences")
  if num_items is None:
    num_items = max((int(s.max()) for s in sequences if s.size), default=0)
  lengths = np.array([s.size for s in sequences], np.int64)
  evaluated = np.flatnonzero(lengths >= _MIN_EVALUATED)
  full = [sequences[i] for i in evaluated]
  distinct = np.array([np.unique(s).size for s in full], np.int64)
  short = np.flatnonzero(num_items - distinct < num_candidates - 1)
  if short.size:
    row = short[0]
    raise ValueError(
        f"{where}: user {users[evaluated[row]]} interacted with {distinct[row]} of the "
        f"{num_items} items, leaving {num_items - distinct[row]} never-interacted items "
        f"for the {num_candidates - 1} negatives of num_candidates={num_candidates}; "
        "lower num_candidates")

  train = [s[:-2] if s.size >= _MIN_EVALUATED else s for s in sequences]
  splits: dict[str, dict[str, Any]] = {"train": {"user": users, "items": train}}
  eval_users = users[evaluated]
  for stream, (split, offset) in enumerate((("validation", 2), ("test", 1))):
    targets = np.array([s[-offset] for s in full], np.int32)
    history = [s[:-offset] for s in full]
    rng = np.random.default_rng([int(seed), stream])
    if full:
      candidates, label_index = make_candidates(full, targets, num_items,
                                                num_candidates, rng)
    else:
      candidates = np.zeros((0, num_candidates), np.int32)
      label_index = np.zeros(0, np.int32)
    splits[split] = {"user": eval_users, "history": history, "target": targets,
                     "candidates": candidates, "label_index": label_index}
  return splits


# ------------------------------------------------------------------------ the builder


def _sanitize(name: str) -> str:
  name = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
  return name or "data"


_CONFIG_NAME = re.compile(r"[a-z0-9_]+_c([0-9]+)_s([0-9]+)_[0-9a-f]{10}")


@dataclasses.dataclass(eq=False, kw_only=True)
class InteractionsConfig(tfds.core.BuilderConfig):
  """Which file, candidate count and seed an :class:`Interactions` builder prepares.

  Attributes:
    name: ``{stem}_c{num_candidates}_s{seed}_{sha1[:10]}``: the file's stem reduced
      to ``[a-z0-9_]``, the two settings, and the first 10 hex digits of
      :func:`fingerprint`. It names the on-disk data; the builder checks the digits
      against the file before it prepares it.
    filename: the interaction file inside the download config's ``manual_dir``.
    num_candidates: ``>= 2``, the candidates of a validation / test example (the
      true item and ``num_candidates - 1`` sampled negatives).
    seed: ``>= 0``, the seed of the negative and position draws.

  Raises:
    ValueError: ``num_candidates < 2`` (named), a negative seed, an empty filename,
      or a name that does not match the pattern and the settings.

  Examples:
    >>> InteractionsConfig(name="video_c50_s0_0123456789").num_candidates
    50
  """

  name: str = ""
  filename: str = DEFAULT_FILENAME
  num_candidates: int = DEFAULT_NUM_CANDIDATES
  seed: int = DEFAULT_SEED

  def __post_init__(self):
    _check_num_candidates(self.num_candidates)
    _check_seed(self.seed)
    if not self.filename:
      raise ValueError("filename must name the interaction file, got ''")
    m = _CONFIG_NAME.fullmatch(self.name)
    if (m is None or int(m.group(1)) != self.num_candidates
        or int(m.group(2)) != self.seed):
      raise ValueError(
          f"name must be '{{stem}}_c{self.num_candidates}_s{self.seed}_{{10 hex "
          f"digits}}' (see make_config), got {self.name!r}")
    if not self.description:
      self.description = (f"Leave-one-out splits of {self.filename} with "
                          f"{self.num_candidates} candidates, seed {self.seed}.")


def make_config(manual_dir: str, filename: str = DEFAULT_FILENAME, *,
                num_candidates: int = DEFAULT_NUM_CANDIDATES,
                seed: int = DEFAULT_SEED) -> InteractionsConfig:
  """The config that identifies ``manual_dir/filename`` and the sampling settings.

  Raises:
    ValueError: ``num_candidates < 2`` or a bad seed (checked before the file).
    FileNotFoundError: the file is missing (its path and ``manual_dir`` named).

  Examples:
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with open(os.path.join(folder, "Mini-Set.txt"), "w") as f:
    ...   _ = f.write("1 1\\n")
    >>> make_config(folder, "Mini-Set.txt", num_candidates=101, seed=3).name
    'mini_set_c101_s3_d998709663'
  """
  _check_num_candidates(num_candidates)
  _check_seed(seed)
  path = os.path.join(os.path.normpath(os.fspath(manual_dir)), filename)
  digest = fingerprint(path)[:10]
  stem = _sanitize(os.path.splitext(os.path.basename(filename))[0])
  return InteractionsConfig(name=f"{stem}_c{int(num_candidates)}_s{int(seed)}_{digest}",
                            filename=filename, num_candidates=int(num_candidates),
                            seed=int(seed))


# The module can be imported twice under different names (pytest's --doctest-modules);
# tfds forbids registering a name twice, so register only once.
_REGISTERED = "interactions" in tfds.core.registered.list_imported_builders()


class Interactions(tfds.core.GeneratorBasedBuilder, skip_registration=_REGISTERED):
  """Leave-one-out interaction sequences from a ``user item`` file (manual download).

  The builder has no predefined configs: pass ``config=make_config(manual_dir, ...)``
  (what :func:`load_interactions` does) and the same folder as the download config's
  ``manual_dir``.

  TFDS gives every split the same features, so the three share one layout:

  * ``user``: int32 scalar, the user id in the file.
  * ``history``: int32 ``[None]``, the input sequence: in ``train`` the user's
    training sequence; in ``validation`` the same; in ``test`` it plus the
    validation item.
  * ``target``: int32 scalar, the held-out item (``0``, the padding id, in
    ``train``).
  * ``candidates``: int32 ``[None]``: ``num_candidates`` ids in ``validation`` and
    ``test``, empty in ``train``.
  * ``label_index``: int32 scalar, the position of ``target`` in ``candidates``
    (``-1`` in ``train``).

  Splits: ``train`` (every user), ``validation`` and ``test`` (users with at least 3
  interactions). :func:`load_interactions` returns ``train`` as ``{"user",
  "items"}``.

  Examples:
    >>> import tempfile
    >>> builder = Interactions(data_dir=tempfile.mkdtemp(),
    ...                        config=InteractionsConfig(name="video_c50_s0_0123456789"),
    ...                        file_format="array_record")
    >>> sorted(builder.info.features.keys())
    ['candidates', 'history', 'label_index', 'target', 'user']

  References:
    Kang and McAuley, ICDM 2018 (SASRec).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Place the interaction file in manual_dir (default ../shared/data/sasrec_games): "
      "'user item' a line, integer ids from 1, each user's lines in chronological "
      "order, as kang205/SASRec's data/Video.txt.")

  def _interactions_config(self) -> InteractionsConfig:
    config = self.builder_config
    if not isinstance(config, InteractionsConfig):
      raise ValueError("Interactions needs config=make_config(manual_dir) (an "
                       f"InteractionsConfig), got {config!r}; or use load_interactions")
    return config

  def _info(self) -> tfds.core.DatasetInfo:
    self._interactions_config()
    int32 = np.int32
    return self.dataset_info_from_configs(
        description="User-item interaction sequences, leave-one-out validation and "
                    "test items, and stored sampled negatives for ranking.",
        features=tfds.features.FeaturesDict({
            "user": tfds.features.Scalar(dtype=int32, doc="User id in the file."),
            "history": tfds.features.Tensor(
                shape=(None,), dtype=int32,
                doc="Input items, oldest first (train: the training sequence)."),
            "target": tfds.features.Scalar(
                dtype=int32, doc="Held-out item; 0 in train."),
            "candidates": tfds.features.Tensor(
                shape=(None,), dtype=int32,
                doc="num_candidates item ids (target + negatives); empty in train."),
            "label_index": tfds.features.Scalar(
                dtype=int32, doc="Position of target in candidates; -1 in train."),
        }),
        homepage="https://github.com/kang205/SASRec",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager):
    config = self._interactions_config()
    manual = str(dl_manager.manual_dir)
    path = os.path.join(manual, config.filename)
    digest = fingerprint(path)[:10]
    if not config.name.endswith("_" + digest):
      raise ValueError(f"config {config.name!r} does not match {path} (its fingerprint "
                       f"is {digest}); use make_config(manual_dir, filename)")
    users, sequences = read_interactions(path)
    splits = leave_one_out(users, sequences, num_candidates=config.num_candidates,
                           seed=config.seed, where=path)
    return {split: self._generate_examples(split, splits[split]) for split in SPLITS}

  def _generate_examples(self, split: str,
                         rows: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    if split == "train":
      empty = np.zeros(0, np.int32)
      for user, items in zip(rows["user"], rows["items"]):
        yield int(user), {"user": user, "history": items, "target": 0,
                          "candidates": empty, "label_index": -1}
      return
    for i, user in enumerate(rows["user"]):
      yield int(user), {"user": user, "history": rows["history"][i],
                        "target": rows["target"][i], "candidates": rows["candidates"][i],
                        "label_index": rows["label_index"][i]}


# ------------------------------------------------------------------------- the loader


_INT_FEATURES = ("user", "history", "target", "candidates", "label_index")


def _parse_record(raw: bytes) -> dict[str, Any]:
  """One stored example, parsed straight from its ``tf.train.Example`` bytes.

  Every feature is int32 and stored as an ``int64_list``, so reading the lists is
  the whole decode (about 5x faster than tfds' generic numpy decoder);
  :func:`_read_prepared` checks it against that decoder on the first record.
  """
  feature = tf_example_pb2.Example.FromString(raw).features.feature
  values = {k: feature[k].int64_list.value for k in _INT_FEATURES}
  return {"user": int(values["user"][0]),
          "history": np.array(values["history"], np.int32),
          "target": int(values["target"][0]),
          "candidates": np.array(values["candidates"], np.int32),
          "label_index": int(values["label_index"][0])}


def _same_record(a: dict[str, Any], b: dict[str, Any]) -> bool:
  return all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in _INT_FEATURES)


def _read_prepared(builder: Interactions, split: str,
                   num_candidates: int) -> dict[str, Any]:
  source = builder.as_data_source(
      split=split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  raw = source.__getitems__(range(len(source)))
  records = [_parse_record(r) for r in raw]
  if raw and not _same_record(
      records[0], builder.info.features.deserialize_example_np(raw[0])):
    raise ValueError(f"prepared split {split!r} of {builder.data_dir} is not stored as "
                     "expected (int64 lists); delete it and prepare again")
  user = np.array([r["user"] for r in records], np.int32)
  order = np.argsort(user, kind="stable")  # tfds shuffles on write
  if np.any(np.diff(user[order]) <= 0):
    raise ValueError(f"prepared split {split!r} of {builder.data_dir} repeats a user; "
                     "delete it and prepare again")
  records = [records[i] for i in order]
  history = [r["history"] for r in records]
  if split == "train":
    return {"user": user[order], "items": history}
  candidates = np.array([r["candidates"] for r in records],
                        np.int32).reshape(-1, num_candidates)
  return {"user": user[order], "history": history,
          "target": np.array([r["target"] for r in records], np.int32),
          "candidates": candidates,
          "label_index": np.array([r["label_index"] for r in records], np.int32)}


def load_interactions(*, manual_dir: Optional[str] = None, data_dir: Optional[str] = None,
                      filename: str = DEFAULT_FILENAME,
                      num_candidates: int = DEFAULT_NUM_CANDIDATES,
                      seed: int = DEFAULT_SEED) -> dict[str, Any]:
  """Builds (or reuses) the leave-one-out splits and returns them as numpy.

  Args:
    manual_dir: the folder of the interaction file; default
      :func:`default_manual_dir` (``../shared/data/sasrec_games`` beside the
      repository). Needed on every call: the prepared data are named after the
      file's fingerprint.
    data_dir: root of the prepared TFDS data (tfds' default when None).
    filename: the file inside ``manual_dir``.
    num_candidates: ``>= 2``, candidates of an evaluated example.
    seed: ``>= 0``, seed of the negative and position draws.

  Returns:
    A dict, every split ordered by user id::

      "num_users": int        distinct users (= train examples)
      "num_items": int        the largest item id
      "num_interactions": int lines of the file
      "manual_dir", "path", "config_name": str
      "train": {"user": int32 [U], "items": list of int32 arrays}
      "validation", "test": {"user": int32 [E], "history": list of int32 arrays,
                             "target": int32 [E], "candidates": int32 [E, C],
                             "label_index": int32 [E]}
      "item_counts": int64 [num_items + 1]  occurrences in the train sequences
                                            (index 0, the padding id, is 0)

    with ``candidates[e, label_index[e]] == target[e]``.

  Raises:
    FileNotFoundError: the file is missing (its path and ``manual_dir`` named).
    ValueError: ``num_candidates < 2`` (named), a malformed line or an empty file
      (file and 1-based line named), or an evaluated user with fewer than
      ``num_candidates - 1`` never-interacted items.

  Examples:
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with open(os.path.join(folder, "Video.txt"), "w") as f:
    ...   _ = f.write("1 1\\n1 2\\n1 3\\n1 4\\n2 5\\n2 1\\n")
    >>> data = load_interactions(manual_dir=folder, data_dir=tempfile.mkdtemp(),
    ...                          num_candidates=2)  # doctest: +ELLIPSIS
    Downloading and preparing dataset ...
    Dataset interactions downloaded and prepared to ...
    >>> data["num_users"], data["num_items"], data["num_interactions"]
    (2, 5, 6)
    >>> [a.tolist() for a in data["train"]["items"]]
    [[1, 2], [5, 1]]
    >>> data["validation"]["target"].tolist(), data["test"]["target"].tolist()
    ([3], [4])
    >>> [h.tolist() for h in data["test"]["history"]]
    [[1, 2, 3]]
    >>> data["test"]["candidates"].tolist()  # 5: the one item user 1 never had
    [[5, 4]]
    >>> data["item_counts"].tolist()
    [0, 2, 1, 0, 0, 1]

  References:
    Kang and McAuley, ICDM 2018 (SASRec: leave-one-out, sampled-negative ranking).
  """
  _check_num_candidates(num_candidates)
  _check_seed(seed)
  manual_dir = os.path.normpath(os.fspath(manual_dir or default_manual_dir()))
  config = make_config(manual_dir, filename, num_candidates=num_candidates, seed=seed)
  builder = Interactions(data_dir=data_dir, config=config, file_format="array_record")
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  from jaxloss.data.digits_lt import _no_progress_bar  # pylint: disable=g-import-not-at-top
  with _no_progress_bar():
    builder.download_and_prepare(download_config=download_config)
    splits = {s: _read_prepared(builder, s, config.num_candidates) for s in SPLITS}

  train = splits["train"]
  train_items = (np.concatenate(train["items"]) if train["items"]
                 else np.zeros(0, np.int32))
  num_items = int(max([train_items.max(initial=0)]
                      + [splits[s]["target"].max(initial=0)
                         for s in ("validation", "test")]))
  item_counts = np.bincount(train_items, minlength=num_items + 1).astype(np.int64)
  num_interactions = train_items.size + 2 * splits["test"]["user"].size
  return {"num_users": int(train["user"].size), "num_items": num_items,
          "num_interactions": int(num_interactions), "manual_dir": manual_dir,
          "path": os.path.join(manual_dir, filename), "config_name": config.name,
          **splits, "item_counts": item_counts}


# --------------------------------------------------------------------------- batching


def pad_left(sequences: Iterable[Any], max_len: int) -> tuple[np.ndarray, np.ndarray]:
  """Right-aligns the last ``max_len`` items of each sequence, zeros on the left.

  SASRec's input convention: ``0`` is the padding id, so item ids must be ``>= 1``;
  a sequence longer than ``max_len`` keeps its most recent (last) items.

  Args:
    sequences: 1-D integer sequences (arrays or lists), oldest item first; they
      may be empty.
    max_len: ``>= 1``, the output width.

  Returns:
    ``(ids, lengths)``: int32 ``[N, max_len]`` and int32 ``[N]``, the number of
    real items in each row after truncation (``min(len, max_len)``).

  Raises:
    ValueError: ``max_len < 1``, a sequence that is not 1-D integers, or an id
      ``< 1`` or above ``2**31 - 1`` (the sequence is named by its index).

  Examples:
    >>> ids, lengths = pad_left([[5, 6, 7, 8], [3], []], 3)
    >>> ids.tolist(), lengths.tolist()
    ([[6, 7, 8], [0, 0, 3], [0, 0, 0]], [3, 1, 0])
  """
  if (isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer))
      or max_len < 1):
    raise ValueError(f"max_len must be an integer >= 1, got {max_len!r}")
  rows = []
  for i, seq in enumerate(sequences):
    arr = np.asarray(seq)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
      raise ValueError(f"sequence {i}: expected a 1-D integer sequence, got shape "
                       f"{arr.shape} dtype {arr.dtype}")
    if arr.size and (arr.min() < 1 or arr.max() > _INT32_MAX):
      raise ValueError(f"sequence {i}: ids must be in 1..{_INT32_MAX} (0 is padding), "
                       f"got min {arr.min()}, max {arr.max()}")
    rows.append(arr[-max_len:] if arr.size else arr)
  lengths = np.array([r.size for r in rows], np.int32)
  ids = np.zeros((len(rows), max_len), np.int32)
  if rows:
    flat = np.concatenate([r.astype(np.int64) for r in rows]).astype(np.int32)
    row = np.repeat(np.arange(len(rows)), lengths)
    starts = np.cumsum(lengths) - lengths
    column = (np.arange(flat.size) - np.repeat(starts, lengths)
              + np.repeat(max_len - lengths, lengths))
    ids[row, column] = flat
  return ids, lengths
