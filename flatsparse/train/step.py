"""Generic jitted train and eval steps that build ``value_fn`` for transforms.

The steps know no kind of problem: a :class:`flatsparse.train.tasks.Task`
reads the batch, calls the model and computes the loss and metrics. The
train step computes the loss and gradients on the batch, keeps the batch
statistics of that first forward pass, and hands every transform the extra
arguments of ``flatsparse.protocol`` on the same batch, rng and batch
statistics:

- ``value_fn(params) -> loss`` (SAM and curvature transforms re-evaluate the
  loss through it; its evaluations never change the batch statistics);
- ``activations_fn(params)``: the per-input-feature squared norms of every
  Dense/Conv input on the batch (activation-aware importance), computed only
  if a transform calls it;
- with ``sub_batches=m > 1``, ``sub_batch_value_fn(params, i)``: the loss on
  the ``i``-th of ``m`` equal sub-batches (m-sharpness);
- with a host-scheduled mask update, ``mask_update`` (a Python bool).

Mixed precision: parameters stay float32; the model's ``dtype`` sets the
compute dtype and tasks cast outputs to float32 for the loss. Gradient
accumulation averages gradients over ``accum_steps`` micro-batches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from flatsparse.models.activations import feature_norms_during
from flatsparse.train import tasks as tasks_lib
from flatsparse.train.state import TrainState

__all__ = ["make_train_step", "make_eval_step", "cross_entropy",
           "EVAL_MASK_KEY"]

Batch = dict[str, jax.Array]
# The loader's eval batches mark real examples 1 and padding 0 here.
EVAL_MASK_KEY = "mask"
cross_entropy = tasks_lib.cross_entropy


def _variables(params: Any, batch_stats: Any, frozen: Any = None
               ) -> dict[str, Any]:
  variables = {**(frozen or {}), "params": params}
  if batch_stats:
    variables["batch_stats"] = batch_stats
  return variables


def _forward(task: tasks_lib.Task, model: nn.Module, params: Any,
             batch_stats: Any, batch: Batch, rng: jax.Array, train: bool,
             frozen: Any = None) -> tuple[Any, Any]:
  """Outputs and (in train mode) the updated batch statistics."""
  variables = _variables(params, batch_stats, frozen)
  if train and batch_stats:
    outputs, updated = task.forward(model, variables, batch, train=True,
                                    rng=rng, mutable=["batch_stats"])
    return outputs, updated["batch_stats"]
  outputs = task.forward(model, variables, batch, train=train, rng=rng)
  return outputs, batch_stats


def _split(batch: Batch, parts: int, what: str) -> Batch:
  """Every field reshaped to ``(parts, batch / parts, ...)``."""
  size = jax.tree.leaves(batch)[0].shape[0]
  if size % parts:
    raise ValueError(f"Batch size {size} is not divisible by {what}={parts}.")
  return jax.tree.map(lambda x: x.reshape(parts, -1, *x.shape[1:]), batch)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, *,
                    task: tasks_lib.Task | None = None, accum_steps: int = 1,
                    sub_batches: int = 1
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
  """``(state, batch) -> (state, metrics)``; jit it (and shard its inputs).

  Args:
    model: a linen module taking ``(x, train=...)``.
    tx: any optax transformation; extra-args transforms get ``value_fn``.
    task: what the batch holds and how to score it (default:
      :class:`flatsparse.train.tasks.Classification`).
    accum_steps: micro-batches per step (batch size must divide by it).
    sub_batches: with ``m > 1``, transforms also get the extra argument
      ``sub_batch_value_fn(params, i)``: the loss on the ``i``-th of ``m``
      equal sub-batches (same rng and pre-step batch statistics as
      ``value_fn``; batch size must divide by ``m``). For m-sharpness
      (``flatsparse.protocol``, ``sub_batch_value_fn``).

  Returns:
    The step function ``step(state, batch, mask_update=None)``. Metrics:
    ``loss``, the task's train metrics, ``grad_norm``. A Python bool
    ``mask_update`` is passed on to a sparsity wrapper as its host-scheduled
    mask update (no ``lax.cond`` in the compiled step); jit with
    ``static_argnames='mask_update'``.
  """
  if not isinstance(accum_steps, int) or accum_steps < 1:
    raise ValueError(f"accum_steps must be an int >= 1, got {accum_steps!r}.")
  if (isinstance(sub_batches, bool) or not isinstance(sub_batches, int)
      or sub_batches < 1):
    raise ValueError(f"sub_batches must be an int >= 1, got {sub_batches!r}.")
  task = tasks_lib.Classification() if task is None else task
  tx = optax.with_extra_args_support(tx)

  def loss_fn(params, batch_stats, batch, rng, frozen):
    outputs, new_stats = _forward(task, model, params, batch_stats, batch,
                                  rng, True, frozen)
    return task.loss(outputs, batch), (new_stats, outputs)

  def grads_of(state: TrainState, batch: Batch, rng):
    if accum_steps == 1:
      (loss, (stats, outputs)), grads = jax.value_and_grad(
          loss_fn, has_aux=True)(state.params, state.batch_stats, batch, rng,
                                 state.frozen)
      return loss, stats, outputs, grads

    def micro(carry, micro_batch):
      stats, grads_sum, loss_sum = carry
      (loss, (stats, outputs)), grads = jax.value_and_grad(
          loss_fn, has_aux=True)(state.params, stats, micro_batch, rng,
                                 state.frozen)
      grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
      return (stats, grads_sum, loss_sum + loss), outputs

    zeros = jax.tree.map(jnp.zeros_like, state.params)
    (stats, grads, loss), outputs = jax.lax.scan(
        micro, (state.batch_stats, zeros, jnp.float32(0)),
        _split(batch, accum_steps, "accum_steps"))
    scale = 1.0 / accum_steps
    outputs = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), outputs)
    return (loss * scale, stats, outputs,
            jax.tree.map(lambda g: g * scale, grads))

  def step(state: TrainState, batch: Batch, mask_update: bool | None = None
           ) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(state.rng, state.step)
    loss, new_stats, outputs, grads = grads_of(state, batch, rng)

    def value_fn(params):
      # Same batch, rng and the pre-step statistics; the result is discarded.
      return loss_fn(params, state.batch_stats, batch, rng, state.frozen)[0]

    extra = {} if mask_update is None else {"mask_update": mask_update}
    if sub_batches > 1:
      parts = _split(batch, sub_batches, "sub_batches")

      def sub_batch_value_fn(params, i):
        # The i-th equal sub-batch; same rng and pre-step statistics.
        return loss_fn(params, state.batch_stats,
                       jax.tree.map(lambda x: x[i], parts), rng,
                       state.frozen)[0]

      sub_batch_value_fn.sub_batches = sub_batches  # checked by sam
      extra["sub_batch_value_fn"] = sub_batch_value_fn

    def activations_fn(params):
      # Per-input-feature ||X_j||^2 on this batch; traced only by
      # transforms that call it.
      return feature_norms_during(
          lambda: task.forward(
              model, {**_variables(params, None, state.frozen),
                      "batch_stats": state.batch_stats},
              batch, train=True, rng=rng, mutable=["batch_stats"]), params)

    updates, opt_state = tx.update(grads, state.opt_state, state.params,
                                   value_fn=value_fn,
                                   activations_fn=activations_fn, **extra)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, **task.train_metrics(outputs, batch),
               "grad_norm": optax.tree.norm(grads)}
    return state.replace(step=state.step + 1, params=params,
                         batch_stats=new_stats, opt_state=opt_state), metrics

  return step


def make_eval_step(model: nn.Module, task: tasks_lib.Task | None = None
                   ) -> Callable[[TrainState, Batch], dict]:
  """``(state, batch) -> sums`` over real examples (``batch['mask']`` = 1).

  Returns the task's eval sums (classification: ``correct``, ``loss_sum``
  and ``count``); add them over batches and pass them to
  ``task.eval_metrics``, so padded last batches give exact metrics.
  """
  task = tasks_lib.Classification() if task is None else task

  def step(state: TrainState, batch: Batch) -> dict:
    outputs, _ = _forward(task, model, state.params, state.batch_stats, batch,
                          state.rng, False, state.frozen)
    if EVAL_MASK_KEY in batch:
      weights = batch[EVAL_MASK_KEY]
    else:
      weights = jnp.ones(jax.tree.leaves(batch)[0].shape[:1], jnp.float32)
    return task.eval_sums(outputs, batch, weights.astype(jnp.float32))

  return step
