"""Deterministic numpy mini-batch iteration over an in-memory ``Dataset``."""

from collections.abc import Iterator
import itertools

import numpy as np

from flatsparse.data.dataset import Dataset
from flatsparse.data.dataset import num_examples


def check_batch_size(
    batch_size: int, n: int, drop_remainder: bool, split: str = "dataset"
) -> None:
  """Raises a ``ValueError`` unless ``batch_size`` yields batches of ``n``.

  Args:
    batch_size: Examples per batch; must be >= 1, and <= ``n`` when
      ``drop_remainder`` is set (else no batch would be produced).
    n: Number of examples of the split.
    drop_remainder: Whether the last, smaller batch of an epoch is dropped.
    split: What the error message calls the split ("the <split> size").
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  if drop_remainder and batch_size > n:
    raise ValueError(
        f"batch_size={batch_size} exceeds the {split} size {n} with "
        "drop_remainder=True, so no batch would be produced."
    )


def iterate_batches(
    ds: Dataset,
    batch_size: int,
    *,
    seed: int,
    num_epochs: int | None = 1,
    shuffle: bool = True,
    drop_remainder: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields (images, labels) mini-batches, epoch after epoch.

  Epoch ``e`` is ordered by ``np.random.default_rng([seed, e]).permutation``, so
  any epoch can be reproduced without replaying the earlier ones.

  Arguments are validated when this is called, not at the first ``next()``.

  Args:
    ds: The dataset to iterate over.
    batch_size: Number of examples per batch, >= 1.
    seed: Non-negative shuffling seed; unused when ``shuffle`` is False.
    num_epochs: Number of passes over ``ds``, >= 1; None loops forever.
    shuffle: Whether to permute the examples in each epoch.
    drop_remainder: Whether to drop the last, smaller batch of each epoch.

  Returns:
    An iterator of ``(images, labels)`` numpy arrays.

  Raises:
    ValueError: If an argument is invalid or ``ds`` is empty.
  """
  n = num_examples(ds)
  if n == 0:
    raise ValueError("Cannot iterate over an empty dataset.")
  check_batch_size(batch_size, n, drop_remainder)
  if num_epochs is not None and num_epochs < 1:
    raise ValueError(f"num_epochs must be >= 1 or None, got {num_epochs}.")
  if seed < 0:
    raise ValueError(f"seed must be non-negative, got {seed}.")
  return _generate(ds, n, batch_size, seed, num_epochs, shuffle, drop_remainder)


def _generate(
    ds: Dataset,
    n: int,
    batch_size: int,
    seed: int,
    num_epochs: int | None,
    shuffle: bool,
    drop_remainder: bool,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  epochs = itertools.count() if num_epochs is None else range(num_epochs)
  stop = n - n % batch_size if drop_remainder else n
  for epoch in epochs:
    order = (
        np.random.default_rng([seed, epoch]).permutation(n)
        if shuffle
        else np.arange(n)
    )
    for start in range(0, stop, batch_size):
      idx = order[start : start + batch_size]
      yield ds.images[idx], ds.labels[idx]
