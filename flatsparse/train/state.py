"""Train state: parameters, BatchNorm statistics, optimizer state, step, rng,
and the frozen variables a task reads but never trains (a teacher)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

__all__ = ["TrainState", "create_train_state", "compiled_init"]


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes; a pytree (jit, shard, checkpoint).

  Attributes:
    step: int32 number of optimizer steps taken.
    params: model parameters (float32).
    batch_stats: BatchNorm running statistics (``{}`` for models without).
    opt_state: the optax state (masks of sparsity wrappers live here).
    rng: uint32[2] base key; step ``t`` uses ``fold_in(rng, t)`` (dropout).
    frozen: ``{collection: variables}`` the task's forward reads beside
      ``params`` and never changes (``{}`` by default; a distillation
      task's teacher: ``Task.frozen_variables``). No gradient, no
      optimizer state; checkpointed with the rest.
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  frozen: Any = dataclasses.field(default_factory=dict)


def compiled_init(model: nn.Module) -> Any:
  """``jit(model.init)`` in eval mode, one per model: a second run of the
  same model (a study's next seed, a resumed run) compiles nothing.

  One compiled init instead of one dispatch per op (ResNet-20: 66 small
  compilations); the values are bit-identical to the eager init.
  """
  try:
    return _compiled_init(model)
  except TypeError:  # a model with unhashable fields: compiled per call
    return jax.jit(functools.partial(model.init, train=False))


@functools.lru_cache(maxsize=32)
def _compiled_init(model: nn.Module) -> Any:
  return jax.jit(functools.partial(model.init, train=False))


def create_train_state(model: nn.Module, tx: optax.GradientTransformation,
                       sample_input: jax.Array, seed: int,
                       frozen: dict[str, Any] | None = None) -> TrainState:
  """Initializes parameters (and batch statistics) and the optimizer state;
  ``frozen`` is kept as given (see :class:`TrainState`)."""
  init_key, rng = jax.random.split(jax.random.PRNGKey(seed))
  variables = compiled_init(model)(init_key, sample_input)
  params = variables["params"]
  return TrainState(step=jnp.zeros([], jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}),
                    opt_state=tx.init(params), rng=rng,
                    frozen=dict(frozen or {}))
