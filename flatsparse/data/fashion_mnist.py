"""Offline Fashion-MNIST from the files of Debian's ``dataset-fashion-mnist``.

``apt install dataset-fashion-mnist`` (Debian >= 11, Ubuntu >= 21.04; version
0.0~git20200523.55506a9-1 in bookworm) installs the original gzip-compressed
IDX files of zalandoresearch/fashion-mnist, 60,000 train and 10,000 test 28x28
grey-scale images in 10 classes, into ``DEBIAN_FASHION_MNIST_DIR``::

  /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
  /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz
  /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
  /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz

(listed with ``apt-get download dataset-fashion-mnist && dpkg -c *.deb``). Any
directory with these four files, compressed or not, works as ``data_dir``, e.g.
the files downloaded from the Fashion-MNIST GitHub page.
"""

import functools
import os

import numpy as np

from flatsparse.data.dataset import Dataset
from flatsparse.data.idx import read_idx

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_NUM_CLASSES = 10


def _find(data_dir: str, stem: str) -> str:
  """Returns the path of ``stem`` (.gz first) in ``data_dir``, or raises."""
  candidates = [os.path.join(data_dir, stem + ".gz"),
                os.path.join(data_dir, stem)]
  for path in candidates:
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(
      f"Fashion-MNIST file not found; tried {candidates}. Install the Debian "
      "package (`sudo apt install dataset-fashion-mnist`, files go to "
      f"{DEBIAN_FASHION_MNIST_DIR!r}), pass data_dir= pointing at the IDX "
      "files, or use the TFDS copy: load_dataset('fashion_mnist', ...)."
  )


@functools.lru_cache(maxsize=4)
def _read_split(
    images_path: str, labels_path: str, _stamp: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
  """Reads and checks one split; ``_stamp`` (mtimes, sizes) keys the cache."""
  images, labels = read_idx(images_path), read_idx(labels_path)
  if images.ndim != 3 or images.dtype != np.uint8:
    raise ValueError(
        f"{images_path!r} must hold uint8 images of shape (N, H, W), got "
        f"{images.dtype} {images.shape}."
    )
  if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
    raise ValueError(
        f"{labels_path!r} must hold {images.shape[0]} labels (one per image in "
        f"{images_path!r}), got shape {labels.shape}."
    )
  if labels.size and labels.max() >= _NUM_CLASSES:
    raise ValueError(
        f"{labels_path!r} has label {int(labels.max())}; allowed: 0 to "
        f"{_NUM_CLASSES - 1}."
    )
  images.setflags(write=False)
  labels.setflags(write=False)
  return images, labels


def load_fashion_mnist_debian(
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
    flatten: bool = False,
) -> Dataset:
  """Loads Fashion-MNIST from local IDX files (Debian's package by default).

  Needs no network and no TensorFlow. The example order is the files' order.

  Args:
    split: "train" (60,000 examples) or "test" (10,000).
    data_dir: Directory holding the IDX files; None uses
      ``DEBIAN_FASHION_MNIST_DIR``.
    flatten: If True, images have shape (N, 784); else (N, 28, 28, 1).

  Returns:
    A ``Dataset`` with float32 images in [0, 1] and int32 labels in [0, 10)
    (names in ``FASHION_MNIST_CLASSES``).

  Raises:
    ValueError: If ``split`` is invalid or a file is malformed.
    FileNotFoundError: If the files are missing (the message says how to
      install them).
  """
  if split not in _FILES:
    raise ValueError(f"split must be one of {tuple(_FILES)}, got {split!r}.")
  data_dir = os.fspath(
      DEBIAN_FASHION_MNIST_DIR if data_dir is None else data_dir)
  paths = tuple(_find(data_dir, stem) for stem in _FILES[split])
  stats = [os.stat(p) for p in paths]
  stamp = tuple(v for s in stats for v in (s.st_mtime_ns, s.st_size))
  images, labels = _read_split(*paths, stamp)
  n = images.shape[0]
  images = images.astype(np.float32) / np.float32(255.0)
  shape = (n, -1) if flatten else (*images.shape, 1)
  return Dataset(images.reshape(shape), labels.astype(np.int32), _NUM_CLASSES)
