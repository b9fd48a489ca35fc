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

Lazy Hessian (``k > 1``), two cadences of the EMA (``hessian_ema``):

* ``'refresh'`` (default): ``v`` is updated only on refresh steps, the lazy
  scheme of Sassha and Sophia, so ``v`` averages one sample per refresh.
* ``'every_step'``: the reference implementation used by the Sassha paper
  keeps the latest ``d`` and adds it to ``v`` on every step (reuse steps
  re-add the stale estimate), so ``v`` sees ``t`` samples; its bias
  correction is ``1 - b2^t``, i.e. ``bias_correction='current_step'``. The
  state then holds the latest ``d^2`` (``AdaHessianState.estimate``).

The two agree for ``k = 1``, the default.

Entry points, as ``optax.scale_by_adam`` and ``optax.adamw``:
:func:`scale_by_adahessian` returns the direction ``m / (1 - b1^t) /
((v / c2)^(p / 2) + eps)``, to be followed by the learning rate;
:func:`adahessian` returns the full update ``u``, equal up to float rounding
to ``optax.chain(scale_by_adahessian(...),
optax.add_decayed_weights(weight_decay),
optax.scale_by_learning_rate(learning_rate))``. It is not built as that
chain: it computes ``u`` in the order ``-lr_t / (1 - b1^t) * m / precond -
lr_t * weight_decay * w``, which rounds differently in float32 from scaling
the direction afterwards (trajectories are kept bit for bit), and its state
is one :class:`AdaHessianState`, not a chain's tuple.

Refresh and reuse are one ``lax.cond`` on ``count % k == 0`` (none for
``k = 1``; ``flatsparse.flatness.hutchinson_ema``). The probe key of step
``t`` is ``fold_in(key, t - 1)``. Moments are kept in at least float32, the
bias corrections in the moments' dtype (float64 for float64 params under
``jax_enable_x64``); updates have the params' dtype.

References:
  Yao, Gholami, Shen, Mustafa, Keutzer & Mahoney, "ADAHESSIAN: An Adaptive
  Second Order Optimizer for Machine Learning", AAAI 2021.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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

__all__ = ["AdaHessianState", "adahessian", "scale_by_adahessian",
           "spatial_average", "HESSIAN_EMAS"]

HESSIAN_EMAS = hema.CADENCES


class AdaHessianState(NamedTuple):
  """State of :func:`adahessian` and :func:`scale_by_adahessian`.

  Attributes:
    count: int32 number of updates taken.
    m: first moment of the gradient (>= float32).
    v: EMA of the squared (spatially averaged) Hessian diagonal (>= float32).
    key: base PRNG key; step ``t`` uses ``fold_in(key, t - 1)``.
    estimate: the latest ``d^2`` with ``hessian_ema='every_step'``; None
      otherwise.
  """

  count: jax.Array
  m: Any
  v: Any
  key: jax.Array
  estimate: Any = None


def spatial_average(diag: Any, axes: Sequence[int] = (0, 1)) -> Any:
  """Averages 4-d leaves (conv kernels) over ``axes``, broadcast back."""

  def leaf(d):
    if d.ndim != 4:
      return d
    return jnp.broadcast_to(jnp.mean(d, axis=tuple(axes), keepdims=True),
                            d.shape)

  return jax.tree.map(leaf, diag)


# finish(params, m, v, precond, c1, count) -> updates
_Finish = Callable[[Any, Any, Any, Callable[[jax.Array], jax.Array],
                    jax.Array, jax.Array], Any]


def _transform(name: str, finish: _Finish, *, b1: Any, b2: Any, eps: Any,
               hessian_power: Any, k: Any, num_probes: int | None, probe: str,
               spatial_averaging: bool, spatial_axes: Sequence[int],
               bias_correction: str, hessian_ema: str, seed: Any
               ) -> optax.GradientTransformationExtraArgs:
  """AdaHessian's moments; ``finish`` turns them into updates."""
  validation.check_betas(b1=b1, b2=b2)
  validation.check("eps", eps, lambda v: v >= 0, ">= 0")
  validation.check("hessian_power", hessian_power, lambda v: 0 < v <= 1,
                   "in (0, 1]")
  validation.check_int("k", k)
  num_probes = hema.probe_count(num_probes)
  validation.check_choice("probe", probe, curvature.PROBES)
  validation.check_choice("bias_correction", bias_correction,
                          hema.BIAS_CORRECTIONS)
  validation.check_choice("hessian_ema", hessian_ema, HESSIAN_EMAS)
  axes = tuple(spatial_axes)
  if len(axes) == 0 or any(not isinstance(a, int) or not -4 <= a < 4
                           for a in axes):
    raise ValueError("spatial_axes must be axes of a 4-d kernel, got "
                     f"{spatial_axes!r}.")
  every_step = hessian_ema == "every_step"

  def init_fn(params):
    return AdaHessianState(
        count=jnp.zeros([], jnp.int32), m=tree_utils.zeros_moments(params),
        v=tree_utils.zeros_moments(params), key=rng.base_key(seed),
        estimate=tree_utils.zeros_moments(params) if every_step else None)

  def sample(diag):
    diag = jax.tree.map(jnp.abs, diag)
    if spatial_averaging:
      diag = spatial_average(diag, axes)
    return jax.tree.map(jnp.square, diag)

  def update_fn(updates, state, params=None, *,
                value_fn: protocol.ValueFn | None = None, **extra):
    del extra
    v, estimate = hema.lazy_curvature(
        name, state.v, state, params, value_fn, k=k, decay=b2,
        num_probes=num_probes, probe=probe, sample=sample,
        last=state.estimate if every_step else None)
    count = state.count
    m = tree_utils.ema(b1, state.m, updates)
    c1, precond = hema.power_preconditioner(
        m, count, b1=b1, b2=b2, k=k, bias_correction=bias_correction,
        power=hessian_power / 2, eps=eps)
    new_updates = finish(params, m, v, precond, c1, count)
    return new_updates, AdaHessianState(
        count=optax.safe_int32_increment(count), m=m, v=v, key=state.key,
        estimate=estimate)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_adahessian(*, b1: float = 0.9, b2: float = 0.999,
                        eps: float = 1e-4, hessian_power: float = 1.0,
                        k: int = 1, num_probes: int | None = None,
                        probe: str = "rademacher",
                        spatial_averaging: bool = True,
                        spatial_axes: Sequence[int] = (0, 1),
                        bias_correction: str = "step",
                        hessian_ema: str = "refresh", seed: Any = 0
                        ) -> optax.GradientTransformationExtraArgs:
  """Rescales updates by AdaHessian's Hessian-diagonal preconditioner.

  With ``v`` the lazy EMA of the squared (spatially averaged) ``|diag H|``
  (module docstring)::

      m = b1 * m + (1 - b1) * g
      u = m / (1 - b1^t) / ((v / c2)^(p / 2) + eps)

  Follow it by the learning rate, as ``optax.scale_by_adam``.

  Args:
    b1: first-moment decay.
    b2: decay of the squared-curvature EMA.
    eps: added to the preconditioner.
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
    hessian_ema: ``'refresh'`` (default: update ``v`` on refresh steps
      only) or ``'every_step'`` (the reference code's cadence: re-add the
      latest estimate on every step; pair it with
      ``bias_correction='current_step'``); the same when ``k = 1``. See the
      module docstring.
    seed: an int or a PRNG key (``flatsparse.rng.base_key``), may be
      traced under ``vmap``; the base key kept in the state.

  Returns:
    A transformation needing ``params`` and the extra argument ``value_fn``;
    its state is an :class:`AdaHessianState`; updates have the params'
    dtype.
  """

  def finish(params, m, v, precond, c1, count):
    del count
    return hema.preconditioned_updates(params, m, v, precond, c1)

  return _transform("scale_by_adahessian", finish, b1=b1, b2=b2, eps=eps,
                    hessian_power=hessian_power, k=k, num_probes=num_probes,
                    probe=probe, spatial_averaging=spatial_averaging,
                    spatial_axes=spatial_axes, bias_correction=bias_correction,
                    hessian_ema=hessian_ema, seed=seed)


# The docstring documents only what scale_by_adahessian's does not.
def adahessian(learning_rate: optax.ScalarOrSchedule,  # noqa: D417
               *, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-4,
               weight_decay: float = 0.0, hessian_power: float = 1.0,
               k: int = 1, num_probes: int | None = None,
               probe: str = "rademacher",
               spatial_averaging: bool = True,
               spatial_axes: Sequence[int] = (0, 1),
               bias_correction: str = "step", hessian_ema: str = "refresh",
               seed: Any = 0) -> optax.GradientTransformationExtraArgs:
  """AdaHessian (see the module docstring); returns the full update.

  ``u = -lr_t / (1 - b1^t) * m / ((v / c2)^(p / 2) + eps) - lr_t *
  weight_decay * w``: :func:`scale_by_adahessian` with the learning rate and
  the decoupled weight decay, computed in this order.

  Takes the arguments of :func:`scale_by_adahessian`, with the same
  defaults, and these:

  Args:
    learning_rate: a float or an optax schedule (at ``t - 1``). Injectable.
    weight_decay: decoupled decay, ``w <- w * (1 - lr_t * weight_decay)``.

  Returns:
    A transformation needing ``params`` and the extra argument ``value_fn``,
    with one :class:`AdaHessianState` as its state.
  """
  validation.check("weight_decay", weight_decay, lambda v: v >= 0, ">= 0")
  use_decay = not validation.is_number(weight_decay, 0)

  def finish(params, m, v, precond, c1, count):
    lr = hema.learning_rate_at(learning_rate, count)
    return hema.preconditioned_updates(
        params, m, v, precond, c1, learning_rate=lr,
        decay=lr * weight_decay if use_decay else None)

  return _transform("adahessian", finish, b1=b1, b2=b2, eps=eps,
                    hessian_power=hessian_power, k=k, num_probes=num_probes,
                    probe=probe, spatial_averaging=spatial_averaging,
                    spatial_axes=spatial_axes, bias_correction=bias_correction,
                    hessian_ema=hessian_ema, seed=seed)
