"""Tests for the synthetic datasets with known ground truth."""

import numpy as np
import pytest

from flatsparse.data import gaussian_mixture_means
from flatsparse.data import make_gaussian_mixture
from flatsparse.data import make_teacher_student
from flatsparse.data import teacher_logits
from flatsparse.data import teacher_params


def test_gaussian_mixture_shapes_balance_and_determinism():
  ds = make_gaussian_mixture(1003, 5, 4, seed=0)
  assert ds.images.shape == (1003, 5) and ds.images.dtype == np.float32
  assert ds.labels.dtype == np.int32 and ds.num_classes == 4
  np.testing.assert_array_equal(np.bincount(ds.labels), [251, 251, 251, 250])
  again = make_gaussian_mixture(1003, 5, 4, seed=0)
  np.testing.assert_array_equal(ds.images, again.images)
  assert not np.array_equal(
      ds.images, make_gaussian_mixture(1003, 5, 4, seed=1).images)


def test_gaussian_mixture_ground_truth():
  means = gaussian_mixture_means(8, 3, seed=2, separation=5.0)
  np.testing.assert_allclose(np.linalg.norm(means, axis=1), 5.0)
  train = make_gaussian_mixture(6000, 8, 3, seed=2, separation=5.0,
                                noise_std=0.5)
  test = make_gaussian_mixture(6000, 8, 3, seed=2, separation=5.0,
                               noise_std=0.5, split="test")
  # Independent samples ...
  assert not np.array_equal(train.images, test.images)
  for ds in (train, test):  # ... of the same task.
    for c in range(3):
      np.testing.assert_allclose(ds.images[ds.labels == c].mean(0), means[c],
                                 atol=0.05)
      np.testing.assert_allclose(ds.images[ds.labels == c].std(0), 0.5,
                                 atol=0.05)
  # Well separated: the Bayes rule (nearest mean) is almost always right.
  bayes = np.argmin(((test.images[:, None] - means[None]) ** 2).sum(-1), 1)
  assert np.mean(bayes == test.labels) > 0.99


@pytest.mark.parametrize("hidden", [None, 32])
def test_teacher_student_labels_are_teacher_argmax(hidden):
  train = make_teacher_student(500, 10, 5, seed=3, hidden=hidden)
  test = make_teacher_student(500, 10, 5, seed=3, hidden=hidden, split="test")
  params = teacher_params(10, 5, seed=3, hidden=hidden)
  for ds in (train, test):
    assert ds.images.shape == (500, 10) and ds.images.dtype == np.float32
    np.testing.assert_array_equal(
        ds.labels, np.argmax(teacher_logits(params, ds.images), 1))
    assert len(np.unique(ds.labels)) == 5
  assert not np.array_equal(train.images, test.images)
  assert set(params) == ({"w"} if hidden is None else {"w1", "w2"})


@pytest.mark.parametrize(
    "make, kwargs, match",
    [
        (make_gaussian_mixture, {"n": 0}, "n must be >= 1, got 0"),
        (make_gaussian_mixture, {"num_classes": 1}, "num_classes"),
        (make_gaussian_mixture, {"split": "val"},
         "split must be one of .*'val'"),
        (make_gaussian_mixture, {"noise_std": 0.0}, "noise_std"),
        (make_teacher_student, {"seed": -1}, "seed"),
        (make_teacher_student, {"dim": 0}, "dim"),
        (make_teacher_student, {"hidden": 0}, "hidden"),
    ],
)
def test_errors(make, kwargs, match):
  kwargs = {"n": 10, "dim": 3, "num_classes": 2, "seed": 0, **kwargs}
  with pytest.raises(ValueError, match=match):
    make(**kwargs)
