"""The method parts of the trainer's config: flatness, sparsity, safe.

Each wraps the method built so far (``flatsparse.train.methods``):
``config.flatness`` chains a flatness transform (e.g. SAM) before the
optimizer; ``config.sparsity`` wraps it in a ``flatsparse.sparsity`` updater
(outermost; masks checked at each evaluation, host-scheduled mask updates);
``config.safe`` wraps the optimizer in SAFE, SAFE+, ADMM or IHT (finalized by
``Proj(w_T)`` and BatchNorm re-estimation). Registered in this order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flatsparse import flatness
from flatsparse import safe
from flatsparse import sparsity
from flatsparse.train import methods
from flatsparse.train.state import TrainState

__all__ = ["FLATNESS", "build_flatness", "mask_update_flags"]

FLATNESS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sam": flatness.sam,
}


def build_flatness(config: Mapping[str, Any]) -> optax.GradientTransformation:
  """``FLATNESS[config.name](**rest)``, e.g. ``name='sam', rho=0.05``."""
  cfg = dict(config)
  name = cfg.pop("name", None)
  if name not in FLATNESS:
    raise ValueError(f"Unknown flatness transform {name!r}; allowed: "
                     f"{', '.join(FLATNESS)}.")
  try:
    return FLATNESS[name](**cfg)
  except TypeError as e:
    raise ValueError(f"Bad arguments for flatness {name!r}: {e}") from e


def _flatness(section: Mapping[str, Any], inner: methods.Method,
              context: methods.BuildContext) -> methods.Method:
  del context
  # m-sharpness: SAM's sub_batches needs the step to split the batch too.
  return inner._replace(tx=optax.chain(build_flatness(section), inner.tx),
                        sub_batches=int(section.get("sub_batches") or 1))


def mask_update_flags(updater: sparsity.SparseUpdater,
                      total_steps: int) -> np.ndarray:
  """``flags[t]``: whether ``updater`` updates its masks at its step ``t``
  (0-based), for ``t < total_steps``. Computed once on the device (any
  schedule, AC/DC included), so a loop can pass ``mask_update=flags[t]``
  with no per-step sync."""
  steps = jnp.arange(total_steps, dtype=jnp.int32)
  # vmap broadcasts a step-independent predicate (NoUpdate) to every step.
  return np.asarray(jax.jit(jax.vmap(updater.is_update_step))(steps), bool)


def _sparsity(section: Mapping[str, Any], inner: methods.Method,
              context: methods.BuildContext) -> methods.Method:
  updater = sparsity.create_updater_from_config(
      section, seed=context.key("sparsity"))

  def flags(opt_state: Any, start: int, total_steps: int) -> np.ndarray:
    count = int(sparsity.find_sparse_state(opt_state).count)
    if count != start:  # flags[t] is for the wrapper's counter t
      raise ValueError(
          f"The sparsity wrapper's step counter is {count} at train step "
          f"{start}; host-scheduled mask updates need them equal (set "
          "config.host_mask_schedule=False).")
    return mask_update_flags(updater, total_steps)

  def check(state: TrainState) -> None:
    # Pruned weights exactly 0 (skips STE); else raises.
    sparsity.check_sparse(state.params, state.opt_state, updater=updater)

  return inner._replace(
      tx=updater.wrap(inner.tx), mask_update_flags=flags, check=check,
      active_masks=lambda s: sparsity.get_masks(s.opt_state, s.params))


def _safe(section: Mapping[str, Any], inner: methods.Method,
          context: methods.BuildContext) -> methods.Method:
  tx = safe.create_from_config(section, inner.tx, context.total_steps,
                               seed=context.key("safe"))
  projection = safe.projection_from_config(section)
  # Training examples re-estimating the BatchNorm statistics of the pruned
  # network (0 keeps the running statistics).
  examples = section.get("bn_recalibration_examples", 2048)

  def finalize(state: TrainState, finalize_context: methods.FinalizeContext
               ) -> TrainState:
    params = safe.finalize(state.params, state.opt_state, projection)
    return methods.recalibrated(state, params, examples, finalize_context)

  def active_masks(state: TrainState) -> Any:
    # The projection's leaves, nonzero after finalize (Proj(w_T)).
    projected = set(projection.prunable(state.params))
    return methods.nonzero_masks(state.params,
                                 lambda path, leaf: path in projected)

  return inner._replace(tx=tx, finalize=finalize,
                        finalized_prefix="unprojected",
                        active_masks=active_masks)


methods.register_method_part("flatness", methods.MethodPart(_flatness))
methods.register_method_part("sparsity", methods.MethodPart(_sparsity))
methods.register_method_part("safe", methods.MethodPart(
    _safe, excludes=("sparsity", "flatness"),
    reason="SAFE/ADMM/IHT prune by themselves and SAFE's rho is its SAM "
    "radius."))
