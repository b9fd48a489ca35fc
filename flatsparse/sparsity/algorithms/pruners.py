"""Prune-by-score algorithms: no-prune, magnitude, random, saliency, and STE.

Each factory returns a :class:`~flatsparse.sparsity.updater.SparseUpdater`;
keyword arguments (``sparsity``, ``scope``, ``distribution``, ``schedule``,
``overrides``, ``min_kept``, ``mask_storage``, ...) are its fields. Scores of
inactive weights rank last, so a gradual schedule prunes a nested sequence of
masks.
STE variants keep the dense weights training and mask only the forward pass
(:func:`~flatsparse.sparsity.updater.masked_params`); their default schedule
recomputes the mask every step.

References:
  Zhu & Gupta, "To prune, or not to prune", arXiv:1710.01878, 2017.
  Lee et al., "SNIP: Single-shot Network Pruning", ICLR 2019.
  Bengio et al., "Estimating or propagating gradients through stochastic
  neurons", arXiv:1308.3432, 2013 (straight-through estimator).
"""

from __future__ import annotations

from typing import Any

from flatsparse.sparsity import schedules
from flatsparse.sparsity.updater import SparseUpdater

__all__ = [
    "no_pruning",
    "magnitude_pruning",
    "random_pruning",
    "saliency_pruning",
    "magnitude_ste",
    "random_ste",
]


def no_pruning(**kwargs: Any) -> SparseUpdater:
  """Dense baseline with the same state layout (sparsity 0, no updates)."""
  kwargs.setdefault("schedule", schedules.NoUpdate())
  return SparseUpdater(sparsity=0.0, **kwargs)


def magnitude_pruning(**kwargs: Any) -> SparseUpdater:
  """Keeps the largest ``|w|``: ``m = top_k(|w|)``."""
  return SparseUpdater(importance="magnitude", **kwargs)


def random_pruning(**kwargs: Any) -> SparseUpdater:
  """Keeps a uniformly random subset of the active weights."""
  return SparseUpdater(importance="random", **kwargs)


def saliency_pruning(**kwargs: Any) -> SparseUpdater:
  """Keeps the largest first-order saliency ``|w * g|`` (SNIP-style)."""
  return SparseUpdater(importance="saliency", **kwargs)


def magnitude_ste(**kwargs: Any) -> SparseUpdater:
  """Magnitude mask on the forward pass; dense weights get the STE gradient."""
  kwargs.setdefault("schedule", schedules.Periodic(update_freq=1))
  return SparseUpdater(importance="magnitude", ste=True, **kwargs)


def random_ste(**kwargs: Any) -> SparseUpdater:
  """Random mask on the forward pass; dense weights get the STE gradient."""
  kwargs.setdefault("schedule", schedules.Periodic(update_freq=1))
  return SparseUpdater(importance="random", ste=True, **kwargs)
