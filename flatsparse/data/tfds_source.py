"""TensorFlow-free access to TFDS image-classification splits: lazy or in
memory."""

from typing import Any

import numpy as np

from flatsparse.data.dataset import Dataset
from flatsparse.data.transforms import center_crop_resize


class TfdsSource:
  """Random access to a TFDS split, decoding records on demand.

  For splits too large for memory (imagenet2012): pass it to ``Loader``, which
  reads only the records of each batch. ``load_tfds`` materialises one instead.

  Uses ``tfds.data_source`` (ArrayRecord files), which reads without
  TensorFlow. The first use downloads and prepares the dataset into
  ``data_dir``; on a user's machine that needs network access, and decoding
  real (PNG/JPEG-encoded) images needs pillow or opencv, as TFDS itself says
  when they are missing. (TFDS encodes numpy images such as MNIST's with
  TensorFlow while preparing them, so the one-time preparation of those may
  need TensorFlow; reading prepared data never does.)

  Attributes:
    name: The TFDS name.
    split: The TFDS split.
    num_classes: ``num_classes`` of the label feature.
  """

  def __init__(
      self,
      name: str,
      split: str,
      *,
      data_dir: str | None = None,
      image_key: str = "image",
      label_key: str = "label",
      image_size: int | None = None,
      max_examples: int | None = None,
  ):
    """Opens (downloading and preparing if needed) a split.

    Args:
      name: TFDS dataset name, e.g. "mnist", "cifar10" or "imagenet2012".
      split: TFDS split, e.g. "train", "test" or "train[:10%]".
      data_dir: TFDS data directory; None uses the TFDS default.
      image_key: Feature holding the images.
      label_key: ``ClassLabel`` feature holding the labels.
      image_size: If set, every image is resized (shorter side to
        ``image_size``, antialiased bilinear) and center-cropped to
        ``image_size`` x ``image_size``: needed for datasets whose images differ
        in size, such as imagenet2012.
      max_examples: If set (>= 1), keep only the first ``max_examples`` records.

    Raises:
      KeyError: If ``image_key`` or ``label_key`` is not a feature of the
        dataset.
      ValueError: If the label feature has no ``num_classes``, an argument is
        invalid, or the split is empty.
    """
    if max_examples is not None and max_examples < 1:
      raise ValueError(
          f"max_examples must be >= 1 or None, got {max_examples}.")
    if image_size is not None and image_size < 1:
      raise ValueError(f"image_size must be >= 1 or None, got {image_size}.")
    # Imported lazily: tensorflow_datasets is slow to import and only needed
    # here.
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    source = tfds.data_source(name, split=split, data_dir=data_dir,
                              download=True)
    features = source.dataset_info.features
    for key in (image_key, label_key):
      if key not in features:
        raise KeyError(
            f"{name!r} has no feature {key!r}; available: "
            f"{sorted(features.keys())}."
        )
    num_classes = getattr(features[label_key], "num_classes", None)
    if num_classes is None:
      raise ValueError(
          f"Feature {label_key!r} of {name!r} is a "
          f"{type(features[label_key]).__name__}, not a ClassLabel: it has no "
          "num_classes."
      )
    n = len(source)
    if max_examples is not None:
      n = min(n, max_examples)
    if n == 0:
      raise ValueError(f"Split {split!r} of {name!r} is empty.")
    self.name, self.split = name, split
    self.num_classes = int(num_classes)
    self._source, self._len = source, n
    self._image_key, self._label_key = image_key, label_key
    self._image_size = image_size

  def __len__(self) -> int:
    return self._len

  def get(self, indices) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(images, labels)`` of the records at ``indices``, in order.

    Args:
      indices: Integer indices in [0, len(self)).

    Returns:
      float32 images (uint8 pixels scaled to [0, 1]) and int32 labels.

    Raises:
      IndexError: If an index is out of range.
      ValueError: If the images differ in shape (and ``image_size`` is None).
    """
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= self._len):
      raise IndexError(
          f"indices must be in [0, {self._len}), got values in "
          f"[{indices.min()}, {indices.max()}]."
      )
    # One record at a time: ``__getitems__`` is not supported by
    # ``tfds.testing.mock_data``, and ``len`` bounds the indices because a
    # mocked source never raises IndexError.
    records = [self._source[int(i)] for i in indices]
    images = [_to_unit_float32(np.asarray(r[self._image_key])) for r in records]
    if self._image_size is not None:
      images = [center_crop_resize(x, self._image_size) for x in images]
    try:
      images = np.stack(images)
    except ValueError as e:
      raise ValueError(
          f"Images of {self.name!r}[{self.split!r}] have different shapes and "
          "cannot be stacked; pass image_size= to resize them."
      ) from e
    labels = np.asarray([r[self._label_key] for r in records], dtype=np.int32)
    return images, labels


def load_tfds(name: str, split: str, **options: Any) -> Dataset:
  """Downloads (if needed) and materialises a TFDS split as a ``Dataset``.

  See ``TfdsSource`` for what the first call needs (network, and pillow or
  opencv to decode real images); reading needs no TensorFlow.

  Args:
    name: TFDS dataset name, e.g. "mnist" or "cifar10".
    split: TFDS split, e.g. "train", "test" or "train[:10%]".
    **options: Keyword arguments of ``TfdsSource``, with its defaults:
      ``data_dir``, ``image_key``, ``label_key``, ``image_size`` (needed when
      image sizes differ) and ``max_examples``.

  Returns:
    A ``Dataset`` with float32 images (uint8 pixels scaled to [0, 1]) and int32
    labels.

  Raises:
    KeyError: If ``image_key`` or ``label_key`` is not a feature of the dataset.
    ValueError: If the label feature has no ``num_classes``, ``max_examples`` is
      invalid, or the images cannot be stacked into one array.
    TypeError: If the images are neither uint8 nor floating point, or an
      option is not an argument of ``TfdsSource``.
  """
  source = TfdsSource(name, split, **options)
  images, labels = source.get(np.arange(len(source)))
  return Dataset(images, labels, source.num_classes)


def _to_unit_float32(images: np.ndarray) -> np.ndarray:
  """Scales uint8 pixels to [0, 1]; float images are assumed already scaled."""
  if images.dtype == np.uint8:
    return images.astype(np.float32) / np.float32(255.0)
  if np.issubdtype(images.dtype, np.floating):
    return images.astype(np.float32)
  raise TypeError(
      f"Expected uint8 or floating images, got dtype {images.dtype}.")
