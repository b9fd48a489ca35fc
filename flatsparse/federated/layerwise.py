"""One optax transformation per layer, each seeing its own layer's loss.

Forward-Forward trains every layer from a local loss. With the model's
``stop_gradient`` between layers the gradient of the summed loss is already
each layer's own gradient, so a plain optimizer can run on the whole tree.
A transformation that re-evaluates the loss (SAM's ascent step, SAFE) or
that normalizes across the tree (SAM's ``||g||``, a global pruning budget)
would mix the layers, though. :func:`layerwise` gives each layer its own
transformation and state; a layer's ``value_fn`` is the caller's with only
that layer's weights varied::

  value_fn_l(p_l) = value_fn(params with layer l set to p_l)

whose gradient in ``p_l`` is layer ``l``'s local gradient (the later layers'
losses see ``p_l`` only through ``stop_gradient``). So
``layerwise(flatsparse.sam(...))`` is SAM per layer with its own radius
``rho * g_l / ||g_l||``, and ``layerwise(sparsity_wrapper)`` prunes each
layer to its sparsity.

The layers are the entries of the mapping found at ``path`` in the params
(default: the top level; ``('params',)`` for a Flax variables dict). Any
pytree container that supports ``[key]`` works (dicts, flax nnx ``State``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import optax

__all__ = ["layerwise", "LayerwiseState"]

Transform = optax.GradientTransformation


class LayerwiseState(NamedTuple):
  """``inner``: each layer's transformation state, by layer name."""

  inner: dict[str, Any]


def _at(tree: Any, path: Sequence[Any]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _layer_names(params: Any, path: Sequence[Any]) -> list[str]:
  try:
    layers = _at(params, path)
    names = list(layers.keys())
  except (KeyError, TypeError, AttributeError) as e:
    raise ValueError(
        f"layerwise(path={tuple(path)!r}) needs a mapping of layers at that "
        f"path of the params; got {type(params).__name__} ({e}).") from e
  if not names:
    raise ValueError(f"layerwise(path={tuple(path)!r}): no layer there.")
  return names


def _layer_key(entry: Any) -> Any:
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      return getattr(entry, attr)
  return entry


def _join_layers(params: Any, path: Sequence[Any],
                 layers: Mapping[str, Any]) -> Any:
  """A tree like ``params`` whose layer ``l`` leaves come from
  ``layers[l]`` (the leaves of each layer in flatten order); the layers not
  in ``layers`` keep ``params``' leaves."""
  depth = len(path)
  with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
  sources = {name: iter(jax.tree_util.tree_leaves(tree))
             for name, tree in layers.items()}
  leaves = []
  for p, leaf in with_paths:
    name = _layer_key(p[depth]) if len(p) > depth else None
    leaves.append(next(sources[name]) if name in sources else leaf)
  return jax.tree_util.tree_unflatten(treedef, leaves)


def layerwise(transform: Transform | Callable[[str], Transform], *,
              path: Sequence[Any] = ()
              ) -> optax.GradientTransformationExtraArgs:
  """Runs ``transform`` on each layer separately (module docstring).

  Args:
    transform: the transformation of every layer, or ``name -> transform``
      (e.g. a learning rate per layer).
    path: the keys leading from the params to the mapping of layers.

  Returns:
    A transformation whose ``update`` accepts the extra arguments
    ``value_fn``, ``sub_batch_value_fn`` and ``masks`` and hands each layer
    its part; any other extra argument reaches every layer unchanged.
  """
  path = tuple(path)

  def transform_of(name: str) -> optax.GradientTransformationExtraArgs:
    tx = transform if isinstance(transform, Transform) else transform(name)
    if not isinstance(tx, Transform):
      raise TypeError(f"layerwise: the transform of layer {name!r} must be "
                      f"an optax GradientTransformation, got {tx!r}.")
    return optax.with_extra_args_support(tx)

  def init_fn(params: Any) -> LayerwiseState:
    names = _layer_names(params, path)
    layers = _at(params, path)
    return LayerwiseState({name: transform_of(name).init(layers[name])
                           for name in names})

  def update_fn(updates: Any, state: LayerwiseState, params: Any = None,
                **extra_args: Any) -> tuple[Any, LayerwiseState]:
    names = _layer_names(updates, path)
    if set(names) != set(state.inner):
      raise ValueError(f"layerwise: the updates have layers {sorted(names)}, "
                       f"the state {sorted(state.inner)}.")
    value_fn = extra_args.pop("value_fn", None)
    sub_batch_value_fn = extra_args.pop("sub_batch_value_fn", None)
    masks = extra_args.pop("masks", None)
    if (value_fn is not None or sub_batch_value_fn is not None) and (
        params is None):
      raise ValueError("layerwise: value_fn needs params (each layer's loss "
                       "varies that layer within the whole tree).")
    new_updates, new_inner = {}, {}
    for name in names:
      layer_args = dict(extra_args)
      if value_fn is not None:
        layer_args["value_fn"] = (
            lambda p, name=name: value_fn(_join_layers(params, path,
                                                       {name: p})))
      if sub_batch_value_fn is not None:
        def layer_sub_batch(p, i, name=name):
          return sub_batch_value_fn(_join_layers(params, path, {name: p}), i)
        layer_sub_batch.sub_batches = sub_batch_value_fn.sub_batches
        layer_args["sub_batch_value_fn"] = layer_sub_batch
      if masks is not None:
        layer_args["masks"] = _at(masks, path)[name]
      layer_params = None if params is None else _at(params, path)[name]
      new_updates[name], new_inner[name] = transform_of(name).update(
          _at(updates, path)[name], state.inner[name], layer_params,
          **layer_args)
    return _join_layers(updates, path, new_updates), LayerwiseState(new_inner)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
