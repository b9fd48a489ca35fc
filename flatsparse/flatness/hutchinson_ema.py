"""Lazy Hutchinson EMA: the curvature moment of the second-order optimizers.

Sassha, AdaHessian and Sophia-H keep an exponential moving average ``D`` of
a Hutchinson estimate of the Hessian diagonal, refreshed every ``k`` steps
(lazy Hessian). With ``count = t - 1`` the number of updates taken::

    if count % k == 0:                        (steps t = 1, k + 1, 2k + 1, ...)
      d = sample(mean_i z_i * (H z_i))        (new estimate, fresh probes)
      D = b2 * D + (1 - b2) * d
    else:
      D = D                                   (reused: no work)

``sample`` maps the raw estimate to what an optimizer averages (``|d|`` for
Sassha, ``|d|`` spatially averaged and squared for AdaHessian, ``d`` itself
for Sophia-H). :func:`lazy_hutchinson_ema` does this in one ``lax.cond``
(none when ``k`` is the Python int 1), so one compiled program serves every
step. The estimate comes from ``flatsparse.flatness.curvature``
(``hutchinson_diagonal``, or ``hutchinson_diagonal_from_hvp`` with the
tangent half of ``grad_and_hvp``, so that only the Hessian-vector products
run in the refresh branch and the caller's gradient stays at top level).

Cadence ``'every_step'`` (AdaHessian's reference code): the latest sample is
kept and fed to the EMA on every step, reuse steps included::

    if count % k == 0:  d = sample(...)       (otherwise d is the last one)
    D = b2 * D + (1 - b2) * d

Bias corrections (:func:`hessian_bias_correction`), ``c2 = 1 - b2^n``:

* ``'step'``: ``n`` is the global step of the latest refresh,
  ``(count // k) * k + 1``, so ``D / c2`` is constant between refreshes.
* ``'current_step'``: ``n = t = count + 1`` on every step.
* ``'refresh'``: ``n = count // k + 1``, the number of refreshes so far.

All three agree when ``k = 1``. Every correction is computed in the dtype of
the moments (:func:`scalar_dtype`): float32 for float32 or bfloat16 params,
float64 for float64 params under ``jax_enable_x64``, so that ``1 - b2^t``
with a Python-float ``b2 = 0.999`` is not rounded to float32 (a relative
error of about 1e-5 for float64 runs).

References:
  Hutchinson, "A stochastic estimator of the trace of the influence matrix
  for Laplacian smoothing splines", 1990; Bekas, Kokiopoulou & Saad, "An
  estimator for the diagonal of a matrix", 2007; Yao et al., "ADAHESSIAN",
  AAAI 2021; Liu et al., "Sophia", ICLR 2024; Shin et al., "SASSHA", ICML
  2025.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from flatsparse import protocol
from flatsparse import tree_utils
from flatsparse import validation
from flatsparse.flatness import curvature
from flatsparse.flatness.sam import static_count

__all__ = [
    "BIAS_CORRECTIONS", "CADENCES", "probe_count", "learning_rate_at",
    "lazy_cond", "scalar_dtype", "moment_bias_correction",
    "hessian_bias_correction", "step_estimate", "lazy_hutchinson_ema",
    "lazy_curvature", "power_preconditioner", "preconditioned_updates",
]

BIAS_CORRECTIONS = ("step", "current_step", "refresh")
CADENCES = ("refresh", "every_step")


def probe_count(num_probes: int | None) -> int:
  """``None`` means one probe; otherwise a static Python int >= 1.

  See ``flatsparse.flatness.sam.static_count`` for why ``None`` is the
  default.

  Raises:
    ValueError: anything else.
  """
  return static_count("num_probes", num_probes)


def learning_rate_at(learning_rate: optax.ScalarOrSchedule,
                     count: jax.Array) -> Any:
  """``learning_rate(count)`` for a schedule, else ``learning_rate``."""
  return learning_rate(count) if callable(learning_rate) else learning_rate


def lazy_cond(k: Any, count: jax.Array, refresh: Callable[[Any], Any],
              reuse: Callable[[Any], Any], operand: Any) -> Any:
  """``refresh(operand)`` when ``count % k == 0``, else ``reuse(operand)``.

  One ``lax.cond``; ``refresh`` directly when ``k`` is the Python int 1.

  Args:
    k: the refresh period, an int >= 1 or an array (inject_hyperparams).
    count: the int32 number of updates taken.
    refresh: the work of a refresh step.
    reuse: the work of a reuse step (usually the identity).
    operand: what both branches receive.

  Returns:
    The taken branch's output.
  """
  if validation.is_number(k, 1):
    return refresh(operand)
  return jax.lax.cond(count % k == 0, refresh, reuse, operand)


def scalar_dtype(moments: Any) -> jnp.dtype:
  """The dtype of scalar corrections for ``moments``: their promoted dtype.

  float32 for float32 (and bfloat16) params, float64 for float64 params.
  """
  leaves = jax.tree.leaves(moments)
  return jnp.result_type(*leaves) if leaves else jnp.dtype(jnp.float32)


def moment_bias_correction(decay: Any, count: jax.Array,
                           dtype: Any) -> jax.Array:
  """``1 - decay^t`` with ``t = count + 1``, computed in ``dtype``."""
  return 1 - decay ** (count + 1).astype(dtype)


def hessian_bias_correction(decay: Any, count: jax.Array, k: Any, mode: str,
                            dtype: Any) -> jax.Array:
  """``1 - decay^n`` for the modes of the module docstring, in ``dtype``.

  Args:
    decay: ``b2``.
    count: the int32 number of updates taken (``t - 1``).
    k: the refresh period.
    mode: one of ``BIAS_CORRECTIONS``.
    dtype: of the result (:func:`scalar_dtype` of the moments).

  Returns:
    A scalar ``c2``.
  """
  if mode == "current_step":
    n = count + 1
  elif mode == "step":
    n = (count // k) * k + 1  # global step of the latest refresh
  else:
    n = count // k + 1  # refreshes so far
  return 1 - decay ** n.astype(dtype)


def step_estimate(value_fn: Callable[[Any], jax.Array], params: Any,
                  key: jax.Array, count: jax.Array, *, num_probes: int,
                  probe: str) -> Callable[[], Any]:
  """The ``estimate`` of :func:`lazy_hutchinson_ema` at the point ``params``.

  ``() -> curvature.hutchinson_diagonal(value_fn, params, fold_in(key,
  count), ...)``: step ``t = count + 1`` draws its probes from the state's
  base key folded with ``t - 1``, so ``update`` stays pure.
  """
  step_key = jax.random.fold_in(key, count)
  return lambda: curvature.hutchinson_diagonal(
      value_fn, params, step_key, num_probes=num_probes, kind=probe)


def lazy_hutchinson_ema(moment: Any, estimate: Callable[[], Any],
                        count: jax.Array, *, k: Any, decay: Any,
                        sample: Callable[[Any], Any] | None = None,
                        last: Any = None) -> tuple[Any, Any]:
  """One step of the lazy Hutchinson EMA (module docstring).

  Args:
    moment: the EMA ``D`` (a pytree in the moments' dtype).
    estimate: ``() -> diag``, the Hutchinson estimate of the Hessian
      diagonal with the step's probes, e.g. ``lambda:
      curvature.hutchinson_diagonal(value_fn, params, key)`` or
      ``curvature.hutchinson_diagonal_from_hvp`` with the tangent half of
      ``curvature.grad_and_hvp``. Called on refresh steps only, inside the
      refresh branch.
    count: the int32 number of updates taken.
    k: refresh every ``k`` steps (an int >= 1, or an array).
    decay: ``b2``.
    sample: maps the estimate to the EMA's sample (default: itself).
    last: ``None`` for the ``'refresh'`` cadence; for ``'every_step'``, the
      previous sample (a pytree like ``moment``), fed to the EMA again on
      reuse steps.

  Returns:
    ``(moment, last)``: the new EMA and this step's sample (``None`` for the
    ``'refresh'`` cadence).
  """

  def new_sample():
    diag = estimate()
    return diag if sample is None else sample(diag)

  if last is None:
    moment = lazy_cond(
        k, count, lambda mo: tree_utils.ema(decay, mo, new_sample()),
        lambda mo: mo, moment)
    return moment, None
  last = lazy_cond(
      k, count,
      lambda old: jax.tree.map(lambda o, s: s.astype(o.dtype), old,
                               new_sample()),
      lambda old: old, last)
  return tree_utils.ema(decay, moment, last), last


def lazy_curvature(name: str, moment: Any, state: Any, params: Any,
                   value_fn: Any, *, k: Any, decay: Any, num_probes: int,
                   probe: str, sample: Callable[[Any], Any] | None = None,
                   last: Any = None) -> tuple[Any, Any]:
  """The EMA step of an optimizer that estimates the curvature at ``params``.

  Checks that ``name``'s ``update`` got ``value_fn`` and ``params``
  (``flatsparse.protocol.require``), then :func:`lazy_hutchinson_ema` of
  :func:`step_estimate` with the state's base key and count (AdaHessian,
  Sophia-H; Sassha estimates at its perturbed point instead).

  Args:
    name: the transform, for the error.
    moment: the EMA (a pytree in the moments' dtype).
    state: the optimizer state, with ``count`` and ``key``.
    params: where the Hessian is estimated.
    value_fn: the loss, ``params -> scalar``.
    k: the refresh period.
    decay: ``b2``.
    num_probes: a static int >= 1 (:func:`probe_count`).
    probe: one of ``curvature.PROBES``.
    sample: as in :func:`lazy_hutchinson_ema`.
    last: as in :func:`lazy_hutchinson_ema`.

  Returns:
    ``(moment, last)`` of :func:`lazy_hutchinson_ema`.
  """
  protocol.require(name, "value_fn", value_fn, params=params)
  estimate = step_estimate(value_fn, params, state.key, state.count,
                           num_probes=num_probes, probe=probe)
  return lazy_hutchinson_ema(moment, estimate, state.count, k=k,
                             decay=decay, sample=sample, last=last)


def power_preconditioner(m: Any, count: jax.Array, *, b1: Any, b2: Any,
                         k: Any, bias_correction: str, power: Any, eps: Any
                         ) -> tuple[jax.Array, Callable[[Any], Any]]:
  """Adam-style bias corrections and ``D -> (D / c2)^power + eps``.

  Sassha (``power = alpha``) and AdaHessian (``power = hessian_power / 2``);
  ``jnp.sqrt`` when ``power`` is the Python number 0.5.

  Args:
    m: the first moment (its dtype sets the corrections', see
      :func:`scalar_dtype`).
    count: the int32 number of updates taken.
    b1: first-moment decay.
    b2: curvature-EMA decay.
    k: the refresh period.
    bias_correction: one of ``BIAS_CORRECTIONS``.
    power: applied to the bias-corrected curvature.
    eps: added after the power.

  Returns:
    ``(c1, precond)``: ``c1 = 1 - b1^t`` and the preconditioner of one leaf.
  """
  dtype = scalar_dtype(m)
  c1 = moment_bias_correction(b1, count, dtype)
  c2 = hessian_bias_correction(b2, count, k, bias_correction, dtype)
  root = validation.is_number(power, 0.5)

  def precond(d):
    scaled = d / c2
    return (jnp.sqrt(scaled) if root else scaled ** power) + eps

  return c1, precond


def preconditioned_updates(params: Any, m: Any, curv: Any,
                           precond: Callable[[Any], Any], c1: jax.Array, *,
                           learning_rate: Any = None,
                           decay: Any = None) -> Any:
  """``m / c1 / precond(D)``, or the full step with a learning rate.

  Without ``learning_rate``: the direction of ``scale_by_sassha`` and
  ``scale_by_adahessian``. With it, ``u = -(lr / c1) * m / precond(D) -
  decay * w`` in this order (``decay`` None: no decay), the update of
  ``sassha`` and ``adahessian``.

  Args:
    params: the parameters ``w`` (the updates get their dtypes).
    m: the first moment.
    curv: the curvature EMA ``D``.
    precond: the preconditioner of one leaf (:func:`power_preconditioner`).
    c1: ``1 - b1^t``.
    learning_rate: ``lr_t`` (already evaluated), or None for the direction.
    decay: the decoupled decay factor of ``w``, or None.

  Returns:
    The updates.
  """
  if learning_rate is None:
    return jax.tree.map(
        lambda w, mo, d: (mo / c1 / precond(d)).astype(w.dtype),
        params, m, curv)
  step_size = learning_rate / c1

  def leaf(w, mo, d):
    u = -step_size * mo / precond(d)
    if decay is not None:
      u = u - decay * w.astype(u.dtype)
    return u.astype(w.dtype)

  return jax.tree.map(leaf, params, m, curv)
