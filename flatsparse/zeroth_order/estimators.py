"""Zeroth-order gradient estimators as Optax transformations.

The incoming update (a gradient, if any) is ignored: the transform queries
the extra argument ``value_fn(params) -> loss`` at perturbed parameters and
emits an estimate of the gradient, for any optax optimizer after it
(``optax.chain(zeroth_order_gradient(...), optax.adam(lr))``, or
``optax.sgd``). With ``x`` the parameters flattened to ``d`` numbers,
``c_k`` the smoothing scale at step ``k`` and ``q`` directions ``u_j``::

  two-sided:  g = 1/q sum_j (f(x + c u_j) - f(x - c u_j)) / (2 c) * w(u_j)
  one-sided:  g = 1/q sum_j (f(x + c u_j) - f(x)) / c * w(u_j)

================  ==========================================  =============
estimator         u_j                                         w(u)
================  ==========================================  =============
``'spsa'``        entries of random sign, ``|u_i| ~ U[0.5, 1]``  ``1 / u``
                  (ZIP's; Spall's Bernoulli +-1 when the       (element-wise)
                  range is [1, 1])
``'gaussian'``    ``N(0, I)``                                 ``u``
``'sphere'``      uniform on the unit sphere                  ``d u``
``'coordinate'``  ``e_i``, q distinct coordinates             ``(d / q) u``
================  ==========================================  =============

Each is unbiased for the gradient of a quadratic (the smoothing bias of a
general ``f`` is ``O(c^2)`` two-sided, ``O(c)`` one-sided); a test checks
it. Query accounting is exact: a step spends ``2q`` queries two-sided,
``q + 1`` one-sided with ``reuse_center=True`` (one ``f(x)`` for all
directions) and ``2q`` without. All queries of a step are one ``vmap`` of
``value_fn`` (one batched evaluation). The state counts steps and queries;
with ``budget`` a step that would exceed it queries nothing and emits
zeros (``lax.cond``), so a loop can run on and the optimizer sees no
update. :func:`queries_used` reads the count out of any optax state.

Schedules: ``smoothing`` and the optimizer's learning rate may be optax
schedules of the step count; ZIP's are :func:`zip_smoothing` (``c_k =
0.01 / k^0.1``) and :func:`zip_learning_rate` (``a_k = 0.01 / (k +
1)^0.4``), with ``k = count + 1``.

Randomness: ``seed`` (an int or key) and ``fold_in(key, count)`` per step
(the library's seed rule, ``flatsparse.rng``).

References:
  Spall, "Multivariate stochastic approximation using a simultaneous
  perturbation gradient approximation", IEEE TAC 1992; Nesterov and
  Spokoiny, "Random gradient-free minimization of convex functions", 2017;
  Park et al., "ZIP: An efficient zeroth-order prompt tuning for black-box
  vision-language models", ICLR 2025.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import optax

from flatsparse import protocol
from flatsparse import rng
from flatsparse import tree_utils
from flatsparse import validation

__all__ = ["ESTIMATORS", "ZerothOrderState", "zeroth_order_gradient",
           "queries_per_step", "queries_used", "zip_smoothing",
           "zip_learning_rate"]

ESTIMATORS = ("spsa", "gaussian", "sphere", "coordinate")
Schedule = Callable[[jax.Array], jax.Array]


class ZerothOrderState(NamedTuple):
  """Steps taken, queries spent (both int32) and the base PRNG key."""

  count: jax.Array
  queries: jax.Array
  key: jax.Array


def queries_per_step(num_directions: int, two_sided: bool,
                     reuse_center: bool) -> int:
  """``2q`` two-sided, ``q + 1`` one-sided reusing ``f(x)``, else ``2q``."""
  if two_sided or not reuse_center:
    return 2 * num_directions
  return num_directions + 1


def zip_smoothing(c0: float = 0.01, gamma: float = 0.1) -> Schedule:
  """ZIP's smoothing scale ``c_k = c0 / k^gamma``, ``k = count + 1``."""
  return lambda count: c0 / (count + 1.0) ** gamma


def zip_learning_rate(a0: float = 0.01, alpha: float = 0.4) -> Schedule:
  """ZIP's step size ``a_k = a0 / (k + 1)^alpha``, ``k = count + 1``."""
  return lambda count: a0 / (count + 2.0) ** alpha


def _directions(estimator: str, key: jax.Array, q: int, d: int,
                spsa_range: tuple[float, float], dtype) -> tuple[jax.Array,
                                                                 jax.Array]:
  """``(u (q, d), weights (q, d))``: the directions and what multiplies
  each difference quotient (module docstring)."""
  if estimator == "spsa":
    k_sign, k_size = jax.random.split(key)
    sign = jax.random.rademacher(k_sign, (q, d), dtype)
    size = jax.random.uniform(k_size, (q, d), dtype, *spsa_range)
    u = sign * size
    return u, 1.0 / u
  if estimator == "gaussian":
    u = jax.random.normal(key, (q, d), dtype)
    return u, u
  if estimator == "sphere":
    u = jax.random.normal(key, (q, d), dtype)
    u = u / jnp.linalg.norm(u, axis=1, keepdims=True)
    return u, d * u
  # coordinate: q distinct coordinates, scaled by d / q (unbiased).
  index = jax.random.choice(key, d, (q,), replace=False)
  u = jax.nn.one_hot(index, d, dtype=dtype)
  return u, (d / q) * u


def zeroth_order_gradient(
    estimator: str = "spsa", num_directions: int | None = None,
    smoothing: float | Schedule = 0.01, *, two_sided: bool = True,
    reuse_center: bool = True, budget: int | None = None,
    spsa_range: tuple[float, float] = (0.5, 1.0), seed: Any = 0
) -> optax.GradientTransformationExtraArgs:
  """A zeroth-order gradient estimate from ``value_fn`` (module docstring).

  Args:
    estimator: ``'spsa'``, ``'gaussian'``, ``'sphere'`` or ``'coordinate'``.
    num_directions: ``q >= 1`` directions averaged per step (None: 1; a
      static int, so ``inject_hyperparams`` leaves it alone).
    smoothing: ``c > 0``, a float or a schedule of the step count.
    two_sided: central differences (else forward differences).
    reuse_center: one-sided only: one ``f(x)`` shared by the directions.
    budget: Total queries allowed (None: no limit); a step that would go
      over it emits zeros and queries nothing.
    spsa_range: SPSA's ``[low, high]`` for ``|u_i|`` (ZIP: [0.5, 1]).
    seed: An int or a PRNG key.

  Returns:
    A ``GradientTransformationExtraArgs`` whose ``update`` needs
    ``value_fn``; the updates have the params' structure and dtypes.

  Raises:
    ValueError: for an unknown estimator, ``q < 1``, a negative budget, a
      smoothing scale that is not positive or a bad SPSA range.
  """
  validation.check_choice("estimator", estimator, ESTIMATORS)
  q = validation.check_count("num_directions",
                             1 if num_directions is None else num_directions)
  if budget is not None:
    validation.check_count("budget", budget, minimum=0)
  if not callable(smoothing):
    validation.check("smoothing", smoothing, lambda c: c > 0, "> 0")
  low, high = spsa_range
  if not 0 < low <= high:
    raise ValueError(f"spsa_range must satisfy 0 < low <= high, got "
                     f"{spsa_range!r}.")
  per_step = queries_per_step(q, two_sided, reuse_center)
  name = f"zeroth_order_gradient({estimator!r})"

  def init_fn(params):
    del params
    return ZerothOrderState(jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32),
                            rng.base_key(seed))

  def update_fn(updates, state, params=None, *, value_fn=None, **extra):
    del extra
    protocol.require(name, "value_fn", value_fn, params=params)
    del updates  # the estimate replaces any incoming gradient
    flat_params, unravel = jax.flatten_util.ravel_pytree(params)
    flat_dtype = flat_params.dtype
    dtype = jnp.promote_types(flat_dtype, jnp.float32)
    x = flat_params.astype(dtype)
    d = x.shape[0]
    if estimator == "coordinate" and q > d:
      raise ValueError(f"coordinate estimator: num_directions {q} is above "
                       f"the {d} parameters.")
    c = smoothing(state.count) if callable(smoothing) else smoothing
    c = jnp.asarray(c, dtype)

    def estimate(_):
      key = jax.random.fold_in(state.key, state.count)
      u, weights = _directions(estimator, key, q, d, (low, high), dtype)
      if two_sided:
        points = jnp.concatenate([x + c * u, x - c * u])
      elif reuse_center:
        points = jnp.concatenate([x[None], x + c * u])
      else:
        points = jnp.concatenate([jnp.broadcast_to(x, (q, d)), x + c * u])
      values = jax.vmap(lambda p: value_fn(unravel(p.astype(flat_dtype))))(
          points).astype(dtype)
      if two_sided:
        quotients = (values[:q] - values[q:]) / (2.0 * c)
      elif reuse_center:
        quotients = (values[1:] - values[0]) / c
      else:
        quotients = (values[q:] - values[:q]) / c
      return jnp.mean(quotients[:, None] * weights, axis=0)

    if budget is None:
      flat, spent = estimate(None), per_step
    else:
      allowed = state.queries + per_step <= budget
      flat = jax.lax.cond(allowed, estimate,
                          lambda _: jnp.zeros((d,), dtype), None)
      spent = jnp.where(allowed, per_step, 0)
    estimate_tree = unravel(flat.astype(flat_dtype))  # the params' dtypes
    new_state = ZerothOrderState(
        optax.safe_int32_increment(state.count),
        (state.queries + spent).astype(jnp.int32), state.key)
    return estimate_tree, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def queries_used(opt_state: Any) -> jax.Array:
  """Queries spent by every zeroth-order transform inside ``opt_state``."""
  states = tree_utils.find_states(opt_state, ZerothOrderState)
  if not states:
    raise ValueError("No zeroth-order state in this optimizer state; build "
                     "it with flatsparse.zeroth_order.zeroth_order_gradient.")
  return sum(s.queries for s in states)
