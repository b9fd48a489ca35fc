"""Tests for flatsparse.data.iterate_batches."""

import itertools

import numpy as np
import pytest

from flatsparse.data import Dataset
from flatsparse.data import iterate_batches


def _toy(n: int = 12) -> Dataset:
  # Labels equal the example index, so batches reveal which examples they hold.
  images = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
  return Dataset(images, np.arange(n, dtype=np.int32), num_classes=n)


def _labels(batches) -> list[list[int]]:
  return [labels.tolist() for _, labels in batches]


def test_same_seed_same_batches():
  ds = _toy()
  a = list(iterate_batches(ds, 4, seed=3, num_epochs=2))
  b = list(iterate_batches(ds, 4, seed=3, num_epochs=2))
  assert len(a) == 6
  for (xa, ya), (xb, yb) in zip(a, b):
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)


def test_different_seeds_and_epochs_differ():
  ds = _toy(64)
  seed0 = _labels(iterate_batches(ds, 64, seed=0, num_epochs=2))
  seed1 = _labels(iterate_batches(ds, 64, seed=1, num_epochs=2))
  assert seed0 != seed1
  assert seed0[0] != seed0[1]  # A fresh permutation each epoch.


def test_epoch_matches_documented_permutation():
  ds = _toy()
  got = _labels(iterate_batches(ds, 12, seed=5, num_epochs=2))
  want = [np.random.default_rng([5, e]).permutation(12).tolist()
          for e in range(2)]
  assert got == want


def test_images_follow_labels():
  ds = _toy()
  for images, labels in iterate_batches(ds, 5, seed=0, drop_remainder=False):
    np.testing.assert_array_equal(images, ds.images[labels])
    assert images.dtype == np.float32 and labels.dtype == np.int32


def test_epoch_covers_every_example_once():
  ds = _toy(12)
  seen = np.concatenate([y for _, y in iterate_batches(ds, 3, seed=0)])
  np.testing.assert_array_equal(np.sort(seen), np.arange(12))


def test_drop_remainder():
  ds = _toy(10)
  dropped = _labels(iterate_batches(ds, 4, seed=0, num_epochs=2))
  assert [len(b) for b in dropped] == [4, 4, 4, 4]
  kept = _labels(iterate_batches(ds, 4, seed=0, num_epochs=2,
                                 drop_remainder=False))
  assert [len(b) for b in kept] == [4, 4, 2, 4, 4, 2]
  assert sorted(sum(kept[:3], [])) == list(range(10))
  # A batch larger than the dataset is fine when the remainder is kept.
  assert _labels(iterate_batches(ds, 11, seed=0, drop_remainder=False,
                                 shuffle=False)) == [
      list(range(10))
  ]


def test_no_shuffle_is_in_order():
  ds = _toy(6)
  got = _labels(iterate_batches(ds, 3, seed=0, num_epochs=2, shuffle=False))
  assert got == [[0, 1, 2], [3, 4, 5]] * 2


def test_num_epochs_none_loops_forever():
  ds = _toy(4)
  batches = list(itertools.islice(
      iterate_batches(ds, 2, seed=0, num_epochs=None), 50))
  assert len(batches) == 50


@pytest.mark.parametrize("batch_size", [0, -2, 13])
def test_bad_batch_size_raises_eagerly(batch_size):
  # Raised by the call itself, before any `next()`.
  with pytest.raises(ValueError, match=f"batch_size.*{batch_size}"):
    iterate_batches(_toy(12), batch_size, seed=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"num_epochs": 0}, "num_epochs"), ({"seed": -1}, "seed")],
)
def test_bad_arguments_raise(kwargs, match):
  kwargs = {"seed": 0, **kwargs}
  with pytest.raises(ValueError, match=match):
    iterate_batches(_toy(), 2, **kwargs)


def test_empty_dataset_raises():
  empty = Dataset(np.zeros((0, 2), np.float32), np.zeros((0,), np.int32), 2)
  with pytest.raises(ValueError, match="empty"):
    iterate_batches(empty, 1, seed=0, num_epochs=None, drop_remainder=False)
