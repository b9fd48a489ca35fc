"""Tests for the IDX reader/writer and the Debian Fashion-MNIST loader.

They write small IDX files into a tmp dir; the Debian package is not needed.
The last test also checks the real files when the package is installed.
"""

import gzip
import os

import numpy as np
import pytest

from flatsparse.data import DEBIAN_FASHION_MNIST_DIR
from flatsparse.data import load_dataset
from flatsparse.data import load_fashion_mnist_debian
from flatsparse.data import num_examples
from flatsparse.data import read_idx
from flatsparse.data import write_idx


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
)
@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_round_trip(tmp_path, dtype, name):
  x = (np.random.default_rng(0).random((3, 5, 4)) * 100).astype(dtype)
  path = tmp_path / name
  write_idx(path, x)
  got = read_idx(path)
  assert (got.dtype == np.dtype(dtype) and got.dtype.isnative
          and got.shape == x.shape)
  np.testing.assert_array_equal(got, x)
  got[0] = 0  # Writable.


def test_reads_handmade_mnist_header(tmp_path):
  # The exact bytes of an MNIST label file holding [7, 2, 1]: magic 0x00000801,
  # then the count 3 big-endian. Compressed, with a name that does not say so.
  raw = bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])
  (tmp_path / "labels").write_bytes(gzip.compress(raw))
  np.testing.assert_array_equal(read_idx(tmp_path / "labels"), [7, 2, 1])
  # Big-endian multi-byte values.
  raw = bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE])
  (tmp_path / "i16").write_bytes(raw)
  np.testing.assert_array_equal(read_idx(tmp_path / "i16"), [258, -2])


@pytest.mark.parametrize(
    "raw, match",
    [
        (bytes([1, 0, 8, 1, 0, 0, 0, 0]), "not an IDX file"),
        (bytes([0, 0, 7, 1, 0, 0, 0, 0]),
         r"type byte 0x07; known: 0x08 \(uint8\)"),
        (bytes([0, 0, 8, 2, 0, 0, 0, 1]), "truncated"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2]),
         r"\(3,\) of uint8 needs 3 data bytes, the file has 2"),
    ],
)
def test_malformed(tmp_path, raw, match):
  (tmp_path / "bad").write_bytes(raw)
  with pytest.raises(ValueError, match=match):
    read_idx(tmp_path / "bad")


def test_write_errors(tmp_path):
  with pytest.raises(ValueError, match="Cannot store dtype int64"):
    write_idx(tmp_path / "x", np.zeros(2, np.int64))
  with pytest.raises(ValueError, match="ndim=0"):
    write_idx(tmp_path / "x", np.uint8(3))


def _write_fashion(root, n_train=12, n_test=5, gz=True, seed=0):
  rng = np.random.default_rng(seed)
  suffix = ".gz" if gz else ""
  arrays = {}
  for prefix, n in (("train", n_train), ("t10k", n_test)):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    write_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte{suffix}"), images)
    write_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte{suffix}"), labels)
    arrays[prefix] = (images, labels)
  return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_load_fashion_mnist_from_files(tmp_path, gz):
  arrays = _write_fashion(str(tmp_path), gz=gz)
  for split, prefix in (("train", "train"), ("test", "t10k")):
    ds = load_fashion_mnist_debian(split, data_dir=tmp_path)
    images, labels = arrays[prefix]
    assert (ds.images.shape == (len(labels), 28, 28, 1)
            and ds.images.dtype == np.float32)
    assert ds.labels.dtype == np.int32 and ds.num_classes == 10
    np.testing.assert_allclose(ds.images[..., 0] * 255, images, atol=1e-4)
    np.testing.assert_array_equal(ds.labels, labels)
  flat = load_fashion_mnist_debian("test", data_dir=tmp_path, flatten=True)
  assert flat.images.shape == (5, 784)
  # Through the registry; returned arrays are the caller's own.
  ds = load_dataset("fashion_mnist_debian", "train", data_dir=str(tmp_path))
  ds.images[:] = -1
  again = load_dataset("fashion_mnist_debian", "train", data_dir=str(tmp_path))
  assert again.images.min() >= 0


def test_rewritten_files_are_reread(tmp_path):
  _write_fashion(str(tmp_path), n_train=4, seed=0)
  a = load_fashion_mnist_debian("train", data_dir=tmp_path)
  # Make sure a rewrite changes the cache key even on coarse clocks.
  os.utime(tmp_path)
  _write_fashion(str(tmp_path), n_train=6, seed=1)
  b = load_fashion_mnist_debian("train", data_dir=tmp_path)
  assert (num_examples(a), num_examples(b)) == (4, 6)


def test_missing_files_message(tmp_path):
  with pytest.raises(FileNotFoundError) as exc:
    load_fashion_mnist_debian("train", data_dir=tmp_path)
  msg = str(exc.value)
  assert ("train-images-idx3-ubyte.gz" in msg
          and "apt install dataset-fashion-mnist" in msg)


def test_inconsistent_files(tmp_path):
  _write_fashion(str(tmp_path))
  write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
  with pytest.raises(ValueError, match="must hold 5 labels"):
    load_fashion_mnist_debian("test", data_dir=tmp_path)
  write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(5, 10, np.uint8))
  with pytest.raises(ValueError, match="label 10; allowed: 0 to 9"):
    load_fashion_mnist_debian("test", data_dir=tmp_path)
  with pytest.raises(ValueError, match="split must be one of .*'validation'"):
    load_fashion_mnist_debian("validation", data_dir=tmp_path)


@pytest.mark.skipif(
    not os.path.isdir(DEBIAN_FASHION_MNIST_DIR),
    reason="Debian package dataset-fashion-mnist is not installed",
)
def test_real_debian_files():
  train, test = (load_fashion_mnist_debian("train"),
                 load_fashion_mnist_debian("test"))
  assert (train.images.shape == (60000, 28, 28, 1)
          and test.images.shape == (10000, 28, 28, 1))
  np.testing.assert_array_equal(np.bincount(train.labels), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(test.labels), [1000] * 10)
