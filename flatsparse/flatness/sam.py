"""Sharpness-aware minimization as one opaque Optax transformation.

Per step, with gradient ``g`` at ``w`` and the loss ``f = value_fn``::

    e   = rho * g / ||g||                       (SAM; global norm)
    e   = rho * T^2 g / ||T g||,  T = |w| + eta (ASAM, element-wise)
    g~  = grad f(w + e)                         (the update passed on)

Both gradients are taken inside one ``update`` call (``value_fn`` is the
extra argument of ARCHITECTURE.md), so counters tick once per step and the
transform sits first in any chain: ``optax.chain(sam(0.05), optax.sgd(0.1))``.
Inside a sparsity wrapper, ``sparse=True`` perturbs only active weights: the
wrapper passes its masks as the extra argument ``masks`` (``None`` on dense
leaves), and masked entries of ``e`` are zero.

BatchNorm: ``value_fn`` built by ``flatsparse.train.make_train_step`` closes
over the batch statistics of the first forward pass and discards the ones of
the perturbed pass, so the perturbed pass never changes them.

References:
  Foret et al., "Sharpness-Aware Minimization for Efficiently Improving
  Generalization", ICLR 2021.
  Kwon et al., "ASAM: Adaptive Sharpness-Aware Minimization", ICML 2021.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = ["SAMState", "sam", "perturbation"]


class SAMState(NamedTuple):
  """SAM keeps only a step counter (for logging and schedules)."""

  count: jax.Array


def perturbation(grads: Any, params: Any, rho: Any, *, adaptive: bool = False,
                 eta: float = 0.01, eps: float = 1e-12,
                 masks: Any = None) -> Any:
  """The ascent step ``e`` (see the module docstring), masked if given."""
  if masks is not None:
    grads = jax.tree.map(
        lambda m, g: g if m is None else jnp.where(m, g, 0), masks, grads,
        is_leaf=lambda x: x is None)
  if adaptive:
    scale = jax.tree.map(lambda w: jnp.abs(w) + eta, params)
    scaled = jax.tree.map(jnp.multiply, scale, grads)
    norm = optax.tree.norm(scaled)
    return jax.tree.map(lambda t, s: rho * t * s / (norm + eps), scale, scaled)
  norm = optax.tree.norm(grads)
  return jax.tree.map(lambda g: (rho * g / (norm + eps)).astype(g.dtype), grads)


def sam(rho: float = 0.05, *, adaptive: bool = False, eta: float = 0.01,
        sparse: bool = True, eps: float = 1e-12
        ) -> optax.GradientTransformationExtraArgs:
  """SAM (or ASAM with ``adaptive=True``): returns ``grad f(w + e)``.

  Args:
    rho: radius of the perturbation, >= 0 (0 gives the plain gradient at
      the cost of a second evaluation). May be injected as a hyperparameter.
    adaptive: ASAM's element-wise scaling ``T = |w| + eta``.
    eta: ASAM's offset.
    sparse: perturb only active weights when a sparsity wrapper passes
      ``masks``.
    eps: guards the division by the gradient norm.

  Returns:
    A transformation needing the extra argument ``value_fn``.
  """
  try:
    if float(rho) < 0:
      raise ValueError(f"rho must be >= 0, got {rho!r}.")
  except (TypeError, jax.errors.ConcretizationTypeError):
    pass  # traced under inject_hyperparams

  def init_fn(params):
    del params
    return SAMState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None, *,
                value_fn: Callable[[Any], jax.Array] | None = None,
                masks: Any = None, **extra):
    del extra
    if value_fn is None or params is None:
      raise ValueError(
          "sam needs params and the extra argument value_fn (params -> loss "
          "on the current batch): tx.update(grads, state, params, "
          "value_fn=...). flatsparse.train.make_train_step passes it.")
    e = perturbation(updates, params, rho, adaptive=adaptive, eta=eta, eps=eps,
                     masks=masks if sparse else None)
    perturbed = jax.tree.map(lambda w, d: w + d.astype(w.dtype), params, e)
    sharp_grads = jax.grad(value_fn)(perturbed)
    sharp_grads = jax.tree.map(lambda s, g: s.astype(g.dtype), sharp_grads,
                               updates)
    return sharp_grads, SAMState(count=state.count + 1)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
