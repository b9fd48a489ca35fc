"""Fashion-MNIST-shaped IDX files for tests (CI lacks the Debian package;
the reader is the same)."""

import pathlib

import numpy as np

from flatsparse.data import write_idx


def write_learnable_idx(directory: pathlib.Path, train: int = 256,
                        test: int = 64) -> str:
  """Writes ``train-*`` and ``t10k-*`` 28x28 image and label files where
  class c lights rows 2c..2c+2 over noise (learnable in a few steps);
  returns the directory as a string (a ``data_dir``)."""
  rng = np.random.default_rng(0)
  for prefix, n in (("train", train), ("t10k", test)):
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
      images[i, 2 * c:2 * c + 3] = 255
    write_idx(str(directory / f"{prefix}-images-idx3-ubyte"), images)
    write_idx(str(directory / f"{prefix}-labels-idx1-ubyte"), labels)
  return str(directory)
