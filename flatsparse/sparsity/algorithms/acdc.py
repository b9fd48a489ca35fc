"""AC/DC: alternating compressed (sparse) and decompressed (dense) phases.

Phases over the step counter ``t``: dense warm-up for ``warmup_steps``, then
cycles of ``sparse_steps`` sparse and ``dense_steps`` dense, and from
``final_sparse_step`` on sparse to the end (fine-tuning). Entering a sparse
phase prunes to the target by magnitude (over all weights: the dense phase let
pruned weights come back); entering a dense phase sets the mask to all ones,
and the released weights restart from zero with reset moments.

References:
  Peste et al., "AC/DC: Alternating Compressed/DeCompressed Training of Deep
  Neural Networks", NeurIPS 2021.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from flatsparse.sparsity.updater import SparseUpdater
from flatsparse.tree_utils import map_masked

__all__ = ["ACDC", "acdc"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ACDC(SparseUpdater):
  """AC/DC phases; ``schedule`` is unused (phases define the updates)."""

  regrows: ClassVar[bool] = True

  warmup_steps: int = 100
  sparse_steps: int = 50
  dense_steps: int = 50
  final_sparse_step: int = 800

  def __post_init__(self):
    super().__post_init__()
    for name in ("warmup_steps", "sparse_steps", "dense_steps",
                 "final_sparse_step"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < (0 if name == "warmup_steps"
                                                else 1):
        raise ValueError(f"AC/DC {name} must be a positive int, got {value!r}.")
    if self.final_sparse_step < self.warmup_steps:
      raise ValueError(
          f"final_sparse_step ({self.final_sparse_step}) must be >= "
          f"warmup_steps ({self.warmup_steps}).")

  def is_sparse_phase(self, step: jax.Array) -> jax.Array:
    since = step - self.warmup_steps
    cycling = (since >= 0) & (since % (self.sparse_steps + self.dense_steps)
                              < self.sparse_steps)
    return cycling | (step >= self.final_sparse_step)

  def is_update_step(self, step):
    previous = jnp.where(step > 0, self.is_sparse_phase(step - 1), False)
    return self.is_sparse_phase(step) != previous

  def new_masks(self, weights, grads, old, step, key):
    ones = map_masked(lambda m: None if m is None else jnp.ones_like(m), old)

    def prune():
      return super(ACDC, self).new_masks(weights, grads, ones, step, key)

    return jax.lax.cond(self.is_sparse_phase(step), prune, lambda: ones)


def acdc(**kwargs: Any) -> ACDC:
  """AC/DC with magnitude pruning at the start of each sparse phase."""
  return ACDC(importance="magnitude", **kwargs)
