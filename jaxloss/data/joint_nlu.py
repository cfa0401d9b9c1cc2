"""Joint intent / slot NLU data (SNIPS, ATIS, ...): TFDS builder over raw files.

The builder reads one of two layouts from a manual directory, by default
``../shared/data/snips`` beside the repository, and writes ``array_record`` files
that :func:`load_joint_nlu` reads back through ``tfds`` data sources (no TensorFlow).

*JointBERT layout* (the ``data/`` folders of monologg/JointBERT)::

  train/seq.in   one space-tokenised utterance a line
  train/seq.out  one BIO tag per token, same line order
  train/label    one intent a line
  dev/...  test/...
  intent_label.txt, slot_label.txt   optional vocabularies, one label a line

Tokens and tags are ``line.split()`` (so trailing or doubled spaces, present in
SNIPS, do not count) and the intent is ``line.strip()``, as JointBERT reads them.
The single sentence-level label field is ``intent``.

*JSONL layout*: ``train.jsonl``, ``dev.jsonl``, ``test.jsonl``, one JSON object a
line, ``{"tokens": [...], "tags": [...], "intent": "...", "command": "..."}``:
``tokens`` and ``tags`` are required and every other field is a sentence-level
string label. The label fields are those of the first line of ``train.jsonl``,
sorted by name; every line of every split must have exactly them.

Label vocabularies (ids): for the JointBERT layout, ``slot_label.txt`` and
``intent_label.txt`` when present, whose line order gives the ids exactly as
JointBERT; otherwise, and always for JSONL, built from the train split: tags
``["PAD", "UNK", "O"] + sorted(other train tags)``, each label field
``["UNK"] + sorted(train values)``. A tag or label that is not in its vocabulary
maps to the ``UNK`` id (JointBERT's ``lst.index(x) if x in lst else
lst.index("UNK")``).

The prepared data hold the raw strings only (ids are computed on load), under a
config name that identifies the data: ``{folder}_{layout}_{sha1[:10]}`` (e.g.
``snips_jointbert_ba1b7f3613``), so several datasets can share one TFDS ``data_dir``
and an edited file is prepared afresh.

References:
  A. Coucke et al., *Snips Voice Platform: an embedded Spoken Language
  Understanding system for private-by-design voice interfaces*, arXiv:1805.10190,
  2018 (SNIPS).
  Q. Chen, Z. Zhuo and W. Wang, *BERT for Joint Intent Classification and Slot
  Filling*, arXiv:1902.10909, 2019 (JointBERT and its data layout).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds

__all__ = [
    "INTENT_FIELD", "JointNlu", "JointNluConfig", "LABEL_SPECIALS", "LAYOUTS", "SPLITS",
    "TAG_SPECIALS", "UNK", "default_manual_dir", "detect_layout", "encode_labels",
    "encode_tags", "fingerprint", "label_vocabulary", "load_joint_nlu", "make_config",
    "read_label_file", "read_split",
]

SPLITS = ("train", "dev", "test")
LAYOUTS = ("jointbert", "jsonl")
UNK = "UNK"
TAG_SPECIALS = ("PAD", UNK, "O")
LABEL_SPECIALS = (UNK,)
INTENT_FIELD = "intent"
JOINTBERT_FILES = ("seq.in", "seq.out", "label")
INTENT_LABEL_FILE = "intent_label.txt"
SLOT_LABEL_FILE = "slot_label.txt"
_REQUIRED_JSONL = ("tokens", "tags")

_CITATION = r"""
@article{coucke2018snips,
  author  = {Coucke, Alice and Saade, Alaa and Ball, Adrien and Bluche, Th{\'e}odore and
             Caulier, Alexandre and Leroy, David and Doumouro, Cl{\'e}ment and
             Gisselbrecht, Thibault and Caltagirone, Francesco and Lavril, Thibaut and
             Primet, Ma{\"e}l and Dureau, Joseph},
  title   = {Snips Voice Platform: an embedded Spoken Language Understanding system
             for private-by-design voice interfaces},
  journal = {arXiv preprint arXiv:1805.10190},
  year    = {2018}
}
@article{chen2019bert,
  author  = {Chen, Qian and Zhuo, Zhu and Wang, Wen},
  title   = {BERT for Joint Intent Classification and Slot Filling},
  journal = {arXiv preprint arXiv:1902.10909},
  year    = {2019}
}
"""


def default_manual_dir() -> str:
  """``../shared/data/snips`` beside the repository that holds this package."""
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return os.path.normpath(os.path.join(repo, "..", "shared", "data", "snips"))


# ----------------------------------------------------------------------------- files


def detect_layout(manual_dir: str, layout: str = "auto") -> str:
  """The layout of ``manual_dir``: ``"jsonl"`` or ``"jointbert"``.

  Args:
    manual_dir: the data folder.
    layout: ``"auto"`` (``"jsonl"`` if ``train.jsonl`` exists, else
      ``"jointbert"`` if ``train/seq.in`` exists), or one of :data:`LAYOUTS` to
      force it.

  Returns:
    ``"jsonl"`` or ``"jointbert"``.

  Raises:
    ValueError: ``layout`` is not ``"auto"`` or one of :data:`LAYOUTS`.
    FileNotFoundError: ``manual_dir`` is not a folder, or (``"auto"``) it holds
      neither ``train.jsonl`` nor ``train/seq.in``.

  Examples:
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> open(os.path.join(folder, "train.jsonl"), "w").close()
    >>> detect_layout(folder)
    'jsonl'
  """
  if layout != "auto" and layout not in LAYOUTS:
    raise ValueError(f"layout must be 'auto' or one of {LAYOUTS}, got {layout!r}")
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(f"{manual_dir} is not a folder: pass manual_dir= (a folder "
                            "with train.jsonl or train/seq.in)")
  if layout != "auto":
    return layout
  if os.path.isfile(os.path.join(manual_dir, "train.jsonl")):
    return "jsonl"
  if os.path.isfile(os.path.join(manual_dir, "train", "seq.in")):
    return "jointbert"
  raise FileNotFoundError(
      f"no known layout in {manual_dir}: expected train.jsonl (with dev.jsonl, "
      "test.jsonl: JSONL layout) or train/seq.in (with seq.out and label, and the "
      "same under dev/ and test/: JointBERT layout)")


def _split_files(manual_dir: str, layout: str, split: str) -> list[str]:
  if layout == "jsonl":
    return [os.path.join(manual_dir, f"{split}.jsonl")]
  return [os.path.join(manual_dir, split, name) for name in JOINTBERT_FILES]


def _raw_files(manual_dir: str, layout: str) -> list[str]:
  """The split files of ``layout``, in a fixed order; all must exist."""
  paths = [p for split in SPLITS for p in _split_files(manual_dir, layout, split)]
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(f"{layout} layout: missing {', '.join(missing)}")
  return paths


def fingerprint(manual_dir: str, layout: str) -> str:
  """SHA-1 (hex) of the split files' names and bytes (not the vocabulary files).

  Raises:
    FileNotFoundError: a split file of ``layout`` is missing (all are named).
  """
  digest = hashlib.sha1()
  for path in _raw_files(manual_dir, layout):
    rel = os.path.relpath(path, manual_dir).replace(os.sep, "/")
    digest.update(f"{rel}\0{os.path.getsize(path)}\0".encode())
    with open(path, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
  return digest.hexdigest()


def _read_lines(path: str) -> list[str]:
  """The lines of a UTF-8 text file without their line ends (``\\n``, ``\\r\\n``)."""
  try:
    with open(path, encoding="utf-8") as f:
      return [line.rstrip("\n") for line in f]
  except UnicodeDecodeError as e:
    raise ValueError(f"{path}: not UTF-8 ({e})") from e


def _read_jointbert(manual_dir: str, split: str) -> list[dict[str, Any]]:
  seq_in, seq_out, label = _split_files(manual_dir, "jointbert", split)
  for path in (seq_in, seq_out, label):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"jointbert layout: missing {path}")
  texts, tag_lines = _read_lines(seq_in), _read_lines(seq_out)
  intents = _read_lines(label)
  if not len(texts) == len(tag_lines) == len(intents):
    raise ValueError(f"line counts differ: {seq_in} has {len(texts)}, {seq_out} has "
                     f"{len(tag_lines)}, {label} has {len(intents)}")
  rows = []
  for i, (text, tag_line, intent) in enumerate(zip(texts, tag_lines, intents)):
    tokens, tags, intent = text.split(), tag_line.split(), intent.strip()
    if not tokens:
      raise ValueError(f"{seq_in} line {i + 1}: empty utterance")
    if len(tags) != len(tokens):
      raise ValueError(f"{seq_out} line {i + 1}: {len(tags)} tags for {len(tokens)} "
                       f"tokens in {seq_in}")
    if not intent:
      raise ValueError(f"{label} line {i + 1}: empty intent")
    rows.append({"index": i, "tokens": tokens, "tags": tags,
                 "labels": {INTENT_FIELD: intent}})
  return rows


def _parse_jsonl_line(line: str, where: str) -> dict[str, Any]:
  """One JSONL object, checked except for its set of label fields."""
  if not line.strip():
    raise ValueError(f"{where}: empty line")
  try:
    obj = json.loads(line)
  except json.JSONDecodeError as e:
    raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from e
  if not isinstance(obj, dict):
    raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
  for key in _REQUIRED_JSONL:
    if key not in obj:
      raise ValueError(f"{where}: lacks {key!r} (has {sorted(obj)})")
    value = obj[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
      raise ValueError(f"{where}: {key!r} must be a list of strings, got {value!r}")
  for key, value in obj.items():
    if key in _REQUIRED_JSONL:
      continue
    if not key or "/" in key:
      raise ValueError(f"{where}: label field name {key!r} must be non-empty and "
                       "without '/'")
    if not isinstance(value, str):
      raise ValueError(f"{where}: label {key!r} must be a string, got {value!r}")
  if not obj["tokens"]:
    raise ValueError(f"{where}: empty utterance (no tokens)")
  if len(obj["tags"]) != len(obj["tokens"]):
    raise ValueError(f"{where}: {len(obj['tags'])} tags for {len(obj['tokens'])} "
                     "tokens")
  return obj


def jsonl_label_fields(manual_dir: str) -> tuple[str, ...]:
  """The label fields of the JSONL layout: line 1 of ``train.jsonl``, sorted.

  Raises:
    FileNotFoundError: ``train.jsonl`` is missing.
    ValueError: it is empty, or its first line is malformed (named).
  """
  path = os.path.join(manual_dir, "train.jsonl")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"jsonl layout: missing {path}")
  with open(path, encoding="utf-8") as f:
    first = f.readline().rstrip("\n")
  if not first:
    raise ValueError(f"{path} line 1: empty (no examples)")
  obj = _parse_jsonl_line(first, f"{path} line 1")
  return tuple(sorted(k for k in obj if k not in _REQUIRED_JSONL))


def _read_jsonl(manual_dir: str, split: str,
                label_fields: Sequence[str]) -> list[dict[str, Any]]:
  (path,) = _split_files(manual_dir, "jsonl", split)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"jsonl layout: missing {path}")
  expected = set(label_fields)
  rows = []
  for i, line in enumerate(_read_lines(path)):
    where = f"{path} line {i + 1}"
    obj = _parse_jsonl_line(line, where)
    fields = set(obj) - set(_REQUIRED_JSONL)
    if fields != expected:
      raise ValueError(
          f"{where}: label fields {sorted(fields)} differ from {sorted(expected)} "
          f"(those of train.jsonl line 1); missing {sorted(expected - fields)}, extra "
          f"{sorted(fields - expected)}")
    rows.append({"index": i, "tokens": obj["tokens"], "tags": obj["tags"],
                 "labels": {k: obj[k] for k in label_fields}})
  return rows


def read_split(manual_dir: str, split: str, *, layout: str,
               label_fields: Optional[Sequence[str]] = None) -> list[dict[str, Any]]:
  """Parses one split of the raw files.

  Args:
    manual_dir: the data folder.
    split: one of :data:`SPLITS`.
    layout: ``"jointbert"`` or ``"jsonl"`` (see :func:`detect_layout`).
    label_fields: JSONL only, the label fields every line must have; default
      :func:`jsonl_label_fields` (those of ``train.jsonl`` line 1).

  Returns:
    Rows ``{"index": int (0-based line), "tokens": list[str], "tags": list[str],
    "labels": {field: str}}`` in file order.

  Raises:
    FileNotFoundError: a file of the split is missing.
    ValueError: a malformed line; the message names the file and the 1-based line
      (for a token / tag count mismatch in the JointBERT layout, both files), or the
      files and their counts when ``seq.in``, ``seq.out`` and ``label`` differ in
      length; also a split with no examples.

  Examples:
    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with open(os.path.join(folder, "dev.jsonl"), "w") as f:
    ...   _ = f.write('{"tokens": ["hi", "bob"], "tags": ["O", "B-name"], '
    ...               '"intent": "greet"}\\n')
    >>> read_split(folder, "dev", layout="jsonl", label_fields=["intent"])
    [{'index': 0, 'tokens': ['hi', 'bob'], 'tags': ['O', 'B-name'],
      'labels': {'intent': 'greet'}}]
  """
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  if layout == "jointbert":
    rows = _read_jointbert(manual_dir, split)
  elif layout == "jsonl":
    if label_fields is None:
      label_fields = jsonl_label_fields(manual_dir)
    rows = _read_jsonl(manual_dir, split, tuple(label_fields))
  else:
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
  if not rows:
    files = ", ".join(_split_files(manual_dir, layout, split))
    raise ValueError(f"{files}: no examples in split {split!r}")
  return rows


# ----------------------------------------------------------------------- vocabularies


def label_vocabulary(values: Iterable[str], *, specials: Sequence[str]) -> list[str]:
  """``specials`` then the other distinct ``values``, sorted.

  Args:
    values: the observed labels (tags or sentence labels) of the train split.
    specials: entries that come first, in this order (e.g. :data:`TAG_SPECIALS`).

  Returns:
    The vocabulary; its positions are the ids.

  Examples:
    >>> label_vocabulary(["O", "B-x", "I-x", "O", "B-a"], specials=TAG_SPECIALS)
    ['PAD', 'UNK', 'O', 'B-a', 'B-x', 'I-x']
    >>> label_vocabulary(["play", "book", "play"], specials=LABEL_SPECIALS)
    ['UNK', 'book', 'play']
  """
  specials = list(specials)
  return specials + sorted(set(values) - set(specials))


def read_label_file(path: str, *, required: Sequence[str] = (UNK,)) -> list[str]:
  """A JointBERT vocabulary file (``slot_label.txt``, ``intent_label.txt``).

  Args:
    path: one label a line; its line order gives the ids.
    required: labels that must be present (``UNK``; and ``O`` for tags).

  Returns:
    The labels, each ``line.strip()`` as in JointBERT.

  Raises:
    ValueError: an empty or repeated label (the line is named), or a missing
      ``required`` label.
  """
  names = [line.strip() for line in _read_lines(path)]
  seen: dict[str, int] = {}
  for i, name in enumerate(names):
    if not name:
      raise ValueError(f"{path} line {i + 1}: empty label")
    if name in seen:
      raise ValueError(f"{path} line {i + 1}: {name!r} repeats line {seen[name] + 1}")
    seen[name] = i
  _check_required(names, required, path)
  return names


def _check_required(names: Sequence[str], required: Sequence[str], what: str) -> None:
  missing = [r for r in required if r not in names]
  if missing:
    raise ValueError(f"{what}: vocabulary lacks {missing} (needed: {list(required)})")


def encode_labels(values: Sequence[str], names: Sequence[str]) -> np.ndarray:
  """Ids of ``values`` in ``names``; a value not in ``names`` gets the ``UNK`` id.

  Raises:
    ValueError: ``names`` has no ``"UNK"``.

  Examples:
    >>> encode_labels(["play", "rate", "book"], ["UNK", "book", "play"]).tolist()
    [2, 0, 1]
  """
  _check_required(names, (UNK,), "encode_labels")
  index = {name: i for i, name in enumerate(names)}
  unk = index[UNK]
  return np.array([index.get(v, unk) for v in values], np.int32).reshape(-1)


def encode_tags(tag_lists: Iterable[Sequence[str]],
                tag_names: Sequence[str]) -> list[np.ndarray]:
  """Per sentence, int32 ids of the tags in ``tag_names``; unknown tags -> ``UNK``.

  Args:
    tag_lists: per sentence, its tag strings.
    tag_names: the tag vocabulary; it must hold ``"UNK"`` and ``"O"``.

  Returns:
    One int32 ``[len(tags)]`` array per sentence.

  Raises:
    ValueError: ``tag_names`` lacks ``"UNK"`` or ``"O"``.

  Examples:
    >>> names = ["PAD", "UNK", "O", "B-city", "I-city"]
    >>> [a.tolist() for a in encode_tags([["O", "B-city", "I-city"], ["B-day"]], names)]
    [[2, 3, 4], [1]]
  """
  _check_required(tag_names, (UNK, "O"), "tag names")
  index = {name: i for i, name in enumerate(tag_names)}
  unk = index[UNK]
  return [np.array([index.get(t, unk) for t in tags], np.int32).reshape(-1)
          for tags in tag_lists]


# ------------------------------------------------------------------------ the builder


def _sanitize(name: str) -> str:
  name = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
  return name or "data"


_CONFIG_NAME = re.compile(r"[a-z0-9_]+_(jointbert|jsonl)_[0-9a-f]{10}")


@dataclasses.dataclass(eq=False, kw_only=True)
class JointNluConfig(tfds.core.BuilderConfig):
  """Which data a :class:`JointNlu` builder prepares; see :func:`make_config`.

  Attributes:
    name: ``{folder}_{layout}_{sha1[:10]}``: the data folder's base name reduced to
      ``[a-z0-9_]``, the layout, and the first 10 hex digits of
      :func:`fingerprint`. It names the on-disk data, and the builder checks the
      digits against the files before it prepares them.
    layout: ``"jointbert"`` or ``"jsonl"``.
    label_fields: the sentence-level label fields, sorted (``("intent",)`` for the
      JointBERT layout).

  Raises:
    ValueError: a malformed name, a name whose layout part differs from ``layout``,
      an unknown layout, or label fields that are not distinct names without
      ``'/'`` (``("intent",)`` for the JointBERT layout).

  Examples:
    >>> JointNluConfig(name="snips_jsonl_0123456789", layout="jsonl",
    ...                label_fields=["intent", "command"]).label_fields
    ('command', 'intent')
  """

  name: str = ""
  layout: str = "jointbert"
  label_fields: tuple[str, ...] = (INTENT_FIELD,)

  def __post_init__(self):
    if self.layout not in LAYOUTS:
      raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
    m = _CONFIG_NAME.fullmatch(self.name)
    if m is None or m.group(1) != self.layout:
      raise ValueError(f"name must be '{{folder}}_{self.layout}_{{10 hex digits}}' "
                       f"(see make_config), got {self.name!r}")
    fields = tuple(sorted(self.label_fields))
    if (len(set(fields)) != len(fields)
        or any(not isinstance(f, str) or not f or "/" in f for f in fields)):
      raise ValueError(f"label_fields must be distinct non-empty names without '/', "
                       f"got {self.label_fields!r}")
    if self.layout == "jointbert" and fields != (INTENT_FIELD,):
      raise ValueError(f"the jointbert layout has label_fields ('intent',), got "
                       f"{self.label_fields!r}")
    self.label_fields = fields
    if not self.description:
      self.description = (f"Joint intent/slot data, {self.layout} layout, label fields "
                          f"{list(fields)}.")


def make_config(manual_dir: str, layout: str = "auto") -> JointNluConfig:
  """The config that identifies the data in ``manual_dir``.

  Args:
    manual_dir: the data folder.
    layout: ``"auto"``, ``"jointbert"`` or ``"jsonl"`` (see :func:`detect_layout`).

  Returns:
    A :class:`JointNluConfig` named ``{folder}_{layout}_{sha1[:10]}``.

  Raises:
    FileNotFoundError: no layout is found, or a split file is missing.
    ValueError: a bad ``layout``, or (JSONL) a malformed ``train.jsonl`` line 1.

  Examples:
    >>> import os, tempfile
    >>> folder = os.path.join(tempfile.mkdtemp(), "My-Data")
    >>> os.mkdir(folder)
    >>> for split in ("train", "dev", "test"):
    ...   with open(os.path.join(folder, split + ".jsonl"), "w") as f:
    ...     _ = f.write('{"tokens": ["hi"], "tags": ["O"], "intent": "greet"}\\n')
    >>> make_config(folder).name
    'my_data_jsonl_f4cdac2b54'
  """
  manual_dir = os.path.normpath(os.fspath(manual_dir))
  layout = detect_layout(manual_dir, layout)
  digest = fingerprint(manual_dir, layout)[:10]
  fields = jsonl_label_fields(manual_dir) if layout == "jsonl" else (INTENT_FIELD,)
  name = f"{_sanitize(os.path.basename(os.path.abspath(manual_dir)))}_{layout}_{digest}"
  return JointNluConfig(name=name, layout=layout, label_fields=fields)


# The module can be imported twice under different names (pytest's --doctest-modules);
# tfds forbids registering a name twice, so register only once.
_REGISTERED = "joint_nlu" in tfds.core.registered.list_imported_builders()


class JointNlu(tfds.core.GeneratorBasedBuilder, skip_registration=_REGISTERED):
  """Joint intent / slot data from raw files (manual download), any folder.

  The builder has no predefined configs: pass ``config=make_config(manual_dir)``
  (what :func:`load_joint_nlu` does) and the same folder as the download config's
  ``manual_dir``.

  Features: ``tokens`` and ``tags`` (``Sequence(Text())``: the raw token and tag
  strings, one tag per token), ``labels`` (``FeaturesDict`` of ``Text()``, one per
  label field: the raw strings) and ``index`` (int64, the 0-based line of the
  example in its split file). Splits ``train``, ``dev``, ``test``. Label ids are
  not stored; :func:`load_joint_nlu` computes them.

  Examples:
    >>> import tempfile
    >>> config = JointNluConfig(name="snips_jointbert_0123456789")
    >>> builder = JointNlu(data_dir=tempfile.mkdtemp(), config=config,
    ...                    file_format="array_record")
    >>> sorted(builder.info.features["labels"].keys())
    ['intent']

  References:
    Coucke et al., arXiv:1805.10190 (SNIPS); Chen et al., arXiv:1902.10909
    (JointBERT).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Place the data in manual_dir (default ../shared/data/snips): either "
      "{train,dev,test}/{seq.in,seq.out,label} (+ optional intent_label.txt, "
      "slot_label.txt) as in monologg/JointBERT's data/, or train.jsonl, dev.jsonl, "
      "test.jsonl with {\"tokens\": [...], \"tags\": [...], <label fields>: str}.")

  def _nlu_config(self) -> JointNluConfig:
    config = self.builder_config
    if not isinstance(config, JointNluConfig):
      raise ValueError("JointNlu needs config=make_config(manual_dir) (a "
                       f"JointNluConfig), got {config!r}; or use load_joint_nlu")
    return config

  def _info(self) -> tfds.core.DatasetInfo:
    config = self._nlu_config()
    return self.dataset_info_from_configs(
        description="Utterances with one BIO slot tag per token and sentence-level "
                    "labels (intent, ...).",
        features=tfds.features.FeaturesDict({
            "tokens": tfds.features.Sequence(tfds.features.Text()),
            "tags": tfds.features.Sequence(tfds.features.Text()),
            "labels": tfds.features.FeaturesDict(
                {field: tfds.features.Text() for field in config.label_fields}),
            "index": tfds.features.Scalar(
                dtype=np.int64, doc="0-based line of the example in its split file."),
        }),
        homepage="https://github.com/monologg/JointBERT",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager):
    config = self._nlu_config()
    manual = str(dl_manager.manual_dir)
    digest = fingerprint(manual, config.layout)[:10]
    if not config.name.endswith("_" + digest):
      raise ValueError(f"config {config.name!r} does not match the files in {manual} "
                       f"(their fingerprint is {digest}); use make_config(manual_dir)")
    # Parse every split before writing any, so a malformed line fails early.
    rows = {split: read_split(manual, split, layout=config.layout,
                              label_fields=config.label_fields) for split in SPLITS}
    return {split: self._generate_examples(rows[split]) for split in SPLITS}

  def _generate_examples(
      self, rows: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
    for row in rows:
      yield row["index"], row


# ------------------------------------------------------------------------- the loader


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _read_prepared(builder: JointNlu, split: str,
                   label_fields: Sequence[str]) -> dict[str, Any]:
  source = builder.as_data_source(split=split)
  records = source.__getitems__(range(len(source)))
  index = np.array([r["index"] for r in records], np.int64)
  order = np.argsort(index, kind="stable")  # tfds shuffles on write
  if not np.array_equal(index[order], np.arange(len(index))):
    raise ValueError(f"prepared split {split!r} of {builder.data_dir} is not lines "
                     f"0..{len(index) - 1}; delete it and prepare again")
  records = [records[i] for i in order]
  return {
      "tokens": [[_text(t) for t in r["tokens"]] for r in records],
      "tags": [[_text(t) for t in r["tags"]] for r in records],
      "labels": {f: [_text(r["labels"][f]) for r in records] for f in label_fields},
      "index": index[order],
  }


def load_joint_nlu(*, manual_dir: Optional[str] = None, data_dir: Optional[str] = None,
                   layout: str = "auto") -> dict[str, Any]:
  """Builds (or reuses) the joint intent / slot data and returns the three splits.

  Args:
    manual_dir: the data folder; default :func:`default_manual_dir`
      (``../shared/data/snips`` beside the repository). Needed on every call: the
      prepared data are named after its files' fingerprint.
    data_dir: root of the prepared TFDS data (tfds' default when None).
    layout: ``"auto"``, ``"jointbert"`` or ``"jsonl"`` (see :func:`detect_layout`).

  Returns:
    ``{"train", "dev", "test"}``, each ``{"tokens": list[list[str]], "tags":
    list[list[str]]`` (raw strings), ``"tag_ids": list`` of int32 ``[len]`` arrays,
    ``"labels": {field: list[str]}``, ``"label_ids": {field: int32 [N]}``,
    ``"index": int64 [N]}`` (0-based line, so ``0..N-1`` in file order); and
    ``"tag_names": list[str]``, ``"label_names": {field: list[str]}``,
    ``"label_fields": tuple[str, ...]`` (sorted), ``"layout"``, ``"manual_dir"``,
    ``"tag_counts"`` int64 ``[num_tags]`` (train tokens per tag id) and
    ``"label_counts": {field: int64 [num_labels]}`` (train sentences per id).
    Tags and labels outside the vocabularies get the ``UNK`` id.

  Raises:
    FileNotFoundError: no layout found, or a file of it missing (named).
    ValueError: a malformed line (file and 1-based line named), differing line
      counts, or a vocabulary file without ``UNK`` (or, for tags, ``O``).

  Examples:
    >>> import json, os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> lines = {"train": [(["play", "jazz"], ["O", "B-genre"], "PlayMusic"),
    ...                    (["rate", "it", "5"], ["O", "O", "B-rating"], "Rate")],
    ...          "dev": [(["play", "rock"], ["O", "B-genre"], "PlayMusic")],
    ...          "test": [(["book", "it"], ["O", "B-thing"], "Book")]}
    >>> for split, examples in lines.items():
    ...   with open(os.path.join(folder, split + ".jsonl"), "w") as f:
    ...     for tokens, tags, intent in examples:
    ...       _ = f.write(json.dumps({"tokens": tokens, "tags": tags,
    ...                               "intent": intent}) + "\\n")
    >>> tfds_dir = tempfile.mkdtemp()
    >>> data = load_joint_nlu(manual_dir=folder, data_dir=tfds_dir)  # doctest: +ELLIPSIS
    Downloading and preparing dataset ...
    Dataset joint_nlu downloaded and prepared to ...
    >>> data["layout"], data["tag_names"], data["label_names"]
    ('jsonl', ['PAD', 'UNK', 'O', 'B-genre', 'B-rating'],
     {'intent': ['UNK', 'PlayMusic', 'Rate']})
    >>> data["test"]["tag_ids"][0].tolist(), data["test"]["label_ids"]["intent"].tolist()
    ([2, 1], [0])
    >>> data["tag_counts"].tolist()
    [0, 0, 3, 1, 1]

  References:
    Chen et al., arXiv:1902.10909 (JointBERT: vocabularies and UNK mapping).
  """
  manual_dir = os.path.normpath(os.fspath(manual_dir or default_manual_dir()))
  config = make_config(manual_dir, layout)
  fields = config.label_fields
  builder = JointNlu(data_dir=data_dir, config=config, file_format="array_record")
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  from jaxloss.data.digits_lt import _no_progress_bar  # pylint: disable=g-import-not-at-top
  with _no_progress_bar():
    builder.download_and_prepare(download_config=download_config)
    splits = {s: _read_prepared(builder, s, fields) for s in SPLITS}

  train = splits["train"]
  tag_names = label_vocabulary((t for tags in train["tags"] for t in tags),
                               specials=TAG_SPECIALS)
  label_names = {f: label_vocabulary(train["labels"][f], specials=LABEL_SPECIALS)
                 for f in fields}
  if config.layout == "jointbert":
    slot_file = os.path.join(manual_dir, SLOT_LABEL_FILE)
    intent_file = os.path.join(manual_dir, INTENT_LABEL_FILE)
    if os.path.isfile(slot_file):
      tag_names = read_label_file(slot_file, required=(UNK, "O"))
    if os.path.isfile(intent_file):
      label_names[INTENT_FIELD] = read_label_file(intent_file, required=(UNK,))

  for split in splits.values():
    split["tag_ids"] = encode_tags(split["tags"], tag_names)
    split["label_ids"] = {f: encode_labels(split["labels"][f], label_names[f])
                          for f in fields}
  all_train_tags = (np.concatenate(train["tag_ids"]) if train["tag_ids"]
                    else np.zeros(0, np.int32))
  tag_counts = np.bincount(all_train_tags, minlength=len(tag_names)).astype(np.int64)
  label_counts = {f: np.bincount(train["label_ids"][f],
                                 minlength=len(label_names[f])).astype(np.int64)
                  for f in fields}
  return {**splits, "tag_names": tag_names, "label_names": label_names,
          "label_fields": fields, "layout": config.layout, "manual_dir": manual_dir,
          "tag_counts": tag_counts, "label_counts": label_counts}
