"""Sophia-H: clipped, gamma-scaled Newton-like steps with a lazy Hessian EMA.

Per step ``t = 1, 2, ...`` with gradient ``g`` at ``w`` (Algorithm 3 of the
paper, Hutchinson estimator)::

    m = b1 * m + (1 - b1) * g
    if (t - 1) % k == 0:                          (steps 1, k+1, ...)
      h = b2 * h + (1 - b2) * z * (H(w) z)       (otherwise h is reused)
    u = -lr_t * (clip(m / denom(h), -clip, clip) + weight_decay * w)

The estimate is ``curvature.hutchinson_diagonal`` with ``fold_in(key, t-1)``
(``flatsparse.flatness.hutchinson_ema``); ``h`` is not made non-negative.
Weight decay is decoupled (AdamW style, ``lr_t * weight_decay``). Refresh
and reuse are one ``lax.cond``.

The denominator (``eps_mode``), where ``eps`` goes:

* ``'floor'`` (default): ``denom = max(gamma * h, eps)``, ``eps`` a floor.
* ``'add'`` (the reference code): ``denom = gamma * max(h, 0) + eps``.

Both give ``clip * sign(m)`` where ``h <= 0`` (with a tiny ``eps``) and
agree up to ``eps`` where ``gamma * h >> eps``.

Entry points, as ``optax.scale_by_adam`` and ``optax.adamw``:
:func:`scale_by_sophia_h` returns the clipped ratio
``clip(m / denom(h), -clip, clip)``, to be followed by the learning rate;
:func:`sophia_h` returns the full update ``u``, the same as
``optax.chain(scale_by_sophia_h(...), optax.add_decayed_weights(
weight_decay), optax.scale_by_learning_rate(learning_rate))``. It is one
transform rather than that chain so that its state stays one
:class:`SophiaHState` (``state.count``, ``state.m``), as for ``sassha`` and
``adahessian``.

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
  ``1 - b1^t`` (computed in the moments' dtype).
* ``eps``: the paper's ``1e-12`` here, ``1e-8`` in optax; optax's
  ``weight_decay`` defaults to ``1e-4``, this one to 0.
* Probe: Rademacher here and in optax (the same estimator as Sassha and
  AdaHessian); the paper draws Gaussian probes (``probe='gaussian'``).
* Keys: optax splits its key every step; this uses ``fold_in(key, t - 1)``.
  On a diagonal Hessian both estimates are exact, so trajectories agree.

References:
  Liu, Li, Hall, Liang & Ma, "Sophia: A Scalable Stochastic Second-order
  Optimizer for Language Model Pre-training", ICLR 2024.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from flatsparse import protocol
from flatsparse import rng
from flatsparse import tree_utils
from flatsparse import validation
from flatsparse.flatness import curvature
from flatsparse.flatness import hutchinson_ema as hema

__all__ = ["SophiaHState", "sophia_h", "scale_by_sophia_h", "EPS_MODES"]

EPS_MODES = ("floor", "add")


class SophiaHState(NamedTuple):
  """State of :func:`sophia_h` and :func:`scale_by_sophia_h`.

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


# finish(params, ratio, count) -> updates, ratio = clipped m / denom(h).
_Finish = Callable[[Any, Any, jax.Array], Any]


def _transform(name: str, finish: _Finish, *, b1: Any, b2: Any, gamma: Any,
               eps: Any, clip: Any, k: Any, num_probes: int | None,
               probe: str, bias_correction: bool, lagged_hessian: bool,
               eps_mode: str, seed: Any
               ) -> optax.GradientTransformationExtraArgs:
  """Sophia-H's clipped ratio; ``finish`` turns it into updates."""
  validation.check_betas(b1=b1, b2=b2)
  validation.check("gamma", gamma, lambda v: v > 0, "> 0")
  validation.check("eps", eps, lambda v: v > 0, "> 0")
  validation.check("clip", clip, lambda v: v > 0, "> 0")
  validation.check_int("k", k)
  num_probes = hema.probe_count(num_probes)
  validation.check_choice("probe", probe, curvature.PROBES)
  validation.check_choice("eps_mode", eps_mode, EPS_MODES)

  def init_fn(params):
    return SophiaHState(count=jnp.zeros([], jnp.int32),
                        m=tree_utils.zeros_moments(params),
                        h=tree_utils.zeros_moments(params),
                        key=rng.base_key(seed))

  def denominator(ho):
    if eps_mode == "floor":
      return jnp.maximum(gamma * ho, eps)
    return gamma * jnp.maximum(ho, 0) + eps

  def update_fn(updates, state, params=None, *,
                value_fn: protocol.ValueFn | None = None, **extra):
    del extra
    new_h, _ = hema.lazy_curvature(
        name, state.h, state, params, value_fn, k=k, decay=b2,
        num_probes=num_probes, probe=probe)
    count = state.count
    h = state.h if lagged_hessian else new_h
    m = tree_utils.ema(b1, state.m, updates)
    scale = (1 / hema.moment_bias_correction(b1, count, hema.scalar_dtype(m))
             if bias_correction else 1)
    ratio = jax.tree.map(
        lambda mo, ho: jnp.clip(mo * scale / denominator(ho), -clip, clip),
        m, h)
    new_updates = finish(params, ratio, count)
    return new_updates, SophiaHState(
        count=optax.safe_int32_increment(count), m=m, h=new_h, key=state.key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_sophia_h(*, b1: float = 0.965, b2: float = 0.99,
                      gamma: float = 0.01, eps: float = 1e-12,
                      clip: float = 1.0, k: int = 10,
                      num_probes: int | None = None,
                      probe: str = "rademacher",
                      bias_correction: bool = False,
                      lagged_hessian: bool = False, eps_mode: str = "floor",
                      seed: Any = 0) -> optax.GradientTransformationExtraArgs:
  """Rescales updates by Sophia-H's clipped Hessian preconditioner.

  With ``h`` the lazy Hutchinson EMA of ``diag H`` (module docstring)::

      m = b1 * m + (1 - b1) * g
      u = clip(m / denom(h), -clip, clip)

  ``denom(h) = max(gamma * h, eps)`` (``eps_mode='floor'``) or
  ``gamma * max(h, 0) + eps`` (``'add'``). Follow it by the learning rate,
  as ``optax.scale_by_adam``.

  Args:
    b1: first-moment decay.
    b2: decay of the Hessian EMA (per refresh).
    gamma: scale of the Hessian in the denominator.
    eps: floor of the denominator, or added to it (``eps_mode``).
    clip: element-wise bound of the preconditioned step (> 0).
    k: refresh the Hessian estimate every ``k`` steps.
    num_probes: Hutchinson probes averaged per refresh: a static int >= 1,
      or None for one (see ``sassha``).
    probe: ``'rademacher'`` or ``'gaussian'`` (the paper's).
    bias_correction: divide ``m`` by ``1 - b1^t`` (optax) or not (paper).
    lagged_hessian: refresh ``h`` after the step (optax, levanter) instead
      of before it (paper).
    eps_mode: ``'floor'`` (default) or ``'add'`` (the reference code); see
      the module docstring.
    seed: an int or a PRNG key (``flatsparse.rng.base_key``), may be
      traced under ``vmap``; the base key kept in the state.

  Returns:
    A transformation needing ``params`` and the extra argument ``value_fn``;
    its state is a :class:`SophiaHState`; updates have the params' dtype.
  """

  def finish(params, ratio, count):
    del count
    return jax.tree.map(lambda w, r: r.astype(w.dtype), params, ratio)

  return _transform("scale_by_sophia_h", finish, b1=b1, b2=b2, gamma=gamma,
                    eps=eps, clip=clip, k=k, num_probes=num_probes,
                    probe=probe, bias_correction=bias_correction,
                    lagged_hessian=lagged_hessian, eps_mode=eps_mode,
                    seed=seed)


# The docstring documents only what scale_by_sophia_h's does not.
def sophia_h(learning_rate: optax.ScalarOrSchedule,  # noqa: D417
             *, b1: float = 0.965, b2: float = 0.99, gamma: float = 0.01,
             eps: float = 1e-12, weight_decay: float = 0.0, clip: float = 1.0,
             k: int = 10,
             num_probes: int | None = None, probe: str = "rademacher",
             bias_correction: bool = False, lagged_hessian: bool = False,
             eps_mode: str = "floor", seed: Any = 0
             ) -> optax.GradientTransformationExtraArgs:
  """Sophia-H (see the module docstring); returns the full update.

  ``u = -lr_t * (clip(m / denom(h), -clip, clip) + weight_decay * w)``:
  :func:`scale_by_sophia_h` with the decoupled weight decay and the
  learning rate.

  Takes the arguments of :func:`scale_by_sophia_h`, with the same
  defaults, and these:

  Args:
    learning_rate: a float or an optax schedule (at ``t - 1``). Injectable.
    weight_decay: decoupled decay added to the clipped ratio before the
      learning rate scales it: ``w <- w * (1 - lr_t * weight_decay)``.

  Returns:
    A transformation needing ``params`` and the extra argument ``value_fn``,
    with one :class:`SophiaHState` as its state.
  """
  validation.check("weight_decay", weight_decay, lambda v: v >= 0, ">= 0")
  use_decay = not validation.is_number(weight_decay, 0)

  def finish(params, ratio, count):
    lr = hema.learning_rate_at(learning_rate, count)

    def leaf(w, r):
      if use_decay:
        r = r + weight_decay * w.astype(r.dtype)
      return (-lr * r).astype(w.dtype)

    return jax.tree.map(leaf, params, ratio)

  return _transform("sophia_h", finish, b1=b1, b2=b2, gamma=gamma, eps=eps,
                    clip=clip, k=k, num_probes=num_probes, probe=probe,
                    bias_correction=bias_correction,
                    lagged_hessian=lagged_hessian, eps_mode=eps_mode,
                    seed=seed)
