"""Iterative hard thresholding (IHT): project after every optimizer step.

Per step ``t`` (from 0), with base optimizer ``B``::

    g~  = grad f(w + rho * g / ||g||)     (rho = 0: plain IHT)
    w  <- Proj(w + B(g~))                 when t >= start_step and
                                          (t + 1 - start_step) mod period == 0
    w  <- w + B(g~)                       otherwise

The projection sees the dense step, so pruned weights whose update is large
re-enter: masks are recomputed every projection, unlike gradual magnitude
pruning. Updates are emitted so that ``optax.apply_updates`` lands pruned
weights exactly on zero (``u' = where(m, u, -w)``).

Dtypes: as :mod:`flatsparse.safe.safe` (the parameters' dtype, at least
float32; float64 parameters compute in float64).

References:
  Blumensath & Davies, "Iterative Thresholding for Sparse Approximations",
  J. Fourier Anal. Appl. 2008.
  Jin et al., "Training Skinny Deep Neural Networks with Iterative Hard
  Thresholding Methods", 2016.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from flatsparse import rng
from flatsparse import tree_utils
from flatsparse import validation
from flatsparse.safe import safe as safe_lib
from flatsparse.safe.projection import Projection

__all__ = ["IHTState", "iht"]


class IHTState(NamedTuple):
  """State of :func:`iht`."""

  count: jax.Array
  importance: Any
  key: jax.Array
  inner_state: Any


def iht(base: optax.GradientTransformation, projection: Projection, *,
        rho: Any = 0.0, period: int = 1, start_step: int = 0,
        importance_ema: float = 0.0, seed: Any = 0
        ) -> optax.GradientTransformationExtraArgs:
  """IHT around ``base`` (see the module docstring).

  Per step: ``w <- Proj(w + B(g~))`` on projection steps, ``w <- w + B(g~)``
  otherwise, ``g~`` the SAM gradient (the plain one when ``rho = 0``).

  Args:
    base: the optimizer whose step is projected.
    projection: what ``Proj`` keeps (any scope and importance).
    rho: SAM radius; 0 (default) is plain IHT. Injectable.
    period: steps between projections (1: every step).
    start_step: dense steps before the first projection.
    importance_ema: EMA factor of the stored importance.
    seed: an int or a PRNG key (``flatsparse.rng``) for the Hutchinson
      probes of ``importance='hessian'``.

  Returns:
    A transformation; ``value_fn`` is needed when ``rho > 0``.

  References:
    Jin et al., "Training Skinny Deep Neural Networks with Iterative Hard
    Thresholding Methods", 2016.
  """
  validation.check_count("period", period, 1)
  validation.check_count("start_step", start_step, 0)
  safe_lib.check_hyperparameters(rho=rho, importance_ema=importance_ema)
  base = optax.with_extra_args_support(base)

  def init_fn(params):
    projection.check(params)
    return IHTState(count=jnp.zeros([], jnp.int32),
                    importance=projection.init_importance(params),
                    key=rng.base_key(seed),
                    inner_state=base.init(params))

  def update_fn(updates, state, params=None, **extra):
    safe_lib.require_params("iht", params, rho, extra.get("value_fn"))
    importance = safe_lib.update_importance(
        projection, state.importance, params, updates, extra, importance_ema,
        projecting=False, transform="iht")
    sharp = safe_lib.sharp_gradient(updates, params, rho,
                                    extra.get("value_fn"), transform="iht")
    steps, inner_state = base.update(sharp, state.inner_state, params,
                                     **extra)

    def project():
      new_params = optax.apply_updates(params, steps)
      key = jax.random.fold_in(state.key, state.count)
      stored = safe_lib.update_importance(
          projection, importance, new_params, updates, extra, importance_ema,
          projecting=True, key=key, transform="iht")
      masks = projection.masks(new_params, stored)
      landed = tree_utils.map_masked(
          lambda m, s, w: s if m is None else jnp.where(
              m, s, (-w).astype(s.dtype)),
          masks, steps, params)
      return landed, stored

    since = state.count - start_step
    projecting = (since >= 0) & ((since + 1) % period == 0)
    steps, importance = jax.lax.cond(projecting, project,
                                     lambda: (steps, importance))
    return steps, IHTState(count=optax.safe_int32_increment(state.count),
                           importance=importance, key=state.key,
                           inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
