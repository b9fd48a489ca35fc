"""Methods: the optimizer a config builds, with what the loop needs of it.

A :class:`Method` is the optax transformation plus its step options
(``sub_batches``; host-scheduled mask updates), the invariant to check at
each evaluation, ``finalize(state, context)`` (e.g. SAFE's ``Proj(w_T)``
with BatchNorm re-estimation) and ``active_masks(state)`` (for sharpness and
sparsity reports). The loop calls these fields and never asks which method
it runs.

A config section that changes the method (``flatness``, ``sparsity``,
``safe``) is a *method part*: ``build(section, inner, context) -> Method``
wraps the method built so far. ``builders.build_method`` applies the parts in
``METHOD_PARTS`` order; :func:`register_method_part` replaces one (e.g. a
research variant of the sparsity wrapper) or adds one whose section the
config schema knows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from flatsparse import validation
from flatsparse.sparsity import distributions
from flatsparse.sparsity import spec as sparsity_spec
from flatsparse.train import batch_norm
from flatsparse.train import tasks as tasks_lib
from flatsparse.train.state import TrainState

__all__ = ["Method", "FinalizeContext", "BuildContext", "MethodPart",
           "METHOD_PARTS", "register_method_part", "nonzero_masks",
           "recalibrated"]


@dataclasses.dataclass(frozen=True)
class FinalizeContext:
  """What ``Method.finalize`` may use besides the state.

  Attributes:
    model: the linen module.
    task: the run's task (its ``model_inputs`` and ``forward``).
    train_batches: ``train_batches(batch_size)`` yields the train split in
      order, un-augmented, as padded eval batches (``'mask'`` marks real
      examples), e.g. to re-estimate BatchNorm statistics.
  """

  model: nn.Module
  task: tasks_lib.Task
  train_batches: Callable[[int], Iterator[Mapping[str, np.ndarray]]]


@dataclasses.dataclass(frozen=True)
class BuildContext:
  """What a method part may use: the run's length and seed key rule.

  Attributes:
    total_steps: the run's number of steps (schedules).
    key: ``key(role)`` is the run's key for a transform with random choices
      (``flatsparse.rng.transform_key``), or None without a run seed.
  """

  total_steps: int
  key: Callable[[str], Any]


def _no_masks(state: TrainState) -> None:
  del state
  return None


class Method(NamedTuple):
  """The built optimizer and what the loop needs of it.

  Attributes:
    tx: the transformation (extra arguments per ``flatsparse.protocol``).
    sub_batches: ``m`` of ``sub_batch_value_fn`` the step must provide.
    mask_update_flags: ``(opt_state, start, total_steps) -> flags`` for
      host-scheduled mask updates (``flags[t]``: update at the wrapper's step
      ``t``), or None when the method has none.
    check: ``check(state)`` at each evaluation (e.g. that pruned weights are
      exactly zero), or None.
    finalize: ``finalize(state, context) -> state``: the model to evaluate
      and return at the end (checkpoints keep the raw state), or None.
    finalized_prefix: the eval metrics of the raw state are also logged, as
      ``eval/<prefix>_<metric>``, when ``finalize`` is set.
    active_masks: ``active_masks(state)``: 0/1 masks of the weights the
      method keeps (None for dense leaves), or None for a dense method.
  """

  tx: optax.GradientTransformation
  sub_batches: int = 1
  mask_update_flags: Callable[[Any, int, int], np.ndarray] | None = None
  check: Callable[[TrainState], None] | None = None
  finalize: Callable[[TrainState, FinalizeContext], TrainState] | None = None
  finalized_prefix: str = "raw"
  active_masks: Callable[[TrainState], Any] = _no_masks


def nonzero_masks(params: Any, is_prunable: Callable[[str, Any], bool] =
                  sparsity_spec.default_is_prunable) -> Any:
  """The nonzero pattern of every prunable leaf, None elsewhere: the active
  set of a method whose state keeps no masks (after finalizing, the pruned
  weights are exactly zero)."""
  def leaf(path, p):
    return (p != 0) if is_prunable(distributions.path_str(path), p) else None
  return jax.tree_util.tree_map_with_path(leaf, params)


class MethodPart(NamedTuple):
  """A config section that wraps the method built so far.

  Attributes:
    build: ``build(section, inner, context) -> Method``; ``section`` is the
      config section as a dict (without unset keys).
    excludes: sections that may not be set together with this one.
    reason: why, for the error message.
  """

  build: Callable[[Mapping[str, Any], Method, BuildContext], Method]
  excludes: tuple[str, ...] = ()
  reason: str = ""


# Filled by flatsparse.train.method_parts (imported by builders), in the
# order the parts wrap: the first wraps the optimizer, the last is outermost.
METHOD_PARTS: dict[str, MethodPart] = {}


def register_method_part(section: str, part: MethodPart, *,
                         overwrite: bool = False) -> None:
  """Makes ``config.<section>`` build ``part`` (appended outermost)."""
  validation.register(METHOD_PARTS, "method part", section, part,
                      overwrite=overwrite,
                      valid=lambda p: isinstance(p, MethodPart),
                      expected="a MethodPart")


def recalibrated(state: TrainState, params: Any, examples: int,
                 context: FinalizeContext) -> TrainState:
  """``state`` with ``params`` and BatchNorm statistics re-estimated on the
  first ``examples`` training examples (0: the running statistics kept)."""
  batch_stats = state.batch_stats
  if batch_stats and examples:
    def chunks():  # the first examples of the train split, in order
      seen = 0
      for batch in context.train_batches(256):
        inputs = context.task.model_inputs(batch)
        inputs = inputs[batch["mask"] > 0][:examples - seen]
        if not len(inputs):
          return
        seen += len(inputs)
        yield jnp.asarray(inputs)
    batch_stats = batch_norm.recalibrate_batch_stats(
        context.model, params, batch_stats, chunks())
  return state.replace(params=params, batch_stats=batch_stats)
