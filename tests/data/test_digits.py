"""Tests for flatsparse.data.load_digits."""

import hashlib

import numpy as np
import pytest

from flatsparse.data import Dataset
from flatsparse.data import load_digits
from flatsparse.data import num_examples

# Pins the exact split so that a change of RNG stream or data is noticed.
_TEST_SPLIT_SHA256 = (
    "f4f1fa0529c8cab9e8a2d45d98fbc7b344e803317df5ccd998b82f71ea0ad99e")


def test_sizes():
  train, test = load_digits("train"), load_digits("test")
  assert isinstance(train, Dataset)
  assert (num_examples(train), num_examples(test)) == (1438, 359)
  assert train.num_classes == test.num_classes == 10


def test_train_and_test_partition_the_data():
  # The multiset of (image, label) rows over both splits equals sklearn's: no
  # example is lost or put in both splits. (Rows, not pixels alone, because the
  # digits data contains a few duplicate images.)
  from sklearn.datasets import load_digits as sk_load_digits

  sk = sk_load_digits()
  expected = sorted(
      (img / 16.0).astype(np.float32).tobytes() + np.int32(t).tobytes()
      for img, t in zip(sk.data, sk.target)
  )
  got = sorted(
      img.tobytes() + label.tobytes()
      for ds in (load_digits("train"), load_digits("test"))
      for img, label in zip(ds.images, ds.labels)
  )
  assert got == expected


@pytest.mark.parametrize("fraction", [0.2, 0.37])
def test_every_class_in_test_split_stratified(fraction):
  train = load_digits("train", test_fraction=fraction)
  test = load_digits("test", test_fraction=fraction)
  test_counts = np.bincount(test.labels, minlength=10)
  class_sizes = test_counts + np.bincount(train.labels, minlength=10)
  assert test_counts.min() > 0
  np.testing.assert_array_equal(
      test_counts, [round(fraction * n) for n in class_sizes]
  )


def test_deterministic_and_pinned():
  a, b = load_digits("test"), load_digits("test")
  np.testing.assert_array_equal(a.images, b.images)
  np.testing.assert_array_equal(a.labels, b.labels)
  digest = hashlib.sha256(a.images.tobytes() + a.labels.tobytes()).hexdigest()
  assert digest == _TEST_SPLIT_SHA256


def test_returned_arrays_are_independent_copies():
  a = load_digits("train")
  a.images[:] = -1.0
  assert load_digits("train").images.min() == 0.0


def test_test_fraction_changes_split_size():
  assert num_examples(load_digits("test", test_fraction=0.5)) == pytest.approx(
      1797 / 2, abs=10
  )


@pytest.mark.parametrize("flatten, shape", [(True, (64,)), (False, (8, 8, 1))])
def test_shapes_dtypes_and_range(flatten, shape):
  ds = load_digits("train", flatten=flatten)
  assert ds.images.shape == (1438, *shape)
  assert ds.images.dtype == np.float32
  assert ds.labels.dtype == np.int32
  assert ds.images.min() == 0.0 and ds.images.max() == 1.0
  assert set(np.unique(ds.labels)) == set(range(10))


def test_flatten_is_a_reshape():
  flat, img = load_digits("test"), load_digits("test", flatten=False)
  np.testing.assert_array_equal(flat.images, img.images.reshape(-1, 64))


def test_bad_split_message():
  with pytest.raises(ValueError) as exc:
    load_digits("validation")
  assert "'validation'" in str(exc.value)
  assert "'train'" in str(exc.value) and "'test'" in str(exc.value)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_bad_test_fraction_message(fraction):
  with pytest.raises(ValueError, match="test_fraction") as exc:
    load_digits("train", test_fraction=fraction)
  assert repr(fraction) in str(exc.value)
