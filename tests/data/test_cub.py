"""Tests for the CUB-200-2011 loader on a tiny fixture in the real layout.

3 classes of 4 images (ids 1..12; ids 4, 8 and 12 are test images) and 6
attributes. The train annotations give the class-level majority (Koh et al.:
present >= absent, "absent, not visible" annotations skipped)::

        a1 a2 a3 a4 a5 a6
  c1:   1  1  1  0  0  0
  c2:   1  0  1  0  1  1
  c3:   1  0  0  0  1  1     (c3 a5: 1 present, 1 absent, 1 not visible)
  sum:  3  1  2  0  2  2

so min_class_count=2 keeps a1, a3, a5, a6 (0-based 0, 2, 4, 5). Each test
image is annotated with the opposite of its class's vector: counting it would
change c2 a2 (a tie, so present) and with it the selection.
"""

import os
import re
import shutil

import numpy as np
from PIL import Image
import pytest

from flatsparse.data import load_dataset
from flatsparse.data.concepts import split_concept_labels
from flatsparse.data.cub import cub_concept_groups
from flatsparse.data.cub import cub_concept_names
from flatsparse.data.cub import load_cub

MAJORITY = np.array([[1, 1, 1, 0, 0, 0],
                     [1, 0, 1, 0, 1, 1],
                     [1, 0, 0, 0, 1, 1]])
# Per class, the three train images' is_present per attribute (rows a1..a6).
TRAIN_VALUES = [
    [[1, 1, 0], [1, 0, 1], [1, 1, 1], [0, 0, 0], [0, 0, 1], [1, 0, 0]],
    [[1, 1, 1], [1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 1, 0], [0, 1, 1]],
    [[1, 0, 1], [0, 0, 0], [0, 0, 1], [0, 0, 0], [1, 0, 0], [1, 1, 1]],
]
NOT_VISIBLE = {(10, 5)}  # (image id, attribute id) annotated with certainty 1
NAMES = ["has_bill_shape::curved", "has_bill_shape::dagger",
         "has_wing_color::blue", "has_wing_color::red", "has_size::small",
         "has_wing_color::white"]
SELECTED = [0, 2, 4, 5]


def _write(path, lines):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(line + "\n" for line in lines))


@pytest.fixture(scope="module")
def cub_dir(tmp_path_factory):
  """The CUB_200_2011 folder, with attributes.txt beside it."""
  root = tmp_path_factory.mktemp("cub")
  d = root / "CUB_200_2011"
  images, labels, split, annotations = [], [], [], []
  for i in range(1, 13):
    c, k = (i - 1) // 4, (i - 1) % 4
    path = f"{c + 1:03d}.Bird_{c}/Bird_{c}_{i}.jpg"
    (d / "images" / path).parent.mkdir(parents=True, exist_ok=True)
    mode = "L" if i == 2 else "RGB"  # One grey-scale photograph.
    Image.new(mode, (8 + i, 8), (20 * i,) * (1 if mode == "L" else 3)).save(
        d / "images" / path)
    images.append(f"{i} {path}")
    labels.append(f"{i} {c + 1}")
    split.append(f"{i} {int(k < 3)}")
    for a in range(6):
      present = TRAIN_VALUES[c][a][k] if k < 3 else 1 - MAJORITY[c, a]
      certainty = 1 if (i, a + 1) in NOT_VISIBLE else 3 + present
      annotations.append(f"{i} {a + 1} {present} {certainty} 12.5")
  annotations[7] += " 0"  # The real file has a few lines with extra fields.
  _write(d / "images.txt", images)
  _write(d / "image_class_labels.txt", labels)
  _write(d / "train_test_split.txt", split)
  _write(d / "attributes" / "image_attribute_labels.txt", annotations)
  _write(root / "attributes.txt",
         [f"{a + 1} {name}" for a, name in enumerate(NAMES)])
  return d


def _copy(cub_dir, tmp_path):
  """A copy of the fixture that a test may damage."""
  d = tmp_path / "CUB_200_2011"
  shutil.copytree(cub_dir, d)
  return d


def test_concepts_follow_train_majority(cub_dir):
  for split, ids in (("train", [1, 2, 3, 5, 6, 7, 9, 10, 11]),
                     ("test", [4, 8, 12])):
    ds = load_cub(split, cub_dir, image_size=8, min_class_count=2)
    classes, concepts = split_concept_labels(ds.labels)
    want = (np.array(ids) - 1) // 4
    assert ds.labels.dtype == np.int32 and ds.num_classes == 3
    np.testing.assert_array_equal(classes, want)  # 0-based
    np.testing.assert_array_equal(concepts, MAJORITY[want][:, SELECTED])


def test_min_class_count_and_concept_indices(cub_dir):
  def concepts(**kwargs):
    ds = load_cub("train", cub_dir, image_size=4, max_examples=9, **kwargs)
    return split_concept_labels(ds.labels)[1]

  np.testing.assert_array_equal(concepts(min_class_count=3),
                                MAJORITY[[0, 0, 0, 1, 1, 1, 2, 2, 2]][:, [0]])
  assert concepts(min_class_count=1).shape == (9, 5)
  np.testing.assert_array_equal(
      concepts(concept_indices=[3, 1]),
      MAJORITY[[0, 0, 0, 1, 1, 1, 2, 2, 2]][:, [3, 1]])
  with pytest.raises(ValueError, match="concept_indices"):
    concepts(concept_indices=[6])


def test_test_annotations_never_count(cub_dir, tmp_path):
  d = _copy(cub_dir, tmp_path)
  path = d / "attributes" / "image_attribute_labels.txt"
  lines = path.read_text().splitlines()
  for n, line in enumerate(lines):
    i, a, present, certainty = line.split()[:4]
    if int(i) % 4 == 0:  # A test image.
      lines[n] = f"{i} {a} {1 - int(present)} {certainty} 0"
  path.write_text("\n".join(lines) + "\n")
  for split in ("train", "test"):
    np.testing.assert_array_equal(
        load_cub(split, d, image_size=4, min_class_count=2).labels,
        load_cub(split, cub_dir, image_size=4, min_class_count=2).labels)


def test_images_and_max_examples(cub_dir):
  ds = load_cub("train", cub_dir, image_size=6, min_class_count=2,
                max_examples=4)
  assert ds.images.shape == (4, 6, 6, 3) and ds.images.dtype == np.float32
  assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0
  # Solid images: grey 20 * id / 255 in every channel (JPEG is near exact).
  np.testing.assert_allclose(ds.images.mean((1, 2)),
                             np.repeat([[20], [40], [60], [100]], 3, 1) / 255,
                             atol=0.02)
  test = load_cub("test", cub_dir, image_size=3, min_class_count=2)
  assert test.images.shape == (3, 3, 3, 3)


def test_names_and_groups(cub_dir, tmp_path):
  names = cub_concept_names(cub_dir, min_class_count=2)
  assert names == [NAMES[i] for i in SELECTED]
  assert cub_concept_groups(names) == [[0], [1, 3], [2]]
  assert cub_concept_groups(["a::x", "b", "a::y"]) == [[0, 2], [1]]
  d = _copy(cub_dir, tmp_path)  # Without attributes.txt, then inside d.
  assert cub_concept_names(d, concept_indices=[1, 4]) == [
      "attribute_2", "attribute_5"]
  shutil.copy(cub_dir.parent / "attributes.txt", d / "attributes")
  assert cub_concept_names(d, concept_indices=[1]) == [NAMES[1]]


def test_errors_name_the_file_or_line(cub_dir, tmp_path):
  d = _copy(cub_dir, tmp_path)
  missing = d / "train_test_split.txt"
  os.remove(missing)
  with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
    load_cub("train", d)
  shutil.copy(cub_dir / "train_test_split.txt", missing)
  labels = d / "image_class_labels.txt"
  lines = labels.read_text().splitlines()
  lines[2] = "3 x"
  labels.write_text("\n".join(lines) + "\n")
  with pytest.raises(ValueError, match=re.escape(f"{labels}, line 3")):
    load_cub("train", d)
  shutil.copy(cub_dir / "image_class_labels.txt", labels)
  image = d / "images" / "001.Bird_0" / "Bird_0_2.jpg"
  os.remove(image)
  with pytest.raises(FileNotFoundError, match=re.escape(str(image))):
    load_cub("train", d, min_class_count=2)
  with pytest.raises(ValueError, match="'train', 'test'"):
    load_cub("validation", cub_dir)
  with pytest.raises(ValueError, match="min_class_count=10"):
    load_cub("train", cub_dir)  # No attribute is in 10 of the 3 classes.


def test_data_dir_from_environment(cub_dir, monkeypatch):
  monkeypatch.delenv("CUB_DIR", raising=False)
  with pytest.raises(ValueError, match="CUB_DIR"):
    load_cub("test")
  monkeypatch.setenv("CUB_DIR", str(cub_dir))
  assert load_cub("test", image_size=4, min_class_count=2).labels.shape == (
      3, 5)


def test_load_dataset_registry(cub_dir):
  ds = load_dataset("cub", "train", data_dir=str(cub_dir), image_size=8,
                    min_class_count=2)
  assert ds.images.shape == (9, 8, 8, 3) and ds.labels.shape == (9, 5)
