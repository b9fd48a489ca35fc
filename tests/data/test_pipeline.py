"""Tests for flatsparse.data.Loader, data_sharding and shard_batch
(1 device)."""

import itertools

import jax
from jax.sharding import AxisType
import numpy as np
import pytest

from flatsparse.data import channel_stats
from flatsparse.data import data_sharding
from flatsparse.data import Dataset
from flatsparse.data import iterate_batches
from flatsparse.data import load_digits
from flatsparse.data import Loader
from flatsparse.data import shard_batch


def _toy(n=10, hw=4, c=3, seed=0) -> Dataset:
  # Labels are the example index, so batches reveal which examples they hold.
  images = np.random.default_rng(seed).random((n, hw, hw, c), dtype=np.float32)
  return Dataset(images, np.arange(n, dtype=np.int32), num_classes=n)


def _same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


def test_matches_iterate_batches_without_augmentation():
  ds = _toy(10)
  loader = Loader(ds, batch_size=3)
  assert loader.steps_per_epoch == 3
  got = list(loader.train_batches(seed=4, num_steps=9))
  want = list(iterate_batches(ds, 3, seed=4, num_epochs=3))
  assert len(got) == len(want) == 9
  for batch, (x, y) in zip(got, want):
    assert set(batch) == {"image", "label"}
    assert (batch["image"].dtype == np.float32
            and batch["label"].dtype == np.int32)
    np.testing.assert_array_equal(batch["image"], x)
    np.testing.assert_array_equal(batch["label"], y)


@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("drop_remainder", [True, False])
def test_resume_equals_uninterrupted(augment, drop_remainder):
  # N + M steps from 0 equal N steps from 0 followed by M steps resumed at N,
  # across epoch boundaries, on a fresh Loader (as after a restart).
  ds = _toy(10)
  kwargs = dict(batch_size=4, augment=augment, drop_remainder=drop_remainder,
                normalize=True)
  n, m = 5, 7
  full = list(Loader(ds, **kwargs).train_batches(seed=1, num_steps=n + m))
  first = list(itertools.islice(Loader(ds, **kwargs).train_batches(seed=1), n))
  resumed = list(Loader(ds, **kwargs).train_batches(
      seed=1, start_step=n, num_steps=m))
  _same(full, first + resumed)
  loader = Loader(ds, **kwargs)
  _same(full[::-1], [loader.train_batch(1, s) for s in reversed(range(n + m))])


def test_epochs_cover_data_and_differ():
  ds = _toy(12)
  loader = Loader(ds, batch_size=4)
  labels = [b["label"] for b in loader.train_batches(seed=0, num_steps=6)]
  e0, e1 = np.concatenate(labels[:3]), np.concatenate(labels[3:])
  np.testing.assert_array_equal(np.sort(e0), np.arange(12))
  np.testing.assert_array_equal(np.sort(e1), np.arange(12))
  assert not np.array_equal(e0, e1)
  other = np.concatenate(
      [b["label"] for b in loader.train_batches(seed=1, num_steps=3)])
  assert not np.array_equal(e0, other)


def test_drop_remainder_and_no_shuffle():
  ds = _toy(10)
  sizes = [b["label"].size
           for b in Loader(ds, batch_size=4, drop_remainder=False)
           .train_batches(0, num_steps=6)]
  assert sizes == [4, 4, 2, 4, 4, 2]
  ordered = Loader(ds, batch_size=5, shuffle=False).train_batches(
      0, num_steps=4)
  assert [b["label"].tolist() for b in ordered] == (
      [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]] * 2)


def test_augmentation_deterministic_per_seed_and_step():
  ds = _toy(16, hw=8)
  loader = Loader(ds, batch_size=16, shuffle=False, augment=True)
  a0, a1 = loader.train_batch(0, 0), loader.train_batch(0, 1)
  b0 = Loader(ds, batch_size=16, shuffle=False, augment=True).train_batch(0, 0)
  c0 = loader.train_batch(1, 0)
  np.testing.assert_array_equal(a0["image"], b0["image"])
  assert a0["image"].shape == (16, 8, 8, 3)
  # Same examples, new crops.
  assert not np.array_equal(a0["image"], a1["image"])
  assert not np.array_equal(a0["image"], c0["image"])
  np.testing.assert_array_equal(a0["label"], a1["label"])


def test_custom_augment_and_normalization_order():
  ds = _toy(6)
  mean, std = [0.5, 0.5, 0.5], [0.25, 0.5, 1.0]
  seen = []

  def augment(images, rng):
    seen.append(images.copy())
    return images + rng.integers(1, 2)  # Adds exactly 1.

  loader = Loader(ds, batch_size=6, shuffle=False, augment=augment,
                  normalize=(mean, std))
  got = loader.train_batch(0, 0)["image"]
  # Augment sees the raw pixels, normalization comes after it.
  np.testing.assert_array_equal(seen[0], ds.images)
  np.testing.assert_allclose(got, (ds.images + 1 - 0.5) / np.array(std),
                             rtol=1e-6)


def test_normalize_true_uses_train_stats():
  train, test = _toy(10), _toy(7, seed=1)
  loader = Loader(train, test, batch_size=10, normalize=True)
  mean, std = channel_stats(train)
  np.testing.assert_array_equal(loader.mean, mean)
  batch = next(loader.eval_batches(split="test"))
  np.testing.assert_allclose(batch["image"][:7], (test.images - mean) / std,
                             rtol=1e-6)


@pytest.mark.parametrize("n, batch_size",
                         [(10, 4), (12, 4), (3, 8), (359, 128)])
def test_eval_batches_pad_and_mask(n, batch_size):
  ds = _toy(n, hw=2)
  loader = Loader(ds, ds, batch_size=1)
  batches = list(loader.eval_batches(batch_size))
  assert len(batches) == -(-n // batch_size)
  assert all(b["image"].shape == (batch_size, 2, 2, 3) for b in batches)
  mask = np.concatenate([b["mask"] for b in batches])
  assert (mask.dtype == np.float32
          and mask.sum() == n == loader.num_eval_examples())
  # Padding is last.
  np.testing.assert_array_equal(mask, np.arange(mask.size) < n)
  labels = np.concatenate([b["label"] for b in batches])
  np.testing.assert_array_equal(labels[:n], ds.labels)  # In order, each once.
  images = np.concatenate([b["image"] for b in batches])
  np.testing.assert_array_equal(images[:n], ds.images)
  assert (images[n:] == 0).all() and (labels[n:] == 0).all()


def test_exact_accuracy_with_mask():
  ds = load_digits("test", flatten=False)
  loader = Loader(load_digits("train", flatten=False), ds, batch_size=64)
  correct = count = 0.0
  for batch in loader.eval_batches(100):
    predictions = batch["label"] % 2  # Any deterministic "model".
    correct += np.sum(batch["mask"] * (predictions == batch["label"]))
    count += batch["mask"].sum()
  # Padding (label 0, predicted 0) would count as correct without the mask.
  assert count == 359
  assert correct == np.sum(ds.labels % 2 == ds.labels)


def test_eval_on_train_split_is_not_augmented():
  ds = _toy(5)
  loader = Loader(ds, batch_size=5, augment=True)
  batch = next(loader.eval_batches(split="train"))
  np.testing.assert_array_equal(batch["image"], ds.images)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1, got 0"),
        ({"batch_size": 11}, ValueError,
         "batch_size=11 exceeds the train size 10"),
        ({"augment": "yes"}, TypeError, "augment"),
        ({"augment": True, "pad_mode": "wrap"}, ValueError, "pad_mode"),
        ({"augment": True, "crop_padding": -2}, ValueError, "padding"),
        ({"normalize": ([0.5], [0.0])}, ValueError, "std must be > 0"),
        ({"normalize": ([0.5, 0.5], [1, 1])}, ValueError,
         "mean must have 1 or 3"),
    ],
)
def test_constructor_errors(kwargs, error, match):
  kwargs = {"batch_size": 2, **kwargs}
  with pytest.raises(error, match=match):
    Loader(_toy(10), **kwargs)


def test_other_errors():
  flat = load_digits("test")
  with pytest.raises(ValueError, match=r"NHWC.*\(64,\)"):
    Loader(flat, batch_size=2, augment=True)
  with pytest.raises(TypeError, match="Dataset or an ExampleSource"):
    Loader((flat.images, flat.labels), batch_size=2)
  empty = Dataset(np.zeros((0, 2, 2, 1), np.float32), np.zeros(0, np.int32), 2)
  with pytest.raises(ValueError, match="empty"):
    Loader(empty, batch_size=1, drop_remainder=False)
  loader = Loader(_toy(10), batch_size=2)
  with pytest.raises(ValueError, match="start_step"):
    loader.train_batches(0, start_step=-1)  # Raised before any next().
  with pytest.raises(ValueError, match="seed"):
    loader.train_batches(-1)
  with pytest.raises(ValueError,
                     match="needs a Loader built with a test split"):
    loader.eval_batches()
  with pytest.raises(ValueError, match="split must be one of .*'val'"):
    loader.eval_batches(split="val")


class _CountingSource:
  """An ExampleSource that records which indices were read."""

  def __init__(self, n):
    self.num_classes, self.n, self.reads = 3, n, []

  def __len__(self):
    return self.n

  def get(self, indices):
    indices = np.asarray(indices)
    self.reads.append(indices.copy())
    return (np.ones((indices.size, 4, 4, 1), np.float32),
            (indices % 3).astype(np.int32))


def test_example_source_reads_only_the_batch():
  source = _CountingSource(1000)
  loader = Loader(source, batch_size=8, augment=True, normalize=([0.5], [0.5]))
  source.reads.clear()
  batch = loader.train_batch(0, 42)
  assert batch["image"].shape == (8, 4, 4, 1)
  assert len(source.reads) == 1 and source.reads[0].size == 8
  with pytest.raises(TypeError, match="pass \\(mean, std\\)"):
    Loader(source, batch_size=8, normalize=True)


def test_shard_batch_single_device():
  mesh = jax.make_mesh((1,), ("data",), axis_types=(AxisType.Auto,))
  sharding = data_sharding(mesh)
  loader = Loader(_toy(10), _toy(10), batch_size=4)
  batch = next(loader.eval_batches())
  placed = shard_batch(batch, sharding)
  assert placed.keys() == batch.keys()
  for k in batch:
    assert isinstance(placed[k], jax.Array) and placed[k].sharding == sharding
    np.testing.assert_array_equal(np.asarray(placed[k]), batch[k])
  with pytest.raises(ValueError, match="Unknown mesh axes \\['batch'\\]"):
    data_sharding(mesh, "batch")
  with pytest.raises(ValueError, match="same leading size"):
    shard_batch({"image": np.zeros((4, 2)), "label": np.zeros(3)}, sharding)
