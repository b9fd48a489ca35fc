"""What a computation costs, from XLA's analyses (nothing runs).

:func:`analysis` reads a compiled program's flop count (``cost_analysis``)
and its memory plan (``memory_analysis``): the scratch bytes beyond its
arguments and outputs (``temp``, where activations kept for a backward pass
live) and the peak estimate ``arguments + outputs + temp - aliased``;
:func:`compiled_costs` compiles a function first. A ``lax.scan`` or
``while`` body is counted once by XLA's cost analysis, so cost one step and
multiply by the step count. :func:`ff_step_costs` is what the FedFwd study
and its benchmark compare: one local step of Forward-Forward (every layer at
once, and each layer alone) against backprop's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from flatsparse.federated import fedavg
from flatsparse.federated import forward_forward as ff
from flatsparse.federated import objectives

__all__ = ["analysis", "compiled_costs", "ff_step_costs"]


def analysis(compiled: Any) -> dict[str, float]:
  """``{'flops', 'bytes_accessed'}`` when XLA estimates costs and
  ``{'temp_bytes', 'peak_bytes'}`` when it plans memory, of a compiled
  program."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per program
    cost = cost[0] if cost else {}
  out = {}
  if cost:
    out["flops"] = float(cost.get("flops", 0.0))
    out["bytes_accessed"] = float(cost.get("bytes accessed", 0.0))
  memory = compiled.memory_analysis()
  if memory is not None:
    out["temp_bytes"] = float(memory.temp_size_in_bytes)
    out["peak_bytes"] = float(
        memory.argument_size_in_bytes + memory.output_size_in_bytes
        + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
  return out


def compiled_costs(fn: Callable[..., Any], *args: Any) -> dict[str, float]:
  """:func:`analysis` of ``jax.jit(fn)`` compiled for ``args``."""
  return analysis(jax.jit(fn).lower(*args).compile())


def ff_step_costs(ff_model: nn.Module, bp_model: nn.Module,
                  tx: optax.GradientTransformation, batch_size: int,
                  dim: int) -> dict[str, Any]:
  """One local step's costs: ``'ff_step'`` (every layer's local loss at
  once), ``'ff_layers'`` (one entry per layer: the gradient of that layer's
  own loss only, what a layer-at-a-time client runs) and ``'bp_step'``
  (``bp_model`` by backprop), each a :func:`compiled_costs` dict, on a batch
  of ``batch_size`` inputs of ``dim`` values."""
  x = jnp.zeros((batch_size, dim), jnp.float32)
  y = jnp.zeros((batch_size,), jnp.int32)
  w = jnp.ones((batch_size,), jnp.float32)
  key = jax.random.PRNGKey(0)

  def step_costs(model, loss):
    params = model.init(key, x)["params"]
    return params, compiled_costs(fedavg.make_local_step(loss, tx), params,
                                  tx.init(params), x, y, w, key)

  ff_params, ff_costs = step_costs(
      ff_model, objectives.forward_forward_loss(ff_model))
  _, bp_costs = step_costs(bp_model, objectives.backprop_loss(bp_model))
  layers = []
  for i in range(len(ff_model.features)):
    name = f"layer_{i}"

    def own_loss(p_l, name=name):
      out = ff.ff_forward(ff_model, {"params": {**ff_params, name: p_l}}, x,
                          y, key)
      return ff.ff_loss(out, y, threshold=ff_model.threshold)[1][name]

    layers.append(compiled_costs(jax.grad(own_loss), ff_params[name]))
  return {"ff_step": ff_costs, "ff_layers": layers, "bp_step": bp_costs}
