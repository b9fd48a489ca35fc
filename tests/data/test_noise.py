"""Tests for flatsparse.data.add_label_noise."""

import numpy as np
import pytest

from flatsparse.data import add_label_noise
from flatsparse.data import CIFAR10_ASYMMETRIC_PAIRS


def _labels(n=1000, classes=10, seed=0):
  return np.random.default_rng(seed).integers(0, classes, n).astype(np.int32)


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.37, 0.8])
def test_symmetric_exact_count_and_other_class(rate):
  labels = _labels()
  noisy, is_noisy = add_label_noise(labels, 10, rate, "symmetric", seed=3)
  assert noisy.dtype == np.int32 and is_noisy.dtype == bool
  assert is_noisy.sum() == round(rate * labels.size)
  # Never the same class.
  np.testing.assert_array_equal(is_noisy, noisy != labels)
  assert ((0 <= noisy) & (noisy < 10)).all()


def test_symmetric_targets_are_uniform_over_other_classes():
  labels = np.zeros(20000, np.int32)
  noisy, is_noisy = add_label_noise(labels, 5, 0.5, seed=0)
  counts = np.bincount(noisy[is_noisy], minlength=5)
  assert counts[0] == 0
  np.testing.assert_allclose(counts[1:] / is_noisy.sum(), 0.25, atol=0.02)


def test_deterministic_and_input_untouched():
  labels = _labels()
  copy = labels.copy()
  a = add_label_noise(labels, 10, 0.3, seed=7)
  b = add_label_noise(labels, 10, 0.3, seed=7)
  c = add_label_noise(labels, 10, 0.3, seed=8)
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.array_equal(a[0], c[0])
  np.testing.assert_array_equal(labels, copy)


def test_asymmetric_cyclic_per_class_counts():
  labels = _labels(n=997, classes=4)
  noisy, is_noisy = add_label_noise(labels, 4, 0.3, "asymmetric", seed=1)
  for c in range(4):
    members = labels == c
    assert is_noisy[members].sum() == round(0.3 * members.sum())
    assert (noisy[members & is_noisy] == (c + 1) % 4).all()


def test_asymmetric_cifar10_pairs():
  labels = np.repeat(np.arange(10, dtype=np.int32), 100)
  noisy, is_noisy = add_label_noise(labels, 10, 0.4, "asymmetric", seed=0,
                                    pairs="cifar10")
  # truck->automobile, bird->airplane, deer->horse, cat<->dog.
  assert CIFAR10_ASYMMETRIC_PAIRS == {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
  for c in range(10):
    members = labels == c
    if c in CIFAR10_ASYMMETRIC_PAIRS:
      assert is_noisy[members].sum() == 40
      assert (noisy[members & is_noisy] == CIFAR10_ASYMMETRIC_PAIRS[c]).all()
    else:
      assert not is_noisy[members].any()
  assert is_noisy.sum() == 200


def test_asymmetric_custom_pairs():
  labels = np.repeat(np.arange(3, dtype=np.int32), 10)
  noisy, is_noisy = add_label_noise(labels, 3, 0.5, "asymmetric", pairs={2: 0})
  assert is_noisy.sum() == 5 and (noisy[is_noisy] == 0).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rate": 1.0}, r"rate must be in \[0, 1\), got 1.0"),
        ({"rate": -0.1}, "rate"),
        ({"kind": "pair"},
         "kind must be one of .*'symmetric', 'asymmetric'.*'pair'"),
        ({"num_classes": 1}, "num_classes"),
        ({"seed": -1}, "seed"),
        ({"labels": np.array([0, 10])}, r"\[0, 10\)"),
        ({"labels": np.zeros((2, 2), int)}, "1-d"),
        ({"pairs": "cifar10"}, "only used with kind='asymmetric'"),
        ({"kind": "asymmetric", "pairs": "cifar100"},
         "Unknown pairs 'cifar100'"),
        ({"kind": "asymmetric", "pairs": "cifar10", "num_classes": 5,
          "labels": np.zeros(3, int)},
         "num_classes=10"),
        ({"kind": "asymmetric", "pairs": {1: 1}}, "Bad pair 1 -> 1"),
    ],
)
def test_errors(kwargs, match):
  kwargs = {"labels": _labels(20), "num_classes": 10, "rate": 0.2, **kwargs}
  with pytest.raises(ValueError, match=match):
    add_label_noise(**kwargs)
