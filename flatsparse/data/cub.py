"""CUB-200-2011 with the concepts of concept bottleneck models.

Caltech-UCSD Birds-200-2011 (Wah et al. 2011): 11,788 photographs of 200 bird
species (5,994 train, 5,794 test), each annotated with 312 binary attributes.
The data is not shipped with this library: download ``CUB_200_2011.tgz`` from
Caltech (https://www.vision.caltech.edu/datasets/cub_200_2011/), unpack it and
pass its ``CUB_200_2011`` folder as ``data_dir`` (or set the environment
variable ``CUB_DIR``). The loader reads, in that folder::

  images.txt                  <image_id> <relative path>
  images/<relative path>      the JPEG photographs
  image_class_labels.txt      <image_id> <class_id>  (classes 1..200)
  train_test_split.txt        <image_id> <is_training_image>  (1 or 0)
  attributes/image_attribute_labels.txt
      <image_id> <attribute_id> <is_present> <certainty_id> <time>

Only the first four integers of an annotation line count (a few lines of the
real file carry extra fields). Attribute names come from ``attributes.txt``
(``1 has_bill_shape::curved_(up_or_down)``), which the tarball puts beside the
``CUB_200_2011`` folder; it is looked for in ``data_dir``, in
``data_dir/attributes`` and in the parent of ``data_dir``, and without it the
names are ``attribute_<id>``. ``classes.txt`` is not needed.

**Splits**: "train" and "test" as in ``train_test_split.txt``, in image-id
order; classes are 0-based (``class_id - 1``).

**Concepts**, as preprocessed by Koh et al. (2020; ``generate_new_data.py``
of their code): class-level majority voting over the *training* images only,
so the test split never leaks into the labels. For each class and attribute,
count the class's train images annotated present and those annotated absent,
skipping "absent" annotations of certainty 1 (not visible); the attribute is
present for the class if present >= absent (a tie counts as present). The
attributes present for at least ``min_class_count`` classes are kept (Koh et
al. report 112 for 10), and every image's concepts are its class's vector on
those attributes, packed after the class into labels (N, 1 + k) (see
``concepts.py``). Koh et al. voted on their 80% training part of the official
train split (the rest was validation); this loader votes on the whole official
train split, so its selection may differ slightly from theirs.

Images are decoded with PIL, converted to RGB and resized (bilinear) to
``image_size`` x ``image_size``: float32 NHWC in [0, 1].

References:
  Wah, Branson, Welinder, Perona and Belongie, "The Caltech-UCSD
  Birds-200-2011 dataset", Caltech technical report CNS-TR-2011-001, 2011.
  Koh, Nguyen, Tang, Mussmann, Pierson, Kim and Liang, "Concept bottleneck
  models", ICML 2020 (arXiv:2007.04612).
"""

from collections.abc import Sequence
import functools
import os
from typing import NamedTuple
import warnings

import numpy as np
from PIL import Image

from flatsparse import validation
from flatsparse.data.concepts import pack_concept_labels
from flatsparse.data.dataset import Dataset

__all__ = ["CUB_SPLITS", "load_cub", "cub_concept_names",
           "cub_concept_groups"]

CUB_SPLITS = ("train", "test")
_NOT_VISIBLE = 1  # certainty_id of an attribute the annotator could not see
_ATTRIBUTES = os.path.join("attributes", "image_attribute_labels.txt")
_METADATA = ("images.txt", "image_class_labels.txt", "train_test_split.txt",
             _ATTRIBUTES)


class _Metadata(NamedTuple):
  """The parsed annotation files, images sorted by id."""

  ids: np.ndarray  # (n,) image ids, ascending
  paths: tuple[str, ...]  # (n,) paths relative to images/
  classes: np.ndarray  # (n,) 0-based
  is_train: np.ndarray  # (n,) bool
  majority: np.ndarray  # (num_classes, num_attributes) 0/1, from train only


def _resolve_dir(data_dir: str | os.PathLike | None) -> str:
  """``data_dir``, or ``$CUB_DIR``; raises if neither is set."""
  if data_dir is None:
    data_dir = os.environ.get("CUB_DIR")
    if not data_dir:
      raise ValueError(
          "CUB-200-2011 is not shipped: download CUB_200_2011.tgz from "
          "Caltech, unpack it and pass data_dir= (the CUB_200_2011 folder) "
          "or set the environment variable CUB_DIR.")
  return os.path.abspath(os.fspath(data_dir))


def _require(path: str) -> str:
  """``path`` if it is a file, else a FileNotFoundError naming it."""
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"CUB-200-2011 file not found: {path} (expected the layout of the "
        "CUB_200_2011 folder of CUB_200_2011.tgz; see flatsparse.data.cub).")
  return path


def _lines(path: str):
  """Yields ``(line number, stripped line)`` of the non-blank lines."""
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      line = line.strip()
      if line:
        yield number, line


def _read_pairs(path: str, what: str) -> list[tuple[int, str]]:
  """``(id, rest of line)`` of ``<id> <text>`` lines (text may hold spaces)."""
  pairs = []
  for number, line in _lines(path):
    parts = line.split(None, 1)
    if len(parts) < 2 or not parts[0].isdigit():
      raise ValueError(f"{path}, line {number}: expected '<id> <{what}>', "
                       f"got {line!r}.")
    pairs.append((int(parts[0]), parts[1]))
  return pairs


def _read_ints(path: str, fields: int) -> np.ndarray:
  """int64 ``(lines, fields)``: the first ``fields`` integers of each line.

  numpy's parser reads the 3.7 million annotation lines in a second; where it
  fails, the line-by-line reader finds the line to name in the error.
  """
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", UserWarning)  # An empty file.
      return np.loadtxt(path, np.int64, comments=None, encoding="utf-8",
                        usecols=range(fields), ndmin=2).reshape(-1, fields)
  except ValueError:
    pass
  values = []
  for number, line in _lines(path):
    parts = line.split()
    try:
      if len(parts) < fields:
        raise ValueError
      values.extend(map(int, parts[:fields]))
    except ValueError:
      raise ValueError(f"{path}, line {number}: expected {fields} integers, "
                       f"got {line!r}.") from None
  return np.array(values, np.int64).reshape(-1, fields)


def _lookup(ids: np.ndarray, table: np.ndarray, path: str) -> np.ndarray:
  """Column 1 of ``table`` (id, value rows) for each of ``ids``."""
  values = dict(zip(table[:, 0].tolist(), table[:, 1].tolist()))
  missing = [i for i in ids.tolist() if i not in values]
  if missing:
    raise ValueError(f"{path} lacks image ids {missing[:5]} of images.txt.")
  return np.array([values[i] for i in ids.tolist()], np.int64)


def _check_rows(path: str, table: np.ndarray, bad: np.ndarray,
                what: str) -> None:
  """Raises naming the line of the first row of ``table`` where ``bad``."""
  if bad.any():
    first = int(np.argmax(bad))  # Rows are the non-blank lines, in order.
    number, line = next(
        item for k, item in enumerate(_lines(path)) if k == first)
    raise ValueError(f"{path}, line {number}: expected {what}, got {line!r}.")


@functools.lru_cache(maxsize=2)
def _read_metadata(data_dir: str, _stamp: tuple[int, ...]) -> _Metadata:
  """Parses the annotation files; ``_stamp`` (mtimes, sizes) keys the cache."""
  images_txt, labels_txt, split_txt, attributes_txt = (
      os.path.join(data_dir, name) for name in _METADATA)
  rows = sorted(_read_pairs(images_txt, "relative path"))
  ids = np.array([i for i, _ in rows], np.int64)
  if ids.size == 0 or np.unique(ids).size != ids.size:
    raise ValueError(f"{images_txt} must list distinct image ids, one or "
                     "more.")
  labels = _read_ints(labels_txt, 2)
  _check_rows(labels_txt, labels, labels[:, 1] < 1, "a class id >= 1")
  split = _read_ints(split_txt, 2)
  _check_rows(split_txt, split, (split[:, 1] != 0) & (split[:, 1] != 1),
              "is_training_image 0 or 1")
  classes = _lookup(ids, labels, labels_txt)
  is_train = _lookup(ids, split, split_txt)
  # image_id, attribute_id, is_present, certainty_id per annotation.
  annotations = _read_ints(attributes_txt, 4)
  image, attribute, present, certainty = annotations.T
  row_of = np.full(ids.max() + 2, -1, np.int64)  # The last: unknown ids.
  row_of[ids] = np.arange(ids.size)
  row = row_of[np.where((image >= 0) & (image <= ids.max()), image, -1)]
  _check_rows(attributes_txt, annotations, row < 0,
              f"an image id of {images_txt}")
  _check_rows(attributes_txt, annotations, attribute < 1,
              "an attribute id >= 1")
  _check_rows(attributes_txt, annotations, (present != 0) & (present != 1),
              "is_present 0 or 1")
  num_classes = int(classes.max())
  num_attributes = int(attribute.max()) if attribute.size else 0
  votes = np.zeros((num_classes, num_attributes, 2), np.int64)
  counted = (is_train[row] == 1) & ~(
      (present == 0) & (certainty == _NOT_VISIBLE))
  np.add.at(votes, (classes[row[counted]] - 1, attribute[counted] - 1,
                    present[counted]), 1)
  majority = (votes[..., 1] >= votes[..., 0]).astype(np.int32)
  return _Metadata(ids, tuple(p for _, p in rows), classes - 1,
                   is_train.astype(bool), majority)


def _metadata(data_dir: str | os.PathLike | None) -> tuple[str, _Metadata]:
  """The resolved directory and its (cached) parsed annotations."""
  data_dir = _resolve_dir(data_dir)
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(
        f"CUB-200-2011 directory not found: {data_dir} (expected the "
        "CUB_200_2011 folder of CUB_200_2011.tgz).")
  stats = [os.stat(_require(os.path.join(data_dir, name)))
           for name in _METADATA]
  stamp = tuple(v for s in stats for v in (s.st_mtime_ns, s.st_size))
  return data_dir, _read_metadata(data_dir, stamp)


def _select(meta: _Metadata, min_class_count: int,
            concept_indices: Sequence[int] | None) -> np.ndarray:
  """0-based indices of the concept attributes."""
  num_attributes = meta.majority.shape[1]
  if concept_indices is not None:
    indices = np.asarray(concept_indices, np.int64).reshape(-1)
    if indices.size == 0 or (indices < 0).any() or (
        indices >= num_attributes).any():
      raise ValueError(f"concept_indices must be non-empty 0-based indices "
                       f"below {num_attributes}, got {concept_indices!r}.")
    return indices
  validation.check_count("min_class_count", min_class_count, minimum=0)
  indices = np.flatnonzero(meta.majority.sum(0) >= min_class_count)
  if indices.size == 0:
    raise ValueError(f"No attribute is present (by class majority) in at "
                     f"least min_class_count={min_class_count} classes.")
  return indices


def _load_image(path: str, image_size: int) -> np.ndarray:
  """float32 (s, s, 3) in [0, 1] of the image file at ``path``."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"CUB-200-2011 image not found: {path}.")
  with Image.open(path) as image:
    image = image.convert("RGB").resize((image_size, image_size),
                                        Image.Resampling.BILINEAR)
    return np.asarray(image, np.float32) / np.float32(255.0)


def load_cub(split: str, data_dir: str | os.PathLike | None = None, *,
             image_size: int = 224, min_class_count: int = 10,
             concept_indices: Sequence[int] | None = None,
             max_examples: int | None = None) -> Dataset:
  """A split of CUB-200-2011 with its class-level concepts (module docstring).

  Args:
    split: "train" or "test".
    data_dir: The ``CUB_200_2011`` folder; None reads ``$CUB_DIR``.
    image_size: Side of the resized square images.
    min_class_count: Keep the attributes present (by class majority over the
      train split) in at least this many classes.
    concept_indices: 0-based attribute indices (of the 312) to use instead of
      the ``min_class_count`` selection, in this order.
    max_examples: If set, only the first this many images of the split (in
      image-id order).

  Returns:
    ``Dataset(images float32 (N, s, s, 3), labels int32 (N, 1 + k), C)``:
    column 0 of the labels the 0-based class, then the k 0/1 concepts; C the
    largest class id (200).

  Raises:
    ValueError: for an unknown split, a bad option, no ``data_dir`` and no
      ``$CUB_DIR``, or a malformed file (the message names file and line).
    FileNotFoundError: for a missing file or image (the message names it).
  """
  validation.check_choice("split", split, CUB_SPLITS)
  validation.check_count("image_size", image_size)
  if max_examples is not None:
    validation.check_count("max_examples", max_examples, minimum=0)
  data_dir, meta = _metadata(data_dir)
  indices = _select(meta, min_class_count, concept_indices)
  rows = np.flatnonzero(meta.is_train == (split == "train"))[:max_examples]
  images = np.empty((rows.size, image_size, image_size, 3), np.float32)
  for out, row in enumerate(rows):
    images[out] = _load_image(
        os.path.join(data_dir, "images", meta.paths[row]), image_size)
  classes = meta.classes[rows]
  concepts = meta.majority[classes][:, indices]
  return Dataset(images, pack_concept_labels(classes, concepts),
                 meta.majority.shape[0])


def _attribute_names(data_dir: str) -> dict[int, str]:
  """``{attribute_id: name}`` from the first ``attributes.txt`` found."""
  for path in (os.path.join(data_dir, "attributes.txt"),
               os.path.join(data_dir, "attributes", "attributes.txt"),
               os.path.join(os.path.dirname(data_dir), "attributes.txt")):
    if os.path.isfile(path):
      return dict(_read_pairs(path, "name"))
  return {}


def cub_concept_names(data_dir: str | os.PathLike | None = None, *,
                      min_class_count: int = 10,
                      concept_indices: Sequence[int] | None = None
                      ) -> list[str]:
  """Names of the concepts ``load_cub`` selects with the same options.

  Args:
    data_dir: As for ``load_cub``.
    min_class_count: As for ``load_cub``.
    concept_indices: As for ``load_cub``.

  Returns:
    One name per concept, from ``attributes.txt`` (e.g.
    ``has_bill_shape::curved_(up_or_down)``), or ``attribute_<id>`` (1-based
    id) where that file or the id is missing.
  """
  data_dir, meta = _metadata(data_dir)
  names = _attribute_names(data_dir)
  return [names.get(i + 1, f"attribute_{i + 1}")
          for i in _select(meta, min_class_count, concept_indices).tolist()]


def cub_concept_groups(names: Sequence[str]) -> list[list[int]]:
  """Concept indices grouped by the name's prefix before ``::``.

  ``has_bill_shape::curved`` and ``has_bill_shape::dagger`` form one group
  (for group-level interventions); a name without ``::`` is its own prefix.
  Groups are ordered by their first concept.

  Args:
    names: Concept names, e.g. from ``cub_concept_names``.

  Returns:
    Lists of indices into ``names``.
  """
  groups: dict[str, list[int]] = {}
  for index, name in enumerate(names):
    groups.setdefault(name.split("::", 1)[0], []).append(index)
  return list(groups.values())
