"""Pytree helpers shared by the transforms (what optax.tree does not have).

* :func:`map_masked`: ``tree_map`` over a masks tree whose dense leaves are
  ``None`` (the mask vocabulary of ``flatsparse.protocol``).
* :func:`moment_dtype`, :func:`zeros_moments`: optimizer moments are kept in
  at least float32 (bf16 cannot represent a decay of 0.999).
* :func:`ema`: ``decay * moment + (1 - decay) * sample`` in the moment's dtype.
* :func:`find_states`: a transform's state inside any optax state (chains,
  ``inject_hyperparams``, ``masked``, ``MultiSteps``).

The step counter of every transform is ``optax.safe_int32_increment``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["is_none", "map_masked", "moment_dtype", "zeros_moments", "ema",
           "find_states"]


def is_none(x: Any) -> bool:
  return x is None


def map_masked(fn: Callable[..., Any], masks: Any, *trees: Any) -> Any:
  """``jax.tree.map(fn, masks, *trees)`` where a ``None`` mask is a leaf.

  ``fn`` receives ``None`` for the mask of a dense leaf.
  """
  return jax.tree.map(fn, masks, *trees, is_leaf=is_none)


def moment_dtype(x: Any) -> jnp.dtype:
  """The dtype of an optimizer moment of ``x``: at least float32."""
  return jnp.promote_types(x.dtype, jnp.float32)


def zeros_moments(params: Any) -> Any:
  """Zeros like ``params`` in :func:`moment_dtype`."""
  return jax.tree.map(lambda p: jnp.zeros(p.shape, moment_dtype(p)), params)


def ema(decay: Any, moment: Any, sample: Any) -> Any:
  """``decay * moment + (1 - decay) * sample``, leafwise, in the moment's dtype.

  A Python ``decay == 0`` returns the sample (cast), so a transform whose EMA
  is off keeps exactly the newest value even when the old one is inf.
  """
  if isinstance(decay, (int, float)) and not isinstance(decay, bool) and (
      decay == 0):
    return jax.tree.map(lambda mo, s: s.astype(mo.dtype), moment, sample)
  return jax.tree.map(
      lambda mo, s: decay * mo + (1 - decay) * s.astype(mo.dtype),
      moment, sample)


def find_states(opt_state: Any, types: type | tuple[type, ...]) -> list[Any]:
  """Every state of the given NamedTuple type(s) inside ``opt_state``, in
  tree order (outermost first)."""
  return [s for s in jax.tree.leaves(
      opt_state, is_leaf=lambda x: isinstance(x, types))
          if isinstance(s, types)]
