"""In-memory dataset container shared by all loaders."""

from typing import NamedTuple

import numpy as np


class Dataset(NamedTuple):
  """A fully materialised split of an image-classification dataset.

  Attributes:
    images: float32 array of shape (N, ...) with values in [0, 1].
    labels: int32 array of shape (N,) with values in [0, num_classes).
    num_classes: Number of label classes.
  """

  images: np.ndarray
  labels: np.ndarray
  num_classes: int


def num_examples(ds: Dataset) -> int:
  """Returns the number of examples in `ds`.

  `len(ds)` is the tuple length (always 3), hence this helper.

  Args:
    ds: The dataset.

  Returns:
    The leading dimension of `ds.labels`.
  """
  return int(ds.labels.shape[0])
