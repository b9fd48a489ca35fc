"""Dynamic sparse training at constant sparsity: SET and RigL.

Masks start random at the target (per-leaf from the distribution, e.g. ERK).
At each update step ``t`` a leaf with ``n`` active weights drops the
``d = round(f_t n)`` active weights of smallest ``|w|`` and grows ``d`` of the
others (the just-dropped included): at random for SET, by largest ``|g|`` of
the dense gradient for RigL. ``f_t`` follows the cosine drop-fraction schedule.
Grown weights start at zero with reset optimizer moments; the count of active
weights never changes.

References:
  Mocanu et al., "Scalable training of artificial neural networks with adaptive
  sparse connectivity inspired by network science", Nature Comm. 2018 (SET).
  Evci et al., "Rigging the Lottery: Making All Tickets Winners", ICML 2020.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from flatsparse import rng
from flatsparse.sparsity import masks as masks_lib
from flatsparse.sparsity import schedules
from flatsparse.sparsity.updater import apply_masks
from flatsparse.sparsity.updater import SparseUpdater
from flatsparse.tree_utils import map_masked

__all__ = ["DynamicSparse", "set_sparse", "rigl", "StaticSparse",
           "static_sparse"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class StaticSparse(SparseUpdater):
  """Random masks at the target from ``init``; they never change."""

  schedule: Any = dataclasses.field(default_factory=schedules.NoUpdate)
  importance: Any = "random"

  def init_masks(self, params, key):
    targets = self._targets_tree(params)
    leaves = jax.tree.leaves(targets, is_leaf=lambda x: x is None)
    keys = iter(jax.random.split(key, max(len(leaves), 1)))
    noise = map_masked(lambda t, p: None if t is None else
                        jax.random.uniform(next(keys), p.shape),
                       targets, params)
    return self._masks_at(noise, targets)

  def instant_sparsify(self, params, grads=None, key=None):
    """Applies the masks ``init`` draws (same seed), so both agree."""
    del grads
    key = rng.base_key(self.seed) if key is None else key
    masks = self.init_masks(params, key)
    return apply_masks(params, masks), masks


@dataclasses.dataclass(frozen=True, kw_only=True)
class DynamicSparse(StaticSparse):
  """Drop-and-grow at constant sparsity (``grow='random'`` SET, else RigL)."""

  regrows: ClassVar[bool] = True

  schedule: Any = dataclasses.field(
      default_factory=lambda: schedules.Periodic(update_freq=100))
  grow: str = "gradient"
  drop_fraction: float = 0.3
  drop_fraction_end_step: int = 1000

  def __post_init__(self):
    super().__post_init__()
    if self.grow not in ("random", "gradient"):
      raise ValueError(f"Unknown grow {self.grow!r}; allowed: 'random' (SET), "
                       "'gradient' (RigL).")
    if not isinstance(self.structure, masks_lib.Unstructured):
      raise ValueError("SET/RigL support only unstructured masks (scope "
                       f"'layer'), got scope {self.scope!r}.")
    # Named here: cosine_drop_fraction's own errors would blame its
    # argument names (initial_fraction, end_step).
    f = self.drop_fraction
    if isinstance(f, bool) or not isinstance(f, numbers.Real) or not (
        0.0 <= f <= 1.0):
      raise ValueError(f"drop_fraction must be a number in [0, 1] (the "
                       f"fraction of active weights dropped and regrown at "
                       f"the first update, decaying by a cosine), got {f!r}.")
    end = self.drop_fraction_end_step
    if isinstance(end, bool) or not isinstance(end, int) or end < 1:
      raise ValueError(f"drop_fraction_end_step must be an int >= 1, got "
                       f"{end!r}.")

  def new_masks(self, weights, grads, old, step, key):
    fraction = schedules.cosine_drop_fraction(
        self.drop_fraction, self.drop_fraction_end_step)(step)
    flat_old, treedef = jax.tree.flatten(old, is_leaf=lambda x: x is None)
    idx = [i for i, m in enumerate(flat_old) if m is not None]
    ws = treedef.flatten_up_to(weights)
    gs = treedef.flatten_up_to(grads)
    keys = jax.random.split(key, max(len(idx), 1))
    ms = [flat_old[i] for i in idx]
    active = [jnp.sum(m, dtype=jnp.int32) for m in ms]
    n_drop = [jnp.round(fraction * a).astype(jnp.int32) for a in active]
    kept = masks_lib.topk_masks(
        [jnp.where(m, jnp.abs(ws[i]).astype(jnp.float32), -jnp.inf)
         for m, i in zip(ms, idx)],
        [a - d for a, d in zip(active, n_drop)])
    if self.grow == "random":
      grow_scores = [jax.random.uniform(k, ws[i].shape)
                     for k, i in zip(keys, idx)]
    else:
      grow_scores = [jnp.abs(gs[i]).astype(jnp.float32) for i in idx]
    grown = masks_lib.topk_masks(
        [jnp.where(k, -jnp.inf, s) for k, s in zip(kept, grow_scores)], n_drop)
    out = list(flat_old)
    for i, k, g in zip(idx, kept, grown):
      out[i] = k | g
    return treedef.unflatten(out)


def static_sparse(**kwargs: Any) -> StaticSparse:
  """Static random sparse training: a random mask fixed at init."""
  return StaticSparse(**kwargs)


def set_sparse(**kwargs: Any) -> DynamicSparse:
  """SET: drop smallest ``|w|``, grow at random."""
  return DynamicSparse(grow="random", **kwargs)


def rigl(**kwargs: Any) -> DynamicSparse:
  """RigL: drop smallest ``|w|``, grow largest dense ``|g|``."""
  return DynamicSparse(grow="gradient", **kwargs)
