"""Block reconstruction: train pruned blocks, masks fixed, to match a target.

After a layer-wise solver has pruned a block, its remaining weights (and its
biases and norms) are trained to minimize the mean squared error between the
block's output and a target, on the calibration inputs::

    min_w  mean_b || block(w * m, x_b) - y_b ||^2        (m: the fixed masks)

with AdamW and a linear learning-rate decay to zero. Which ``x`` and ``y``
select the technique (Shin et al., 2024):

* BR (block-wise reconstruction): ``x`` = the pruned model's inputs of the
  block, ``y`` = the dense block applied to the same ``x``;
* GP (global propagation): the same ``x``, but ``y`` = the dense model's own
  activation at the block's output;
* CR (cross-block): a window of two consecutive blocks trained jointly, ``y``
  = the dense model's activation after the second block.

This module trains any window: ``apply_fn(window_params, x, attention_mask)``
is the chain of the window's blocks. The masks multiply the weights inside
the forward pass (as the reference's masked linear layers), so pruned
entries get zero gradients, and the returned weights are multiplied by them.

The reference recipe (``ReconstructionConfig`` defaults): AdamW with betas
(0.9, 0.95), eps 1e-8, learning rate 2e-4 decaying linearly to 0, no weight
decay, batch 8, 10 epochs of ``floor(n / 8)`` steps each, gradient norm
clipped at 1000; every parameter of the window is trained.

References:
  Shin, Park, Kim, Lee, "Rethinking Pruning Large Language Models: Benefits
  and Pitfalls of Reconstruction Error Minimization", EMNLP 2024.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flatsparse import validation
from flatsparse.sparsity import apply_masks

__all__ = ["ReconstructionConfig", "reconstruct", "mean_squared_error",
           "run_epochs", "steps_per_epoch"]

ApplyFn = Callable[[Any, jax.Array, jax.Array | None], jax.Array]


class ReconstructionConfig(NamedTuple):
  """Hyperparameters of block reconstruction (defaults: the reference's).

  Attributes:
    learning_rate: peak AdamW learning rate, decayed linearly to 0.
    epochs: passes over the calibration set.
    batch_size: sequences per step; ``floor(n / batch_size)`` steps per epoch
      (at least one).
    b1, b2, eps, weight_decay: AdamW's.
    max_grad_norm: global gradient-norm clip.
  """

  learning_rate: float = 2e-4
  epochs: int = 10
  batch_size: int = 8
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.0
  max_grad_norm: float = 1000.0

  def check(self) -> None:
    validation.check_count("epochs", self.epochs)
    validation.check_count("batch_size", self.batch_size)
    validation.check("learning_rate", self.learning_rate, lambda v: v > 0,
                     "> 0")
    validation.check_betas(b1=self.b1, b2=self.b2)


def mean_squared_error(apply_fn: ApplyFn, params: Any, x: jax.Array,
                       y: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Mean over the real tokens (``mask`` nonzero; all if None) and the
  features of ``(apply_fn(params, x, mask) - y)^2``, in float32: the loss of
  BR / GP / CR and of block-wise SAFE."""
  sq, count = _squared_error(apply_fn, params, x, y, mask)
  return sq / count


def _squared_error(apply_fn, params, x, y, mask):
  out = apply_fn(params, x, mask).astype(jnp.float32)
  err = jnp.square(out - y.astype(jnp.float32))
  if mask is None:
    return jnp.sum(err), err.size
  weights = mask.astype(jnp.float32)[..., None]
  return jnp.sum(err * weights), jnp.sum(weights) * err.shape[-1]


def reconstruct(apply_fn: ApplyFn, params: Any, masks: Any,
                inputs: jax.Array, targets: jax.Array,
                attention_mask: jax.Array | None = None, *,
                config: ReconstructionConfig | None = None,
                key: jax.Array) -> tuple[Any, list[float]]:
  """Trains ``params`` (masks fixed) so ``apply_fn(params, x)`` matches ``y``.

  Args:
    apply_fn: ``(params, x, attention_mask) -> y``: one block or a window.
    params: the window's parameters (already pruned).
    masks: like ``params``: boolean masks at pruned kernels, ``None``
      elsewhere.
    inputs: ``(n, seq, hidden)`` calibration inputs of the window.
    targets: ``(n, seq, hidden)`` what the window should output.
    attention_mask: ``(n, seq)`` (1 = real token) or None.
    config: the hyperparameters (default: the reference's).
    key: shuffles the sequences each epoch.

  Returns:
    ``(params * masks, losses)``: the mean training loss of each epoch.
  """
  config = ReconstructionConfig() if config is None else config
  config.check()
  if inputs.shape[0] != targets.shape[0]:
    raise ValueError(f"inputs and targets need as many sequences, got "
                     f"{inputs.shape[0]} and {targets.shape[0]}.")
  tx, step = _compiled_step(
      apply_fn, config,
      config.epochs * steps_per_epoch(inputs.shape[0], config.batch_size))

  def one_step(carry, x, y, mask):
    p, opt_state, loss = step(*carry, masks, x, y, mask)
    return (p, opt_state), loss
  (params, _), losses = run_epochs(
      one_step, (params, tx.init(params)), inputs, targets, attention_mask,
      epochs=config.epochs, batch_size=config.batch_size, key=key)
  return apply_masks(params, masks), losses


def steps_per_epoch(n: int, batch_size: int) -> int:
  """``floor(n / batch)`` steps of ``min(batch_size, n)`` sequences (>= 1)."""
  return max(n // min(batch_size, n), 1)


def run_epochs(step: Callable[[Any, jax.Array, jax.Array, Any],
                              tuple[Any, jax.Array]],
               carry: Any, inputs: jax.Array, targets: jax.Array,
               attention_mask: jax.Array | None, *, epochs: int,
               batch_size: int, key: jax.Array) -> tuple[Any, list[float]]:
  """``epochs`` shuffled passes of ``step(carry, x, y, mask) -> (carry,
  loss)`` over the sequences; returns the carry and each epoch's mean loss.
  """
  n = inputs.shape[0]
  batch = min(batch_size, n)
  per_epoch = steps_per_epoch(n, batch_size)
  losses = []
  for epoch in range(epochs):
    order = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch),
                                              n))
    total = 0.0
    for s in range(per_epoch):
      rows = order[s * batch:(s + 1) * batch]
      mask = None if attention_mask is None else attention_mask[rows]
      carry, loss = step(carry, inputs[rows], targets[rows], mask)
      total += float(loss)
    losses.append(total / per_epoch)
  return carry, losses


@functools.lru_cache(maxsize=32)
def _compiled_step(apply_fn: ApplyFn, config: ReconstructionConfig,
                   total: int):
  """The optimizer and the jitted step, built once per (block, recipe): the
  masks are an argument, so every block of a model shares one compilation.
  """
  tx = optax.chain(
      optax.clip_by_global_norm(config.max_grad_norm),
      optax.adamw(optax.linear_schedule(config.learning_rate, 0.0, total),
                  b1=config.b1, b2=config.b2, eps=config.eps,
                  weight_decay=config.weight_decay))

  def loss_fn(p, masks, x, y, mask):
    return mean_squared_error(apply_fn, apply_masks(p, masks), x, y, mask)

  @jax.jit
  def step(p, opt_state, masks, x, y, mask):
    loss, grads = jax.value_and_grad(loss_fn)(p, masks, x, y, mask)
    updates, opt_state = tx.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, loss
  return tx, step
