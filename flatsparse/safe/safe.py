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

``lambda_t`` ramps from 0 to ``lambda`` by ``lambda (1 - cos(pi p)) / 2``
with ``p = min(t / T, 1)`` (or ``lambda p``, or stays constant). ``z_0 =
Proj(w_0)``, ``u_0 = 0``. Biases and normalization parameters are not
penalized and train normally. ``Proj`` is a
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

Dtypes: every quantity is computed in its parameter's dtype, at least float32
(``jnp.promote_types(dtype, float32)``), and ``lambda_t`` in the widest such
dtype of the prunable leaves: float32 and bfloat16 parameters compute in
float32 (``z`` and ``u`` are stored in the parameters' dtype), float64 ones
(``jax_enable_x64``) in float64 throughout.

Multi-device: gradients and ``value_fn`` are global under ``jax.jit`` with
sharded data, so the SAM gradient is the all-device one (the public JAX
reference never averages its second gradient across devices).

Differences from the reference code (Lee et al.'s public JAX code), both
deliberate; the keywords in brackets select the reference behaviour:

* Kept count: ``n - round(s n)`` weights of ``n`` at sparsity ``s`` (round
  half to even, as every pruner of ``flatsparse``); the reference prunes
  ``floor(s n)`` (it thresholds at the ``int(s n)``-th smallest score). Where
  the fraction of ``s n`` is above 1/2 (or exactly 1/2 with ``floor(s n)``
  odd) this keeps one weight fewer per comparison group
  [``Projection(rounding='floor')``]. Ties at the threshold: exactly the
  count is kept here (lower index first), the reference keeps every tie.
* Penalty after ``T = total_steps``: held at ``lambda`` here; the reference
  evaluates its formula at ``t / T > 1``, so its cosine ramp falls back
  (``cos`` continues past ``pi``: back to 0 at ``2 T``) and its linear one
  keeps growing [``penalty_after_total='continue'``].

References:
  Lee, Lee, Chung, Lee, "SAFE: Finding Sparse and Flat Minima to Improve
  Pruning", ICML 2025.
  Boyd et al., "Distributed Optimization and Statistical Learning via the
  Alternating Direction Method of Multipliers", 2011.
  Zhang et al., "A Systematic DNN Weight Pruning Framework using Alternating
  Direction Method of Multipliers", ECCV 2018.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from flatsparse import protocol
from flatsparse import rng
from flatsparse import tree_utils
from flatsparse import validation
from flatsparse.flatness import curvature
from flatsparse.flatness.sam import checked_value_fn
from flatsparse.flatness.sam import perturbation
from flatsparse.safe.projection import Projection

__all__ = ["PENALTY_SCHEDULES", "PENALTY_AFTER_TOTAL", "SafeState", "safe",
           "admm", "penalty", "sharp_gradient", "update_importance",
           "check_hyperparameters", "require_params"]

PENALTY_SCHEDULES = ("cosine", "linear", "constant")
PENALTY_AFTER_TOTAL = ("hold", "continue")


class SafeState(NamedTuple):
  """State of :func:`safe`: ``z`` and ``u`` are ``None`` on dense leaves."""

  count: jax.Array
  z: Any
  u: Any
  importance: Any  # stored P (None for the magnitude projection)
  key: jax.Array
  inner_state: Any


def penalty(lam: Any, count: jax.Array, schedule: str,
            total_steps: int | None, *, after_total: str = "hold",
            dtype: Any = jnp.float32) -> jax.Array:
  """``lambda_t`` at step ``count`` (0-based), in ``dtype``.

  With ``p = t / T``: ``lam (1 - cos(pi p)) / 2`` (``'cosine'``), ``lam p``
  (``'linear'``) or ``lam`` (``'constant'``). ``after_total='hold'`` clips
  ``p`` at 1; ``'continue'`` does not (the reference code: the cosine falls
  back after ``T``, the linear ramp keeps growing).

  Args:
    lam: the penalty ``lambda`` (a number or a traced scalar).
    count: the step ``t``.
    schedule: one of ``PENALTY_SCHEDULES``.
    total_steps: ``T`` (unused by ``'constant'``).
    after_total: one of ``PENALTY_AFTER_TOTAL``.
    dtype: the computation's dtype.

  Returns:
    A scalar of ``dtype``.
  """
  if schedule == "constant":
    return jnp.asarray(lam, dtype)
  progress = jnp.asarray(count).astype(dtype) / total_steps
  if after_total == "hold":
    progress = jnp.minimum(progress, 1.0)
  if schedule == "linear":
    return (lam * progress).astype(dtype)
  return (lam * 0.5 * (1.0 - jnp.cos(jnp.pi * progress))).astype(dtype)


def require_params(transform: str, params: Any, rho: Any,
                   value_fn: Any) -> None:
  """Raises unless ``update`` got ``params`` (and ``value_fn`` when rho > 0).

  Uses the error of :func:`flatsparse.protocol.require` when ``value_fn`` is
  needed as well.
  """
  if params is not None:
    return
  if not validation.is_number(rho, 0):
    protocol.require(transform, "value_fn", value_fn, params=params,
                     why="rho > 0")
  raise ValueError(f"{transform} needs params: tx.update(grads, state, "
                   "params).")


def sharp_gradient(grads: Any, params: Any, rho: Any,
                   value_fn: Callable[[Any], jax.Array] | None, *,
                   transform: str = "safe") -> Any:
  """SAM's ``grad f(w + rho g / ||g||)``; the plain gradient when rho == 0.

  ``transform`` names the caller in the error raised without ``value_fn``.
  """
  if validation.is_number(rho, 0):
    return grads
  protocol.require(transform, "value_fn", value_fn, why="rho > 0")
  e = perturbation(grads, params, rho)
  perturbed = jax.tree.map(lambda w, d: w + d.astype(w.dtype), params, e)
  sharp = jax.grad(checked_value_fn(value_fn))(perturbed)
  return jax.tree.map(lambda s, g: s.astype(g.dtype), sharp, grads)


def _validate(lam: Any, rho: Any, dual_period: int, schedule: str,
              total_steps: int | None, importance_ema: float,
              after_total: str) -> None:
  validation.check_choice("penalty_schedule", schedule, PENALTY_SCHEDULES)
  validation.check_choice("penalty_after_total", after_total,
                          PENALTY_AFTER_TOTAL)
  if schedule != "constant" and (not isinstance(total_steps, int)
                                 or isinstance(total_steps, bool)
                                 or total_steps < 1):
    raise ValueError(f"penalty_schedule={schedule!r} needs total_steps, an "
                     f"int >= 1; got {total_steps!r}.")
  validation.check_count("dual_period", dual_period)
  check_hyperparameters(lam=lam, rho=rho, importance_ema=importance_ema)


def check_hyperparameters(**values: Any) -> None:
  """``importance_ema`` in [0, 1), the others (``lam``, ``rho``) >= 0.

  Traced values (``optax.inject_hyperparams``) are skipped; NaN fails.
  """
  for name, value in values.items():
    if name == "importance_ema":
      validation.check(name, value, lambda v: 0.0 <= v < 1.0, "in [0, 1)")
    else:
      validation.check(name, value, lambda v: v >= 0.0, ">= 0")


def update_importance(projection: Projection, stored: Any, params: Any,
                      grads: Any, extra: dict[str, Any], decay: float, *,
                      projecting: bool, key: jax.Array | None = None,
                      transform: str = "safe") -> Any:
  """New stored importance from this step's inputs (see module docstring).

  ``stored <- decay * stored + (1 - decay) * P`` (``tree_utils.ema``) with
  ``P`` from the step's inputs, in the stored importance's dtype.
  ``projecting`` marks the call made inside a projection step, where the
  costly sources (``activations_fn``, ``hessian``) are evaluated;
  ``transform`` names the caller in the errors for missing extra arguments.
  """
  kind = projection.importance
  if kind == "magnitude":
    return stored
  if kind == "gradient" and not projecting:
    squared = projection.map_prunable(
        lambda path, g: jnp.square(g.astype(tree_utils.moment_dtype(g))),
        grads)
    return tree_utils.ema(decay, stored, squared)
  if kind == "custom" and not projecting:
    given = protocol.require(transform, "importance", extra.get("importance"),
                             why="importance='custom'")
    return tree_utils.ema(decay, stored,
                          projection.normalize_importance(given, params))
  if kind == "activation":
    given = extra.get("activations")
    if given is not None and not projecting:
      return tree_utils.ema(decay, stored,
                            projection.normalize_importance(given, params))
    fn = extra.get("activations_fn")
    if given is None:
      protocol.require(
          transform, "activations_fn", fn,
          why="importance='activation', unless activations is given; see "
          "flatsparse.safe.input_feature_norms")
    if projecting and given is None:
      return tree_utils.ema(
          decay, stored, projection.normalize_importance(fn(params), params))
    return stored
  if kind == "hessian" and projecting:
    value_fn = protocol.require(transform, "value_fn", extra.get("value_fn"),
                                why="importance='hessian'")
    diag = curvature.hutchinson_diagonal(value_fn, params, key)
    absolute = projection.map_prunable(
        lambda path, d: jnp.abs(d.astype(tree_utils.moment_dtype(d))), diag)
    return tree_utils.ema(decay, stored, absolute)
  return stored


def _compute_dtype(tree: Any) -> jnp.dtype:
  """The widest ``promote_types(dtype, float32)`` of the leaves of ``tree``."""
  return functools.reduce(
      jnp.promote_types, map(tree_utils.moment_dtype, jax.tree.leaves(tree)),
      jnp.dtype(jnp.float32))


def safe(base: optax.GradientTransformation, projection: Projection, *,
         lam: Any = 1e-3, rho: Any = 0.1, dual_period: int = 32,
         penalty_schedule: str = "cosine", total_steps: int | None = None,
         penalty_after_total: str = "hold", importance_ema: float = 0.0,
         seed: Any = 0) -> optax.GradientTransformationExtraArgs:
  """SAFE (SAFE+ with an importance-weighted projection) around ``base``.

  Per step (see the module docstring)::

    d = grad f(w + rho g / ||g||) + lambda_t (w - z + u);  w <- w + B(d)
    every K steps:  z <- Proj(w + u);  u <- u + w - z

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
    penalty_after_total: ``'hold'`` (``lambda`` after ``T``) or
      ``'continue'`` (the ramp's formula past ``T``, as the reference code).
    importance_ema: EMA factor of the stored importance (0: latest value).
    seed: an int or a PRNG key (``flatsparse.rng``) for the Hutchinson
      probes of ``importance='hessian'``.

  Returns:
    A transformation needing ``value_fn`` when ``rho > 0`` (and the
    importance's extra argument for SAFE+).

  References:
    Lee, Lee, Chung, Lee, "SAFE: Finding Sparse and Flat Minima to Improve
    Pruning", ICML 2025.
  """
  return _safe("safe", base, projection, lam=lam, rho=rho,
               dual_period=dual_period, penalty_schedule=penalty_schedule,
               total_steps=total_steps,
               penalty_after_total=penalty_after_total,
               importance_ema=importance_ema, seed=seed)


def admm(base: optax.GradientTransformation, projection: Projection, *,
         lam: Any = 1e-3, dual_period: int = 32,
         penalty_schedule: str = "constant", total_steps: int | None = None,
         penalty_after_total: str = "hold", importance_ema: float = 0.0,
         seed: Any = 0) -> optax.GradientTransformationExtraArgs:
  """ADMM pruning: :func:`safe` with ``rho = 0`` and a constant penalty.

  Per step: ``w <- w + B(g + lambda_t (w - z + u))``; every ``K`` steps
  ``z <- Proj(w + u)``, ``u <- u + w - z``.

  References:
    Zhang et al., "A Systematic DNN Weight Pruning Framework using
    Alternating Direction Method of Multipliers", ECCV 2018.
  """
  return _safe("admm", base, projection, lam=lam, rho=0.0,
               dual_period=dual_period, penalty_schedule=penalty_schedule,
               total_steps=total_steps,
               penalty_after_total=penalty_after_total,
               importance_ema=importance_ema, seed=seed)


def _safe(name: str, base: optax.GradientTransformation,
          projection: Projection, *, lam: Any, rho: Any, dual_period: int,
          penalty_schedule: str, total_steps: int | None,
          penalty_after_total: str, importance_ema: float, seed: Any
          ) -> optax.GradientTransformationExtraArgs:
  """:func:`safe` and :func:`admm`; ``name`` is the one errors show."""
  _validate(lam, rho, dual_period, penalty_schedule, total_steps,
            importance_ema, penalty_after_total)
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
    value_fn = extra.get("value_fn")
    require_params(name, params, rho, value_fn)
    importance = update_importance(projection, state.importance, params,
                                   updates, extra, importance_ema,
                                   projecting=False, transform=name)
    sharp = sharp_gradient(updates, params, rho, value_fn, transform=name)
    lam_t = penalty(lam, state.count, penalty_schedule, total_steps,
                    after_total=penalty_after_total,
                    dtype=_compute_dtype(state.z))

    def direction(g, w, z, u):
      if z is None:
        return g
      dtype = tree_utils.moment_dtype(w)
      return g + (lam_t.astype(dtype) * (w.astype(dtype) - z + u)
                  ).astype(g.dtype)

    directions = jax.tree.map(direction, sharp, params, state.z, state.u,
                              is_leaf=tree_utils.is_none)
    steps, inner_state = base.update(directions, state.inner_state, params,
                                     **extra)
    new_params = optax.apply_updates(params, steps)

    def dual_step():
      key = jax.random.fold_in(state.key, state.count)
      stored = update_importance(projection, importance, new_params, updates,
                                 extra, importance_ema, projecting=True,
                                 key=key, transform=name)
      shifted = jax.tree.map(
          lambda w, u: None if u is None else w.astype(u.dtype) + u,
          new_params, state.u, is_leaf=tree_utils.is_none)
      z, _ = projection.project(_fill(shifted, new_params), stored)
      z = projection.only_prunable(z)
      u = jax.tree.map(lambda s, z: None if z is None else s - z, shifted, z,
                       is_leaf=tree_utils.is_none)
      return z, u, stored

    is_dual = (state.count + 1) % dual_period == 0
    z, u, importance = jax.lax.cond(
        is_dual, dual_step, lambda: (state.z, state.u, importance))
    return steps, SafeState(count=optax.safe_int32_increment(state.count),
                            z=z, u=u, importance=importance, key=state.key,
                            inner_state=inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _fill(partial: Any, full: Any) -> Any:
  """``partial`` with its ``None`` leaves taken from ``full``."""
  return jax.tree.map(lambda p, f: f if p is None else p, partial, full,
                      is_leaf=tree_utils.is_none)
