"""Generic jitted train and eval steps that build ``value_fn`` for transforms.

The train step computes the loss and gradients on the batch, keeps the batch
statistics of that first forward pass, and hands every transform a
``value_fn(params) -> loss`` on the same batch, rng and batch statistics (the
extra-argument protocol listed in WORKSPACE.md, "Extra arguments"): SAM and
curvature transforms re-evaluate the loss through it, and its evaluations never
change the batch statistics. Mixed precision: parameters stay float32; the
model's ``dtype`` sets the compute dtype and logits are cast to float32 for
the loss.
Gradient accumulation averages gradients over ``accum_steps`` micro-batches.
Transforms also get ``activations_fn(params)``: the per-input-feature squared
norms of every Dense/Conv input on the batch (SAFE+'s importance), computed
only if a transform calls it.
With ``sub_batches=m > 1`` the step also passes ``sub_batch_value_fn(params,
i)``, the loss on the ``i``-th of ``m`` equal sub-batches (m-sharpness of
``flatsparse.flatness.sam``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from flatsparse.safe.activations import input_feature_norms
from flatsparse.train.state import TrainState

__all__ = ["make_train_step", "make_eval_step", "cross_entropy"]

Batch = dict[str, jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy in float32."""
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels).mean()


def _forward(model: nn.Module, params: Any, batch_stats: Any, images: jax.Array,
             rng: jax.Array, train: bool) -> tuple[jax.Array, Any]:
  """Logits and (in train mode) the updated batch statistics."""
  variables = {"params": params}
  if batch_stats:
    variables["batch_stats"] = batch_stats
  if train and batch_stats:
    logits, updated = model.apply(variables, images, train=True,
                                  mutable=["batch_stats"],
                                  rngs={"dropout": rng})
    return logits, updated["batch_stats"]
  logits = model.apply(variables, images, train=train, rngs={"dropout": rng})
  return logits, batch_stats


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, *,
                    accum_steps: int = 1, sub_batches: int = 1
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
  """``(state, batch) -> (state, metrics)``; jit it (and shard its inputs).

  Args:
    model: a linen module taking ``(x, train=...)``.
    tx: any optax transformation; extra-args transforms get ``value_fn``.
    accum_steps: micro-batches per step (batch size must divide by it).
    sub_batches: with ``m > 1``, transforms also get the extra argument
      ``sub_batch_value_fn(params, i)``: the loss on the ``i``-th of ``m``
      equal sub-batches (same rng and pre-step batch statistics as
      ``value_fn``; batch size must divide by ``m``). For
      ``flatsparse.flatness.sam(sub_batches=m)``.

  Returns:
    The step function ``step(state, batch, mask_update=None)``. Metrics:
    ``loss``, ``accuracy``, ``grad_norm``. A Python bool ``mask_update`` is
    passed on to a sparsity wrapper as its host-scheduled mask update (no
    ``lax.cond`` in the compiled step); jit with
    ``static_argnames='mask_update'``.
  """
  if not isinstance(accum_steps, int) or accum_steps < 1:
    raise ValueError(f"accum_steps must be an int >= 1, got {accum_steps!r}.")
  if (isinstance(sub_batches, bool) or not isinstance(sub_batches, int)
      or sub_batches < 1):
    raise ValueError(f"sub_batches must be an int >= 1, got {sub_batches!r}.")
  tx = optax.with_extra_args_support(tx)

  def loss_fn(params, batch_stats, images, labels, rng):
    logits, new_stats = _forward(model, params, batch_stats, images, rng, True)
    loss = cross_entropy(logits, labels)
    return loss, (new_stats, logits)

  def grads_of(state: TrainState, images, labels, rng):
    if accum_steps == 1:
      (loss, (stats, logits)), grads = jax.value_and_grad(
          loss_fn, has_aux=True)(state.params, state.batch_stats, images,
                                 labels, rng)
      return loss, stats, logits, grads
    if images.shape[0] % accum_steps:
      raise ValueError(f"Batch size {images.shape[0]} is not divisible by "
                       f"accum_steps={accum_steps}.")
    split = lambda x: x.reshape(accum_steps, -1, *x.shape[1:])  # noqa: E731

    def micro(carry, xs):
      stats, grads_sum, loss_sum = carry
      (loss, (stats, logits)), grads = jax.value_and_grad(
          loss_fn, has_aux=True)(state.params, stats, xs[0], xs[1], rng)
      grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
      return (stats, grads_sum, loss_sum + loss), logits

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    (stats, grads, loss), logits = jax.lax.scan(
        micro, (state.batch_stats, zeros, jnp.float32(0)),
        (split(images), split(labels)))
    scale = 1.0 / accum_steps
    return (loss * scale, stats, logits.reshape(-1, logits.shape[-1]),
            jax.tree.map(lambda g: g * scale, grads))

  def step(state: TrainState, batch: Batch, mask_update: bool | None = None
           ) -> tuple[TrainState, dict]:
    images, labels = batch["image"], batch["label"]
    rng = jax.random.fold_in(state.rng, state.step)
    loss, new_stats, logits, grads = grads_of(state, images, labels, rng)

    def value_fn(params):
      # Same batch, rng and the pre-step statistics; the result is discarded.
      return loss_fn(params, state.batch_stats, images, labels, rng)[0]

    extra = {} if mask_update is None else {"mask_update": mask_update}
    if sub_batches > 1:
      if images.shape[0] % sub_batches:
        raise ValueError(f"Batch size {images.shape[0]} is not divisible by "
                         f"sub_batches={sub_batches}.")
      parts = [x.reshape(sub_batches, -1, *x.shape[1:])
               for x in (images, labels)]

      def sub_batch_value_fn(params, i):
        # The i-th equal sub-batch; same rng and pre-step statistics.
        return loss_fn(params, state.batch_stats, parts[0][i], parts[1][i],
                       rng)[0]

      sub_batch_value_fn.sub_batches = sub_batches  # checked by sam
      extra["sub_batch_value_fn"] = sub_batch_value_fn

    def activations_fn(params):
      # Per-input-feature ||X_j||^2 on this batch (SAFE+); traced only by
      # transforms that call it.
      return input_feature_norms(
          model, {"params": params, "batch_stats": state.batch_stats}, images,
          train=True, mutable=["batch_stats"], rngs={"dropout": rng})

    updates, opt_state = tx.update(grads, state.opt_state, state.params,
                                   value_fn=value_fn,
                                   activations_fn=activations_fn, **extra)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        "loss": loss,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
        "grad_norm": optax.tree.norm(grads),
    }
    return state.replace(step=state.step + 1, params=params,
                         batch_stats=new_stats, opt_state=opt_state), metrics

  return step


def make_eval_step(model: nn.Module) -> Callable[[TrainState, Batch], dict]:
  """``(state, batch) -> sums`` over real examples (``batch['mask']`` = 1).

  Returns ``correct``, ``loss_sum`` and ``count``; add them over batches and
  divide, so padded last batches give exact metrics.
  """

  def step(state: TrainState, batch: Batch) -> dict:
    logits, _ = _forward(model, state.params, state.batch_stats,
                         batch["image"], state.rng, False)
    mask = batch.get("mask", jnp.ones(batch["label"].shape, jnp.float32))
    mask = mask.astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), batch["label"])
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    # where, not multiply: a padded example must not turn the sum into NaN.
    return {"correct": jnp.sum(jnp.where(mask > 0, correct, 0)),
            "loss_sum": jnp.sum(jnp.where(mask > 0, losses, 0)),
            "count": jnp.sum(mask)}

  return step
