"""Offline scikit-learn digits dataset (1,797 8x8 grey-scale images, 10
classes)."""

import functools

import numpy as np

from flatsparse.data.dataset import Dataset

_SPLITS = ("train", "test")
_SPLIT_SEED = 0  # Fixed so the split is identical on every machine.
_NUM_CLASSES = 10
_MAX_PIXEL = 16.0  # sklearn digits pixel values are integers in [0, 16].


@functools.lru_cache(maxsize=1)
def _load_raw() -> tuple[np.ndarray, np.ndarray]:
  """Loads and scales the full dataset once; arrays are read-only."""
  # Imported lazily so that ``import flatsparse.data`` stays cheap.
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  raw = datasets.load_digits()
  images = (raw.images / _MAX_PIXEL).astype(np.float32)
  labels = raw.target.astype(np.int32)
  # The cache hands out the same arrays on every call: guard them.
  images.setflags(write=False)
  labels.setflags(write=False)
  return images, labels


@functools.lru_cache(maxsize=8)
def _split_indices(test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
  """Returns sorted (train, test) indices of a per-class stratified split."""
  _, labels = _load_raw()
  rng = np.random.default_rng(_SPLIT_SEED)
  train, test = [], []
  for c in range(_NUM_CLASSES):
    idx = rng.permutation(np.flatnonzero(labels == c))
    n_test = round(test_fraction * idx.size)
    test.append(idx[:n_test])
    train.append(idx[n_test:])
  train_idx, test_idx = (np.sort(np.concatenate(train)),
                         np.sort(np.concatenate(test)))
  train_idx.setflags(write=False)
  test_idx.setflags(write=False)
  return train_idx, test_idx


def load_digits(
    split: str = "train", *, test_fraction: float = 0.2, flatten: bool = True
) -> Dataset:
  """Loads a deterministic stratified split of the sklearn digits dataset.

  Needs no network: the data ships inside scikit-learn.

  Args:
    split: "train" or "test".
    test_fraction: Fraction of each class put in the test split, in (0, 1).
    flatten: If True, images have shape (N, 64); else (N, 8, 8, 1).

  Returns:
    A ``Dataset`` with float32 images in [0, 1] and int32 labels in [0, 10).

  Raises:
    ValueError: If ``split`` or ``test_fraction`` is invalid.
  """
  if split not in _SPLITS:
    raise ValueError(f"split must be one of {_SPLITS}, got {split!r}.")
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(
        "test_fraction must be in the open interval (0, 1), got "
        f"{test_fraction!r}."
    )
  images, labels = _load_raw()
  train_idx, test_idx = _split_indices(float(test_fraction))
  idx = train_idx if split == "train" else test_idx
  # Fancy indexing copies, so callers get writable arrays of their own.
  images, labels = images[idx], labels[idx]
  shape = (-1, 64) if flatten else (-1, 8, 8, 1)
  return Dataset(images.reshape(shape), labels, _NUM_CLASSES)
