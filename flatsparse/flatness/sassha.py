"""Sassha: sharpness-aware adaptive second-order optimization.

Per step ``t = 1, 2, ...`` with incoming gradient ``g`` at ``w`` and the loss
``f = value_fn`` (an extra argument of ``update``; see
``flatsparse/protocol.py``)::

    w~  = w + rho * g / ||g||                      (SAM ascent; global norm)
    g~  = grad f(w~)
    if (t - 1) % k == 0:                           (refresh steps 1, k+1, ...)
      d = z * (H(w~) z),  z Rademacher             (Hutchinson, num_probes)
      D = b2 * D + (1 - b2) * |d|                  (otherwise D is reused)
    m   = b1 * m + (1 - b1) * g~
    u   = -lr_t / (1 - b1^t) * m / ((D / c2)^alpha + eps)
          - (lr_t * weight_decay / lr_0) * w       (decoupled, relative to lr_0)

Two entry points, as ``optax.scale_by_adam`` and ``optax.adamw``:

* :func:`scale_by_sassha` returns the preconditioned direction
  ``(m / (1 - b1^t)) / ((D / c2)^alpha + eps)``, to be followed by the
  learning rate (optax convention: ``optax.scale_by_learning_rate``).
* :func:`sassha` returns the full update ``u`` (``optax.apply_updates(w,
  u)`` is the paper's ``w * (1 - lr_t wd / lr_0) - ...``), so it sits last
  in a chain (after, e.g., ``optax.clip_by_global_norm``). It equals, up to
  float rounding::

      optax.chain(scale_by_sassha(rho, ...),
                  optax.add_decayed_weights(weight_decay / lr_0),
                  optax.scale_by_learning_rate(learning_rate))

  It is not built as that chain: it computes ``u`` in the order of the
  expression above (``-lr_t / (1 - b1^t)`` times ``m``, divided by the
  preconditioner, minus the decay), which rounds differently in float32
  from scaling the direction by ``-lr_t`` afterwards, and recorded
  trajectories are kept bit for bit; its state is one :class:`SasshaState`
  (``state.count``, ``state.m``), not a chain's tuple. Both share the
  sharpness-aware gradient and the lazy Hutchinson EMA
  (``flatsparse.flatness.hutchinson_ema``).

Bias correction of ``D`` (``c2``), where the paper's formula and the
authors' code differ (``flatsparse.flatness.hutchinson_ema``):

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
for much of a typical run. Both corrections are computed in the moments'
dtype (float64 for float64 params under ``jax_enable_x64``).

Cost: a reuse step costs one extra gradient at ``w~`` (as SAM). A refresh
step takes ``g~`` and ``H z`` from one forward-over-reverse pass, so it
costs one Hessian-vector product and no separate gradient pass: ``g~`` and
the pass's residuals come from ``curvature.grad_and_hvp(f, w~)``
(``jax.linearize``) at top level on every step, and only its tangent half
(``z -> H z``) runs in the refresh branch of a ``lax.cond`` on
``count % k == 0`` (one compiled program; the reuse branch does nothing).
Keeping the gradient out of the conditional matters on XLA:CPU, which runs a
ResNet-18 gradient inside a ``lax.cond`` branch an order of magnitude slower
than at top level (BENCHMARKS.md); the price is that the residuals stay live
until the branch (about 11% more scratch memory for ResNet-18 at batch 8 on
CPU, same flops). The estimate is that of
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

References:
  Shin, Lee, Chung & Lee, "SASSHA: Sharpness-aware Adaptive Second-order
  Optimization with Stable Hessian Approximation", ICML 2025. Defaults as in
  the reference code; its CIFAR-10 ResNet-20 recipe is ``learning_rate=0.15,
  rho=0.2, weight_decay=5e-4``.
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
from flatsparse.flatness.hutchinson_ema import BIAS_CORRECTIONS
from flatsparse.flatness.sam import perturbation

__all__ = ["SasshaState", "sassha", "scale_by_sassha", "BIAS_CORRECTIONS"]


class SasshaState(NamedTuple):
  """State of :func:`sassha` and :func:`scale_by_sassha`.

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


# finish(params, m, D, precond, c1, count) -> updates
_Finish = Callable[[Any, Any, Any, Callable[[jax.Array], jax.Array],
                    jax.Array, jax.Array], Any]


def _transform(name: str, finish: _Finish, *, rho: Any, k: Any, b1: Any,
               b2: Any, alpha: Any, eps: Any, num_probes: int | None,
               probe: str, bias_correction: str, sparse: bool, seed: Any
               ) -> optax.GradientTransformationExtraArgs:
  """Sassha's moments and curvature; ``finish`` turns them into updates."""
  validation.check("rho", rho, lambda v: v >= 0, ">= 0")
  validation.check_int("k", k)
  validation.check_betas(b1=b1, b2=b2)
  validation.check("alpha", alpha, lambda v: v > 0, "> 0")
  validation.check("eps", eps, lambda v: v >= 0, ">= 0")
  num_probes = hema.probe_count(num_probes)
  validation.check_choice("probe", probe, curvature.PROBES)
  validation.check_choice("bias_correction", bias_correction,
                          BIAS_CORRECTIONS)

  def init_fn(params):
    return SasshaState(count=jnp.zeros([], jnp.int32),
                       m=tree_utils.zeros_moments(params),
                       D=tree_utils.zeros_moments(params),
                       key=rng.base_key(seed))

  def update_fn(updates, state, params=None, *,
                value_fn: protocol.ValueFn | None = None, masks: Any = None,
                **extra):
    del extra
    protocol.require(name, "value_fn", value_fn, params=params)
    count = state.count
    e = perturbation(updates, params, rho, masks=masks if sparse else None)
    perturbed = jax.tree.map(lambda w, d: w + d.astype(w.dtype), params, e)
    key = jax.random.fold_in(state.key, count)

    # g~ at top level (every step needs it); only the tangent half of the
    # forward-over-reverse pass (H z) runs in the refresh branch.
    sharp, hvp_fn = curvature.grad_and_hvp(value_fn, perturbed)
    curv, _ = hema.lazy_hutchinson_ema(
        state.D,
        lambda: curvature.hutchinson_diagonal_from_hvp(
            hvp_fn, perturbed, key, num_probes=num_probes, kind=probe),
        count, k=k, decay=b2, sample=lambda d: jax.tree.map(jnp.abs, d))
    m = tree_utils.ema(b1, state.m, sharp)
    c1, precond = hema.power_preconditioner(
        m, count, b1=b1, b2=b2, k=k, bias_correction=bias_correction,
        power=alpha, eps=eps)
    new_updates = finish(params, m, curv, precond, c1, count)
    return new_updates, SasshaState(
        count=optax.safe_int32_increment(count), m=m, D=curv, key=state.key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def scale_by_sassha(rho: float = 0.2, *, k: int = 10, b1: float = 0.9,
                    b2: float = 0.999, alpha: float = 0.5, eps: float = 1e-4,
                    num_probes: int | None = None, probe: str = "rademacher",
                    bias_correction: str = "step", sparse: bool = True,
                    seed: Any = 0) -> optax.GradientTransformationExtraArgs:
  """Rescales updates by Sassha's sharpness-aware second-order preconditioner.

  With ``g~ = grad f(w + rho * g / ||g||)`` and the lazy Hutchinson EMA
  ``D`` of ``|diag H(w~)|`` (module docstring)::

      m = b1 * m + (1 - b1) * g~
      u = (m / (1 - b1^t)) / ((D / c2)^alpha + eps)

  Follow it by the learning rate (and any decoupled weight decay), as
  ``optax.scale_by_adam``: ``optax.chain(scale_by_sassha(rho),
  optax.add_decayed_weights(wd), optax.scale_by_learning_rate(lr))`` is
  :func:`sassha` with ``weight_decay = wd * lr_0`` up to float rounding.

  Args:
    rho: SAM radius, >= 0.
    k: refresh the Hessian estimate every ``k`` steps (lazy Hessian), >= 1.
    b1: first-moment decay.
    b2: decay of the curvature EMA (per refresh).
    alpha: power of the bias-corrected curvature (0.5: square root).
    eps: added to the preconditioner ``(D / c2)^alpha``.
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
    A transformation needing ``params`` and the extra argument ``value_fn``;
    its state is a :class:`SasshaState`; updates have the params' dtype.
  """

  def finish(params, m, curv, precond, c1, count):
    del count
    return hema.preconditioned_updates(params, m, curv, precond, c1)

  return _transform("scale_by_sassha", finish, rho=rho, k=k, b1=b1, b2=b2,
                    alpha=alpha, eps=eps, num_probes=num_probes, probe=probe,
                    bias_correction=bias_correction, sparse=sparse, seed=seed)


# The docstring documents only what scale_by_sassha's does not.
def sassha(learning_rate: optax.ScalarOrSchedule,  # noqa: D417
           rho: float = 0.2, *, k: int = 10, b1: float = 0.9,
           b2: float = 0.999, alpha: float = 0.5, eps: float = 1e-4,
           weight_decay: float = 0.0,
           peak_learning_rate: float | None = None,
           num_probes: int | None = None,
           probe: str = "rademacher", bias_correction: str = "step",
           sparse: bool = True, seed: Any = 0
           ) -> optax.GradientTransformationExtraArgs:
  """Sassha (see the module docstring); returns the full parameter update.

  ``u = -lr_t / (1 - b1^t) * m / ((D / c2)^alpha + eps)
  - (lr_t * weight_decay / lr_0) * w``: :func:`scale_by_sassha` with the
  learning rate and the decoupled weight decay, computed in this order.

  Takes the arguments of :func:`scale_by_sassha`, with the same defaults,
  and these:

  Args:
    learning_rate: ``lr_t``, a float or an optax schedule of the step count
      (evaluated at ``t - 1``, optax's convention). Injectable.
    weight_decay: decoupled decay relative to the peak learning rate:
      ``w <- w * (1 - lr_t * weight_decay / lr_0)``.
    peak_learning_rate: ``lr_0``; defaults to ``learning_rate`` when that is
      a number; required for a schedule with ``weight_decay > 0``.

  Returns:
    A transformation needing ``params`` and the extra argument ``value_fn``,
    with one :class:`SasshaState` as its state.
  """
  validation.check("weight_decay", weight_decay, lambda v: v >= 0, ">= 0")
  use_decay = not validation.is_number(weight_decay, 0)
  if use_decay and peak_learning_rate is None and callable(learning_rate):
    raise ValueError(
        "sassha's weight_decay is relative to the peak learning rate; with "
        "a learning-rate schedule pass peak_learning_rate= as well.")
  if use_decay and peak_learning_rate is not None:
    validation.check("peak_learning_rate", peak_learning_rate,
                     lambda v: v > 0, "> 0")

  def finish(params, m, curv, precond, c1, count):
    lr = hema.learning_rate_at(learning_rate, count)
    if not use_decay:
      decay = None
    elif peak_learning_rate is None:  # lr_t = lr_0: the ratio is 1
      decay = weight_decay
    else:
      decay = lr * weight_decay / peak_learning_rate
    return hema.preconditioned_updates(params, m, curv, precond, c1,
                                       learning_rate=lr, decay=decay)

  return _transform("sassha", finish, rho=rho, k=k, b1=b1, b2=b2,
                    alpha=alpha, eps=eps, num_probes=num_probes, probe=probe,
                    bias_correction=bias_correction, sparse=sparse, seed=seed)
