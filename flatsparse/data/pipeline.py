"""Deterministic, resumable batches for training and exact evaluation.

``Loader`` turns a train split (and optionally a test split) into dict batches
``{"image", "label"}`` (plus ``"mask"`` for evaluation) of numpy arrays;
``shard_batch`` places one on a device mesh.

Determinism and resume: the training batch at global step ``s`` is a pure
function of ``(seed, s)``. With ``E`` steps per epoch it holds the examples
``permutation[(s % E) * B : (s % E + 1) * B]`` of epoch ``s // E``, where
``permutation = np.random.default_rng([seed, s // E]).permutation(N)`` (the
permutation ``iterate_batches`` uses), and it is augmented with
``np.random.default_rng([seed, s, _AUGMENT_STREAM])``. So resuming from a
checkpoint needs only the step count: ``train_batches(seed, start_step=s)``
yields exactly what an uninterrupted run would have seen from step ``s`` on.
"""

from collections.abc import Callable, Iterator
import math

import jax
import numpy as np

from flatsparse.data import transforms
from flatsparse.data.batching import check_batch_size
from flatsparse.data.dataset import Dataset
from flatsparse.data.dataset import ExampleSource

Batch = dict[str, np.ndarray]
Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]
_AUGMENT_STREAM = 0xA06  # Non-zero: keeps the entropy lists of streams apart.
_SPLITS = ("train", "test")


def _labels(labels: np.ndarray) -> np.ndarray:
  """Integer class labels as int32; real-valued targets as float32."""
  labels = np.asarray(labels)
  if np.issubdtype(labels.dtype, np.floating):
    return labels.astype(np.float32, copy=False)
  return labels.astype(np.int32, copy=False)


def _check_rows(rows: slice | None, batch_size: int) -> slice:
  if rows is None:
    return slice(0, batch_size)
  if (rows.step not in (None, 1) or rows.start is None or rows.stop is None
      or not 0 <= rows.start < rows.stop <= batch_size):
    raise ValueError(f"rows must be a slice start:stop with 0 <= start < "
                     f"stop <= {batch_size}, got {rows}.")
  return rows


class _ArraySource:
  """``ExampleSource`` view of an in-memory ``Dataset``."""

  def __init__(self, ds: Dataset):
    if ds.images.shape[0] != ds.labels.shape[0]:
      raise ValueError(
          f"Dataset has {ds.images.shape[0]} images but "
          f"{ds.labels.shape[0]} labels."
      )
    self.ds, self.num_classes = ds, ds.num_classes

  def __len__(self) -> int:
    return int(self.ds.labels.shape[0])

  def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return self.ds.images[indices], self.ds.labels[indices]


def _as_source(data: Dataset | ExampleSource, name: str) -> ExampleSource:
  if isinstance(data, Dataset):
    source = _ArraySource(data)
  elif isinstance(data, ExampleSource):
    source = data
  else:
    raise TypeError(
        f"{name} must be a Dataset or an ExampleSource (num_classes, __len__, "
        f"get), got {type(data).__name__}."
    )
  if len(source) == 0:
    raise ValueError(f"{name} is empty.")
  return source


class Loader:
  """Seeded numpy batches of a train split and exact evaluation batches.

  Pipeline of a training batch: gather -> augment (optional) -> normalize
  (optional). Evaluation batches are gathered in order, normalized, never
  augmented, and padded to a full batch with a mask. Integer inputs (token
  ids) are never normalized nor cast: they come back as they are stored.

  Example::

    loader = Loader(load_dataset("cifar10", "train"),
                    load_dataset("cifar10", "test"),
                    batch_size=128, augment=True, normalize=True)
    for step, batch in zip(range(start, num_steps),
                           loader.train_batches(seed, start)):
      state = train_step(state, shard_batch(batch, sharding))
    for batch in loader.eval_batches():
      sums = eval_step(state, batch)   # weight every example by batch["mask"]

  Attributes:
    batch_size: Training batch size.
    num_classes: Number of classes of the train split.
    steps_per_epoch: Training batches per pass over the train split.
    mean, std: Per-channel normalization constants (float32), or None.
  """

  def __init__(
      self,
      train: Dataset | ExampleSource,
      test: Dataset | ExampleSource | None = None,
      *,
      batch_size: int,
      shuffle: bool = True,
      drop_remainder: bool = True,
      augment: bool | Augment = False,
      crop_padding: int = 4,
      pad_mode: str = "constant",
      normalize: bool | tuple[np.ndarray, np.ndarray] = False,
  ):
    """Validates the arguments and fixes the normalization constants.

    Args:
      train: Split for ``train_batches`` (a ``Dataset`` or an
        ``ExampleSource``).
      test: Optional split for ``eval_batches(split="test")``.
      batch_size: Training batch size, >= 1 (and <= the train size when
        ``drop_remainder``).
      shuffle: Whether to permute the train split each epoch.
      drop_remainder: Whether to drop each epoch's last, partial batch (all
        batches then have ``batch_size`` examples); else it is yielded smaller.
      augment: False; True for ``random_crop_flip`` (NHWC images); or a
        function ``(images, rng) -> images`` drawing only from ``rng``.
      crop_padding: ``padding`` of ``random_crop_flip`` when ``augment`` is
        True.
      pad_mode: ``pad_mode`` of ``random_crop_flip`` ("constant" zeros or
        "reflect").
      normalize: False; True to use ``channel_stats`` of ``train`` (a
        ``Dataset``); or explicit ``(mean, std)`` per channel.

    Raises:
      ValueError: If an argument is out of range.
      TypeError: If a split has the wrong type, or ``normalize=True`` with a
        train split that is not an in-memory ``Dataset``.
    """
    self._train = _as_source(train, "train")
    self._test = None if test is None else _as_source(test, "test")
    n = len(self._train)
    check_batch_size(batch_size, n, drop_remainder, "train")
    self.batch_size = batch_size
    self.num_classes = self._train.num_classes
    self.steps_per_epoch = (
        n // batch_size if drop_remainder else math.ceil(n / batch_size)
    )
    self._shuffle = shuffle
    if augment is True:
      sample = self._train.get(np.arange(1))[0]
      if sample.ndim != 4:
        raise ValueError(
            "augment=True needs NHWC images, the train split has images of "
            f"shape {sample.shape[1:]}."
        )
      # Validates crop_padding and pad_mode now rather than at the first batch.
      transforms.random_crop_flip(
          sample, np.random.default_rng(0), crop_padding, pad_mode=pad_mode
      )
      self._augment = lambda x, rng: transforms.random_crop_flip(
          x, rng, crop_padding, pad_mode=pad_mode
      )
    elif augment is False or augment is None:
      self._augment = None
    elif callable(augment):
      self._augment = augment
    else:
      raise TypeError(f"augment must be a bool or a callable, got {augment!r}.")
    if normalize is True:
      if not isinstance(train, Dataset):
        raise TypeError(
            "normalize=True computes channel_stats of an in-memory Dataset; "
            f"the train split is a {type(train).__name__}: pass (mean, std)."
        )
      self.mean, self.std = transforms.channel_stats(train)
    elif normalize is False or normalize is None:
      self.mean = self.std = None
    else:
      mean, std = normalize
      self.mean = np.asarray(mean, np.float32).reshape(-1)
      self.std = np.asarray(std, np.float32).reshape(-1)
      # Checks the shapes and std > 0 now rather than at the first batch.
      transforms.normalize(self._train.get(np.arange(1))[0], self.mean,
                           self.std)
    self._epoch_cache: tuple[int, int, np.ndarray] | None = None

  def _inputs(self, images: np.ndarray) -> np.ndarray:
    """Float inputs normalized, as float32; integer inputs (token ids) as
    they are."""
    if np.issubdtype(images.dtype, np.integer):
      return images
    if self.mean is not None:
      images = transforms.normalize(images, self.mean, self.std)
    return images.astype(np.float32, copy=False)

  def _order(self, seed: int, epoch: int) -> np.ndarray:
    """The example order of ``epoch``, cached for the epoch being read."""
    n = len(self._train)
    if not self._shuffle:
      return np.arange(n)
    if self._epoch_cache is None or self._epoch_cache[:2] != (seed, epoch):
      order = np.random.default_rng([seed, epoch]).permutation(n)
      self._epoch_cache = (seed, epoch, order)
    return self._epoch_cache[2]

  def train_batch(self, seed: int, step: int,
                  rows: slice | None = None) -> Batch:
    """The training batch at global step ``step`` (see the module docstring).

    Args:
      seed: Non-negative seed of the shuffling and augmentation.
      step: Global step index, >= 0.
      rows: Only these rows of the global batch (a process's share in a
        multi-host run, ``process_rows``); the others are not read. Each
        row is the same example as in the full batch; augmentation draws
        for the rows read (the same as the full batch's when ``rows`` is
        None).

    Returns:
      ``{"image": float32 array, "label": int32 array}`` (float32 labels for
      real-valued targets).

    Raises:
      ValueError: If ``seed`` or ``step`` is negative.
    """
    if seed < 0:
      raise ValueError(f"seed must be non-negative, got {seed}.")
    if step < 0:
      raise ValueError(f"step must be non-negative, got {step}.")
    epoch, position = divmod(step, self.steps_per_epoch)
    start = position * self.batch_size
    rows = _check_rows(rows, self.batch_size)
    indices = self._order(seed, epoch)[start : start + self.batch_size][rows]
    images, labels = self._train.get(indices)
    if self._augment is not None:
      rng = np.random.default_rng([seed, step, _AUGMENT_STREAM])
      images = self._augment(images, rng)
    return {"image": self._inputs(images),
            "label": _labels(labels)}

  def example_batch(self, size: int = 1) -> Batch:
    """The first ``size`` train examples, normalized, never augmented (e.g.
    the sample input that initializes a model)."""
    images, labels = self._train.get(np.arange(size))
    return {"image": self._inputs(images),
            "label": _labels(labels)}

  def train_batches(
      self, seed: int, start_step: int = 0, num_steps: int | None = None,
      rows: slice | None = None
  ) -> Iterator[Batch]:
    """Yields the training batches of steps ``start_step, start_step + 1, ...``.

    Resuming at step ``k`` gives the same batches as skipping the first ``k`` of
    an iterator started at 0, without reading them.

    Args:
      seed: Non-negative seed of the shuffling and augmentation.
      start_step: Global step of the first batch, >= 0 (the number of steps a
        checkpoint has done).
      num_steps: How many batches to yield; None: forever.
      rows: As in ``train_batch``.

    Returns:
      An iterator of ``train_batch(seed, step, rows)``.

    Raises:
      ValueError: If an argument is negative (raised by this call, before any
        ``next()``).
    """
    if seed < 0:
      raise ValueError(f"seed must be non-negative, got {seed}.")
    if start_step < 0:
      raise ValueError(f"start_step must be non-negative, got {start_step}.")
    if num_steps is not None and num_steps < 0:
      raise ValueError(f"num_steps must be >= 0 or None, got {num_steps}.")
    _check_rows(rows, self.batch_size)

    def generate():
      step = start_step
      while num_steps is None or step < start_step + num_steps:
        yield self.train_batch(seed, step, rows)
        step += 1

    return generate()

  def num_eval_examples(self, split: str = "test") -> int:
    """Number of real examples ``eval_batches(split=split)`` covers."""
    return len(self._eval_source(split))

  def _eval_source(self, split: str) -> ExampleSource:
    if split not in _SPLITS:
      raise ValueError(f"split must be one of {_SPLITS}, got {split!r}.")
    if split == "test" and self._test is None:
      raise ValueError(
          "eval_batches(split='test') needs a Loader built with a test split."
      )
    return self._train if split == "train" else self._test

  def eval_batches(
      self, batch_size: int | None = None, *, split: str = "test",
      rows: slice | None = None
  ) -> Iterator[Batch]:
    """Yields every example of a split once, in order, in full-size batches.

    The last batch is padded to ``batch_size`` with zero images and label 0,
    and ``"mask"`` (float32, 1 real / 0 padding) marks the real examples, so
    ``sum(mask * correct) / sum(mask)`` is the exact accuracy and every batch
    has one shape (one compilation).

    Args:
      batch_size: Batch size, >= 1; None uses the training batch size.
      split: "test" (the test split) or "train" (the train split, e.g. for
        train accuracy; not augmented).
      rows: Only these rows of each (padded) batch, as in ``train_batch``.

    Returns:
      An iterator of ``{"image", "label", "mask"}`` batches.

    Raises:
      ValueError: If ``batch_size`` or ``split`` is invalid, or there is no test
        split (raised by this call, before any ``next()``).
    """
    batch_size = self.batch_size if batch_size is None else batch_size
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    source = self._eval_source(split)
    rows = _check_rows(rows, batch_size)
    size = rows.stop - rows.start

    def generate():
      n = len(source)
      for start in range(0, n, batch_size):
        first = min(start + rows.start, n)
        images, labels = source.get(
            np.arange(first, min(start + rows.stop, n)))
        real = labels.shape[0]
        pad = size - real
        if pad:
          if not real:  # a share of nothing but padding: the shapes of one
            images, labels = source.get(np.arange(1))
            images, labels = images[:0], labels[:0]
          padding = np.zeros((pad, *images.shape[1:]), images.dtype)
          images = np.concatenate([images, padding])
          labels = np.concatenate(
              [labels, np.zeros((pad, *labels.shape[1:]), labels.dtype)])
        mask = np.zeros(size, np.float32)
        mask[:real] = 1.0
        yield {"image": self._inputs(images),
               "label": _labels(labels), "mask": mask}

    return generate()


def data_sharding(mesh: jax.sharding.Mesh,
                  axis: str | tuple[str, ...] = "data"):
  """``NamedSharding`` that splits the batch (leading) axis over ``axis``.

  Args:
    mesh: The device mesh.
    axis: Mesh axis name, or a tuple of names (e.g. ("replica", "data")), the
      batch is split over; other mesh axes hold replicas.

  Returns:
    ``NamedSharding(mesh, PartitionSpec(axis))``.

  Raises:
    ValueError: If an axis is not a mesh axis.
  """
  names = (axis,) if isinstance(axis, str) else tuple(axis)
  unknown = [a for a in names if a not in mesh.axis_names]
  if unknown:
    raise ValueError(
        f"Unknown mesh axes {unknown}; the mesh has {mesh.axis_names}."
    )
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))


def put_global(x: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """Places one global host array with ``sharding``, on one or many hosts."""
  if jax.process_count() == 1:
    return jax.device_put(x, sharding)
  # Every process holds the same global batch (the Loader is deterministic) and
  # supplies the shards of its own devices.
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def process_rows(sharding: jax.sharding.Sharding,
                 batch_size: int) -> slice | None:
  """The rows of a global batch of ``batch_size`` this process's devices hold.

  None in a single-process run (the process holds every row). With several
  processes, each reads only its rows (``Loader.train_batch(rows=...)``) and
  ``shard_batch(..., global_batch_size=batch_size)`` assembles the global
  array.

  Raises:
    ValueError: If this process's rows are not one contiguous range (a mesh
      whose device order interleaves processes).
  """
  if jax.process_count() == 1:
    return None
  indices = sharding.addressable_devices_indices_map((batch_size,)).values()
  spans = sorted({(i[0].indices(batch_size)[:2]) for i in indices})
  for (_, stop), (start, _) in zip(spans, spans[1:]):
    if stop != start:
      raise ValueError(
          f"Process {jax.process_index()} holds rows {spans} of the batch, "
          "not one contiguous range; order the mesh's devices by process.")
  return slice(spans[0][0], spans[-1][1])


def shard_batch(batch: Batch, sharding: jax.sharding.Sharding,
                global_batch_size: int | None = None
                ) -> dict[str, jax.Array]:
  """Places a numpy batch on devices, split along its leading (batch) axis.

  Put every batch in place with this BEFORE passing it to a jitted step that
  runs on a mesh: on simulated CPU devices, un-placed inputs can deadlock the
  collectives (WORKSPACE.md, "Multi-device rules"), and elsewhere they
  cost an extra transfer inside the step.

  Without ``global_batch_size``, ``batch`` is the GLOBAL batch: with several
  processes (multi-host), every process passes the same global batch (a
  ``Loader`` with the same seed gives it) and contributes the shards of its
  own devices. With ``global_batch_size``, ``batch`` holds only this process's
  rows (``process_rows``), so no process reads the others' examples.

  Args:
    batch: Dict of numpy arrays with the same leading size, e.g. from
      ``Loader.train_batches`` or ``Loader.eval_batches``.
    sharding: Typically ``data_sharding(mesh)``, i.e. a ``NamedSharding`` whose
      spec names only the leading axis, so it fits arrays of every rank.
    global_batch_size: The global batch's size when ``batch`` holds only this
      process's rows; None when it is the global batch.

  Returns:
    A dict of ``jax.Array``s with the same keys.

  Raises:
    ValueError: If the leading sizes differ or are not divisible by the
      number of shards.
  """
  sizes = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in batch.items()}
  if None in sizes.values() or len(set(sizes.values())) > 1:
    raise ValueError(
        f"Every entry of batch needs the same leading size, got {sizes}."
    )
  out = {}
  for key, value in batch.items():
    value = np.asarray(value)
    shape = (value.shape if global_batch_size is None
             else (global_batch_size, *value.shape[1:]))
    try:
      sharding.shard_shape(shape)
    except ValueError as e:
      raise ValueError(
          f"batch[{key!r}] of shape {value.shape} cannot be split by "
          f"{sharding}: the batch size must be divisible by the number of "
          "devices along the data axes."
      ) from e
    if global_batch_size is None:
      out[key] = put_global(value, sharding)
    else:  # this process's rows only
      out[key] = jax.make_array_from_process_local_data(
          sharding, value, (global_batch_size, *value.shape[1:]))
  return out
