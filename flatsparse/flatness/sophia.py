"""Sophia-H: clipped, gamma-scaled Newton-like steps with a lazy Hessian EMA.

Per step ``t = 1, 2, ...`` with gradient ``g`` at ``w`` (Algorithm 3 of the
paper, Hutchinson estimator)::

    m = b1 * m + (1 - b1) * g
    if (t - 1) % k == 0:                          (steps 1, k+1, ...)
      h = b2 * h + (1 - b2) * z * (H(w) z)       (otherwise h is reused)
    u = -lr_t * (clip(m / max(gamma * h, eps), -clip, clip) + weight_decay * w)

The estimate is ``curvature.hutchinson_diagonal`` with ``fold_in(key, t-1)``;
``h`` is not made non-negative (``max(gamma * h, eps)`` handles ``h <= 0``:
the step is then ``clip * sign(m)``). Weight decay is decoupled (AdamW
style, ``lr_t * weight_decay``). Refresh and reuse are one ``lax.cond``.

Differences from ``optax.contrib.sophia`` (optax 0.2.8), both available as
options; with ``lagged_hessian=True, bias_correction=True`` and the same
``eps`` this transform equals optax's step for step (tested on a quadratic):

* Timing (``lagged_hessian``). The paper refreshes ``h`` before the step
  and uses the new estimate in the same step (default, ``False``). optax
  (after levanter and the authors' PyTorch loop) refreshes ``h`` after
  computing the update, so a refresh acts from the next step and the first
  ``k`` steps see ``h = 0``, i.e. signSGD steps ``clip * sign(m)``.
* Bias correction of ``m`` (``bias_correction``): the paper and the
  authors' code use ``m`` as is (default, ``False``); optax divides by
  ``1 - b1^t``.
* ``eps``: the paper's ``1e-12`` here, ``1e-8`` in optax; optax's
  ``weight_decay`` defaults to ``1e-4``, this one to 0.
* Probe: Rademacher here and in optax (the same estimator as Sassha and
  AdaHessian); the paper draws Gaussian probes (``probe='gaussian'``).
* Keys: optax splits its key every step; this uses ``fold_in(key, t - 1)``.
  On a diagonal Hessian both estimates are exact, so trajectories agree.

Reference:
  Liu, Li, Hall, Liang & Ma, "Sophia: A Scalable Stochastic Second-order
  Optimizer for Language Model Pre-training", ICLR 2024.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from flatsparse import rng
from flatsparse.flatness import curvature
from flatsparse.flatness.sassha import (
    _check, _check_betas, _check_choice, _check_int, _ema, _is_zero, _lazy,
    _learning_rate, _num_probes, _require_value_fn, _zeros, ValueFn)

__all__ = ["SophiaHState", "sophia_h"]


class SophiaHState(NamedTuple):
  """Sophia-H's state.

  Attributes:
    count: int32 number of updates taken.
    m: first moment of the gradient (>= float32).
    h: EMA of the Hutchinson Hessian diagonal (>= float32).
    key: base PRNG key; step ``t`` uses ``fold_in(key, t - 1)``.
  """

  count: jax.Array
  m: Any
  h: Any
  key: jax.Array


def sophia_h(learning_rate: optax.ScalarOrSchedule, *, b1: float = 0.965,
             b2: float = 0.99, gamma: float = 0.01, eps: float = 1e-12,
             weight_decay: float = 0.0, clip: float = 1.0, k: int = 10,
             num_probes: int | None = None, probe: str = "rademacher",
             bias_correction: bool = False, lagged_hessian: bool = False,
             seed: Any = 0) -> optax.GradientTransformationExtraArgs:
  """Sophia-H (see the module docstring); returns the full update.

  Args:
    learning_rate: a float or an optax schedule (at ``t - 1``). Injectable.
    b1: first-moment decay.
    b2: decay of the Hessian EMA (per refresh).
    gamma: scale of the Hessian in the denominator.
    eps: floor of the denominator.
    weight_decay: decoupled decay, ``w <- w * (1 - lr_t * weight_decay)``.
    clip: element-wise bound of the preconditioned step (> 0).
    k: refresh the Hessian estimate every ``k`` steps.
    num_probes: Hutchinson probes averaged per refresh: a static int >= 1,
      or None for one (see ``sassha``).
    probe: ``'rademacher'`` or ``'gaussian'`` (the paper's).
    bias_correction: divide ``m`` by ``1 - b1^t`` (optax) or not (paper).
    lagged_hessian: refresh ``h`` after the step (optax, levanter) instead
      of before it (paper).
    seed: an int or a PRNG key (``flatsparse.rng.base_key``), may be
      traced under ``vmap``; the base key kept in the state.

  Returns:
    A transformation needing ``params`` and the extra argument ``value_fn``.
  """
  _check_betas(b1=b1, b2=b2)
  _check("gamma", gamma, lambda v: v > 0, "> 0")
  _check("eps", eps, lambda v: v > 0, "> 0")
  _check("weight_decay", weight_decay, lambda v: v >= 0, ">= 0")
  _check("clip", clip, lambda v: v > 0, "> 0")
  _check_int("k", k)
  num_probes = _num_probes(num_probes)
  _check_choice("probe", probe, curvature.PROBES)
  use_decay = not _is_zero(weight_decay)

  def init_fn(params):
    return SophiaHState(count=jnp.zeros([], jnp.int32), m=_zeros(params),
                        h=_zeros(params), key=rng.base_key(seed))

  def update_fn(updates, state, params=None, *,
                value_fn: ValueFn | None = None, **extra):
    del extra
    _require_value_fn("sophia_h", value_fn, params)
    count = state.count
    key = jax.random.fold_in(state.key, count)

    def refresh(h):
      diag = curvature.hutchinson_diagonal(value_fn, params, key,
                                           num_probes=num_probes, kind=probe)
      return _ema(b2, h, diag)

    new_h = _lazy(k, count, refresh, lambda h: h, state.h)
    h = state.h if lagged_hessian else new_h
    m = _ema(b1, state.m, updates)
    lr = _learning_rate(learning_rate, count)
    scale = (1 / (1 - b1 ** (count + 1).astype(jnp.float32))
             if bias_correction else 1)

    def leaf(w, mo, ho):
      ratio = jnp.clip(mo * scale / jnp.maximum(gamma * ho, eps), -clip, clip)
      if use_decay:
        ratio = ratio + weight_decay * w.astype(ratio.dtype)
      return (-lr * ratio).astype(w.dtype)

    new_updates = jax.tree.map(leaf, params, m, h)
    return new_updates, SophiaHState(count=count + 1, m=m, h=new_h,
                                     key=state.key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
