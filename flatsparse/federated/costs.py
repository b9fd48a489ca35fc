"""What a client's computation costs, from XLA's analyses (nothing runs).

``compiled_costs(fn, *args)`` compiles ``jax.jit(fn)`` for ``args`` and
returns XLA's flop count (``cost_analysis``) and its memory plan
(``memory_analysis``): the scratch bytes the program needs beyond its
arguments and outputs (``temp``, where activations kept for a backward pass
live) and the peak estimate ``arguments + outputs + temp - aliased``. A
``lax.scan`` or ``while`` body is counted once by XLA's cost analysis, so
time one step and multiply by the step count (the FedFwd study does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

__all__ = ["compiled_costs"]


def compiled_costs(fn: Callable[..., Any], *args: Any) -> dict[str, float]:
  """``{'flops', 'temp_bytes', 'peak_bytes'}`` of ``jax.jit(fn)(*args)``."""
  compiled = jax.jit(fn).lower(*args).compile()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per program
    cost = cost[0] if cost else {}
  memory = compiled.memory_analysis()
  out = {"flops": float((cost or {}).get("flops", float("nan")))}
  if memory is not None:
    out["temp_bytes"] = float(memory.temp_size_in_bytes)
    out["peak_bytes"] = float(
        memory.argument_size_in_bytes + memory.output_size_in_bytes
        + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
  return out
