"""The extra-argument protocol: what a transform's ``update`` may receive.

Every transform here is an ``optax.GradientTransformationExtraArgs``; a train
step calls ``tx.update(grads, state, params, **extra)`` and each transform
takes the keywords it knows and ignores the rest (``**extra``), so one step
serves every chain. This module names each extra argument, its type, its
meaning, who provides it and who may call it (``EXTRA_ARGS``), and holds the
one error a transform raises when an argument it needs is missing
(:func:`require`).

======================  ========================  ==============================
argument                provided by               used by
======================  ========================  ==============================
``value_fn``            the train step            SAM/ASAM, Sassha, AdaHessian,
                                                  Sophia-H, SAFE (rho > 0),
                                                  SAFE+ (Hessian importance),
                                                  zeroth-order estimators
``sub_batch_value_fn``  the train step with       SAM with ``sub_batches=m``
                        ``sub_batches=m``
``activations_fn``      the train step            SAFE+ (activation importance)
``activations``         the caller (precomputed)  SAFE+ (activation importance)
``importance``          the caller                SAFE+ (custom importance)
``masks``               a sparsity wrapper, to    SAM, Sassha (sparse
                        its inner chain           perturbation)
``mask_update``         the loop (host-scheduled  the sparsity wrappers
                        masks)
======================  ========================  ==============================

Rules every provider and consumer keeps:

* ``value_fn`` and its siblings evaluate the loss on the step's batch, with the
  step's rng and the batch statistics from *before* the step; their results
  are discarded, so calling them never changes model state. A transform may
  call them any number of times (SAM once, SAFE on projection steps only).
* ``masks`` is a params-like pytree of bool arrays with ``None`` on dense
  leaves (the sparsity wrapper's vocabulary, ``flatsparse.sparsity``).
* ``mask_update`` is a static Python bool (jit with
  ``static_argnames='mask_update'``): two compiled steps and no ``lax.cond``.
* Randomness: a transform keeps a base key in its state and derives the step's
  key with ``fold_in(key, count)`` (``flatsparse.rng``), so ``update`` is pure.
* Multi-device: inputs are placed with ``flatsparse.data.shard_batch`` (or
  ``jax.device_put``) before the jitted step; the functions above close over
  the placed batch, so a transform's extra evaluations are sharded like the
  step's own.

Transforms lifted into a trainer that passes no extra arguments (Scenic,
big_vision, t5x call ``tx.update(grads, state, params)``): those that need
one raise the error of :func:`require`, which names the argument, its
signature and the line to add.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
from typing import Any, Protocol, runtime_checkable

import jax

__all__ = [
    "ValueFn", "SubBatchValueFn", "ActivationsFn", "Masks", "ExtraArg",
    "EXTRA_ARGS", "require",
]

Params = Any
Masks = Any
"""A params-like pytree of bool arrays, ``None`` on dense leaves."""


@runtime_checkable
class ValueFn(Protocol):
  """``params -> scalar loss`` on the step's batch (float32 scalar)."""

  def __call__(self, params: Params) -> jax.Array:
    ...


@runtime_checkable
class SubBatchValueFn(Protocol):
  """``(params, i) -> loss`` on the ``i``-th of ``sub_batches`` equal parts.

  Attributes:
    sub_batches: the number ``m`` of equal sub-batches (static int).
  """

  sub_batches: int

  def __call__(self, params: Params, i: jax.Array | int) -> jax.Array:
    ...


@runtime_checkable
class ActivationsFn(Protocol):
  """``params -> ||X_j||^2`` per input feature of every Dense/Conv input.

  Returns a params-like pytree (``flatsparse.safe.input_feature_norms``).
  """

  def __call__(self, params: Params) -> Any:
    ...


@dataclasses.dataclass(frozen=True)
class ExtraArg:
  """One extra argument of the protocol.

  Attributes:
    name: the keyword of ``update``.
    signature: its type, in words.
    meaning: what it computes or holds.
    provider: who passes it.
    consumers: which transforms read it.
  """

  name: str
  signature: str
  meaning: str
  provider: str
  consumers: tuple[str, ...]


EXTRA_ARGS: Mapping[str, ExtraArg] = {
    a.name: a for a in (
        ExtraArg("value_fn", "params -> scalar loss",
                 "the loss on the step's batch (pre-step batch statistics)",
                 "flatsparse.train.make_train_step",
                 ("sam", "sassha", "adahessian", "sophia_h", "safe",
                  "safe_plus", "zeroth_order_gradient")),
        ExtraArg("sub_batch_value_fn", "(params, i) -> loss; .sub_batches = m",
                 "the loss on the i-th of m equal sub-batches",
                 "flatsparse.train.make_train_step(sub_batches=m)",
                 ("sam",)),
        ExtraArg("activations_fn", "params -> params-like pytree",
                 "per-input-feature squared norms of every Dense/Conv input",
                 "flatsparse.train.make_train_step", ("safe_plus",)),
        ExtraArg("activations", "params-like pytree",
                 "precomputed per-input-feature squared norms",
                 "the caller", ("safe_plus",)),
        ExtraArg("importance", "params-like pytree of P >= 0",
                 "a custom importance for SAFE+'s projection",
                 "the caller", ("safe_plus",)),
        ExtraArg("masks", "params-like pytree of bool, None on dense leaves",
                 "the active weights of the enclosing sparsity wrapper",
                 "flatsparse.sparsity wrappers, to their inner chain",
                 ("sam", "sassha")),
        ExtraArg("mask_update", "static Python bool",
                 "whether this step updates the masks (host-scheduled)",
                 "flatsparse.train loop (host_mask_schedule)",
                 ("sparsity wrappers",)),
    )
}


_NOT_NEEDED = object()


def require(transform: str, name: str, value: Any, *,
            params: Any = _NOT_NEEDED,
            why: str = "") -> Any:
  """Returns ``value``, or raises the protocol's error if it is missing.

  Args:
    transform: the transform's name as the user wrote it (``"sam"``).
    name: the extra argument's name, a key of ``EXTRA_ARGS``.
    value: what ``update`` received (None when missing).
    params: ``update``'s ``params`` when the transform needs them too (None
      when missing; the message then names both); leave out when it does
      not.
    why: the setting that needs the argument (``"rho > 0"``), if any.

  Raises:
    ValueError: naming the argument, its signature and how to pass it.
  """
  arg = EXTRA_ARGS[name]
  needs_params = params is not _NOT_NEEDED
  if value is not None and params is not None:
    return value
  what = ("params and the extra argument" if needs_params
          else "the extra argument")
  because = f" ({why})" if why else ""
  raise ValueError(
      f"{transform}{because} needs {what} {name} ({arg.signature}: "
      f"{arg.meaning}): tx.update(grads, state, params, {name}=...). "
      f"{arg.provider} passes it.")
