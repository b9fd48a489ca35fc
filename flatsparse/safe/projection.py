"""Projections onto the sparsity constraint, plain and importance-weighted.

``Proj(v)`` keeps the entries with the largest score ``sqrt(P_ii) * |v_i|`` and
zeroes the rest, for a diagonal importance ``P``:

* ``magnitude``: ``P = I`` (SAFE, ADMM, IHT; Euclidean projection).
* ``activation``: ``P_jj = ||X_j||^2``, the squared norm of the layer's input
  feature ``j`` (Wanda-style; SAFE+ as published), broadcast along the kernel's
  input axis.
* ``gradient``: ``P = g^2`` (so the score is SNIP's ``|g w|``).
* ``hessian``: ``P = |diag H|`` (OBD's ``H_ii w_i^2``; Hutchinson estimate).
* ``custom``: any non-negative pytree the caller supplies.

Comparison groups (``scope``): ``global`` (one budget over all prunable
leaves), ``layer`` (per leaf, sparsities from a ``flatsparse.sparsity``
distribution: uniform or ERK), ``row`` (per output unit: the kernel's last
axis; sparsity per leaf from the distribution) and ``'N:M'`` (e.g. ``'2:4'``:
``N`` of every ``M`` consecutive entries along the input axis). Counts are
exact, computed by the bisection top-k of ``flatsparse.sparsity.masks``
(no full sort); ties are broken by flat index, lower index kept. Every group
keeps at least ``min_kept`` entries (default 1; 0 allows an empty group),
and the global scope can rank each leaf's scores divided by their L2 norm
(``global_normalization='l2'``). The names (``scope``, ``distribution``,
``importance``, ``overrides``, ``min_kept``, ``global_normalization``) are
the sparsity wrappers' too: ``flatsparse.sparsity.spec``; the importances
are computed by ``flatsparse.sparsity.importance``.

Kept count of a group of ``n`` entries at sparsity ``s`` (``rounding``):

* ``'round'`` (default): ``n - round(s n)``, ``s n`` in float32, ties to
  even (``flatsparse.sparsity.masks.num_to_keep``, as every pruner here).
* ``'floor'``: ``n - floor(s n)``, the reference SAFE code's count (it prunes
  ``int(s n)``), ``s n`` in Python float64 for a Python sparsity.

Either count is then raised to ``min(min_kept, n)``.

The two differ by one weight, ``'round'`` keeping one fewer, where the
fraction of ``s n`` exceeds 1/2, or equals 1/2 with ``floor(s n)`` odd
(``s = 0.4, n = 14``: 8 kept against 9). N:M scopes keep exactly ``N``.

Dtypes: scores and stored importances are computed in the leaf's dtype, at
least float32 (``jnp.promote_types(dtype, float32)``): float32 for float32
and bfloat16 leaves, float64 for float64 ones. The top-k compares scores in
float32 (``flatsparse.sparsity.masks.ordered_key``), so float64 scores that
round to the same float32 value are ranked as ties.

References:
  Lee, Lee, Chung, Lee, "SAFE: Finding Sparse and Flat Minima to Improve
  Pruning", ICML 2025 (generalized projection: SAFE+).
  Sun et al., "A Simple and Effective Pruning Approach for Large Language
  Models" (Wanda), ICLR 2024.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp

from flatsparse import tree_utils
from flatsparse import validation
from flatsparse.sparsity import distributions
from flatsparse.sparsity import importance as importance_lib
from flatsparse.sparsity import masks as masks_lib
from flatsparse.sparsity import spec
from flatsparse.sparsity.importance import importance_shape

__all__ = ["IMPORTANCES", "SCOPES", "ROUNDINGS", "Projection",
           "importance_shape", "num_to_keep"]

# The importances and scopes (of flatsparse.sparsity.spec) Projection has.
IMPORTANCES = ("magnitude", "activation", "gradient", "hessian", "custom")
SCOPES = ("global", "layer", "row", "N:M")
ROUNDINGS = ("round", "floor")


def num_to_keep(size: int, sparsity: Any, rounding: str = "round",
                min_kept: int = 0) -> jax.Array:
  """Entries kept of ``size`` at ``sparsity``, rounding ``s size`` as asked.

  Args:
    size: the number of entries compared.
    sparsity: in [0, 1); a Python number, an array or a traced value.
    rounding: ``'round'`` (``flatsparse.sparsity.masks.num_to_keep``) or
      ``'floor'`` (``size - floor(s size)``, the reference SAFE code's count;
      in Python arithmetic, float64 for a Python float, when ``sparsity`` is
      a Python or NumPy number).
    min_kept: the count is at least ``min(min_kept, size)``.

  Returns:
    An int32 scalar.
  """
  validation.check_choice("rounding", rounding, ROUNDINGS)
  if rounding == "round":
    return masks_lib.num_to_keep(size, sparsity, min_kept)
  least = min(min_kept, size)
  if isinstance(sparsity, numbers.Real) and not isinstance(sparsity, bool):
    return jnp.int32(max(size - math.floor(sparsity * size), least))
  s = jnp.asarray(sparsity)
  s = s.astype(jnp.promote_types(s.dtype, jnp.float32))
  kept = jnp.int32(size) - jnp.floor(s * size).astype(jnp.int32)
  return jnp.maximum(kept, least) if least else kept


@dataclasses.dataclass(frozen=True)
class Projection:
  """Keeps the largest ``sqrt(P) * |v|`` entries at the target sparsity.

  Attributes:
    sparsity: target in [0, 1); ``None`` only with an N:M scope (whose
      sparsity is ``1 - N/M``).
    scope: ``'global'``, ``'layer'``, ``'row'`` or ``'N:M'`` (see module doc;
      an ``NM`` structure of ``flatsparse.sparsity.masks`` sets its axis).
    distribution: per-leaf sparsities for ``layer``/``row`` (``uniform``,
      ``erk``).
    importance: one of ``IMPORTANCES``.
    overrides: ``{leaf path: sparsity}`` fixed per leaf (layer/row scopes);
      a leaf named here is projected even where ``is_prunable`` leaves it
      dense.
    is_prunable: ``(path, leaf) -> bool``; default: the kernels
      (floating-point leaves named ``kernel`` with ``ndim > 1``,
      ``flatsparse.sparsity.spec.default_is_prunable``).
    input_axis: the kernel's input-feature axis (-2 for Dense ``(in, out)``
      and Conv ``(h, w, in, out)`` kernels).
    rounding: how a sparsity becomes a kept count (see :func:`num_to_keep`):
      ``'round'`` (default) or ``'floor'`` (the reference SAFE code).
    min_kept: the fewest entries each comparison group (leaf; row for the
      row scope) keeps, whatever the sparsity: default 1, 0 allows empty
      groups.
    global_normalization: ``'none'`` (default) or ``'l2'``: the global scope
      ranks each leaf's scores divided by their L2 norm.
  """

  sparsity: float | None = 0.9
  scope: Any = "layer"
  distribution: str = "uniform"
  importance: str = "magnitude"
  overrides: Mapping[str, float] | None = None
  is_prunable: Callable[[str, Any], bool] = spec.default_is_prunable
  input_axis: int = -2
  rounding: str = "round"
  min_kept: int = 1
  global_normalization: str = "none"

  def __post_init__(self):
    spec.check_importance(self.importance, IMPORTANCES, owner="Projection")
    validation.check_choice("distribution", self.distribution,
                            distributions.DISTRIBUTIONS)
    validation.check_choice("rounding", self.rounding, ROUNDINGS)
    kind = self._scope().kind
    spec.check_min_kept(self.min_kept)
    spec.check_global_normalization(self.global_normalization, kind)
    nm = self._nm()
    if nm is not None:
      fixed = nm.fixed_sparsity()
      if self.sparsity is not None and not _close(self.sparsity, fixed):
        raise ValueError(
            f"scope {self.scope!r} fixes sparsity at {fixed:g}, but sparsity="
            f"{self.sparsity!r} was given; pass sparsity=None or {fixed:g}.")
    elif self.sparsity is None:
      raise ValueError(f"scope {self.scope!r} needs a sparsity in [0, 1).")
    else:
      distributions.check_sparsity(self.sparsity)
    if kind == "global" and (self.distribution != "uniform"
                             or self.overrides):
      raise ValueError("scope 'global' picks one budget over all leaves; "
                       "distribution and overrides apply to 'layer' and "
                       "'row' scopes only.")

  def _scope(self) -> spec.Scope:
    return spec.parse_scope(self.scope, SCOPES, owner="Projection",
                            nm_axis=self.input_axis)

  def _nm(self) -> masks_lib.NM | None:
    scope = self._scope()
    return scope.structure if scope.kind == "N:M" else None

  # Structure -----------------------------------------------------------------

  def prunable(self, params: Any) -> dict[str, Any]:
    """``{path: leaf}`` of the leaves the projection acts on (``is_prunable``
    or named in ``overrides``)."""
    return distributions.prunable_leaves(params, self._selects())

  def _selects(self) -> Callable[[str, Any], bool]:
    return spec.selects(self.is_prunable, self.overrides)

  def leaf_sparsities(self, params: Any) -> dict[str, Any]:
    """Per-leaf sparsity for the layer/row scopes."""
    return distributions.layer_sparsities(
        params, self.sparsity, self.distribution, overrides=self.overrides,
        is_prunable=self.is_prunable)

  def check(self, params: Any) -> None:
    """Raises a clear error if a leaf does not fit the scope (e.g. N:M)."""
    leaves = self.prunable(params)
    if not leaves:
      raise ValueError("The projection found no prunable leaves (default: "
                       "the kernels, floating-point leaves named 'kernel' "
                       "with ndim > 1); check is_prunable.")
    nm = self._nm()
    for path, leaf in leaves.items():
      if nm is not None:
        nm.check(tuple(leaf.shape), path)
    if nm is None and self._scope().kind != "global":
      self.leaf_sparsities(params)  # validates overrides

  def init_importance(self, params: Any) -> Any:
    """Params-like pytree of ones (stored shapes, the leaves' dtypes at least
    float32), ``None`` where unused."""
    if self.importance == "magnitude":
      return None
    return self.map_prunable(
        lambda path, w: jnp.ones(
            importance_shape(w.shape, self.importance, self.input_axis),
            tree_utils.moment_dtype(w)), params)

  def normalize_importance(self, importance: Any, params: Any) -> Any:
    """Reshapes user importance leaves to the stored shapes, checking them."""
    flat = dict(_flat(importance, keep_none=True))

    def fix(path, w):
      if path not in flat or flat[path] is None:
        raise ValueError(f"Importance has no entry for prunable leaf "
                         f"{path!r}; it needs one per prunable leaf.")
      value = jnp.asarray(flat[path], tree_utils.moment_dtype(w))
      want = importance_shape(w.shape, self.importance, self.input_axis)
      if value.size == _prod(want):
        return value.reshape(want)
      raise ValueError(
          f"Importance for {path!r} has shape {value.shape}; expected {want} "
          f"(or {_prod(want)} entries) for a kernel of shape {w.shape}.")
    return self.map_prunable(fix, params)

  # Projection ----------------------------------------------------------------

  def scores(self, tree: Any, importance: Any = None) -> Any:
    """``sqrt(P) * |v|`` on prunable leaves (in ``v``'s dtype, at least
    float32), ``None`` elsewhere."""
    flat_p = ({} if importance is None else
              dict(_flat(importance, keep_none=True)))

    return self.map_prunable(
        lambda path, v: importance_lib.weighted_magnitude(v, flat_p.get(path)),
        tree)

  def masks(self, tree: Any, importance: Any = None) -> Any:
    """Boolean masks like ``tree`` (``None`` on non-prunable leaves)."""
    scored = self.scores(tree, importance)
    flat = _flat(scored)
    paths, leaves = [p for p, _ in flat], [s for _, s in flat]
    nm, kind = self._nm(), self._scope().kind
    if nm is not None:
      chosen = [nm.mask(s, nm.fixed_sparsity()) for s in leaves]
    elif kind == "global":
      total = sum(s.size for s in leaves)
      if self.global_normalization == "l2":
        leaves = [importance_lib.l2_normalize(s) for s in leaves]
      chosen = masks_lib.topk_masks_global(
          leaves, num_to_keep(total, self.sparsity, self.rounding),
          self.min_kept)
    else:
      sparsities = self.leaf_sparsities(tree)
      if kind == "layer":
        chosen = masks_lib.topk_masks(
            leaves, [self.num_to_keep(s.size, sparsities[p])
                     for p, s in zip(paths, leaves)])
      else:
        chosen = [_row_mask(s, self.num_to_keep, sparsities[p])
                  for p, s in zip(paths, leaves)]
    by_path = dict(zip(paths, chosen))
    return self.map_prunable(lambda path, _: by_path[path], tree)

  def num_to_keep(self, size: int, sparsity: Any) -> jax.Array:
    """Entries kept of a group of ``size`` (:func:`num_to_keep`, at least
    ``min_kept``)."""
    return num_to_keep(size, sparsity, self.rounding, self.min_kept)

  def project(self, tree: Any, importance: Any = None) -> tuple[Any, Any]:
    """``(Proj(tree), masks)``; non-prunable leaves pass through unchanged."""
    masks = self.masks(tree, importance)
    projected = jax.tree.map(
        lambda m, v: v if m is None else jnp.where(m, v, jnp.zeros_like(v)),
        masks, tree, is_leaf=lambda x: x is None)
    return projected, masks

  def map_prunable(self, fn: Callable[[str, Any], Any], tree: Any) -> Any:
    """``fn(path, leaf)`` on the prunable leaves of ``tree``, ``None``
    elsewhere (the masks convention)."""
    selects = self._selects()

    def visit(path, leaf):
      name = distributions.path_str(path)
      return fn(name, leaf) if selects(name, leaf) else None
    return jax.tree_util.tree_map_with_path(visit, tree)

  def only_prunable(self, tree: Any) -> Any:
    """``tree`` with ``None`` on the leaves the projection does not act on."""
    return self.map_prunable(lambda path, leaf: leaf, tree)


def _row_mask(scores: jax.Array, keep_fn: Callable[[int, Any], jax.Array],
              sparsity: Any) -> jax.Array:
  """Same count, ``keep_fn(size, sparsity)``, kept in every output unit (the
  last axis)."""
  rows = jnp.moveaxis(scores, -1, 0)
  flat = rows.reshape(rows.shape[0], -1)
  keep = keep_fn(flat.shape[1], sparsity)
  mask = masks_lib.topk_mask_rows(flat, keep).reshape(rows.shape)
  return jnp.moveaxis(mask, 0, -1)


def _flat(tree: Any, keep_none: bool = False) -> list[tuple[str, Any]]:
  is_leaf = (lambda x: x is None) if keep_none else None
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]
  return [(distributions.path_str(p), leaf) for p, leaf in flat]


def _prod(shape: tuple[int, ...]) -> int:
  out = 1
  for s in shape:
    out *= s
  return out


def _close(a: Any, b: float) -> bool:
  v = validation.concrete(a)
  return v is None or abs(v - b) < 1e-6
