"""Sharpness of a trained model: Hessian diagnostics on a fixed batch.

The loss is the mean softmax cross-entropy of the model in eval mode (running
BatchNorm statistics, no dropout), so it is a pure function of the params::

    f(w) = (1/n) sum_j CE(model(w, x_j; eval), y_j)

and ``H = grad^2 f(w)`` at the trained params ``w``. With the curvature tools
of :mod:`flatsparse.flatness.curvature` (no Hessian is materialised):

* ``top_eigenvalue``: ``lambda_max(H)``, by power iteration (``'power'``:
  the eigenvalue of largest magnitude, with its sign) or Lanczos
  (``'lanczos'``: the algebraically largest Ritz value).
* ``trace``: Hutchinson ``tr(H) ~ (1/n) sum_i z_i^T H z_i``.
* ``moment_k``: ``tr(H^k) / d ~ (1/(n d)) sum_i z_i^T H^k z_i`` for each
  requested ``k`` (``moment_1 = trace / d``, same probes).

Sparse models: with ``masks`` (0/1 masks, ``None`` on dense leaves), ``H``
is the Hessian restricted to the active (trained) weights, ``H_S = M H M``
with the 0/1 mask ``M`` (pruned weights cannot move, so their curvature is
not the solution's sharpness), and ``d`` counts active entries (and dense
leaves) only. Dense leaves (biases, norms) are always included. The caller
says which weights are active (the training method's ``active_masks(state)``
where it has one): a sparsity wrapper's
``flatsparse.sparsity.get_masks(opt_state, params)``, or the nonzero
pattern ``jax.tree.map(lambda p: (p != 0) if p.ndim > 1 else None, params)``
(the same definition for every method, e.g. SAFE's projected params).
Without masks, ``H`` is the full Hessian.

The work runs in one ``jax.jit``-compiled function, cached per model and
options: :func:`sharpness` called again with the same model and shapes does
not recompile.

References:
  Keskar et al., "On Large-Batch Training for Deep Learning: Generalization
  Gap and Sharp Minima", ICLR 2017; Yao et al., "PyHessian: Neural Networks
  Through the Lens of the Hessian", 2020; Shin, Lee, Andriushchenko & Lee,
  "Critical Influence of Overparameterization on Sharpness-aware
  Minimization", 2024.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from flatsparse import tree_utils
from flatsparse import validation
from flatsparse.flatness import curvature
from flatsparse.train.state import TrainState

__all__ = ["sharpness", "METHODS", "eval_loss", "measure"]

METHODS = ("power", "lanczos")


def eval_loss(model: nn.Module, params: Any, batch_stats: Any,
               images: jax.Array, labels: jax.Array,
               weights: jax.Array) -> jax.Array:
  """Weighted mean cross-entropy in eval mode (a pure function of params)."""
  variables = {"params": params}
  if batch_stats:
    variables["batch_stats"] = batch_stats
  logits = model.apply(variables, images, train=False)
  losses = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels)
  losses = jnp.where(weights > 0, losses, 0)  # padded examples may be NaN
  return jnp.sum(losses * weights) / jnp.sum(weights)


@functools.partial(jax.jit, static_argnames=(
    "model", "num_probes", "iters", "max_order", "method", "probe",
    "unroll"))
def measure(params: Any, batch_stats: Any, masks: Any, images: jax.Array,
             labels: jax.Array, weights: jax.Array, key: jax.Array, *,
             model: nn.Module, num_probes: int, iters: int, max_order: int,
             method: str, probe: str, unroll: int | bool
             ) -> dict[str, jax.Array]:
  """The jitted inner computation of :func:`sharpness` (arrays out).

  Compiled once per model and static option set; :func:`sharpness` is the
  entry point that checks arguments and converts the results.
  """

  def restrict(p):
    if masks is None:
      return p
    return jax.tree.map(
        lambda m, x: x if m is None else jnp.where(m, x, jnp.zeros_like(x)),
        masks, p, is_leaf=lambda x: x is None)

  def value_fn(p):
    return eval_loss(model, restrict(p), batch_stats, images, labels,
                      weights)

  eig_key, probe_key = jax.random.split(key)
  if method == "power":
    top, _ = curvature.top_eigenvalue(value_fn, params, eig_key,
                                      num_iters=iters, unroll=unroll)
  else:
    top = curvature.top_eigenvalues(value_fn, params, eig_key, k=1,
                                    num_steps=iters, unroll=unroll)[0]
  total = sum(x.size for x in jax.tree.leaves(params))
  # hessian_moments divides by every entry; rescale to the active count d.
  moments = curvature.hessian_moments(
      value_fn, params, probe_key, max_order=max_order,
      num_probes=num_probes, kind=probe, unroll=unroll) * total
  if masks is None:
    d = jnp.asarray(total, jnp.float32)
  else:
    d = sum(jnp.sum(m, dtype=jnp.float32) if m is not None
            else jnp.float32(p.size) for m, p in zip(
                jax.tree.leaves(masks, is_leaf=lambda x: x is None),
                jax.tree.leaves(params)))
  return {"top_eigenvalue": top, "trace": moments[0], "moments": moments / d,
          "num_params": d, "loss": value_fn(params)}


def sharpness(model: nn.Module, state: TrainState,
              batch: Mapping[str, Any], key: jax.Array, *,
              masks: Any = None, num_probes: int = 10, iters: int = 20,
              moments: Sequence[int] = (1, 2, 4), method: str = "power",
              probe: str = "rademacher", unroll: int | bool = 1
              ) -> dict[str, float]:
  """Hessian sharpness of ``state.params`` on ``batch`` (module docstring).

  Args:
    model: the linen module the state was trained with (``(x, train=...)``).
    state: a :class:`flatsparse.train.TrainState` (its params and batch
      stats are used).
    batch: ``{'image', 'label'}`` (and optionally ``'mask'``: examples with
      mask 0 are left out, as in padded eval batches).
    key: PRNG key for the eigenvector start and the Hutchinson probes.
    masks: the active weights, a pytree like ``state.params`` of 0/1 (bool
      or integer) masks with ``None`` on dense leaves: ``H`` is restricted
      to them (module docstring). None: the full Hessian.
    num_probes: Hutchinson probes for the trace and moments, an int >= 1.
    iters: power-iteration steps (``iters + 1`` Hessian-vector products) or
      Lanczos steps (``iters`` products, memory ``4 * iters * d`` bytes),
      an int >= 1.
    moments: the orders ``k >= 1`` of ``moment_k = tr(H^k) / d`` to report;
      ``ceil(max(k) / 2)`` Hessian-vector products per probe.
    method: ``'power'`` (memory ``O(d)``) or ``'lanczos'`` (more accurate
      for the same number of products).
    probe: ``'rademacher'`` or ``'gaussian'`` Hutchinson probes.
    unroll: loop iterations unrolled (``True``: all); on CPU, conv nets run
      ~8x faster unrolled (XLA:CPU runs convolutions in loop bodies slowly).

  Returns:
    ``{'top_eigenvalue', 'trace', 'moment_<k>' for each k, 'num_params'
    (d), 'loss'}`` as Python floats.
  """
  validation.check_count("num_probes", num_probes)
  validation.check_count("iters", iters)
  if method not in METHODS:
    raise ValueError(f"Unknown method {method!r}; allowed: "
                     f"{', '.join(METHODS)}.")
  if probe not in curvature.PROBES:
    raise ValueError(f"Unknown probe {probe!r}; allowed: "
                     f"{', '.join(curvature.PROBES)}.")
  orders = tuple(moments)
  for k in orders:
    validation.check_count("every entry of moments", k)
  for name in ("image", "label"):
    if name not in batch:
      raise ValueError(f"batch needs 'image' and 'label', got keys "
                       f"{sorted(batch)}.")
  if masks is not None:
    _check_masks(masks, state.params)
  labels = jnp.asarray(batch["label"])
  weights = jnp.asarray(batch.get("mask", jnp.ones(labels.shape)),
                        jnp.float32)
  out = measure(state.params, state.batch_stats, masks,
                 jnp.asarray(batch["image"]), labels, weights, key,
                 model=model, num_probes=num_probes, iters=iters,
                 max_order=max(orders, default=1), method=method,
                 probe=probe, unroll=unroll)
  out = jax.device_get(out)
  result = {"top_eigenvalue": float(out["top_eigenvalue"]),
            "trace": float(out["trace"])}
  for k in orders:
    result[f"moment_{k}"] = float(out["moments"][k - 1])
  result["num_params"] = float(out["num_params"])
  result["loss"] = float(out["loss"])
  return result


def _check_masks(masks: Any, params: Any) -> None:
  """Same tree as ``params`` (None on dense leaves), each mask its shape."""
  mask_def = jax.tree.structure(masks, is_leaf=tree_utils.is_none)
  param_def = jax.tree.structure(params)
  if mask_def != param_def:
    raise ValueError(f"masks must have the structure of the params (None on "
                     f"dense leaves); got {mask_def} for params {param_def}.")
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  for (path, p), m in zip(flat, jax.tree.leaves(masks,
                                                is_leaf=tree_utils.is_none)):
    if m is not None and tuple(m.shape) != tuple(p.shape):
      raise ValueError(f"The mask of {jax.tree_util.keystr(path)} has shape "
                       f"{tuple(m.shape)}; its parameter has "
                       f"{tuple(p.shape)}.")
