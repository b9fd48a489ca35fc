"""SAFE / SAFE+ applied block by block to a transformer (the LM recipe).

Each block is trained with :func:`flatsparse.safe.safe` around Adam on the
mean squared error between its output and a target (the dense block on the
same inputs), with the sparsity constraint enforced by the augmented
Lagrangian, then projected to exact sparsity. SAFE projects by magnitude;
SAFE+ by ``sqrt(P) |w|`` with ``P_jj = ||X_j||^2`` the squared norm of input
feature ``j`` of each linear layer on the calibration inputs (the statistics
the layer-wise solvers use: Wanda's score).

References:
  Lee, Lee, Chung, Lee, "SAFE: Finding Sparse and Flat Minima to Improve
  Pruning", ICML 2025.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
from typing import Any

import jax
import optax

from flatsparse import safe as safe_lib
from flatsparse.oneshot import reconstruction
from flatsparse.oneshot.method import SafeBlockConfig

__all__ = ["safe_block", "projection_for"]


def projection_for(solver: str, sparsity: float | None,
                   scope: str) -> safe_lib.Projection:
  """The SAFE projection of a block: kernels only, in the given scope."""
  return safe_lib.Projection(
      sparsity=sparsity, scope=scope,
      importance="activation" if solver == "safe+" else "magnitude")


def safe_block(apply_fn: Callable[[Any, jax.Array, Any], jax.Array],
               params: Any, inputs: jax.Array, targets: jax.Array,
               attention_mask: jax.Array | None, *,
               projection: safe_lib.Projection, config: SafeBlockConfig,
               activations: Any | None, key: jax.Array
               ) -> tuple[Any, Any, list[float]]:
  """Trains one block with SAFE and projects it.

  Args:
    apply_fn: ``(params, x, attention_mask) -> y``.
    params: the dense block's parameters.
    inputs: ``(n, seq, hidden)``: the block's calibration inputs.
    targets: ``(n, seq, hidden)``: what it should output.
    attention_mask: ``(n, seq)`` or None.
    projection: what the final projection keeps.
    config: the hyperparameters.
    activations: for SAFE+, a params-like pytree with ``||X_j||^2`` vectors at
      the kernels (None elsewhere); None for SAFE.
    key: shuffles the sequences.

  Returns:
    ``(pruned params, masks, epoch losses)``.
  """
  init, step, project = _compiled_step(
      apply_fn, projection, config,
      config.epochs * reconstruction.steps_per_epoch(inputs.shape[0],
                                                     config.batch_size))

  def one_step(carry, x, y, mask):
    p, state, loss = step(*carry, activations, x, y, mask)
    return (p, state), loss
  (params, state), losses = reconstruction.run_epochs(
      one_step, (params, init(params)), inputs, targets, attention_mask,
      epochs=config.epochs, batch_size=config.batch_size, key=key)
  pruned, masks = project(params, safe_lib.find_state(state).importance)
  return pruned, masks, losses


@functools.lru_cache(maxsize=32)
def _compiled_step(apply_fn: Callable[[Any, jax.Array, Any], jax.Array],
                   projection: safe_lib.Projection, config: SafeBlockConfig,
                   total: int):
  """SAFE's jitted init, step and final projection, built once per (block,
  recipe); the activations are an argument, so every block shares one
  compilation (SAFE's init projects, and eager top-k is slow)."""
  tx = safe_lib.safe(
      optax.adam(config.learning_rate, b1=config.b1, b2=config.b2),
      projection, lam=config.lam, rho=config.rho,
      dual_period=config.dual_period, total_steps=total)

  @jax.jit
  def step(p, state, activations, x, y, mask):
    value_fn = functools.partial(reconstruction.mean_squared_error, apply_fn,
                                 x=x, y=y, mask=mask)
    loss, grads = jax.value_and_grad(value_fn)(p)
    extra = {} if activations is None else {"activations": activations}
    updates, state = tx.update(grads, state, p, value_fn=value_fn, **extra)
    return optax.apply_updates(p, updates), state, loss
  return jax.jit(tx.init), step, jax.jit(projection.project)
