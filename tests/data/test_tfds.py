"""Tests for flatsparse.data.load_tfds, offline through tfds.testing.mock_data.

`MockPolicy.USE_CODE` generates random examples from the dataset's feature spec
in code: it needs neither TensorFlow, network, nor metadata files (the pip
wheel of tensorflow-datasets ships no `testing/metadata`, so `USE_FILES` fails).
"""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from flatsparse.data import load_tfds
from flatsparse.data import num_examples


def _mock(num_examples: int):
  return tfds.testing.mock_data(
      num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE
  )


@pytest.mark.parametrize(
    "name, shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))]
)
def test_shapes_dtypes_and_range(name, shape, tmp_path):
  with _mock(6):
    ds = load_tfds(name, "train", data_dir=str(tmp_path))
  assert ds.images.shape == (6, *shape)
  assert ds.images.dtype == np.float32
  assert ds.labels.shape == (6,) and ds.labels.dtype == np.int32
  assert ds.num_classes == 10
  assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0
  assert ((0 <= ds.labels) & (ds.labels < 10)).all()


def test_matches_raw_records():
  with _mock(4):
    ds = load_tfds("mnist", "test")
    # Each mocked source replays the same seeded examples.
    raw = tfds.data_source("mnist", split="test")
    for i in range(4):
      np.testing.assert_allclose(ds.images[i] * 255.0, raw[i]["image"],
                                 atol=1e-4)
      assert ds.labels[i] == raw[i]["label"]


def test_max_examples():
  with _mock(10):
    assert num_examples(load_tfds("mnist", "train", max_examples=3)) == 3
    assert num_examples(load_tfds("mnist", "train", max_examples=50)) == 10
  with pytest.raises(ValueError, match="max_examples"):
    load_tfds("mnist", "train", max_examples=0)


def test_label_feature_without_num_classes():
  with _mock(2), pytest.raises(ValueError, match="num_classes"):
    load_tfds("cifar10", "train", label_key="id")


def test_unknown_feature_key():
  with _mock(2), pytest.raises(KeyError, match="'digit'"):
    load_tfds("mnist", "train", label_key="digit")


def test_import_is_lazy():
  code = (
      "import sys, flatsparse.data; "
      "assert 'tensorflow_datasets' not in sys.modules; "
      "assert 'tensorflow' not in sys.modules"
  )
  subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
