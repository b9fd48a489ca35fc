"""In-memory dataset container shared by all loaders."""

from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np


class Dataset(NamedTuple):
  """A fully materialised split of an image-classification dataset.

  Attributes:
    images: float32 array of shape (N, ...) with values in [0, 1], or int32
      token ids (N, seq) (language modelling; the Loader leaves them as
      they are).
    labels: int32 array of shape (N,) with values in [0, num_classes).
    num_classes: Number of label classes.
  """

  images: np.ndarray
  labels: np.ndarray
  num_classes: int


def num_examples(ds: Dataset) -> int:
  """Returns the number of examples in ``ds``.

  ``len(ds)`` is the tuple length (always 3), hence this helper.

  Args:
    ds: The dataset.

  Returns:
    The leading dimension of ``ds.labels``.
  """
  return int(ds.labels.shape[0])


@runtime_checkable
class ExampleSource(Protocol):
  """Random access to a split too large to hold in memory as a ``Dataset``.

  ``Loader`` accepts a ``Dataset`` or any object with these members, e.g.
  ``TfdsSource``, which decodes records on demand.
  """

  num_classes: int

  def __len__(self) -> int:
    """Number of examples."""

  def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(images, labels)`` of the examples at ``indices``, in order.

    Images are float32 in [0, 1] with one shape for all examples; labels are
    int32.
    """
