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
(no full sort).

References:
  Lee, Lee, Chung, Lee, "SAFE: Finding Sparse and Flat Minima to Improve
  Pruning", ICML 2025 (generalized projection: SAFE+).
  Sun et al., "A Simple and Effective Pruning Approach for Large Language
  Models" (Wanda), ICLR 2024.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from flatsparse.sparsity import distributions
from flatsparse.sparsity import masks as masks_lib

__all__ = ["IMPORTANCES", "SCOPES", "Projection", "importance_shape"]

IMPORTANCES = ("magnitude", "activation", "gradient", "hessian", "custom")
SCOPES = ("global", "layer", "row", "N:M (e.g. '2:4')")


def importance_shape(shape: tuple[int, ...], importance: str,
                     input_axis: int = -2) -> tuple[int, ...]:
  """Shape of the stored importance of a kernel of ``shape``.

  Per-input-feature for ``activation`` (ones except the input axis), the
  kernel's shape otherwise.
  """
  if importance != "activation":
    return tuple(shape)
  axis = input_axis % len(shape)
  return tuple(s if i == axis else 1 for i, s in enumerate(shape))


@dataclasses.dataclass(frozen=True)
class Projection:
  """Keeps the largest ``sqrt(P) * |v|`` entries at the target sparsity.

  Attributes:
    sparsity: target in [0, 1); ``None`` only with an N:M scope (whose
      sparsity is ``1 - N/M``).
    scope: ``'global'``, ``'layer'``, ``'row'`` or ``'N:M'`` (see module doc).
    distribution: per-leaf sparsities for ``layer``/``row`` (``uniform``,
      ``erk``).
    importance: one of ``IMPORTANCES``.
    overrides: ``{leaf path: sparsity}`` fixed per leaf (layer/row scopes).
    is_prunable: ``(path, leaf) -> bool``; default: ``ndim > 1``.
    input_axis: the kernel's input-feature axis (-2 for Dense ``(in, out)``
      and Conv ``(h, w, in, out)`` kernels).
  """

  sparsity: float | None = 0.9
  scope: str = "layer"
  distribution: str = "uniform"
  importance: str = "magnitude"
  overrides: Mapping[str, float] | None = None
  is_prunable: Callable[[str, Any], bool] = distributions.default_is_prunable
  input_axis: int = -2

  def __post_init__(self):
    if self.importance not in IMPORTANCES:
      raise ValueError(f"Unknown importance {self.importance!r}; allowed: "
                       f"{', '.join(IMPORTANCES)}.")
    if self.distribution not in distributions.DISTRIBUTIONS:
      raise ValueError(f"Unknown distribution {self.distribution!r}; allowed: "
                       f"{', '.join(distributions.DISTRIBUTIONS)}.")
    nm = self._nm()
    if nm is None and self.scope not in ("global", "layer", "row"):
      raise ValueError(f"Unknown scope {self.scope!r}; allowed: "
                       f"{', '.join(SCOPES)}.")
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
    if self.scope == "global" and (self.distribution != "uniform"
                                   or self.overrides):
      raise ValueError("scope 'global' picks one budget over all leaves; "
                       "distribution and overrides apply to 'layer' and "
                       "'row' scopes only.")

  def _nm(self) -> masks_lib.NM | None:
    if ":" not in str(self.scope):
      return None
    parts = str(self.scope).split(":")
    try:
      n, m = (int(p) for p in parts)
    except ValueError as e:
      raise ValueError(f"Bad N:M scope {self.scope!r}; allowed: "
                       f"{', '.join(SCOPES)}.") from e
    return masks_lib.NM(n, m, axis=self.input_axis)

  # Structure -----------------------------------------------------------------

  def prunable(self, params: Any) -> dict[str, Any]:
    """``{path: leaf}`` of the leaves the projection acts on."""
    return distributions.prunable_leaves(params, self.is_prunable)

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
                       "ndim > 1); check is_prunable.")
    nm = self._nm()
    for path, leaf in leaves.items():
      if nm is not None:
        nm.check(tuple(leaf.shape), path)
    if nm is None and self.scope != "global":
      self.leaf_sparsities(params)  # validates overrides

  def init_importance(self, params: Any) -> Any:
    """Params-like pytree of ones (stored shapes), ``None`` where unused."""
    if self.importance == "magnitude":
      return None
    return self.map_prunable(
        lambda path, w: jnp.ones(
            importance_shape(w.shape, self.importance, self.input_axis),
            jnp.float32), params)

  def normalize_importance(self, importance: Any, params: Any) -> Any:
    """Reshapes user importance leaves to the stored shapes, checking them."""
    flat = dict(_flat(importance, keep_none=True))

    def fix(path, w):
      if path not in flat or flat[path] is None:
        raise ValueError(f"Importance has no entry for prunable leaf "
                         f"{path!r}; it needs one per prunable leaf.")
      value = jnp.asarray(flat[path], jnp.float32)
      want = importance_shape(w.shape, self.importance, self.input_axis)
      if value.size == _prod(want):
        return value.reshape(want)
      raise ValueError(
          f"Importance for {path!r} has shape {value.shape}; expected {want} "
          f"(or {_prod(want)} entries) for a kernel of shape {w.shape}.")
    return self.map_prunable(fix, params)

  # Projection ----------------------------------------------------------------

  def scores(self, tree: Any, importance: Any = None) -> Any:
    """``sqrt(P) * |v|`` on prunable leaves (float32), ``None`` elsewhere."""
    flat_p = ({} if importance is None else
              dict(_flat(importance, keep_none=True)))

    def score(path, v):
      s = jnp.abs(v.astype(jnp.float32))
      p = flat_p.get(path)
      return s if p is None else s * jnp.sqrt(jnp.maximum(p, 0.0))
    return self.map_prunable(score, tree)

  def masks(self, tree: Any, importance: Any = None) -> Any:
    """Boolean masks like ``tree`` (``None`` on non-prunable leaves)."""
    scored = self.scores(tree, importance)
    flat = _flat(scored)
    paths, leaves = [p for p, _ in flat], [s for _, s in flat]
    nm = self._nm()
    if nm is not None:
      chosen = [nm.mask(s, nm.fixed_sparsity()) for s in leaves]
    elif self.scope == "global":
      total = sum(s.size for s in leaves)
      chosen = masks_lib.topk_masks_global(
          leaves, masks_lib.num_to_keep(total, self.sparsity))
    else:
      sparsities = self.leaf_sparsities(tree)
      if self.scope == "layer":
        chosen = masks_lib.masks_for_leaves(
            masks_lib.Unstructured(), leaves,
            [sparsities[p] for p in paths])
      else:
        chosen = [_row_mask(s, sparsities[p]) for p, s in zip(paths, leaves)]
    by_path = dict(zip(paths, chosen))
    return self.map_prunable(lambda path, _: by_path[path], tree)

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
    def visit(path, leaf):
      name = distributions.path_str(path)
      return fn(name, leaf) if self.is_prunable(name, leaf) else None
    return jax.tree_util.tree_map_with_path(visit, tree)

  def only_prunable(self, tree: Any) -> Any:
    """``tree`` with ``None`` on the leaves the projection does not act on."""
    return self.map_prunable(lambda path, leaf: leaf, tree)


def _row_mask(scores: jax.Array, sparsity: Any) -> jax.Array:
  """Same count kept in every output unit (the last axis)."""
  rows = jnp.moveaxis(scores, -1, 0)
  flat = rows.reshape(rows.shape[0], -1)
  keep = masks_lib.num_to_keep(flat.shape[1], sparsity)
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
  try:
    return abs(float(a) - b) < 1e-6
  except (TypeError, jax.errors.ConcretizationTypeError):
    return True
