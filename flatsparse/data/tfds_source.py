"""TensorFlow-free loading of a TFDS image-classification split into memory."""

import numpy as np

from flatsparse.data.dataset import Dataset


def load_tfds(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    image_key: str = "image",
    label_key: str = "label",
    max_examples: int | None = None,
) -> Dataset:
  """Downloads (if needed) and materialises a TFDS split as a `Dataset`.

  Uses `tfds.data_source` (random access over ArrayRecord files), which needs
  no TensorFlow, unlike `tfds.load`/`tfds.as_numpy`. The first call needs a
  network connection to download and prepare the dataset into `data_dir`.

  Args:
    name: TFDS dataset name, e.g. "mnist" or "cifar10".
    split: TFDS split, e.g. "train", "test" or "train[:10%]".
    data_dir: TFDS data directory; None uses the TFDS default.
    image_key: Feature holding the images.
    label_key: `ClassLabel` feature holding the labels.
    max_examples: If set (>= 1), keep only the first `max_examples` records.

  Returns:
    A `Dataset` with float32 images (uint8 pixels scaled to [0, 1]) and int32
    labels.

  Raises:
    KeyError: If `image_key` or `label_key` is not a feature of the dataset.
    ValueError: If the label feature has no `num_classes`, `max_examples` is
      invalid, or the images cannot be stacked into one array.
    TypeError: If the images are neither uint8 nor floating point.
  """
  if max_examples is not None and max_examples < 1:
    raise ValueError(f"max_examples must be >= 1 or None, got {max_examples}.")
  # Imported lazily: tensorflow_datasets is slow to import and only needed here.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  source = tfds.data_source(name, split=split, data_dir=data_dir, download=True)
  features = source.dataset_info.features
  for key in (image_key, label_key):
    if key not in features:
      raise KeyError(
          f"{name!r} has no feature {key!r}; available: {sorted(features.keys())}."
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
  # One record at a time: `__getitems__` is not supported by
  # `tfds.testing.mock_data`, and `len` bounds the loop because a mocked source
  # never raises IndexError.
  records = [source[i] for i in range(n)]
  try:
    images = np.stack([np.asarray(r[image_key]) for r in records])
  except ValueError as e:
    raise ValueError(
        f"Images of {name!r}[{split!r}] have different shapes and cannot be "
        "stacked; resize them before using load_tfds."
    ) from e
  labels = np.asarray([r[label_key] for r in records], dtype=np.int32)
  return Dataset(_to_unit_float32(images), labels, int(num_classes))


def _to_unit_float32(images: np.ndarray) -> np.ndarray:
  """Scales uint8 pixels to [0, 1]; float images are assumed already scaled."""
  if images.dtype == np.uint8:
    return images.astype(np.float32) / np.float32(255.0)
  if np.issubdtype(images.dtype, np.floating):
    return images.astype(np.float32)
  raise TypeError(f"Expected uint8 or floating images, got dtype {images.dtype}.")
