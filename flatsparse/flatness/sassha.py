"""Sassha: sharpness-aware adaptive second-order optimization, one transform.

Per step ``t = 1, 2, ...`` with incoming gradient ``g`` at ``w`` and the loss
``f = value_fn`` (an extra argument of ``update``; see ``flatsparse/train/step.py``)::

    w~  = w + rho * g / ||g||                      (SAM ascent; global norm)
    g~  = grad f(w~)
    if (t - 1) % k == 0:                           (refresh steps 1, k+1, ...)
      d = z * (H(w~) z),  z Rademacher             (Hutchinson, num_probes)
      D = b2 * D + (1 - b2) * |d|                  (otherwise D is reused)
    m   = b1 * m + (1 - b1) * g~
    u   = -lr_t / (1 - b1^t) * m / ((D / c2)^alpha + eps)
          - (lr_t * weight_decay / lr_0) * w       (decoupled, relative to lr_0)

``sassha`` returns the full update ``u`` (``optax.apply_updates(w, u)`` is
the paper's update ``w * (1 - lr_t wd / lr_0) - ...``), so it sits last in
a chain (after, e.g., ``optax.clip_by_global_norm``).

Bias correction of ``D`` (``c2``), where the paper's formula and the
authors' code differ:

* ``'step'`` (default, the authors' PyTorch code): ``c2 = 1 - b2^s`` with
  ``s`` the *global step of the latest refresh* (the code recomputes the
  correction only when it refreshes ``D``), so ``D / c2`` is constant between
  refreshes. On refresh steps ``s = t``.
* ``'current_step'``: ``c2 = 1 - b2^t`` on every step, the formula read
  literally; between refreshes ``D / c2`` shrinks as ``t`` grows.
* ``'refresh'``: ``c2 = 1 - b2^r`` with ``r`` the number of refreshes so far,
  the unbiased correction of an EMA that has seen ``r`` samples.

All three agree when ``k = 1``. ``'step'`` and ``'current_step'`` differ
only between refreshes and by less than 1% once ``b2^t`` is small (a few
thousand steps at ``b2 = 0.999``); ``'refresh'`` divides by a smaller
``c2`` for ``k`` times longer (``r ~ t / k``), so its ``D / c2`` is larger
for much of a typical run.

Cost: a reuse step costs one extra gradient at ``w~`` (as SAM). A refresh
step takes ``g~`` and ``H z`` from one forward-over-reverse pass, so it
costs one Hessian-vector product and no separate gradient pass: ``g~`` and
the pass's residuals come from ``jax.linearize(jax.grad(f), w~)`` at top
level on every step, and only its tangent half (``z -> H z``) runs in the
refresh branch of a ``lax.cond`` on ``count % k == 0`` (one compiled
program; the reuse branch does nothing). Keeping the gradient out of the
conditional matters on XLA:CPU, which runs a ResNet-18 gradient inside a
``lax.cond`` branch an order of magnitude slower than at top level
(BENCHMARKS.md); the price is that the residuals stay live until the branch
(about 11% more scratch memory for ResNet-18 at batch 8 on CPU, same
flops). The estimate is that of
``flatsparse.flatness.curvature.hutchinson_diagonal(value_fn, w~,
fold_in(key, t - 1), num_probes=...)``: same probes, same arithmetic
(tested to float32 rounding).

Randomness: the state keeps a base key; step ``t`` uses
``fold_in(key, t - 1)`` (WORKSPACE.md), so ``update`` stays pure.

Dtypes: ``m`` and ``D`` are kept in at least float32 (bf16 cannot represent
``b2 = 0.999`` decay); updates have the params' dtype.

Weight decay: ``lr_0`` is ``peak_learning_rate``, by default the (constant)
``learning_rate``, so the factor is then ``1 - weight_decay``. A schedule
with ``weight_decay > 0`` needs ``peak_learning_rate``. The authors' code
multiplies by ``1 - lr_t * wd`` instead; that is this transform with
``weight_decay = wd * lr_0``.

``optax.inject_hyperparams(sassha)(learning_rate=...)`` works: it injects
every numeric argument, defaults included, so ``k`` may be an array and
``num_probes`` defaults to None (one probe). A learning rate changed through
the injected state reaches this factory as a number each step, so pass
``peak_learning_rate`` when it changes and ``weight_decay > 0``. With bf16
params pass ``hyperparam_dtype=jnp.float32`` (as for ``optax.adam``:
``b2 = 0.999`` rounds to 1 in bf16).

Reference:
  Shin, Lee, Chung & Lee, "SASSHA: Sharpness-aware Adaptive Second-order
  Optimization with Stable Hessian Approximation", ICML 2025. Defaults as in
  the reference code; its CIFAR-10 ResNet-20 recipe is ``learning_rate=0.15,
  rho=0.2, weight_decay=5e-4``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from flatsparse import rng
from flatsparse.flatness import curvature
from flatsparse.flatness.sam import checked_value_fn, perturbation

__all__ = ["SasshaState", "sassha", "BIAS_CORRECTIONS"]

BIAS_CORRECTIONS = ("step", "current_step", "refresh")
ValueFn = Callable[[Any], jax.Array]


class SasshaState(NamedTuple):
  """Sassha's state.

  Attributes:
    count: int32 number of updates taken (``t - 1`` during step ``t``).
    m: first moment of the sharpness-aware gradient (>= float32).
    D: EMA of ``|Hutchinson diagonal|`` at the perturbed point (>= float32).
    key: base PRNG key; step ``t`` uses ``fold_in(key, t - 1)``.
  """

  count: jax.Array
  m: Any
  D: Any
  key: jax.Array


# --- helpers shared with adahessian.py and sophia.py -------------------------


def _concrete(value: Any) -> float | None:
  """``float(value)``, or None for traced values (inject_hyperparams)."""
  try:
    return float(value)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return None


def _check(name: str, value: Any, ok: Callable[[float], bool],
           allowed: str) -> None:
  v = _concrete(value)
  if v is not None and not ok(v):
    raise ValueError(f"{name} must be {allowed}, got {value!r}.")


def _check_betas(**betas: Any) -> None:
  for name, value in betas.items():
    _check(name, value, lambda v: 0.0 <= v < 1.0, "in [0, 1)")


def _check_int(name: str, value: Any) -> None:
  """An int >= 1 (or an array, under inject_hyperparams)."""
  if isinstance(value, bool) or (
      isinstance(value, float) and not value.is_integer()):
    raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
  _check(name, value, lambda v: v >= 1, "an int >= 1")


def _num_probes(value: Any) -> int:
  """``None`` means one probe; otherwise a static Python int >= 1.

  ``None`` as the default keeps ``optax.inject_hyperparams(factory)`` from
  turning the count into a traced array (it injects every numeric argument,
  defaults included); an explicit count must then be in ``static_args``.
  """
  if value is None:
    return 1
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(
        f"num_probes must be a static int >= 1 (or None for 1), got "
        f"{value!r}; under optax.inject_hyperparams list it in static_args.")
  return value


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
  if value not in allowed:
    raise ValueError(f"Unknown {name} {value!r}; allowed: "
                     f"{', '.join(map(repr, allowed))}.")


def _is_zero(value: Any) -> bool:
  return isinstance(value, (int, float)) and value == 0


def _is_value(value: Any, target: float) -> bool:
  return isinstance(value, (int, float)) and value == target


def _moment_dtype(x: jax.Array) -> jnp.dtype:
  return jnp.promote_types(x.dtype, jnp.float32)


def _zeros(params: Any) -> Any:
  return jax.tree.map(lambda p: jnp.zeros(p.shape, _moment_dtype(p)), params)


def _ema(decay: Any, moment: Any, sample: Any) -> Any:
  return jax.tree.map(
      lambda mo, s: decay * mo + (1 - decay) * s.astype(mo.dtype),
      moment, sample)


def _learning_rate(learning_rate: Any, count: jax.Array) -> Any:
  return learning_rate(count) if callable(learning_rate) else learning_rate


def _refresh_bias_correction(b2: Any, count: jax.Array, k: Any,
                             mode: str) -> jax.Array:
  """``1 - b2^n`` for the three modes of the module docstring."""
  if mode == "current_step":
    n = count + 1
  elif mode == "step":
    n = (count // k) * k + 1  # global step of the latest refresh
  else:
    n = count // k + 1  # refreshes so far
  return 1 - b2 ** n.astype(jnp.float32)


def _lazy(k: Any, count: jax.Array, refresh: Callable[[Any], Any],
          reuse: Callable[[Any], Any], operand: Any) -> Any:
  """``refresh`` when ``count % k == 0`` else ``reuse``: one ``lax.cond``."""
  if _is_value(k, 1):
    return refresh(operand)
  return jax.lax.cond(count % k == 0, refresh, reuse, operand)


def _require_value_fn(name: str, value_fn: Any, params: Any) -> None:
  if value_fn is None or params is None:
    raise ValueError(
        f"{name} needs params and the extra argument value_fn (params -> loss "
        "on the current batch): tx.update(grads, state, params, "
        "value_fn=...). flatsparse.train.make_train_step passes it.")


def _grad_and_hvp(value_fn: ValueFn, params: Any
                  ) -> tuple[Any, Callable[[Any], Any]]:
  """``(grad f(params), v -> H(params) v)`` by ``jax.linearize``.

  The gradient is computed now (the primal of forward-over-reverse); the
  returned linear function holds only the tangent half, so a caller can run
  it inside a ``lax.cond`` branch while the gradient stays outside.
  """
  return jax.linearize(jax.grad(checked_value_fn(value_fn)), params)


def _hutchinson(hvp_fn: Callable[[Any], Any], params: Any, key: jax.Array, *,
                num_probes: int = 1, kind: str = "rademacher") -> Any:
  """``curvature.hutchinson_diagonal`` with a given ``v -> H v``: the same
  probes and arithmetic."""
  keys = jax.random.split(key, num_probes)

  def one(k):
    z = curvature.probes(k, params, kind)
    return jax.tree.map(jnp.multiply, z, hvp_fn(z))

  if num_probes == 1:
    return one(keys[0])

  def body(total, k):
    return jax.tree.map(jnp.add, total, one(k)), None

  zeros = jax.tree.map(jnp.zeros_like, params)
  total, _ = jax.lax.scan(body, zeros, keys)
  return jax.tree.map(lambda t: t / num_probes, total)


def _grad_and_hutchinson(value_fn: ValueFn, params: Any, key: jax.Array, *,
                         num_probes: int = 1, kind: str = "rademacher"
                         ) -> tuple[Any, Any]:
  """``(grad f(params), hutchinson_diagonal(value_fn, params, key, ...))``.

  The same probes and arithmetic as ``curvature.hutchinson_diagonal``; the
  gradient is the primal output of the forward-over-reverse pass, so it
  costs nothing extra.
  """
  grads, hvp_fn = _grad_and_hvp(value_fn, params)
  return grads, _hutchinson(hvp_fn, params, key, num_probes=num_probes,
                            kind=kind)


# --- Sassha ------------------------------------------------------------------


def sassha(learning_rate: optax.ScalarOrSchedule, rho: float = 0.2, *,
           k: int = 10, b1: float = 0.9, b2: float = 0.999,
           alpha: float = 0.5, eps: float = 1e-4, weight_decay: float = 0.0,
           peak_learning_rate: float | None = None,
           num_probes: int | None = None,
           probe: str = "rademacher", bias_correction: str = "step",
           sparse: bool = True, seed: Any = 0
           ) -> optax.GradientTransformationExtraArgs:
  """Sassha (see the module docstring); returns the full parameter update.

  Args:
    learning_rate: ``lr_t``, a float or an optax schedule of the step count
      (evaluated at ``t - 1``, optax's convention). Injectable.
    rho: SAM radius, >= 0.
    k: refresh the Hessian estimate every ``k`` steps (lazy Hessian), >= 1.
    b1: first-moment decay.
    b2: decay of the curvature EMA (per refresh).
    alpha: power of the bias-corrected curvature (0.5: square root).
    eps: added to the preconditioner ``(D / c2)^alpha``.
    weight_decay: decoupled decay relative to the peak learning rate:
      ``w <- w * (1 - lr_t * weight_decay / lr_0)``.
    peak_learning_rate: ``lr_0``; defaults to ``learning_rate`` when that is
      a number; required for a schedule with ``weight_decay > 0``.
    num_probes: Hutchinson probes averaged per refresh: a static int >= 1,
      or None for one (the reference's default).
    probe: ``'rademacher'`` (the reference) or ``'gaussian'``.
    bias_correction: ``'step'`` (reference code), ``'current_step'`` or
      ``'refresh'``; see the module docstring.
    sparse: perturb only active weights when a sparsity wrapper passes
      ``masks`` (as ``sam``).
    seed: an int or a PRNG key (``flatsparse.rng.base_key``), may be
      traced under ``vmap``; the base key kept in the state.

  Returns:
    A transformation needing ``params`` and the extra argument ``value_fn``.
  """
  _check("rho", rho, lambda v: v >= 0, ">= 0")
  _check_int("k", k)
  _check_betas(b1=b1, b2=b2)
  _check("alpha", alpha, lambda v: v > 0, "> 0")
  _check("eps", eps, lambda v: v >= 0, ">= 0")
  _check("weight_decay", weight_decay, lambda v: v >= 0, ">= 0")
  num_probes = _num_probes(num_probes)
  _check_choice("probe", probe, curvature.PROBES)
  _check_choice("bias_correction", bias_correction, BIAS_CORRECTIONS)
  use_decay = not _is_zero(weight_decay)
  if use_decay and peak_learning_rate is None and callable(learning_rate):
    raise ValueError(
        "sassha's weight_decay is relative to the peak learning rate; with "
        "a learning-rate schedule pass peak_learning_rate= as well.")
  if use_decay and peak_learning_rate is not None:
    _check("peak_learning_rate", peak_learning_rate, lambda v: v > 0, "> 0")

  def init_fn(params):
    return SasshaState(count=jnp.zeros([], jnp.int32), m=_zeros(params),
                       D=_zeros(params), key=rng.base_key(seed))

  def update_fn(updates, state, params=None, *,
                value_fn: ValueFn | None = None, masks: Any = None, **extra):
    del extra
    _require_value_fn("sassha", value_fn, params)
    count = state.count
    e = perturbation(updates, params, rho, masks=masks if sparse else None)
    perturbed = jax.tree.map(lambda w, d: w + d.astype(w.dtype), params, e)
    key = jax.random.fold_in(state.key, count)

    # g~ at top level (every step needs it); only the tangent half of the
    # forward-over-reverse pass (H z) runs in the refresh branch.
    sharp, hvp_fn = _grad_and_hvp(value_fn, perturbed)

    def refresh(curv):
      diag = _hutchinson(hvp_fn, perturbed, key, num_probes=num_probes,
                         kind=probe)
      return _ema(b2, curv, jax.tree.map(jnp.abs, diag))

    curv = _lazy(k, count, refresh, lambda curv: curv, state.D)
    m = _ema(b1, state.m, sharp)
    lr = _learning_rate(learning_rate, count)
    step_size = lr / (1 - b1 ** (count + 1).astype(jnp.float32))
    c2 = _refresh_bias_correction(b2, count, k, bias_correction)
    if not use_decay:
      decay = None
    elif peak_learning_rate is None:  # lr_t = lr_0: the ratio is 1
      decay = weight_decay
    else:
      decay = lr * weight_decay / peak_learning_rate

    def leaf(w, mo, d):
      scaled = d / c2
      precond = (jnp.sqrt(scaled) if _is_value(alpha, 0.5)
                 else scaled ** alpha) + eps
      u = -step_size * mo / precond
      if decay is not None:
        u = u - decay * w.astype(u.dtype)
      return u.astype(w.dtype)

    new_updates = jax.tree.map(leaf, params, m, curv)
    return new_updates, SasshaState(count=count + 1, m=m, D=curv,
                                    key=state.key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
