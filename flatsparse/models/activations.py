"""Per-input-feature activation norms of every Dense/Conv layer (SAFE+, Wanda).

``input_feature_norms(model, variables, x)`` runs the model once and returns a
pytree like ``variables['params']`` whose ``kernel`` leaves hold
``||X_j||^2``, the squared norm of input feature ``j`` summed over the batch
(and, for convolutions, over spatial positions: a per-channel statistic, the
im2col norm up to border effects). Other leaves are ``None``. Layers are
found with ``flax.linen.intercept_methods``, so any linen model works without
changes. ``feature_norms_during(run, params)`` does the same around any call
that applies the model (a task's own forward pass).

References:
  Sun et al., "A Simple and Effective Pruning Approach for Large Language
  Models" (Wanda), ICLR 2024.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["input_feature_norms", "feature_norms_during",
           "layer_inputs_during"]


def layer_inputs_during(run: Callable[[], Any], params: Any,
                        record: Callable[[Any, nn.Module, tuple[str, ...],
                                          jax.Array], Any],
                        layer_types: tuple[type, ...]) -> Any:
  """Folds the inputs of every layer of ``layer_types`` that ``run()`` calls.

  Layers are found with ``flax.linen.intercept_methods``, so any linen model
  works unchanged. For each call, ``record(previous, module, path, inputs)``
  returns the layer's new value (``previous`` is None at its first call).

  Args:
    run: a function of no arguments that applies the model (its result is
      discarded).
    params: the model's parameters (the structure of the result).
    record: the fold of one layer's calls.
    layer_types: the module classes whose ``__call__`` is recorded.

  Returns:
    A pytree like ``params``: each layer's value at its ``kernel``, ``None``
    elsewhere.
  """
  values: dict[tuple[str, ...], Any] = {}

  def intercept(next_fun, args, kwargs, context):
    if (context.method_name == "__call__"
        and isinstance(context.module, layer_types)):
      path = tuple(context.module.path)
      values[path] = record(values.get(path), context.module, path,
                            jnp.asarray(args[0]))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(intercept):
    run()

  def leaf(path, value):
    names = tuple(str(getattr(k, "key", k)) for k in path)
    del value
    if names[-1] == "kernel" and names[:-1] in values:
      return values[names[:-1]]
    return None
  return jax.tree_util.tree_map_with_path(leaf, params)


def feature_norms_during(run: Callable[[], Any], params: Any) -> Any:
  """``{..., 'kernel': ||X_j||^2}`` of every Dense/Conv that ``run()`` calls.

  Args:
    run: a function of no arguments that applies the model (its result is
      discarded).
    params: the model's parameters (the structure of the result).

  Returns:
    A pytree like ``params``: vectors of length ``in_features`` at kernels
    (in the inputs' dtype, at least float32), ``None`` elsewhere.
  """
  def record(previous, module, path, inputs):
    del module, path
    inputs = inputs.astype(jnp.promote_types(inputs.dtype, jnp.float32))
    squared = jnp.sum(jnp.square(inputs).reshape(-1, inputs.shape[-1]), 0)
    total = squared if previous is None else previous + squared
    return jax.lax.stop_gradient(total)

  return layer_inputs_during(run, params, record, (nn.Dense, nn.Conv))


def input_feature_norms(model: nn.Module, variables: Any, x: Any,
                        **apply_kwargs: Any) -> Any:
  """``{..., 'kernel': ||X_j||^2}`` for every Dense/Conv of ``model``.

  Args:
    model: a linen module.
    variables: its variables (``{'params': ..., 'batch_stats': ...}``).
    x: the input batch.
    **apply_kwargs: passed to ``model.apply`` (e.g. ``train=False``).

  Returns:
    As :func:`feature_norms_during`.
  """
  return feature_norms_during(
      lambda: model.apply(variables, x, **apply_kwargs), variables["params"])
