"""AdaHessian: Adam with the Hutchinson Hessian diagonal as second moment.

Per step ``t = 1, 2, ...`` with gradient ``g`` at ``w`` (no perturbation)::

    if (t - 1) % k == 0:                          (k = 1: every step, the paper)
      d = |z * (H(w) z)|,  z Rademacher          (curvature.hutchinson_diagonal)
      d = mean of d over the spatial window      (conv kernels, ndim == 4)
      v = b2 * v + (1 - b2) * d^2                (otherwise v is reused)
    m = b1 * m + (1 - b1) * g
    u = -lr_t * (m / (1 - b1^t) / ((v / c2)^(p / 2) + eps) + weight_decay * w)

with Hessian power ``p = hessian_power`` (1 in the paper) and ``c2`` the bias
correction of ``v`` (``1 - b2^t``; with ``k > 1`` see ``bias_correction``,
same modes as :func:`flatsparse.flatness.sassha`). Spatial averaging follows
the reference code: the absolute estimate is averaged over the kernel's
spatial window, which for Flax's HWIO kernels are axes ``(0, 1)``
(``spatial_axes``); other leaves are untouched. Weight decay is decoupled
(AdamW style, ``lr_t * weight_decay``), as in the reference code.

With ``k > 1`` this transform updates ``v`` only on refresh steps (the lazy
scheme of Sassha and Sophia); the reference code instead re-adds the stale
estimate to ``v`` on every step. The two agree for ``k = 1``, the default.

Refresh and reuse are one ``lax.cond`` on ``count % k == 0`` (none for
``k = 1``). The probe key of step ``t`` is ``fold_in(key, t - 1)``. Moments
are kept in at least float32; updates have the params' dtype.

Reference:
  Yao, Gholami, Shen, Mustafa, Keutzer & Mahoney, "ADAHESSIAN: An Adaptive
  Second Order Optimizer for Machine Learning", AAAI 2021.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from flatsparse import rng
from flatsparse.flatness import curvature
from flatsparse.flatness.sassha import (
    BIAS_CORRECTIONS, _check, _check_betas, _check_choice, _check_int, _ema,
    _is_value, _is_zero, _lazy, _learning_rate, _num_probes,
    _refresh_bias_correction, _require_value_fn, _zeros, ValueFn)

__all__ = ["AdaHessianState", "adahessian", "spatial_average"]


class AdaHessianState(NamedTuple):
  """AdaHessian's state.

  Attributes:
    count: int32 number of updates taken.
    m: first moment of the gradient (>= float32).
    v: EMA of the squared (spatially averaged) Hessian diagonal (>= float32).
    key: base PRNG key; step ``t`` uses ``fold_in(key, t - 1)``.
  """

  count: jax.Array
  m: Any
  v: Any
  key: jax.Array


def spatial_average(diag: Any, axes: Sequence[int] = (0, 1)) -> Any:
  """Averages 4-d leaves (conv kernels) over ``axes``, broadcast back."""

  def leaf(d):
    if d.ndim != 4:
      return d
    return jnp.broadcast_to(jnp.mean(d, axis=tuple(axes), keepdims=True),
                            d.shape)

  return jax.tree.map(leaf, diag)


def adahessian(learning_rate: optax.ScalarOrSchedule, *, b1: float = 0.9,
               b2: float = 0.999, eps: float = 1e-4,
               weight_decay: float = 0.0, hessian_power: float = 1.0,
               k: int = 1, num_probes: int | None = None,
               probe: str = "rademacher",
               spatial_averaging: bool = True,
               spatial_axes: Sequence[int] = (0, 1),
               bias_correction: str = "step", seed: Any = 0
               ) -> optax.GradientTransformationExtraArgs:
  """AdaHessian (see the module docstring); returns the full update.

  Args:
    learning_rate: a float or an optax schedule (at ``t - 1``). Injectable.
    b1: first-moment decay.
    b2: decay of the squared-curvature EMA.
    eps: added to the preconditioner.
    weight_decay: decoupled decay, ``w <- w * (1 - lr_t * weight_decay)``.
    hessian_power: ``p`` in ``(v / c2)^(p / 2)``, in (0, 1].
    k: refresh the Hessian estimate every ``k`` steps (paper: 1).
    num_probes: Hutchinson probes averaged per refresh: a static int >= 1,
      or None for one (see ``sassha``).
    probe: ``'rademacher'`` (the paper) or ``'gaussian'``.
    spatial_averaging: average the estimate over conv kernels' windows.
    spatial_axes: the window's axes of 4-d leaves (Flax HWIO: ``(0, 1)``;
      PyTorch-layout OIHW: ``(2, 3)``).
    bias_correction: of ``v`` when ``k > 1``: ``'step'``, ``'current_step'``
      or ``'refresh'`` (see ``sassha``).
    seed: an int or a PRNG key (``flatsparse.rng.base_key``), may be
      traced under ``vmap``; the base key kept in the state.

  Returns:
    A transformation needing ``params`` and the extra argument ``value_fn``.
  """
  _check_betas(b1=b1, b2=b2)
  _check("eps", eps, lambda v: v >= 0, ">= 0")
  _check("weight_decay", weight_decay, lambda v: v >= 0, ">= 0")
  _check("hessian_power", hessian_power, lambda v: 0 < v <= 1, "in (0, 1]")
  _check_int("k", k)
  num_probes = _num_probes(num_probes)
  _check_choice("probe", probe, curvature.PROBES)
  _check_choice("bias_correction", bias_correction, BIAS_CORRECTIONS)
  axes = tuple(spatial_axes)
  if len(axes) == 0 or any(not isinstance(a, int) or not -4 <= a < 4
                           for a in axes):
    raise ValueError("spatial_axes must be axes of a 4-d kernel, got "
                     f"{spatial_axes!r}.")
  use_decay = not _is_zero(weight_decay)

  def init_fn(params):
    return AdaHessianState(count=jnp.zeros([], jnp.int32), m=_zeros(params),
                           v=_zeros(params), key=rng.base_key(seed))

  def update_fn(updates, state, params=None, *,
                value_fn: ValueFn | None = None, **extra):
    del extra
    _require_value_fn("adahessian", value_fn, params)
    count = state.count
    key = jax.random.fold_in(state.key, count)

    def refresh(v):
      diag = curvature.hutchinson_diagonal(value_fn, params, key,
                                           num_probes=num_probes, kind=probe)
      diag = jax.tree.map(jnp.abs, diag)
      if spatial_averaging:
        diag = spatial_average(diag, axes)
      return _ema(b2, v, jax.tree.map(jnp.square, diag))

    v = _lazy(k, count, refresh, lambda v: v, state.v)
    m = _ema(b1, state.m, updates)
    lr = _learning_rate(learning_rate, count)
    step_size = lr / (1 - b1 ** (count + 1).astype(jnp.float32))
    c2 = _refresh_bias_correction(b2, count, k, bias_correction)

    def leaf(w, mo, vo):
      scaled = vo / c2
      precond = (jnp.sqrt(scaled) if _is_value(hessian_power, 1)
                 else scaled ** (hessian_power / 2)) + eps
      u = -step_size * mo / precond
      if use_decay:
        u = u - lr * weight_decay * w.astype(u.dtype)
      return u.astype(w.dtype)

    new_updates = jax.tree.map(leaf, params, m, v)
    return new_updates, AdaHessianState(count=count + 1, m=m, v=v,
                                        key=state.key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
