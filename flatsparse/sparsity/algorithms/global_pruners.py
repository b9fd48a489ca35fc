"""Global pruning: one threshold over all prunable leaves.

``m = top_k(concat_l score_l)`` with ``k = N - round(s_t N)`` over the pooled
leaves (no concatenation is materialised: the threshold is found by counting
across leaves). Leaves named in ``overrides`` keep their own per-leaf target.
The scope is ``'global'``. Scores are ranked raw by default;
``global_normalization='l2'`` divides each leaf's scores by their L2 norm
first (JaxPruner's global pruners), so large layers do not take the whole
budget. Every leaf keeps at least ``min_kept`` weights (default 1).

References:
  Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019 (global
  magnitude); Lee et al., "SNIP", ICLR 2019 (saliency).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from flatsparse import rng
from flatsparse.sparsity import importance as importance_lib
from flatsparse.sparsity import masks as masks_lib
from flatsparse.sparsity.distributions import path_str
from flatsparse.sparsity.updater import apply_masks
from flatsparse.sparsity.updater import SparseUpdater

__all__ = ["GlobalPruning", "global_magnitude_pruning",
           "global_saliency_pruning"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class GlobalPruning(SparseUpdater):
  """Prune-by-score with one threshold shared by all non-overridden leaves."""

  scopes: ClassVar[tuple[str, ...]] = ("global",)

  scope: Any = "global"

  def __post_init__(self):
    super().__post_init__()
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
    ranked = [flat[i][1] for i in pooled]
    if self.global_normalization == "l2":
      ranked = [importance_lib.l2_normalize(s) for s in ranked]
    chosen = masks_lib.topk_masks_global(
        ranked, masks_lib.num_to_keep(total, sparsity), self.min_kept)
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
        lambda s, t: self._leaf_mask(s, self.schedule.sparsity(step, t)))

  def _leaf_mask(self, scores: jax.Array, sparsity: Any) -> jax.Array:
    """An overridden leaf's own mask (at least ``min_kept`` weights)."""
    return masks_lib.masks_for_leaves(self.structure, [scores], [sparsity],
                                      self.min_kept)[0]

  def instant_sparsify(self, params, grads=None, key=None):
    key = rng.base_key(self.seed) if key is None else key
    targets = self._targets_tree(params)
    grads = jax.tree.map(lambda _: None, params) if grads is None else grads
    score_fn = importance_lib.get_score(self.importance)
    scores = jax.tree.map(
        lambda t, p, g: None if t is None else score_fn(p, g, key).astype(
            jnp.float32), targets, params, grads, is_leaf=lambda x: x is None)
    new = self._global_masks(scores, self.sparsity, self._leaf_mask)
    return apply_masks(params, new), new


def global_magnitude_pruning(**kwargs: Any) -> GlobalPruning:
  """Global magnitude pruning: one ``|w|`` threshold for all leaves."""
  return GlobalPruning(importance="magnitude", **kwargs)


def global_saliency_pruning(**kwargs: Any) -> GlobalPruning:
  """Global saliency pruning: one ``|w * g|`` threshold for all leaves."""
  return GlobalPruning(importance="saliency", **kwargs)
