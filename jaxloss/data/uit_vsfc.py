"""UIT-VSFC: Vietnamese students' feedback with sentiment and topic labels (TFDS builder,
manual data).

The builder reads ``{train,dev,test}/sents.txt`` (one word-segmented, lower-cased
sentence a line), ``sentiments.txt`` (0 negative, 1 neutral, 2 positive) and
``topics.txt`` (0 lecturer, 1 training_program, 2 facility, 3 others), line by line,
from a manual directory (default ``../shared/data/uit_vsfc`` beside the repository):
11,426 / 1,583 / 3,166 sentences. The training set is naturally imbalanced: sentiment
5,325 / 458 / 5,643 (neutral is 4 %) and topic 8,166 / 2,201 / 497 / 562 (16 : 1).

References:
  K. V. Nguyen, V. D. Nguyen, P. X. V. Nguyen, T. T. H. Truong, N. L.-T. Nguyen,
  *UIT-VSFC: Vietnamese Students' Feedback Corpus for Sentiment Analysis*, KSE 2018.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Optional

import numpy as np
import tensorflow_datasets as tfds

__all__ = ["FIELDS", "LABELS", "SPLITS", "UitVsfc", "default_manual_dir", "load_uit_vsfc",
           "read_split"]

SPLITS = ("train", "dev", "test")
# label field -> its file and class names (in id order).
LABELS = {
    "sentiment": ("sentiments.txt", ("negative", "neutral", "positive")),
    "topic": ("topics.txt", ("lecturer", "training_program", "facility", "others")),
}
FIELDS = tuple(LABELS)
TEXT_FILE = "sents.txt"

_CITATION = r"""
@inproceedings{nguyen2018uitvsfc,
  author    = {Nguyen, Kiet Van and Nguyen, Vu Duc and Nguyen, Phu X. V. and
               Truong, Tham T. H. and Nguyen, Ngan L.-T.},
  title     = {{UIT-VSFC}: Vietnamese Students' Feedback Corpus for Sentiment Analysis},
  booktitle = {International Conference on Knowledge and Systems Engineering (KSE)},
  year      = {2018}
}
"""


def default_manual_dir() -> str:
  """``../shared/data/uit_vsfc`` beside the repository that holds this package."""
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return os.path.normpath(os.path.join(repo, "..", "shared", "data", "uit_vsfc"))


def _lines(path: str) -> list[str]:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: pass manual_dir= (the folder with "
                            f"{'/'.join(SPLITS)}/{{{TEXT_FILE}, sentiments.txt, "
                            f"topics.txt}}; default {default_manual_dir()})")
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  return [line.rstrip("\r") for line in lines]


def read_split(manual_dir: str, split: str) -> list[dict[str, Any]]:
  """One split as rows ``{"index", "text", "sentiment", "topic"}`` (file order).

  Raises:
    FileNotFoundError: a file is missing (named, with ``manual_dir``).
    ValueError: files of different lengths, an empty sentence, or a label that is not
      an integer id of its field (the message names the file and the 1-based line).
  """
  folder = os.path.join(manual_dir, split)
  texts = _lines(os.path.join(folder, TEXT_FILE))
  labels = {}
  for field, (filename, names) in LABELS.items():
    path = os.path.join(folder, filename)
    values = _lines(path)
    if len(values) != len(texts):
      raise ValueError(f"{path} has {len(values)} lines but "
                       f"{os.path.join(folder, TEXT_FILE)} has {len(texts)}")
    ids = []
    for line, value in enumerate(values, start=1):
      value = value.strip()
      if not value.isdigit() or int(value) >= len(names):
        raise ValueError(f"{path} line {line}: expected a {field} id in "
                         f"0..{len(names) - 1} ({', '.join(names)}), got {value!r}")
      ids.append(int(value))
    labels[field] = ids
  rows = []
  for i, text in enumerate(texts):
    if not text.strip():
      raise ValueError(f"{os.path.join(folder, TEXT_FILE)} line {i + 1}: empty sentence")
    rows.append({"index": i, "text": text,
                 **{field: labels[field][i] for field in LABELS}})
  return rows


_REGISTERED = "uit_vsfc" in tfds.core.registered.list_imported_builders()


class UitVsfc(tfds.core.GeneratorBasedBuilder, skip_registration=_REGISTERED):
  """UIT-VSFC from its released text files (manual download).

  Features: ``text`` (UTF-8), ``sentiment`` and ``topic`` ``ClassLabel``\\ s
  (:data:`LABELS`), ``index`` (the 0-based line). Splits ``train``, ``dev``, ``test``.

  References:
    Nguyen et al., KSE 2018.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Place the train/, dev/ and test/ folders of UIT-VSFC (sents.txt, sentiments.txt, "
      "topics.txt each) in manual_dir (default ../shared/data/uit_vsfc).")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="Vietnamese students' feedback: sentiment and topic per sentence.",
        features=tfds.features.FeaturesDict({
            "text": tfds.features.Text(),
            **{field: tfds.features.ClassLabel(names=list(names))
               for field, (_, names) in LABELS.items()},
            "index": tfds.features.Scalar(dtype=np.int64),
        }),
        homepage="https://sites.google.com/uit.edu.vn/uit-nlp/datasets-projects",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager):
    manual = str(dl_manager.manual_dir)
    return {split: self._generate_examples(read_split(manual, split)) for split in SPLITS}

  def _generate_examples(self, rows) -> Iterator[tuple[int, dict[str, Any]]]:
    for row in rows:
      yield row["index"], row


def _read(builder: UitVsfc, split: str) -> dict[str, Any]:
  source = builder.as_data_source(split=split)
  records = source.__getitems__(range(len(source)))
  index = np.array([r["index"] for r in records], np.int64)
  order = np.argsort(index, kind="stable")  # tfds shuffles on write
  text = [records[i]["text"] for i in order]
  out = {"text": [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in text],
         "index": index[order]}
  for field in LABELS:
    out[field] = np.array([records[i][field] for i in order], np.int32)
  return out


def load_uit_vsfc(*, manual_dir: Optional[str] = None, data_dir: Optional[str] = None
                  ) -> dict[str, Any]:
  """Builds (or reuses) UIT-VSFC and returns the three splits.

  Args:
    manual_dir: the folder with ``{train,dev,test}/``; default :func:`default_manual_dir`.
    data_dir: root of the prepared TFDS data (tfds' default when None).

  Returns:
    ``{"train", "dev", "test"}``, each ``{"text": list[str], "sentiment": int32 [N],
    "topic": int32 [N], "index": int64 [N]}`` in file order; ``"class_counts"``
    ``{field: int64 [C]}`` (training sentences per class) and ``"class_names"``
    ``{field: [names]}``.

  Raises:
    FileNotFoundError, ValueError: see :func:`read_split`.

  Examples:
    >>> import tempfile
    >>> data = load_uit_vsfc(data_dir=tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Downloading and preparing dataset ...
    Dataset uit_vsfc downloaded and prepared to ... reuse this data.
    >>> data["class_counts"]["sentiment"].tolist(), len(data["test"]["text"])
    ([5325, 458, 5643], 3166)
  """
  manual_dir = manual_dir or default_manual_dir()
  builder = UitVsfc(data_dir=data_dir, file_format="array_record")
  from jaxloss.data.digits_lt import _no_progress_bar  # pylint: disable=g-import-not-at-top
  with _no_progress_bar():
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    splits = {s: _read(builder, s) for s in SPLITS}
  counts = {field: np.bincount(splits["train"][field],
                               minlength=len(names)).astype(np.int64)
            for field, (_, names) in LABELS.items()}
  return {**splits, "class_counts": counts,
          "class_names": {field: list(names) for field, (_, names) in LABELS.items()}}
