"""One vocabulary for choosing masks, shared by every family that prunes.

The sparsity wrappers (``flatsparse.sparsity``: gradual pruning, dynamic
sparse training) and the SAFE projections (``flatsparse.safe.Projection``)
choose masks through one specification, under the same names as Python
arguments and as config keys:

* ``scope``: which entries compete for one kept budget: ``'layer'`` (each
  prunable leaf keeps its own count), ``'global'`` (one budget over all
  prunable leaves), ``'row'`` (each output unit: the kernel's last axis),
  ``'N:M'`` (e.g. ``'2:4'``: ``N`` of every ``M`` consecutive entries along
  the input axis), ``'block:RxC'`` (blocks over the trailing axes, scored by
  their sum) and ``'channel'`` (whole output channels). A structure of
  ``flatsparse.sparsity.masks`` (``NM(2, 4, axis=-1)``, ``Block((2, 2))``,
  ...) is a scope too.
* ``distribution``: per-leaf sparsities from one target, ``'uniform'`` or
  ``'erk'``, with ``overrides`` ``{leaf path: sparsity}`` fixing single
  leaves (an override also selects a leaf the predicate leaves dense).
* ``is_prunable``: ``(path, leaf) -> bool``, default
  :func:`default_is_prunable` (kernels only).
* ``importance``: what ranks the entries (``flatsparse.sparsity.importance``).
* ``min_kept``: the fewest entries each prunable leaf keeps (each row for
  the row scope; blocks or channels for those scopes), default 1: a layer is
  never emptied; 0 allows empty layers. In the global scope each leaf's
  largest entries are reserved before the shared ranking.
* ``global_normalization``: ``'none'`` (global scope ranks raw scores) or
  ``'l2'`` (each leaf's scores divided by their L2 norm first, JaxPruner's
  global pruning).

What each family supports (everything else is an error naming the allowed
values):

==============  ===================================  =========================
key             sparsity wrappers                    SAFE ``Projection``
==============  ===================================  =========================
scope           layer, N:M, block, channel; global   global, layer, row, N:M
                (``GlobalPruning``: algorithms
                ``global_magnitude``, ``global_saliency``)
importance      magnitude, random, saliency, or a    magnitude, activation,
                callable (custom); set by the        gradient, hessian, custom
                config's ``algorithm``
==============  ===================================  =========================

:func:`config_kwargs` reads these keys from a config section for both
``flatsparse.sparsity.create_updater_from_config`` and
``flatsparse.safe.projection_from_config``; the old sparsity names
(``RENAMED_KEYS``) are errors naming the new key. ``docs/masks.md`` lists
the vocabulary and the deliberate differences from JaxPruner.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp

from flatsparse import validation
from flatsparse.sparsity import masks

__all__ = [
    "SCOPES",
    "DISTRIBUTIONS",
    "IMPORTANCES",
    "GLOBAL_NORMALIZATIONS",
    "SPEC_KEYS",
    "RENAMED_KEYS",
    "Scope",
    "parse_scope",
    "describe",
    "check_importance",
    "check_min_kept",
    "check_global_normalization",
    "check_renamed",
    "config_kwargs",
    "default_is_prunable",
    "is_floating_matrix",
    "selects",
]

SCOPES = ("layer", "global", "row", "N:M", "block:RxC", "channel")
DISTRIBUTIONS = ("uniform", "erk")
IMPORTANCES = ("magnitude", "random", "saliency", "activation", "gradient",
               "hessian", "custom")
GLOBAL_NORMALIZATIONS = ("none", "l2")
# The config keys of the specification (both families, same names).
SPEC_KEYS = ("scope", "distribution", "importance", "overrides", "min_kept",
             "global_normalization")
# Old names (sparsity configs and arguments) -> the key that replaced them.
RENAMED_KEYS = {"dist_type": "distribution", "sparsity_type": "scope",
                "structure": "scope", "score": "importance"}

_EXAMPLES = {"N:M": "'N:M' (e.g. '2:4')",
             "block:RxC": "'block:RxC' (e.g. 'block:4x4')"}


def describe(names: Iterable[str]) -> str:
  """``'layer', 'N:M' (e.g. '2:4'), ...``: allowed names for a message."""
  return ", ".join(_EXAMPLES.get(n, repr(n)) for n in names)


class Scope(NamedTuple):
  """A parsed scope.

  Attributes:
    kind: its name in ``SCOPES`` (``'N:M'``, ``'block:RxC'`` for those).
    structure: what is pruned together (``masks.Unstructured()`` for the
      layer, global and row scopes).
  """

  kind: str
  structure: masks.Structure


def _structure_kind(structure: Any) -> str | None:
  kinds = {masks.Unstructured: "layer", masks.NM: "N:M",
           masks.Block: "block:RxC", masks.Channel: "channel"}
  return kinds.get(type(structure))


def _parse_structured(text: str, allowed: str,
                      nm_axis: int) -> masks.Structure | None:
  """``'2:4'``, ``'block:4x4'``, ``'channel'``; None for another name."""
  parts = text.lower().split(":")
  if parts == ["channel"]:
    return masks.Channel()
  if len(parts) != 2:
    return None
  kind = "block" if parts[0] == "block" else "N:M"
  try:
    if kind == "block":
      return masks.Block(tuple(int(b) for b in parts[1].split("x")))
    return masks.NM(int(parts[0]), int(parts[1]), axis=nm_axis)
  except ValueError as e:
    raise ValueError(f"Bad {kind} scope {text!r} ({e}); allowed: "
                     f"{allowed}.") from e


def parse_scope(scope: Any, supported: Iterable[str] = SCOPES, *,
                owner: str = "this transform", nm_axis: int = -2) -> Scope:
  """Parses and checks a scope against the ones ``owner`` supports.

  Args:
    scope: a name of ``SCOPES`` (``'2:4'``, ``'block:4x4'`` for the
      parametrized ones) or a structure of ``flatsparse.sparsity.masks``.
    supported: the kinds (``SCOPES`` names) the caller implements.
    owner: who asks, for the error message.
    nm_axis: the axis of an N:M scope given by name (the kernel's input
      axis, -2 for Dense ``(in, out)`` and Conv ``(h, w, in, out)``).

  Returns:
    The :class:`Scope`.

  Raises:
    ValueError: for an unknown or malformed scope, or one ``owner`` does not
      support, naming the allowed ones.
  """
  supported = tuple(supported)
  allowed = describe(supported)
  kind = _structure_kind(scope)
  structure = scope
  if kind is None and scope in ("layer", "global", "row"):
    kind, structure = scope, masks.Unstructured()
  elif kind is None and isinstance(scope, str):
    structure = _parse_structured(scope, allowed, nm_axis)
    kind = _structure_kind(structure)
  if kind is None:
    hint = (" ('unstructured' is the scope 'layer')"
            if scope == "unstructured" else "")
    raise ValueError(f"Unknown scope {scope!r}; allowed: {allowed}.{hint}")
  if kind not in supported:
    raise ValueError(f"scope {scope!r} is not supported by {owner}; allowed: "
                     f"{allowed}.")
  return Scope(kind, structure)


def check_importance(importance: Any, supported: Iterable[str], *,
                     owner: str, custom: str = "") -> None:
  """Raises unless ``importance`` is one of ``supported``.

  Args:
    importance: a name of ``IMPORTANCES`` (or, when ``custom`` says so, a
      callable).
    supported: the names ``owner`` implements.
    owner: who asks, for the error message.
    custom: how ``owner`` takes a custom importance (``'a callable
      (weights, grads, key) -> scores'``); empty: by the name ``'custom'``.
  """
  supported = tuple(supported)
  if custom and callable(importance):
    return
  if importance in supported:
    return
  allowed = describe(supported) + (f", or {custom}" if custom else "")
  if importance in IMPORTANCES:
    raise ValueError(f"importance {importance!r} is not supported by {owner}; "
                     f"allowed: {allowed}.")
  raise ValueError(f"Unknown importance {importance!r}; allowed: {allowed}.")


def check_min_kept(min_kept: Any) -> int:
  """``min_kept``: a Python int >= 0."""
  if isinstance(min_kept, bool) or not isinstance(min_kept, int) or (
      min_kept < 0):
    raise ValueError(
        f"min_kept must be an int >= 0 (the fewest entries each prunable "
        f"leaf, or row for scope 'row', keeps; 0 allows an empty leaf), got "
        f"{min_kept!r}.")
  return min_kept


def check_global_normalization(value: Any, scope_kind: str) -> None:
  """One of ``GLOBAL_NORMALIZATIONS``; ``'l2'`` only for the global scope."""
  validation.check_choice("global_normalization", value,
                          GLOBAL_NORMALIZATIONS)
  if value != "none" and scope_kind != "global":
    raise ValueError(
        f"global_normalization={value!r} applies to scope 'global' only "
        f"(it rescales each leaf before one shared ranking), got scope "
        f"{scope_kind!r}; use 'none'.")


def check_renamed(keys: Iterable[str], where: str) -> None:
  """Raises for an old name of ``RENAMED_KEYS``, naming its new key."""
  old = [k for k in keys if k in RENAMED_KEYS]
  if old:
    renamed = ", ".join(f"{k!r} is now {RENAMED_KEYS[k]!r}" for k in old)
    raise ValueError(
        f"{where}: {renamed} (one mask vocabulary for the sparsity wrappers "
        f"and SAFE; see flatsparse.sparsity.spec).")


def config_kwargs(config: Mapping[str, Any], where: str) -> dict[str, Any]:
  """The specification keys (``SPEC_KEYS``) that ``config`` sets.

  Both config factories read the keys they share through this function:
  an old name (``RENAMED_KEYS``) is an error naming the new key, None reads
  as unset, and ``overrides`` becomes a plain dict. The values are checked
  by the transform they configure (with the functions of this module).

  Args:
    config: a config section (any mapping).
    where: the section's name, for the error message.

  Returns:
    ``{key: value}`` for the keys of ``SPEC_KEYS`` set in ``config``.
  """
  check_renamed(config, where)
  out = {k: config[k] for k in SPEC_KEYS if config.get(k) is not None}
  if "overrides" in out:
    out["overrides"] = dict(out["overrides"])
  return out


def default_is_prunable(path: str, leaf: Any) -> bool:
  """Kernels are prunable: floating-point leaves named ``kernel``, ndim > 1.

  That is the kernels of ``Dense``, ``DenseGeneral`` (attention
  projections) and ``Conv`` layers, in linen trees (``.../kernel``) and
  ``flax.nnx`` states (``.../kernel/value``). Everything else stays dense
  unless a custom ``is_prunable`` or an override selects it: biases (also
  the ``(heads, head_dim)`` biases of attention projections), normalization
  parameters, embeddings, class tokens and position embeddings, leaves of
  unnamed containers (lists, tuples), and integer and bool leaves (step
  counters, quantized weights: their "zero" is not a pruned weight and an
  optimizer update cannot be masked onto them). :func:`is_floating_matrix`
  selects by shape alone.

  Args:
    path: the leaf's ``'/'``-joined path (``'params/Dense_0/kernel'``).
    leaf: an array or a ``jax.ShapeDtypeStruct``.

  Returns:
    Whether the leaf is pruned by default.
  """
  parts = path.split("/")
  if len(parts) > 1 and parts[-1] == "value":  # an nnx Variable's payload
    parts = parts[:-1]
  return parts[-1] == "kernel" and is_floating_matrix(path, leaf)


def is_floating_matrix(path: str, leaf: Any) -> bool:
  """Floating-point leaves with ndim > 1, whatever their name.

  The default predicate before the kernels-only one (and, for floating
  leaves, JaxPruner's ``NOT_DIM_ONE_FILTER_FN``): it also prunes class
  tokens, position embeddings and the 2-d biases of attention projections.
  For trees without names (lists of arrays) pass it as ``is_prunable``.
  """
  del path
  dtype = getattr(leaf, "dtype", None)
  return (getattr(leaf, "ndim", 0) > 1 and dtype is not None
          and jnp.issubdtype(dtype, jnp.floating))


def selects(is_prunable: Any, overrides: Mapping[str, Any] | None) -> Any:
  """``(path, leaf) -> bool``: ``is_prunable`` or named in ``overrides``."""
  if not overrides:
    return is_prunable
  named = frozenset(overrides)
  return lambda path, leaf: path in named or is_prunable(path, leaf)
