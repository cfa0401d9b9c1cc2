"""Digits-LT: a small, offline, long-tailed image dataset (TFDS builder).

scikit-learn ships the UCI *Optical Recognition of Handwritten Digits* test set
(1,797 real 8x8 handwritten digits, 174-183 per class) with the library, so this
builder needs no download. It carves a balanced test split and a long-tailed
train split with the CIFAR-10-LT rule (:mod:`jaxloss.data.long_tail`) and
writes them as ``array_record`` files that :func:`load_digits_lt` reads back
through ``tfds`` data sources, without TensorFlow.

With the defaults (``imbalance_ratio=25``, ``test_per_class=30``, ``seed=0``)
the train split has 461 examples, ``[144, 100, 70, 49, 34, 24, 16, 11, 8, 5]``
per digit 0..9, and the test split 300 (30 per digit).

References:
  Alpaydin and Kaynak, *Cascading Classifiers*, Kybernetika 34(4), 1998; data:
  E. Alpaydin and C. Kaynak, *Optical Recognition of Handwritten Digits*, UCI
  Machine Learning Repository, 1998, https://doi.org/10.24432/C50P49.
  Cao et al., *Learning Imbalanced Datasets with Label-Distribution-Aware
  Margin Loss*, NeurIPS 2019.
  Cui et al., *Class-Balanced Loss Based on Effective Number of Samples*,
  CVPR 2019.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from jaxloss.data import long_tail

__all__ = [
    "DEFAULT_IMBALANCE_RATIO",
    "DEFAULT_SEED",
    "DEFAULT_TEST_PER_CLASS",
    "DIGITS_NUM_CLASSES",
    "DigitsLT",
    "DigitsLTConfig",
    "load_digits_lt",
]

# rho = 25 is the largest round ratio whose tail keeps >= 5 train examples: the
# rarest digit (8) has 174 examples, 144 after the 30-per-class test carve, and
# int(144 / 25) = 5 (rho = 30 would give 4).
DEFAULT_IMBALANCE_RATIO = 25.0
DEFAULT_TEST_PER_CLASS = 30
DEFAULT_SEED = 0
DIGITS_NUM_CLASSES = 10

# sklearn's digits are integer intensities in 0..16.
_MAX_PIXEL = 16.0

_CITATION = r"""
@misc{alpaydin1998optdigits,
  author       = {Alpaydin, E. and Kaynak, C.},
  title        = {Optical Recognition of Handwritten Digits},
  year         = {1998},
  howpublished = {UCI Machine Learning Repository},
  doi          = {10.24432/C50P49}
}
@inproceedings{cao2019ldam,
  author    = {Cao, Kaidi and Wei, Colin and Gaidon, Adrien and
               Arechiga, Nikos and Ma, Tengyu},
  title     = {Learning Imbalanced Datasets with Label-Distribution-Aware
               Margin Loss},
  booktitle = {NeurIPS},
  year      = {2019}
}
"""


def _ratio_token(imbalance_ratio: float) -> str:
  """Filesystem-safe spelling of a ratio: ``25.0 -> '25'``, ``12.5 -> '12p5'``."""
  ratio = float(imbalance_ratio)
  if ratio.is_integer():
    return str(int(ratio))
  # repr is the shortest round-trip form; ratios >= 1 that are not whole
  # numbers print as plain decimals, so '.' is the only character to replace.
  return repr(ratio).replace(".", "p")


def _config_name(imbalance_ratio: float, test_per_class: int, seed: int) -> str:
  return f"rho{_ratio_token(imbalance_ratio)}_test{test_per_class}_seed{seed}"


@dataclasses.dataclass(eq=False, kw_only=True)
class DigitsLTConfig(tfds.core.BuilderConfig):
  """Configuration of a Digits-LT split; the name is derived from the values.

  Attributes:
    imbalance_ratio: ``n_head / n_tail`` of the train split (digit 0 is the
      head, digit 9 the tail); a finite real number >= 1.
    test_per_class: balanced test examples per digit; an integer >= 1 (at most
      173, since the rarest digit has 174 examples).
    seed: non-negative integer seed of the split.
    name: leave empty to derive it, e.g. ``rho25_test30_seed0`` or
      ``rho12p5_test30_seed0``; the name is the on-disk directory of the
      prepared data, so two configs with the same values share it.

  Raises:
    ValueError: if a field is out of range (the message names the field).

  Examples:
    >>> DigitsLTConfig(imbalance_ratio=12.5, test_per_class=20, seed=3).name
    'rho12p5_test20_seed3'
  """

  name: str = ""
  imbalance_ratio: float = DEFAULT_IMBALANCE_RATIO
  test_per_class: int = DEFAULT_TEST_PER_CLASS
  seed: int = DEFAULT_SEED

  def __post_init__(self):
    # Validate early (at construction) with the same messages as the split.
    self.imbalance_ratio = long_tail._check_imbalance_ratio(self.imbalance_ratio)  # pylint: disable=protected-access
    self.test_per_class = long_tail._check_int(  # pylint: disable=protected-access
        self.test_per_class, "test_per_class", minimum=1
    )
    self.seed = long_tail._check_int(self.seed, "seed", minimum=0)  # pylint: disable=protected-access
    expected = _config_name(self.imbalance_ratio, self.test_per_class, self.seed)
    if not self.name:
      self.name = expected
    elif self.name != expected:
      raise ValueError(
          f"name must match the config values (it names the on-disk data), "
          f"expected {expected!r}, got {self.name!r}; leave name empty."
      )
    if not self.description:
      self.description = (
          f"Long-tailed digits: imbalance_ratio={self.imbalance_ratio}, "
          f"test_per_class={self.test_per_class}, seed={self.seed}."
      )


# The module can be imported twice under different names (e.g. pytest's
# --doctest-modules before the package is installed); tfds forbids registering
# a name twice, and the second class is the same code, so register only once.
_REGISTERED = "digits_lt" in tfds.core.registered.list_imported_builders()


class DigitsLT(tfds.core.GeneratorBasedBuilder, skip_registration=_REGISTERED):
  """Long-tailed split of scikit-learn's handwritten digits (UCI optdigits).

  Features: ``image`` ``float32 [8, 8, 1]`` in ``[0, 1]`` (the 0..16 intensities
  divided by 16), ``label`` a ``ClassLabel`` with names ``'0'..'9'``, and
  ``index`` the ``int64`` position of the example in
  ``sklearn.datasets.load_digits()``. Splits: ``train`` (long-tailed, digit 0
  the head) and ``test`` (balanced), from
  :func:`jaxloss.data.long_tail.make_long_tailed_split`. Nothing is downloaded:
  the data ship with scikit-learn.

  Examples:
    >>> import tempfile
    >>> tmp_dir = tempfile.mkdtemp()
    >>> builder = DigitsLT(data_dir=tmp_dir, file_format="array_record")
    >>> builder.builder_config.name
    'rho25_test30_seed0'

  References:
    Alpaydin and Kaynak, UCI *Optical Recognition of Handwritten Digits*, 1998.
    Cao et al., NeurIPS 2019 (LDAM); Cui et al., CVPR 2019 (the long-tail rule).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [DigitsLTConfig()]
  DEFAULT_CONFIG_NAME = BUILDER_CONFIGS[0].name

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=(
            "Long-tailed train / balanced test split of the 1,797 8x8 "
            "handwritten digits bundled with scikit-learn (UCI optdigits)."
        ),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.float32),
            "label": tfds.features.ClassLabel(
                names=[str(d) for d in range(DIGITS_NUM_CLASSES)]
            ),
            "index": tfds.features.Scalar(
                dtype=np.int64,
                doc="Position of the example in sklearn's load_digits().",
            ),
        }),
        supervised_keys=("image", "label"),
        homepage=(
            "https://archive.ics.uci.edu/dataset/80/"
            "optical+recognition+of+handwritten+digits"
        ),
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The data ship with scikit-learn; nothing to download.
    images, labels = _load_pool()
    config = self.builder_config
    train_idx, test_idx = long_tail.make_long_tailed_split(
        labels,
        num_classes=DIGITS_NUM_CLASSES,
        imbalance_ratio=config.imbalance_ratio,
        test_per_class=config.test_per_class,
        seed=config.seed,
    )
    return {
        "train": self._generate_examples(images, labels, train_idx),
        "test": self._generate_examples(images, labels, test_idx),
    }

  def _generate_examples(
      self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray
  ) -> Iterator[tuple[int, dict[str, Any]]]:
    for i in indices:
      i = int(i)
      yield i, {"image": images[i], "label": int(labels[i]), "index": i}


def _load_pool() -> tuple[np.ndarray, np.ndarray]:
  """sklearn's digits as ``float32 [1797, 8, 8, 1]`` in [0, 1] and int64 labels."""
  # Imported here so that importing jaxloss.data does not import sklearn.
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

  digits = load_digits()
  images = (digits.images / _MAX_PIXEL).astype(np.float32)[..., None]
  return images, digits.target.astype(np.int64)


@contextlib.contextmanager
def _no_progress_bar():
  """Hides tfds' progress bars, restoring the caller's setting afterwards."""
  from tensorflow_datasets.core.utils import tqdm_utils  # pylint: disable=g-import-not-at-top

  previous = getattr(tqdm_utils, "_active", True)
  tfds.display_progress_bar(False)
  try:
    yield
  finally:
    tfds.display_progress_bar(previous)


def _read_split(builder: DigitsLT, split: str) -> dict[str, np.ndarray]:
  """Reads a prepared split into arrays ordered by the ``index`` feature."""
  source = builder.as_data_source(split=split)
  records = source.__getitems__(range(len(source)))
  index = np.array([r["index"] for r in records], dtype=np.int64)
  # tfds shuffles examples on write; sorting by the pool position makes the
  # order deterministic and independent of tfds' shuffling.
  order = np.argsort(index, kind="stable")
  image = np.stack([np.asarray(r["image"], np.float32) for r in records])
  label = np.array([r["label"] for r in records], dtype=np.int32)
  return {"image": image[order], "label": label[order], "index": index[order]}


def load_digits_lt(
    *,
    imbalance_ratio: float = DEFAULT_IMBALANCE_RATIO,
    test_per_class: int = DEFAULT_TEST_PER_CLASS,
    seed: int = DEFAULT_SEED,
    data_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
  """Builds (or reuses) Digits-LT and returns both splits as NumPy arrays.

  The dataset is prepared once per config with ``file_format="array_record"``
  under ``data_dir`` (tfds' default when ``None``: ``$TFDS_DATA_DIR`` or
  ``~/tensorflow_datasets``); later calls read the prepared files. Examples are
  returned sorted by their position in ``sklearn.datasets.load_digits()``, so
  the result is deterministic.

  Args:
    imbalance_ratio: ``n_head / n_tail`` of the train split (digit 0 is the
      head); a finite real number >= 1. The default, 25, keeps 5 train examples
      of the rarest digit.
    test_per_class: balanced test examples per digit; an integer in
      ``[1, 173]``.
    seed: non-negative integer seed of the split.
    data_dir: root directory of the prepared TFDS data.

  Returns:
    A dict with ``"train"`` and ``"test"``, each ``{"image": float32 [N, 8, 8,
    1] in [0, 1], "label": int32 [N], "index": int64 [N]}`` (``index`` is the
    position in ``load_digits()``); ``"class_counts"``: ``int64 [10]`` train
    examples per digit; ``"num_classes"``: 10; ``"class_names"``: ``['0', ...,
    '9']``.

  Raises:
    ValueError: if an argument is out of range (the message names it), or if
      ``test_per_class`` leaves a digit without a train example.

  Examples:
    The first call prepares the data (tfds prints where it writes it); later
    calls with the same ``data_dir`` and values only read it.

    >>> import tempfile
    >>> data = load_digits_lt(data_dir=tempfile.mkdtemp())  # doctest: +ELLIPSIS
    Downloading and preparing dataset ...rho25_test30_seed0/1.0.0...
    Dataset digits_lt downloaded and prepared to ... reuse this data.
    >>> data["class_counts"].tolist()
    [144, 100, 70, 49, 34, 24, 16, 11, 8, 5]
    >>> data["train"]["image"].shape, data["test"]["label"].shape
    ((461, 8, 8, 1), (300,))

  References:
    Alpaydin and Kaynak, UCI *Optical Recognition of Handwritten Digits*, 1998.
    Cao et al., NeurIPS 2019; Cui et al., CVPR 2019.
  """
  config = DigitsLTConfig(
      imbalance_ratio=imbalance_ratio, test_per_class=test_per_class, seed=seed
  )
  # tfds refuses a custom config that shares its name with a registered one,
  # so use the registered instance for the default values.
  registered = DigitsLT.builder_configs.get(config.name)
  builder = DigitsLT(
      data_dir=data_dir,
      config=registered if registered is not None else config,
      file_format="array_record",
  )
  with _no_progress_bar():
    builder.download_and_prepare()
    train = _read_split(builder, "train")
    test = _read_split(builder, "test")
  class_names = list(builder.info.features["label"].names)
  class_counts = np.bincount(
      train["label"], minlength=DIGITS_NUM_CLASSES
  ).astype(np.int64)
  return {
      "train": train,
      "test": test,
      "class_counts": class_counts,
      "num_classes": DIGITS_NUM_CLASSES,
      "class_names": class_names,
  }
