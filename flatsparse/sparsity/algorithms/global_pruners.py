"""Global pruning: one threshold over all prunable leaves.

``m = top_k(concat_l score_l)`` with ``k = N - round(s_t N)`` over the pooled
leaves (no concatenation is materialised: the threshold is found by counting
across leaves). Leaves named in ``overrides`` keep their own per-leaf target.

References:
  Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019 (global
  magnitude); Lee et al., "SNIP", ICLR 2019 (saliency).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from flatsparse import rng
from flatsparse.sparsity import masks as masks_lib
from flatsparse.sparsity import scores as scores_lib
from flatsparse.sparsity.distributions import path_str
from flatsparse.sparsity.updater import apply_masks
from flatsparse.sparsity.updater import SparseUpdater

__all__ = ["GlobalPruning", "global_magnitude_pruning",
           "global_saliency_pruning"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class GlobalPruning(SparseUpdater):
  """Prune-by-score with one threshold shared by all non-overridden leaves."""

  def __post_init__(self):
    super().__post_init__()
    if not isinstance(self.structure, masks_lib.Unstructured):
      raise ValueError("Global pruning supports only unstructured masks, got "
                       f"{self.structure!r}.")
    if self.distribution != "uniform":
      raise ValueError("Global pruning chooses per-leaf sparsity itself; "
                       f"distribution must be 'uniform', got "
                       f"{self.distribution!r}.")

  def _global_masks(self, scores: Any, sparsity: Any, per_leaf) -> Any:
    """Masks from scores (None = dense) with a shared threshold."""
    overrides = dict(self.overrides or {})
    flat, treedef = jax.tree_util.tree_flatten_with_path(
        scores, is_leaf=lambda x: x is None)
    pooled = [i for i, (p, s) in enumerate(flat)
              if s is not None and path_str(p) not in overrides]
    total = sum(flat[i][1].size for i in pooled)
    chosen = masks_lib.topk_masks_global(
        [flat[i][1] for i in pooled], masks_lib.num_to_keep(total, sparsity))
    out = []
    for p, s in flat:
      fixed = s is not None and path_str(p) in overrides
      out.append(per_leaf(s, overrides[path_str(p)]) if fixed else None)
    for i, m in zip(pooled, chosen):
      out[i] = m
    return jax.tree_util.tree_unflatten(treedef, out)

  def new_masks(self, weights, grads, old, step, key):
    scores = self._scores(weights, grads, old, key)
    return self._global_masks(
        scores, self.schedule.sparsity(step, self.sparsity),
        lambda s, t: self.structure.mask(s, self.schedule.sparsity(step, t)))

  def instant_sparsify(self, params, grads=None, key=None):
    key = rng.base_key(self.seed) if key is None else key
    targets = self._targets_tree(params)
    grads = jax.tree.map(lambda _: None, params) if grads is None else grads
    score_fn = scores_lib.get_score(self.score)
    scores = jax.tree.map(
        lambda t, p, g: None if t is None else score_fn(p, g, key).astype(
            jnp.float32), targets, params, grads, is_leaf=lambda x: x is None)
    new = self._global_masks(scores, self.sparsity, self.structure.mask)
    return apply_masks(params, new), new


def global_magnitude_pruning(**kwargs: Any) -> GlobalPruning:
  """Global magnitude pruning: one ``|w|`` threshold for all leaves."""
  return GlobalPruning(score="magnitude", **kwargs)


def global_saliency_pruning(**kwargs: Any) -> GlobalPruning:
  """Global saliency pruning: one ``|w * g|`` threshold for all leaves."""
  return GlobalPruning(score="saliency", **kwargs)
