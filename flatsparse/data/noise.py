"""Synthetic label noise with exact counts, deterministic given a seed.

Conventions (the literature uses both; these are stated so results compare):

* **symmetric**: exactly ``round(rate * n)`` examples, chosen uniformly without
  replacement, get a label drawn uniformly from the ``num_classes - 1`` OTHER
  classes, so ``rate`` is the realised fraction of wrong labels. The other
  common convention (e.g. Zhang et al., 2017, "Understanding deep learning
  requires rethinking generalization") redraws a ``rate`` fraction uniformly
  from ALL classes, which keeps the label with probability ``1/num_classes``:
  its true noise rate is ``rate * (num_classes - 1) / num_classes``.
* **asymmetric** (class-dependent): in each source class ``c``, exactly
  ``round(rate * n_c)`` of its ``n_c`` examples are relabelled ``pairs[c]``. The
  default map is cyclic, ``c -> (c + 1) % num_classes``. ``pairs="cifar10"`` is
  the CIFAR-10 map of Patrini et al., CVPR 2017: truck -> automobile,
  bird -> airplane, deer -> horse, cat <-> dog; classes without a pair keep
  their labels. (Patrini et al. flip each example independently with
  probability ``rate``; here the count per class is exact.)
"""

from collections.abc import Mapping

import numpy as np

NOISE_KINDS = ("symmetric", "asymmetric")
# CIFAR-10 class ids: 0 airplane, 1 automobile, 2 bird, 3 cat, 4 deer, 5 dog,
# 6 frog, 7 horse, 8 ship, 9 truck.
CIFAR10_ASYMMETRIC_PAIRS = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
_NAMED_PAIRS = {"cifar10": (10, CIFAR10_ASYMMETRIC_PAIRS)}


def _resolve_pairs(
    pairs: Mapping[int, int] | str | None, num_classes: int
) -> dict[int, int]:
  """Returns the validated asymmetric map {source class: target class}."""
  if pairs is None:
    return {c: (c + 1) % num_classes for c in range(num_classes)}
  if isinstance(pairs, str):
    if pairs not in _NAMED_PAIRS:
      raise ValueError(
          f"Unknown pairs {pairs!r}; named maps: {sorted(_NAMED_PAIRS)}, "
          "or pass a dict {source_class: target_class}."
      )
    classes, mapping = _NAMED_PAIRS[pairs]
    if num_classes != classes:
      raise ValueError(
          f"pairs={pairs!r} needs num_classes={classes}, got {num_classes}."
      )
    return dict(mapping)
  mapping = {int(k): int(v) for k, v in dict(pairs).items()}
  for src, dst in mapping.items():
    if not (0 <= src < num_classes and 0 <= dst < num_classes) or src == dst:
      raise ValueError(
          f"Bad pair {src} -> {dst}: classes must be in [0, {num_classes}) and "
          "differ."
      )
  return mapping


def add_label_noise(
    labels: np.ndarray,
    num_classes: int,
    rate: float,
    kind: str = "symmetric",
    seed: int = 0,
    *,
    pairs: Mapping[int, int] | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Corrupts a fraction of the labels (see the module docstring).

  The input is not modified. The same arguments give the same result, so the
  noisy examples of a dataset loaded with label noise can be recovered by
  calling this on its clean labels.

  Args:
    labels: int array of shape (N,) with values in [0, num_classes).
    num_classes: Number of classes, >= 2.
    rate: Fraction of labels to corrupt (per class for "asymmetric"), in
      [0, 1).
    kind: "symmetric" or "asymmetric".
    seed: Non-negative seed of the noise.
    pairs: Asymmetric map only: None (cyclic ``c -> (c + 1) % num_classes``),
      "cifar10" (needs num_classes=10), or a dict {source: target}.

  Returns:
    ``(noisy_labels, is_noisy)``: int32 labels and a bool mask, True exactly
    where ``noisy_labels != labels``.

  Raises:
    ValueError: If an argument is out of range or ``kind``/``pairs`` is unknown.
  """
  if kind not in NOISE_KINDS:
    raise ValueError(f"kind must be one of {NOISE_KINDS}, got {kind!r}.")
  if not 0.0 <= rate < 1.0:
    raise ValueError(f"rate must be in [0, 1), got {rate!r}.")
  if num_classes < 2:
    raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
  if seed < 0:
    raise ValueError(f"seed must be non-negative, got {seed}.")
  if pairs is not None and kind != "asymmetric":
    raise ValueError(
        f"pairs is only used with kind='asymmetric', got kind={kind!r}."
    )
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(
        f"labels must be a 1-d integer array, got {labels.dtype} "
        f"{labels.shape}."
    )
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(
        f"labels must be in [0, {num_classes}), got values in "
        f"[{labels.min()}, {labels.max()}]."
    )
  noisy = labels.astype(np.int32)
  rng = np.random.default_rng(seed)
  if kind == "symmetric":
    idx = rng.choice(labels.size, size=round(rate * labels.size), replace=False)
    # An offset in [1, C) modulo C is uniform over the C - 1 other classes.
    noisy[idx] = ((noisy[idx] + rng.integers(1, num_classes, idx.size))
                  % num_classes)
  else:
    for src, dst in sorted(_resolve_pairs(pairs, num_classes).items()):
      members = np.flatnonzero(labels == src)
      idx = rng.choice(members, size=round(rate * members.size), replace=False)
      noisy[idx] = dst
  return noisy, noisy != labels
