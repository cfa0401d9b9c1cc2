"""CIFAR-10-LT builder: the real archive (class counts for ρ = 10, 50, 100, the
balanced test split, pixels against a plain Pillow decode of the named file), and small
archives made here for the errors."""

import io
import os
import tarfile

import numpy as np
import pytest

from jaxloss.data import cifar10_lt

ARCHIVE = os.path.join(cifar10_lt.default_manual_dir(), cifar10_lt.ARCHIVE)
needs_data = pytest.mark.skipif(
    not os.path.isfile(ARCHIVE),
    reason=f"CIFAR-10 archive not found at {ARCHIVE} (../shared/data/cifar10 beside the "
           "repository)")

RHO100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


@pytest.fixture(scope="module")
def rho100(tfds_dir):
  # The session's TFDS folder (conftest.py): the recipe tests on this worker read the
  # same prepared data.
  return cifar10_lt.load_cifar10_lt(data_dir=tfds_dir)


def _plain_decode(split, name, number):
  """The image of ``split/name/NNNN.jpg`` decoded on its own with Pillow."""
  from PIL import Image
  with tarfile.open(ARCHIVE) as tar:
    member = tar.getmember(f"{split}/{name}/{number:04d}.jpg")
    with Image.open(io.BytesIO(tar.extractfile(member).read())) as image:
      return np.asarray(image.convert("RGB"))


@needs_data
def test_rho100_counts_and_balanced_test(rho100):
  assert rho100["class_counts"].tolist() == RHO100
  assert sum(RHO100) == 12_406 == len(rho100["train"]["label"])
  assert np.bincount(rho100["test"]["label"]).tolist() == [1000] * 10
  assert rho100["train"]["image"].shape == (12_406, 32, 32, 3)
  assert rho100["train"]["image"].dtype == np.uint8
  assert rho100["test"]["image"].shape == (10_000, 32, 32, 3)
  assert rho100["class_names"] == list(cifar10_lt.CIFAR10_CLASSES)


@needs_data
def test_rho100_keeps_the_first_files_of_each_class(rho100):
  train = rho100["train"]
  for c, n in enumerate(RHO100):
    numbers = train["number"][train["label"] == c]
    np.testing.assert_array_equal(numbers, np.arange(n))  # 0000.jpg .. first n files
  test = rho100["test"]
  for c in range(10):
    np.testing.assert_array_equal(test["number"][test["label"] == c], np.arange(1000))


@needs_data
@pytest.mark.parametrize("split,c,number", [("train", 0, 0), ("train", 9, 49),
                                            ("train", 3, 1076), ("test", 5, 999)])
def test_pixels_equal_a_plain_decode_of_the_file(rho100, split, c, number):
  data = rho100[split]
  row = np.flatnonzero((data["label"] == c) & (data["number"] == number))
  assert row.size == 1
  expected = _plain_decode(split, cifar10_lt.CIFAR10_CLASSES[c], number)
  np.testing.assert_array_equal(data["image"][row[0]], expected)


@needs_data
@pytest.mark.parametrize("rho,counts", [
    (10, [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]),
    (50, [5000, 3237, 2096, 1357, 878, 568, 368, 238, 154, 100])])
def test_other_ratios_from_the_real_archive(rho, counts, rho100):
  """Another ratio, decoded again from the archive: its counts, and the same images as
  the ρ = 100 build where the two must agree (a deterministic build): the whole test
  split, and in each class the first files, which ρ = 100 keeps."""
  data = cifar10_lt.read_archive(ARCHIVE, imbalance_ratio=rho)
  assert np.bincount(data["train"]["label"]).tolist() == counts
  assert counts == [int(5000 * (1 / rho) ** (c / 9)) for c in range(10)]
  assert len(data["test"]["label"]) == 10_000
  for key in ("image", "label", "number"):
    np.testing.assert_array_equal(data["test"][key], rho100["test"][key])
  for c in range(10):
    ours = data["train"]["label"] == c
    theirs = rho100["train"]["label"] == c
    for key in ("image", "number"):
      np.testing.assert_array_equal(data["train"][key][ours][:theirs.sum()],
                                    rho100["train"][key][theirs])


@needs_data
def test_prepared_data_are_reused(rho100, tfds_dir):
  again = cifar10_lt.load_cifar10_lt(data_dir=tfds_dir)  # the prepared folder, loaded again
  for split in ("train", "test"):
    for key in ("image", "label", "number"):
      np.testing.assert_array_equal(again[split][key], rho100[split][key])


# ------------------------------------------------------------- small archives, errors


def _jpeg(color, size=(32, 32)):
  from PIL import Image
  buffer = io.BytesIO()
  Image.new("RGB", size, color).save(buffer, format="JPEG", quality=95)
  return buffer.getvalue()


def _archive(tmp_path, files):
  path = tmp_path / cifar10_lt.ARCHIVE
  with tarfile.open(path, "w:gz") as tar:
    for name, data in files.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return str(path)


def _files(per_class=4, test_per_class=2, **replace):
  files = {"README.md": b"CIFAR-10 as JPEG"}
  for c, name in enumerate(cifar10_lt.CIFAR10_CLASSES):
    for i in range(per_class):
      files[f"train/{name}/{i:04d}.jpg"] = _jpeg((10 * c, i, 0))
    for i in range(test_per_class):
      files[f"test/{name}/{i:04d}.jpg"] = _jpeg((10 * c, 0, 100 + i))
  files.update(replace)
  return files


def test_small_archive_rule_and_order(tmp_path):
  path = _archive(tmp_path, _files())
  data = cifar10_lt.read_archive(path, imbalance_ratio=4)
  expected = [int(4 * 0.25 ** (c / 9)) for c in range(10)]  # 4, 3, 2, ..., 1
  assert np.bincount(data["train"]["label"], minlength=10).tolist() == expected
  assert np.bincount(data["test"]["label"]).tolist() == [2] * 10
  # Class c's images are (10 c, i, 0): JPEG keeps a flat colour within a few levels.
  red = data["train"]["image"][..., 0].mean(axis=(1, 2))
  np.testing.assert_allclose(red, 10 * data["train"]["label"], atol=3)


def test_missing_archive_names_the_path_and_manual_dir(tmp_path):
  with pytest.raises(FileNotFoundError, match="manual_dir"):
    cifar10_lt.load_cifar10_lt(manual_dir=str(tmp_path), data_dir=str(tmp_path / "t"))
  with pytest.raises(FileNotFoundError, match=cifar10_lt.ARCHIVE):
    cifar10_lt.read_archive(str(tmp_path / cifar10_lt.ARCHIVE))


@pytest.mark.parametrize("replace,match", [
    ({"train/airplane/0001.jpg": b"not a jpeg"}, r"train/airplane/0001\.jpg is not a "
                                                 r"readable image"),
    ({"train/airplane/0002.jpg": None}, r"train/airplane/0002\.jpg has shape"),
    ({"train/zebra/0000.jpg": None}, r"unknown class 'zebra'"),
])
def test_bad_members_are_named(tmp_path, replace, match):
  files = _files()
  for name, data in replace.items():
    files[name] = data if data is not None else _jpeg((0, 0, 0), size=(16, 16))
  with pytest.raises(ValueError, match=match):
    cifar10_lt.read_archive(_archive(tmp_path, files))


def test_a_class_without_test_images_is_named(tmp_path):
  files = {k: v for k, v in _files().items() if not k.startswith("test/truck/")}
  with pytest.raises(ValueError, match=r"no test/<class>/\*\.jpg images for \['truck'\]"):
    cifar10_lt.read_archive(_archive(tmp_path, files))


def test_config_names_and_bad_ratio():
  assert cifar10_lt.Cifar10LTConfig(imbalance_ratio=100).name == "rho100"
  assert cifar10_lt.Cifar10LTConfig(imbalance_ratio=12.5).name == "rho12p5"
  with pytest.raises(ValueError, match="imbalance_ratio"):
    cifar10_lt.Cifar10LTConfig(imbalance_ratio=0.5)
  with pytest.raises(ValueError, match="name must match"):
    cifar10_lt.Cifar10LTConfig(name="rho7", imbalance_ratio=100)
