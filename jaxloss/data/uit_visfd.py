"""UIT-ViSFD: Vietnamese smartphone feedback, 10 aspects x {absent, positive, negative,
neutral} (TFDS builder over the released CSV files).

The builder reads ``Train.csv``, ``Dev.csv`` and ``Test.csv`` (columns ``index,
comment, n_star, date_time, label``) from a manual directory, by default
``../shared/data/uit_visfd`` beside the repository, and writes ``array_record`` files
that :func:`load_uit_visfd` reads back through ``tfds`` data sources (no TensorFlow).

A ``label`` is a run of ``{ASPECT#Polarity};`` items, e.g.
``{BATTERY#Negative};{GENERAL#Positive};{OTHERS};``. ``{OTHERS}`` carries no polarity
and is not an aspect; an aspect that does not appear is *absent*. Each review thus has
a ``[10]`` vector of classes ``0 absent, 1 positive, 2 negative, 3 neutral`` in the
aspect order of :data:`ASPECTS`. Splits: 7,786 / 1,112 / 2,224 reviews.

References:
  L. T. Phan et al., *SA2SL: From Aspect-Based Sentiment Analysis to Social Listening
  System for Business Intelligence*, KSEM 2021 (the dataset; research use).
"""

from __future__ import annotations

import csv
import os
import re
from typing import Any, Iterator, Optional

import numpy as np
import tensorflow_datasets as tfds

__all__ = ["ASPECTS", "POLARITIES", "UitVisfd", "default_manual_dir", "load_uit_visfd",
           "parse_label"]

# The aspect order and class names are shared with the metrics (jaxloss.metrics).
from jaxloss.metrics import ASPECTS, POLARITIES  # noqa: E402  pylint: disable=g-import-not-at-top

_POLARITY_ID = {"Positive": 1, "Negative": 2, "Neutral": 3}
_ITEM = re.compile(r"\{([^#}]+)#([^}]+)\}")
SPLIT_FILES = {"train": "Train.csv", "dev": "Dev.csv", "test": "Test.csv"}

_CITATION = r"""
@inproceedings{phan2021sa2sl,
  author    = {Phan, Luong Luc and Pham, Phuc Huynh and Nguyen, Kim Thi-Thanh and
               Huynh, Sieu Khai and Nguyen, Tham Thi and Nguyen, Luan Thanh and
               Van Huynh, Tin and Van Nguyen, Kiet},
  title     = {SA2SL: From Aspect-Based Sentiment Analysis to Social Listening System
               for Business Intelligence},
  booktitle = {Knowledge Science, Engineering and Management (KSEM)},
  year      = {2021}
}
"""


def default_manual_dir() -> str:
  """``../shared/data/uit_visfd`` beside the repository that holds this package."""
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return os.path.normpath(os.path.join(repo, "..", "shared", "data", "uit_visfd"))


def parse_label(label: str, *, where: str = "label") -> np.ndarray:
  """Parses one ``label`` string into the ``[10]`` class vector.

  Args:
    label: e.g. ``"{BATTERY#Negative};{GENERAL#Positive};{OTHERS};"``.
    where: how to name the row in errors (e.g. ``"Train.csv row 12"``).

  Returns:
    int64 ``[10]``: per aspect of :data:`ASPECTS`, 0 absent, 1 positive, 2 negative,
    3 neutral.

  Raises:
    ValueError: an item that is neither ``{ASPECT#Polarity}`` nor ``{OTHERS}``, an
      unknown aspect or polarity, or an aspect given twice; the message names ``where``
      and quotes the item.

  Examples:
    >>> parse_label("{BATTERY#Negative};{GENERAL#Positive};{OTHERS};").tolist()
    [2, 0, 0, 0, 1, 0, 0, 0, 0, 0]
  """
  out = np.zeros(len(ASPECTS), np.int64)
  seen = set()
  for item in label.split(";"):
    item = item.strip()
    if not item or item == "{OTHERS}":
      continue
    m = _ITEM.fullmatch(item)
    if m is None:
      raise ValueError(f"{where}: malformed label item {item!r} in {label!r}; expected "
                       "{ASPECT#Polarity} or {OTHERS}")
    aspect, polarity = m.group(1), m.group(2)
    if aspect not in ASPECTS:
      raise ValueError(f"{where}: unknown aspect {aspect!r} in {label!r}; expected one "
                       f"of {ASPECTS}")
    if polarity not in _POLARITY_ID:
      raise ValueError(f"{where}: unknown polarity {polarity!r} in {label!r}; expected "
                       f"one of {tuple(_POLARITY_ID)}")
    if aspect in seen:
      raise ValueError(f"{where}: aspect {aspect!r} given twice in {label!r}")
    seen.add(aspect)
    out[ASPECTS.index(aspect)] = _POLARITY_ID[polarity]
  return out


def read_csv(path: str) -> list[dict[str, Any]]:
  """One split file as rows ``{"index", "text", "labels" [10], "n_star"}``.

  Raises:
    FileNotFoundError: the file is missing (the message says where it was expected).
    ValueError: a missing column, or a malformed label (the message names the row).
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: pass manual_dir= (the folder with "
                            f"{', '.join(SPLIT_FILES.values())})")
  name = os.path.basename(path)
  rows = []
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.DictReader(f)
    missing = {"index", "comment", "label"} - set(reader.fieldnames or ())
    if missing:
      raise ValueError(f"{name}: missing columns {sorted(missing)}; has "
                       f"{reader.fieldnames}")
    for line, row in enumerate(reader, start=2):  # line 1 is the header
      where = f"{name} line {line} (index {row['index']})"
      rows.append({
          "index": int(row["index"]),
          "text": row["comment"],
          "labels": parse_label(row["label"], where=where),
          "n_star": int(row["n_star"]) if row.get("n_star", "").strip() else -1,
      })
  return rows


_REGISTERED = "uit_visfd" in tfds.core.registered.list_imported_builders()


class UitVisfd(tfds.core.GeneratorBasedBuilder, skip_registration=_REGISTERED):
  """UIT-ViSFD from its released CSV files (manual download).

  Features: ``text`` (the review, UTF-8), ``labels`` int64 ``[10]`` (classes per
  aspect of :data:`ASPECTS`: 0 absent, 1 positive, 2 negative, 3 neutral), ``n_star``
  (1-5, -1 if missing) and ``index`` (the row's ``index`` column). Splits ``train``,
  ``dev``, ``test``.

  References:
    Phan et al., KSEM 2021.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Place Train.csv, Dev.csv and Test.csv of UIT-ViSFD (LuongPhan/UIT-ViSFD, "
      "UIT-ViSFD.zip) in manual_dir (default ../shared/data/uit_visfd).")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="Vietnamese smartphone feedback with 10 aspect-polarity labels.",
        features=tfds.features.FeaturesDict({
            "text": tfds.features.Text(),
            "labels": tfds.features.Tensor(shape=(len(ASPECTS),), dtype=np.int64),
            "n_star": tfds.features.Scalar(dtype=np.int64),
            "index": tfds.features.Scalar(dtype=np.int64),
        }),
        homepage="https://github.com/LuongPhan/UIT-ViSFD",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager):
    manual = str(dl_manager.manual_dir)
    return {split: self._generate_examples(os.path.join(manual, filename))
            for split, filename in SPLIT_FILES.items()}

  def _generate_examples(self, path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for row in read_csv(path):
      yield row["index"], row


def _read_split(builder: UitVisfd, split: str) -> dict[str, Any]:
  source = builder.as_data_source(split=split)
  records = source.__getitems__(range(len(source)))
  index = np.array([r["index"] for r in records], np.int64)
  order = np.argsort(index, kind="stable")  # tfds shuffles on write
  text = [records[i]["text"] for i in order]
  text = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in text]
  return {
      "text": text,
      "labels": np.stack([np.asarray(records[i]["labels"], np.int32) for i in order]),
      "n_star": np.array([records[i]["n_star"] for i in order], np.int32),
      "index": index[order],
  }


def load_uit_visfd(*, data_dir: Optional[str] = None,
                   manual_dir: Optional[str] = None) -> dict[str, Any]:
  """Builds (or reuses) UIT-ViSFD and returns the three splits.

  Args:
    data_dir: root of the prepared TFDS data (tfds' default when None).
    manual_dir: folder with the CSV files; default :func:`default_manual_dir`.

  Returns:
    ``{"train", "dev", "test"}``, each ``{"text": list[str], "labels": int32 [N, 10],
    "n_star": int32 [N], "index": int64 [N]}`` in file order; ``"aspects"``,
    ``"polarities"``, and ``"class_counts"`` int64 ``[10, 4]`` (train reviews per
    aspect and class).

  Raises:
    FileNotFoundError: a CSV file is missing from ``manual_dir``.
    ValueError: a malformed label (the message names the file, line and index).
  """
  manual_dir = manual_dir or default_manual_dir()
  builder = UitVisfd(data_dir=data_dir, file_format="array_record")
  config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  from jaxloss.data.digits_lt import _no_progress_bar  # pylint: disable=g-import-not-at-top
  with _no_progress_bar():
    builder.download_and_prepare(download_config=config)
    splits = {s: _read_split(builder, s) for s in SPLIT_FILES}
  labels = splits["train"]["labels"]
  counts = np.stack([np.bincount(labels[:, a], minlength=len(POLARITIES))
                     for a in range(len(ASPECTS))]).astype(np.int64)
  return {**splits, "aspects": ASPECTS, "polarities": POLARITIES,
          "class_counts": counts}
