"""SAFE, SAFE+ and ADMM: pruning by an augmented Lagrangian, as Optax wrappers.

SAFE solves ``min_{||w||_0 <= d} max_{||e|| <= rho} f(w + e)`` by splitting
``w = z`` (``z`` sparse) and running ADMM-style iterations whose ``w``-step uses
the SAM gradient. Per step ``t`` (from 0), with base optimizer ``B``, dual
period ``K`` and penalty ``lambda_t``::

    g~      = grad f(w + rho * g / ||g||)               (SAM; rho = 0: g~ = g)
    d       = g~ + lambda_t * (w - z + u)                (prunable leaves only)
    w      <- w + B(d)
    if (t + 1) mod K == 0:
      z    <- Proj(w + u)
      u    <- u + w - z

``lambda_t`` ramps from 0 to ``lambda`` by ``lambda (1 - cos(pi t / T)) / 2``
(or linearly, or stays constant). ``z_0 = Proj(w_0)``, ``u_0 = 0``. Biases and
normalization parameters are not penalized and train normally. ``Proj`` is a
:class:`flatsparse.safe.Projection`: magnitude for SAFE and ADMM, an
importance-weighted one for SAFE+ (``importance='activation'``, ``P_jj =
||X_j||^2``). :func:`flatsparse.safe.finalize` returns ``Proj(w_T)`` with
exact sparsity.

Importance inputs (only for the generalized projection), kept in the state as
an exponential moving average with factor ``importance_ema`` (0: latest):

* ``activation``: extra argument ``activations`` (pytree like the params with
  per-input-feature squared norms) on any step, or ``activations_fn``
  (``params -> activations``), called only on projection steps.
* ``gradient``: the plain gradient ``g`` of the step, squared.
* ``hessian``: ``|diag H|`` at the new ``w`` by Hutchinson (one Rademacher
  probe per projection step) through ``value_fn``.
* ``custom``: extra argument ``importance``.

Multi-device: gradients and ``value_fn`` are global under ``jax.jit`` with
sharded data, so the SAM gradient is the all-device one (the public JAX
reference never averages its second gradient across devices).

References:
  Lee, Lee, Chung, Lee, "SAFE: Finding Sparse and Flat Minima to Improve
  Pruning", ICML 2025.
  Boyd et al., "Distributed Optimization and Statistical Learning via the
  Alternating Direction Method of Multipliers", 2011.
  Zhang et al., "A Systematic DNN Weight Pruning Framework using Alternating
  Direction Method of Multipliers", ECCV 2018.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from flatsparse import rng
from flatsparse.flatness import curvature
from flatsparse.flatness.sam import checked_value_fn, perturbation
from flatsparse.safe.projection import Projection

__all__ = ["PENALTY_SCHEDULES", "SafeState", "safe", "admm", "penalty",
           "sharp_gradient", "update_importance", "check_hyperparameters"]

PENALTY_SCHEDULES = ("cosine", "linear", "constant")


class SafeState(NamedTuple):
  """State of :func:`safe`: ``z`` and ``u`` are ``None`` on dense leaves."""

  count: jax.Array
  z: Any
  u: Any
  importance: Any  # stored P (None for the magnitude projection)
  key: jax.Array
  inner_state: Any


def penalty(lam: Any, count: jax.Array, schedule: str,
            total_steps: int | None) -> jax.Array:
  """``lambda_t`` at step ``count`` (0-based)."""
  if schedule == "constant":
    return jnp.asarray(lam, jnp.float32)
  progress = jnp.minimum(count.astype(jnp.float32) / total_steps, 1.0)
  if schedule == "linear":
    return lam * progress
  return lam * 0.5 * (1.0 - jnp.cos(jnp.pi * progress))


def sharp_gradient(grads: Any, params: Any, rho: Any,
                   value_fn: Callable[[Any], jax.Array] | None) -> Any:
  """SAM's ``grad f(w + rho g / ||g||)``; the plain gradient when rho == 0."""
  if isinstance(rho, (int, float)) and rho == 0:
    return grads
  if value_fn is None:
    raise ValueError("rho > 0 needs the extra argument value_fn (params -> "
                     "loss on the current batch); set rho=0 for plain ADMM.")
  e = perturbation(grads, params, rho)
  perturbed = jax.tree.map(lambda w, d: w + d.astype(w.dtype), params, e)
  sharp = jax.grad(checked_value_fn(value_fn))(perturbed)
  return jax.tree.map(lambda s, g: s.astype(g.dtype), sharp, grads)


def _validate(lam: Any, rho: Any, dual_period: int, schedule: str,
              total_steps: int | None, importance_ema: float) -> None:
  if schedule not in PENALTY_SCHEDULES:
    raise ValueError(f"Unknown penalty schedule {schedule!r}; allowed: "
                     f"{', '.join(PENALTY_SCHEDULES)}.")
  if schedule != "constant" and (not isinstance(total_steps, int)
                                 or total_steps < 1):
    raise ValueError(f"penalty_schedule={schedule!r} needs total_steps, a "
                     f"positive int; got {total_steps!r}.")
  if not isinstance(dual_period, int) or dual_period < 1:
    raise ValueError(f"dual_period must be a positive int, got "
                     f"{dual_period!r}.")
  check_hyperparameters(lam=lam, rho=rho, importance_ema=importance_ema)


def check_hyperparameters(**values: Any) -> None:
  """``lam``, ``rho`` >= 0 and ``importance_ema`` in [0, 1); traced skipped."""
  for name, value in values.items():
    try:
      v = float(value)
    except (TypeError, jax.errors.ConcretizationTypeError):
      continue  # traced under inject_hyperparams
    if name == "importance_ema" and not 0.0 <= v < 1.0:
      raise ValueError(f"importance_ema must be in [0, 1), got {value!r}.")
    if v < 0:
      raise ValueError(f"{name} must be >= 0, got {value!r}.")


def _ema(old: Any, new: Any, decay: Any) -> Any:
  if isinstance(decay, (int, float)) and decay == 0.0:
    return new
  return jax.tree.map(lambda o, n: decay * o + (1.0 - decay) * n, old, new)


def update_importance(projection: Projection, stored: Any, params: Any,
                      grads: Any, extra: dict[str, Any], decay: float, *,
                      projecting: bool, key: jax.Array | None = None) -> Any:
  """New stored importance from this step's inputs (see module docstring).

  ``projecting`` marks the call made inside a projection step, where the
  costly sources (``activations_fn``, ``hessian``) are evaluated.
  """
  kind = projection.importance
  if kind == "magnitude":
    return stored
  if kind == "gradient" and not projecting:
    squared = projection.map_prunable(
        lambda path, g: jnp.square(g.astype(jnp.float32)), grads)
    return _ema(stored, squared, decay)
  if kind == "custom" and not projecting:
    given = extra.get("importance")
    if given is None:
      raise ValueError("importance='custom' needs the extra argument "
                       "importance (a params-like pytree of P >= 0).")
    return _ema(stored, projection.normalize_importance(given, params), decay)
  if kind == "activation":
    given = extra.get("activations")
    if given is not None and not projecting:
      return _ema(stored, projection.normalize_importance(given, params),
                  decay)
    fn = extra.get("activations_fn")
    if given is None and fn is None:
      raise ValueError("importance='activation' (SAFE+) needs the extra "
                       "argument activations (params-like per-input-feature "
                       "squared norms) or activations_fn (params -> that); "
                       "see flatsparse.safe.input_feature_norms.")
    if projecting and given is None:
      return _ema(stored, projection.normalize_importance(fn(params), params),
                  decay)
    return stored
  if kind == "hessian" and projecting:
    value_fn = extra.get("value_fn")
    if value_fn is None:
      raise ValueError("importance='hessian' needs the extra argument "
                       "value_fn (params -> loss).")
    diag = curvature.hutchinson_diagonal(value_fn, params, key)
    absolute = projection.map_prunable(
        lambda path, d: jnp.abs(d.astype(jnp.float32)), diag)
    return _ema(stored, absolute, decay)
  return stored


def safe(base: optax.GradientTransformation, projection: Projection, *,
         lam: Any = 1e-3, rho: Any = 0.1, dual_period: int = 32,
         penalty_schedule: str = "cosine", total_steps: int | None = None,
         importance_ema: float = 0.0, seed: Any = 0
         ) -> optax.GradientTransformationExtraArgs:
  """SAFE (SAFE+ with an importance-weighted projection) around ``base``.

  Args:
    base: the primal optimizer ``B`` (any optax transformation).
    projection: what ``Proj`` keeps; its ``importance`` selects SAFE
      (``'magnitude'``) or SAFE+ (``'activation'``, ...).
    lam: the penalty ``lambda`` (reference: 1e-3). Injectable.
    rho: SAM radius (reference: 0.1); 0 skips the second gradient. Injectable.
    dual_period: ``K``, steps between ``z``/``u`` updates (reference: 32).
    penalty_schedule: ``'cosine'`` (reference), ``'linear'`` or
      ``'constant'``; the first two need ``total_steps``.
    total_steps: ``T`` of the penalty ramp.
    importance_ema: EMA factor of the stored importance (0: latest value).
    seed: an int or a PRNG key (``flatsparse.rng``) for the Hutchinson
      probes of ``importance='hessian'``.

  Returns:
    A transformation needing ``value_fn`` when ``rho > 0`` (and the
    importance's extra argument for SAFE+).
  """
  _validate(lam, rho, dual_period, penalty_schedule, total_steps,
            importance_ema)
  base = optax.with_extra_args_support(base)

  def init_fn(params):
    projection.check(params)
    z = projection.only_prunable(projection.project(params)[0])
    u = jax.tree.map(jnp.zeros_like, z)  # None leaves stay None
    return SafeState(count=jnp.zeros([], jnp.int32), z=z, u=u,
                     importance=projection.init_importance(params),
                     key=rng.base_key(seed),
                     inner_state=base.init(params))

  def update_fn(updates, state, params=None, **extra):
    if params is None:
      raise ValueError("safe needs params: tx.update(grads, state, params, "
                       "value_fn=...).")
    value_fn = extra.get("value_fn")
    importance = update_importance(projection, state.importance, params,
                                   updates, extra, importance_ema,
                                   projecting=False)
    sharp = sharp_gradient(updates, params, rho, value_fn)
    lam_t = penalty(lam, state.count, penalty_schedule, total_steps)
    directions = jax.tree.map(
        lambda g, w, z, u: g if z is None else
        g + (lam_t * (w.astype(jnp.float32) - z + u)).astype(g.dtype),
        sharp, params, state.z, state.u, is_leaf=lambda x: x is None)
    steps, inner_state = base.update(directions, state.inner_state, params,
                                     **extra)
    new_params = optax.apply_updates(params, steps)

    def dual_step():
      key = jax.random.fold_in(state.key, state.count)
      stored = update_importance(projection, importance, new_params, updates,
                                 extra, importance_ema, projecting=True,
                                 key=key)
      shifted = jax.tree.map(
          lambda w, u: None if u is None else w.astype(u.dtype) + u,
          new_params, state.u, is_leaf=lambda x: x is None)
      z, _ = projection.project(_fill(shifted, new_params), stored)
      z = projection.only_prunable(z)
      u = jax.tree.map(lambda s, z: None if z is None else s - z, shifted, z,
                       is_leaf=lambda x: x is None)
      return z, u, stored

    is_dual = (state.count + 1) % dual_period == 0
    z, u, importance = jax.lax.cond(
        is_dual, dual_step, lambda: (state.z, state.u, importance))
    return steps, SafeState(count=optax.safe_int32_increment(state.count),
                            z=z, u=u, importance=importance, key=state.key,
                            inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def admm(base: optax.GradientTransformation, projection: Projection, *,
         lam: Any = 1e-3, dual_period: int = 32,
         penalty_schedule: str = "constant", total_steps: int | None = None,
         importance_ema: float = 0.0, seed: Any = 0
         ) -> optax.GradientTransformationExtraArgs:
  """ADMM pruning: :func:`safe` with ``rho = 0`` and a constant penalty."""
  return safe(base, projection, lam=lam, rho=0.0, dual_period=dual_period,
              penalty_schedule=penalty_schedule, total_steps=total_steps,
              importance_ema=importance_ema, seed=seed)


def _fill(partial: Any, full: Any) -> Any:
  """``partial`` with its ``None`` leaves taken from ``full``."""
  return jax.tree.map(lambda p, f: f if p is None else p, partial, full,
                      is_leaf=lambda x: x is None)
