"""Re-estimating BatchNorm statistics after pruning.

Pruning shifts every layer's activations, so the running statistics of a
dense run no longer match the sparse network. ``recalibrate_batch_stats``
replaces them by the average batch statistics over N training examples, as
the SAFE paper does before reporting accuracy.

Works for any linen model with ``flax.linen.BatchNorm`` without knowing its
momentum: one train-mode pass with zero running statistics gives
``(1 - m) * b`` and one with unit statistics gives ``m + (1 - m) * b``, which
determine the batch statistic ``b`` exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["recalibrate_batch_stats"]


def recalibrate_batch_stats(model: nn.Module, params: Any, batch_stats: Any,
                            images: Iterable[Any]) -> Any:
  """Mean of per-batch BatchNorm statistics over ``images`` (batches).

  Args:
    model: a linen module taking ``(x, train=...)``.
    params: its (pruned) parameters.
    batch_stats: the current statistics (structure and dtypes are kept).
    images: an iterable of input batches (weighted by batch size).

  Returns:
    New batch statistics; ``batch_stats`` itself if the model has none.
  """
  if not batch_stats:
    return batch_stats

  @jax.jit
  def batch_statistics(x):
    def run(fill):
      stats = jax.tree.map(lambda s: jnp.full_like(s, fill), batch_stats)
      _, new = model.apply({"params": params, "batch_stats": stats}, x,
                           train=True, mutable=["batch_stats"],
                           rngs={"dropout": jax.random.PRNGKey(0)})
      return new["batch_stats"]
    from_zero, from_one = run(0.0), run(1.0)
    # from_zero = (1 - m) b, from_one - from_zero = m.
    return jax.tree.map(lambda a, c: a / (1.0 - (c - a)), from_zero, from_one)

  total, count = None, 0
  for x in images:
    n = x.shape[0]
    stats = jax.tree.map(lambda s, n=n: s * n, batch_statistics(x))
    total = stats if total is None else jax.tree.map(jnp.add, total, stats)
    count += n
  if total is None:
    raise ValueError("recalibrate_batch_stats got no batches.")
  return jax.tree.map(lambda t, s: (t / count).astype(s.dtype), total,
                      batch_stats)
