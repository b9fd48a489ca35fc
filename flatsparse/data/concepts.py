"""Concept-annotated datasets: the label layout, concept noise, and the
synthetic generator of Shin et al. (ICML 2023).

**Label layout.** A concept dataset is an ordinary :class:`Dataset` whose
``labels`` are int32 ``(N, 1 + k)``: column 0 the class, columns ``1..k``
the binary concepts (0/1). The ``Loader`` batches, pads and shards such
labels like any others, so the concept-bottleneck task reads
``batch['label']`` and splits it with :func:`split_concept_labels`.

**Synthetic data** (``load_dataset('cbm_synthetic', split)``), the causal
graph y -> c -> x of the paper's Appendix (and its reference generator):

* per concept a threshold ``alpha_i ~ N(alpha_mean, alpha_std)`` clipped to
  [0, 1]; per class group ``g`` a vector ``beta_g ~ U(0, 1)^k`` and the
  group's concepts ``1[beta_g >= alpha]``;
* the classes of a group (``num_classes / num_class_groups`` of them, 2 by
  default) each flip one distinct random concept of the group's vector, so
  similar classes differ in one concept;
* each example of class ``y``: ``x = W c_y + z`` with ``W`` of shape
  ``(input_dim, k)`` and entries ``N(0, w_std^2)``, ``z ~ N(0, z_std^2 I)``;
* ``samples_per_class`` examples per class (100: 10,000 in all), split
  70/15/15 into "train", "validation", "test", stratified by class.

Variants: ``hidden_fraction`` (the annotations reveal only a random
``round((1 - h) k)`` of the concepts; the inputs still depend on all of
them) and ``flip_probability`` (each example's concepts flip independently
with this probability before ``x`` is drawn: concept diversity within a
class). Concept groups for group-level intervention: :func:`concept_groups`
(``k / group_size`` groups of consecutive concepts; 50 groups of 2 by
default). Everything is a pure function of ``seed``.

**Concept noise** (:func:`flip_concepts`): exactly ``round(rate * N * k)``
(example, concept) entries, chosen uniformly without replacement, flip.

References:
  Shin et al., "A closer look at the intervention procedure of concept
  bottleneck models", ICML 2023 (arXiv:2302.14260).
"""

from __future__ import annotations

import numpy as np

from flatsparse import validation
from flatsparse.data.dataset import Dataset

__all__ = ["SYNTHETIC_SPLITS", "split_concept_labels", "pack_concept_labels",
           "num_concepts", "flip_concepts", "concept_groups",
           "synthetic_class_concepts", "load_concept_synthetic"]

SYNTHETIC_SPLITS = ("train", "validation", "test")
_SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
# default_rng([seed, stream]): one stream per random choice, so changing a
# variant's option does not move the other draws.
_TASK, _WEIGHTS, _SAMPLES, _SPLIT, _HIDDEN, _FLIPS = range(6)


def pack_concept_labels(classes: np.ndarray, concepts: np.ndarray
                        ) -> np.ndarray:
  """int32 ``(N, 1 + k)``: the class in column 0, the 0/1 concepts after."""
  classes = np.asarray(classes)
  concepts = np.asarray(concepts)
  if classes.ndim != 1 or concepts.ndim != 2 or (
      concepts.shape[0] != classes.shape[0]):
    raise ValueError(f"Need classes (N,) and concepts (N, k); got "
                     f"{classes.shape} and {concepts.shape}.")
  if concepts.size and not np.isin(concepts, (0, 1)).all():
    raise ValueError("concepts must be 0/1.")
  return np.concatenate([classes[:, None], concepts], 1).astype(np.int32)


def split_concept_labels(labels):
  """``(classes (N,), concepts (N, k))`` of packed labels (numpy or jax)."""
  if labels.ndim != 2 or labels.shape[1] < 2:
    raise ValueError(
        f"Concept labels are (N, 1 + k) with k >= 1 (class, then concepts); "
        f"got shape {tuple(labels.shape)}.")
  return labels[:, 0], labels[:, 1:]


def num_concepts(ds: Dataset) -> int:
  """k of a concept dataset (labels ``(N, 1 + k)``)."""
  return int(split_concept_labels(ds.labels)[1].shape[1])


def flip_concepts(concepts: np.ndarray, rate: float, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Flips exactly ``round(rate * N * k)`` entries chosen uniformly.

  Args:
    concepts: 0/1 ``(N, k)``.
    rate: Fraction of (example, concept) entries to flip, in [0, 1).
    seed: Non-negative seed.

  Returns:
    ``(noisy, flipped)``: int32 concepts and the bool mask of flipped entries.

  Raises:
    ValueError: for a rate outside [0, 1) or a negative seed.
  """
  validation.check("rate", rate, lambda r: 0.0 <= r < 1.0, "in [0, 1)")
  validation.check_count("seed", seed, minimum=0)
  concepts = np.asarray(concepts).astype(np.int32)
  flipped = np.zeros(concepts.size, bool)
  count = round(rate * concepts.size)
  flipped[np.random.default_rng(seed).choice(concepts.size, count,
                                             replace=False)] = True
  flipped = flipped.reshape(concepts.shape)
  return np.where(flipped, 1 - concepts, concepts), flipped


def concept_groups(k: int, group_size: int = 2) -> np.ndarray:
  """int32 ``(k // group_size, group_size)``: consecutive concepts per group.

  Raises:
    ValueError: if ``group_size`` does not divide ``k``.
  """
  validation.check_count("group_size", group_size)
  if k % group_size:
    raise ValueError(f"group_size {group_size} does not divide the "
                     f"{k} concepts.")
  return np.arange(k, dtype=np.int32).reshape(-1, group_size)


def synthetic_class_concepts(num_concepts: int = 100,
                             num_classes: int = 100,
                             num_class_groups: int = 50,
                             alpha_mean: float = 0.8, alpha_std: float = 0.1,
                             seed: int = 0) -> np.ndarray:
  """int32 ``(num_classes, num_concepts)``: each class's concept vector."""
  if num_classes % num_class_groups:
    raise ValueError(f"num_class_groups {num_class_groups} does not divide "
                     f"num_classes {num_classes}.")
  per_group = num_classes // num_class_groups
  if per_group > num_concepts:
    raise ValueError(f"{per_group} classes per group need as many distinct "
                     f"concepts to flip; num_concepts is {num_concepts}.")
  rng = np.random.default_rng([seed, _TASK])
  alpha = np.clip(rng.normal(alpha_mean, alpha_std, num_concepts), 0, 1)
  beta = rng.uniform(size=(num_class_groups, num_concepts))
  group_concepts = (beta >= alpha).astype(np.int32)
  out = np.repeat(group_concepts, per_group, axis=0)
  for g in range(num_class_groups):
    flips = rng.choice(num_concepts, per_group, replace=False)
    rows = g * per_group + np.arange(per_group)
    out[rows, flips] = 1 - out[rows, flips]
  return out


def _stratified_split(classes: np.ndarray, split: str, rng) -> np.ndarray:
  """Indices of ``split``: 70/15/15 of each class's examples."""
  out = []
  position = SYNTHETIC_SPLITS.index(split)
  for y in np.unique(classes):
    members = rng.permutation(np.flatnonzero(classes == y))
    bounds = np.round(np.cumsum((0,) + _SPLIT_FRACTIONS)
                      * members.size).astype(int)
    out.append(members[bounds[position]:bounds[position + 1]])
  return np.sort(np.concatenate(out))


def load_concept_synthetic(
    split: str, data_dir=None, *, num_concepts: int = 100,
    num_classes: int = 100, input_dim: int = 100,
    num_class_groups: int = 50, samples_per_class: int = 100,
    alpha_mean: float = 0.8, alpha_std: float = 0.1, w_std: float = 0.1,
    z_std: float = 2.0, hidden_fraction: float = 0.0,
    flip_probability: float = 0.0, seed: int = 0) -> Dataset:
  """A split of the synthetic concept data (module docstring).

  Returns:
    ``Dataset(x float32 (n, input_dim), packed labels (n, 1 + k'),
    num_classes)`` with ``k' = num_concepts`` or the revealed count.

  Raises:
    ValueError: for an unknown split or an option out of range.
  """
  del data_dir  # Generated.
  validation.check_choice("split", split, SYNTHETIC_SPLITS)
  for name, value in (("num_concepts", num_concepts), ("input_dim", input_dim),
                      ("samples_per_class", samples_per_class)):
    validation.check_count(name, value)
  validation.check("hidden_fraction", hidden_fraction,
                   lambda h: 0.0 <= h < 1.0, "in [0, 1)")
  validation.check("flip_probability", flip_probability,
                   lambda p: 0.0 <= p <= 1.0, "in [0, 1]")
  class_concepts = synthetic_class_concepts(
      num_concepts, num_classes, num_class_groups, alpha_mean, alpha_std, seed)
  weights = np.random.default_rng([seed, _WEIGHTS]).normal(
      0.0, w_std, (input_dim, num_concepts))
  classes = np.repeat(np.arange(num_classes), samples_per_class)
  concepts = class_concepts[classes]
  if flip_probability:
    flips = np.random.default_rng([seed, _FLIPS]).uniform(
        size=concepts.shape) < flip_probability
    concepts = np.where(flips, 1 - concepts, concepts)
  noise = np.random.default_rng([seed, _SAMPLES]).normal(
      0.0, z_std, (classes.size, input_dim))
  x = (concepts @ weights.T + noise).astype(np.float32)
  rows = _stratified_split(classes, split,
                           np.random.default_rng([seed, _SPLIT]))
  revealed = np.arange(num_concepts)
  if hidden_fraction:
    count = round((1.0 - hidden_fraction) * num_concepts)
    revealed = np.sort(np.random.default_rng([seed, _HIDDEN]).choice(
        num_concepts, count, replace=False))
  return Dataset(x[rows], pack_concept_labels(
      classes[rows], concepts[rows][:, revealed]), num_classes)
