"""Synthetic classification tasks with known ground truth.

A task is fixed by its ``seed`` (the mixture means or the teacher's weights);
the "train" and "test" splits are independent samples from the same task.
Features are float32 vectors of shape (N, dim), not images.
"""

import numpy as np

from flatsparse.data.dataset import Dataset

_SPLITS = ("train", "test")
_TASK_STREAM = 0  # default_rng([seed, stream]): task parameters ...
_SAMPLE_STREAMS = {"train": 1, "test": 2}  # ... and each split's samples.


def _check(n: int, dim: int, num_classes: int, seed: int, split: str) -> None:
  if n < 1:
    raise ValueError(f"n must be >= 1, got {n}.")
  if dim < 1:
    raise ValueError(f"dim must be >= 1, got {dim}.")
  if num_classes < 2:
    raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
  if seed < 0:
    raise ValueError(f"seed must be non-negative, got {seed}.")
  if split not in _SPLITS:
    raise ValueError(f"split must be one of {_SPLITS}, got {split!r}.")


def gaussian_mixture_means(
    dim: int, num_classes: int, seed: int, *, separation: float = 4.0
) -> np.ndarray:
  """The class means of ``make_gaussian_mixture``'s task.

  Each mean is ``separation`` times an independent uniformly random unit
  vector, so two means are about ``separation * sqrt(2)`` apart.

  Args:
    dim: Feature dimension.
    num_classes: Number of classes.
    seed: Task seed.
    separation: Norm of every mean.

  Returns:
    float64 array of shape (num_classes, dim).
  """
  rng = np.random.default_rng([seed, _TASK_STREAM])
  directions = rng.standard_normal((num_classes, dim))
  directions /= np.linalg.norm(directions, axis=1, keepdims=True)
  return separation * directions


def make_gaussian_mixture(
    n: int,
    dim: int,
    num_classes: int,
    seed: int,
    *,
    split: str = "train",
    separation: float = 4.0,
    noise_std: float = 1.0,
) -> Dataset:
  """Samples an isotropic Gaussian mixture with balanced classes.

  Example ``i`` has class ``y_i`` and features ``means[y_i] + noise_std * z_i``,
  ``z_i ~ N(0, I)``, with ``means = gaussian_mixture_means(...)``. Class counts
  are exact: ``n // num_classes`` or one more (in random order), so the Bayes
  classifier is ``argmin_c |x - means[c]|`` and its accuracy is known.

  Args:
    n: Number of examples.
    dim: Feature dimension.
    num_classes: Number of classes, >= 2.
    seed: Task seed (means); the same seed gives the same task in every split.
    split: "train" or "test": independent samples of the same task.
    separation: Norm of every class mean.
    noise_std: Standard deviation of the noise around the means, > 0.

  Returns:
    A ``Dataset`` with float32 features (n, dim) and int32 labels.

  Raises:
    ValueError: If an argument is out of range.
  """
  _check(n, dim, num_classes, seed, split)
  if noise_std <= 0:
    raise ValueError(f"noise_std must be > 0, got {noise_std}.")
  means = gaussian_mixture_means(dim, num_classes, seed, separation=separation)
  rng = np.random.default_rng([seed, _SAMPLE_STREAMS[split]])
  labels = rng.permutation(np.arange(n) % num_classes).astype(np.int32)
  x = means[labels] + noise_std * rng.standard_normal((n, dim))
  return Dataset(x.astype(np.float32), labels, num_classes)


def teacher_params(
    dim: int, num_classes: int, seed: int, *, hidden: int | None = None
) -> dict[str, np.ndarray]:
  """The weights of ``make_teacher_student``'s teacher.

  Linear (``hidden=None``): ``{"w": (dim, C)}`` with entries N(0, 1/dim).
  MLP: ``{"w1": (dim, hidden), "w2": (hidden, C)}``, entries N(0, 2/dim) and
  N(0, 1/hidden) (He / LeCun scaling); no biases.

  Args:
    dim: Input dimension.
    num_classes: Number of classes (teacher outputs).
    seed: Task seed.
    hidden: Hidden width of a one-hidden-layer ReLU teacher; None: linear.

  Returns:
    A dict of float64 arrays.
  """
  if hidden is not None and hidden < 1:
    raise ValueError(f"hidden must be >= 1 or None, got {hidden}.")
  rng = np.random.default_rng([seed, _TASK_STREAM])
  if hidden is None:
    return {"w": rng.standard_normal((dim, num_classes)) / np.sqrt(dim)}
  return {
      "w1": rng.standard_normal((dim, hidden)) * np.sqrt(2.0 / dim),
      "w2": rng.standard_normal((hidden, num_classes)) / np.sqrt(hidden),
  }


def teacher_logits(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
  """The teacher's logits for inputs ``x`` of shape (N, dim)."""
  x = np.asarray(x, np.float64)
  if "w" in params:
    return x @ params["w"]
  return np.maximum(x @ params["w1"], 0.0) @ params["w2"]


def make_teacher_student(
    n: int,
    dim: int,
    num_classes: int,
    seed: int,
    *,
    split: str = "train",
    hidden: int | None = None,
) -> Dataset:
  """Samples inputs ``x ~ N(0, I)`` labelled by a random teacher network.

  Labels are exactly ``argmax(teacher_logits(teacher_params(...), x))`` (float64
  arithmetic on the float32 features returned), so a student of the same
  architecture can reach zero error. Classes are not forced to balance.

  Args:
    n: Number of examples.
    dim: Input dimension.
    num_classes: Number of classes, >= 2.
    seed: Task seed (teacher); the same seed gives the same teacher in every
      split.
    split: "train" or "test": independent samples of the same task.
    hidden: Hidden width of a one-hidden-layer ReLU teacher; None: linear.

  Returns:
    A ``Dataset`` with float32 features (n, dim) and int32 labels.

  Raises:
    ValueError: If an argument is out of range.
  """
  _check(n, dim, num_classes, seed, split)
  params = teacher_params(dim, num_classes, seed, hidden=hidden)
  rng = np.random.default_rng([seed, _SAMPLE_STREAMS[split]])
  x = rng.standard_normal((n, dim)).astype(np.float32)
  labels = np.argmax(teacher_logits(params, x), axis=1).astype(np.int32)
  return Dataset(x, labels, num_classes)
