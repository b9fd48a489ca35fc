"""Tests for flatsparse.data.load_dataset; TFDS offline through mock_data."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from flatsparse.data import add_label_noise
from flatsparse.data import BUILTIN_DATASETS
from flatsparse.data import load_dataset
from flatsparse.data import load_digits
from flatsparse.data import Loader
from flatsparse.data import make_teacher_student
from flatsparse.data import num_examples
from flatsparse.data import TfdsSource


def _mock(num_examples: int):
  return tfds.testing.mock_data(
      num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE
  )


def test_digits_is_nhwc_by_default():
  ds = load_dataset("digits", "test")
  assert ds.images.shape == (359, 8, 8, 1) and ds.images.dtype == np.float32
  np.testing.assert_array_equal(ds.images.reshape(359, 64),
                                load_digits("test").images)
  assert (load_dataset("digits", "train", flatten=True).images.shape
          == (1438, 64))


def test_synthetic_through_registry():
  ds = load_dataset("teacher_student", "test", num_examples=50, dim=6,
                    num_classes=3, seed=2, hidden=8)
  want = make_teacher_student(50, 6, 3, 2, split="test", hidden=8)
  np.testing.assert_array_equal(ds.images, want.images)
  np.testing.assert_array_equal(ds.labels, want.labels)
  gm = load_dataset("gaussian_mixture", "train")
  assert gm.images.shape == (1024, 16) and gm.num_classes == 4


@pytest.mark.parametrize("name", ["cifar10", "tfds:cifar10"])
def test_cifar10_mock_through_load_dataset(name, tmp_path):
  with _mock(12):
    ds = load_dataset(name, "train", data_dir=str(tmp_path))
  assert ds.images.shape == (12, 32, 32, 3) and ds.images.dtype == np.float32
  assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0
  assert ds.labels.dtype == np.int32 and ds.num_classes == 10
  # The full pipeline on it: normalized, augmented, resumable batches.
  loader = Loader(ds, ds, batch_size=5, augment=True, normalize=True)
  batches = list(loader.train_batches(seed=0, num_steps=3))
  assert all(b["image"].shape == (5, 32, 32, 3) for b in batches)
  resumed = next(loader.train_batches(seed=0, start_step=2))
  np.testing.assert_array_equal(resumed["image"], batches[2]["image"])
  assert sum(b["mask"].sum() for b in loader.eval_batches(5)) == 12


def test_cifar100_coarse_labels_and_label_noise():
  with _mock(40):
    clean = load_dataset("cifar100", "train", label_key="coarse_label")
    noisy = load_dataset("cifar100", "train", label_key="coarse_label",
                         label_noise=0.25, noise_seed=5)
  assert clean.num_classes == 20
  np.testing.assert_array_equal(noisy.images, clean.images)
  assert np.sum(noisy.labels != clean.labels) == 10
  # The noisy examples are recoverable from the clean labels and the arguments.
  want, is_noisy = add_label_noise(clean.labels, 20, 0.25, "symmetric", 5)
  np.testing.assert_array_equal(noisy.labels, want)
  np.testing.assert_array_equal(is_noisy, noisy.labels != clean.labels)


def test_asymmetric_noise_option():
  clean = load_dataset("digits", "train")
  noisy = load_dataset("digits", "train", label_noise=0.4,
                       noise_kind="asymmetric", noise_pairs="cifar10")
  flipped = noisy.labels != clean.labels
  assert set(np.unique(clean.labels[flipped])) == {2, 3, 4, 5, 9}
  np.testing.assert_array_equal(
      noisy.labels[flipped],
      [{9: 1, 2: 0, 4: 7, 3: 5, 5: 3}[c] for c in clean.labels[flipped]]
  )


def test_imagenet2012_mock_needs_image_size():
  # Mocked imagenet2012 images have random sizes, like the real ones.
  with _mock(4):
    with pytest.raises(ValueError, match="image_size"):
      load_dataset("imagenet2012", "validation")
    ds = load_dataset("imagenet2012", "validation", image_size=16)
    assert ds.images.shape == (4, 16, 16, 3) and ds.num_classes == 1000
    assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0


def test_tfds_source_with_loader():
  with _mock(30):
    source = TfdsSource("mnist", "train", max_examples=20)
    assert len(source) == 20 and source.num_classes == 10
    loader = Loader(source, batch_size=8, normalize=([0.13], [0.31]))
    batch = loader.train_batch(seed=1, step=3)
    assert batch["image"].shape == (8, 28, 28, 1)
    images, labels = source.get(np.arange(20))
    # Step 3 = epoch 1, batch 1.
    order = np.random.default_rng([1, 1]).permutation(20)[8:16]
    np.testing.assert_array_equal(batch["label"], labels[order])
    np.testing.assert_allclose(batch["image"], (images[order] - 0.13) / 0.31,
                               rtol=1e-5)
    with pytest.raises(IndexError, match=r"\[0, 20\)"):
      source.get([20])
    with pytest.raises(ValueError, match="image_size"):
      TfdsSource("mnist", "train", image_size=0)


def test_unknown_name_lists_known_ones():
  with pytest.raises(ValueError) as exc:
    load_dataset("cifar_10", "train")
  msg = str(exc.value)
  assert "'cifar_10'" in msg and "tfds:" in msg
  for name in BUILTIN_DATASETS:
    assert repr(name) in msg
  assert "Did you mean" in msg and "'cifar10'" in msg


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("digits", {"label_noise": 1.0}, r"label_noise must be in \[0, 1\)"),
        ("digits", {"label_noise": 0.1, "noise_kind": "pair"},
         "noise_kind must be one of"),
        ("digits", {}, "split must be one of .*'validation'"),
        ("gaussian_mixture", {}, "split must be one of .*'validation'"),
    ],
)
def test_errors(name, kwargs, match):
  with pytest.raises(ValueError, match=match):
    load_dataset(name, "validation" if not kwargs else "train", **kwargs)


def test_zero_noise_is_a_no_op():
  a = load_dataset("digits", "test", label_noise=0.0)
  np.testing.assert_array_equal(a.labels, load_digits("test").labels)
  assert num_examples(a) == 359


def test_register_dataset_adds_a_name_and_refuses_to_shadow():
  from flatsparse import data  # pylint: disable=g-import-not-at-top
  calls = []

  def load(split, data_dir, **kwargs):
    calls.append((split, data_dir, kwargs))
    return data.load_dataset("digits", split)

  data.register_dataset("digits_copy_for_test", load, overwrite=True)
  ds = data.load_dataset("digits_copy_for_test", "test", flatten=False)
  assert len(ds.labels) == len(data.load_dataset("digits", "test").labels)
  assert calls == [("test", None, {"flatten": False})]
  with pytest.raises(ValueError, match="already registered"):
    data.register_dataset("digits", load)
