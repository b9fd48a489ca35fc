"""Which leaves are prunable, and how much of each to prune.

A distribution turns one target sparsity into a per-leaf sparsity:

* ``uniform``: every prunable leaf gets the target.
* ``erk``: Erdos-Renyi-Kernel (Evci et al. 2020). Density of leaf ``l`` is
  ``eps * (sum(shape_l) / prod(shape_l)) ** power``, with ``eps`` chosen so the
  prunable leaves keep ``(1 - s) * N`` weights in total. Leaves whose density
  would exceed 1 are made dense and ``eps`` is solved again for the rest.

``overrides`` maps leaf paths (``'params/Dense_0/kernel'``) to a fixed sparsity
that the distribution does not touch (0.0 keeps a leaf dense); a leaf named
there is pruned even where ``is_prunable`` (default: the kernels,
``spec.default_is_prunable``) leaves it dense. ``DISTRIBUTIONS`` and the
default predicate belong to the shared vocabulary (``flatsparse.sparsity.spec``)
and are re-exported here.

References:
  Evci et al., "Rigging the Lottery: Making All Tickets Winners", ICML 2020.
  Mocanu et al., "Scalable training of artificial neural networks with adaptive
  sparse connectivity inspired by network science", Nature Comm. 2018.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from flatsparse.sparsity.spec import default_is_prunable
from flatsparse.sparsity.spec import DISTRIBUTIONS

__all__ = [
    "DISTRIBUTIONS",
    "path_str",
    "default_is_prunable",
    "prunable_leaves",
    "check_sparsity",
    "layer_sparsities",
    "erk_sparsities",
]

IsPrunable = Callable[[str, Any], bool]


def path_str(path: tuple[Any, ...]) -> str:
  """``'/'``-joined readable key path (dict keys, attribute names, indices)."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def prunable_leaves(params: Any,
                    is_prunable: IsPrunable = default_is_prunable
                    ) -> dict[str, Any]:
  """Ordered ``{path: leaf}`` of the prunable leaves of ``params``."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {path_str(p): leaf for p, leaf in flat
          if is_prunable(path_str(p), leaf)}


def check_sparsity(value: Any, what: str = "sparsity") -> None:
  """Raises unless ``value`` is a number in [0, 1) (traced values pass)."""
  if isinstance(value, jax.core.Tracer):
    return  # traced (inject_hyperparams inside jit): checked upstream.
  try:
    if isinstance(value, (str, bytes, bool)):
      raise TypeError
    v = float(value)
  except (TypeError, ValueError):
    # None would otherwise prune nothing, silently.
    raise ValueError(f"{what} must be a number in [0, 1), got {value!r} "
                     "(use 0.0, or no_pruning(), to keep every weight)."
                     ) from None
  if not 0.0 <= v < 1.0:
    raise ValueError(f"{what} must be in [0, 1), got {value!r}.")


def erk_sparsities(shapes: Mapping[str, tuple[int, ...]], sparsity: float,
                   power: float = 1.0) -> dict[str, float]:
  """ERK per-leaf sparsities for ``shapes`` keeping ``(1-sparsity)`` overall."""
  try:
    sparsity = float(sparsity)
  except (TypeError, jax.errors.ConcretizationTypeError) as e:
    raise ValueError(
        "The 'erk' distribution needs a concrete (Python) sparsity; use "
        "'uniform' to inject sparsity as a hyperparameter.") from e
  sizes = {k: int(np.prod(s)) for k, s in shapes.items()}
  raw = {k: (sum(s) / np.prod(s)) ** power for k, s in shapes.items()}
  dense: set[str] = set()
  while True:
    # Budget of kept weights for the non-dense leaves, after dense ones took
    # theirs.
    rhs = sum((1 - sparsity) * sizes[k] if k not in dense
              else -sparsity * sizes[k]
              for k in shapes)
    divisor = sum(raw[k] * sizes[k] for k in shapes if k not in dense)
    if divisor == 0:
      break
    eps = rhs / divisor
    free = [k for k in shapes if k not in dense]
    max_prob = max(raw[k] for k in free)
    if max_prob * eps <= 1.0:
      break
    dense.update(k for k in free if raw[k] == max_prob)
  return {k: 0.0 if k in dense else float(1.0 - eps * raw[k]) for k in shapes}


def layer_sparsities(params: Any, sparsity: Any, distribution: str = "uniform",
                     *, overrides: Mapping[str, float] | None = None,
                     is_prunable: IsPrunable = default_is_prunable,
                     erk_power: float = 1.0) -> dict[str, Any]:
  """Per-leaf target sparsity ``{path: s}`` for every prunable leaf.

  Args:
    params: the parameter pytree (arrays or ShapeDtypeStructs).
    sparsity: target in [0, 1).
    distribution: one of ``DISTRIBUTIONS``.
    overrides: ``{path: sparsity}`` fixed per leaf; paths must exist.
    is_prunable: ``(path, leaf) -> bool``; others stay dense and are absent.
    erk_power: exponent of the ERK raw density (1.0 in the paper).

  Returns:
    Ordered dict path -> sparsity (floats, or traced scalars for ``uniform``).
  """
  if distribution not in DISTRIBUTIONS:
    raise ValueError(f"Unknown distribution {distribution!r}; allowed: "
                     f"{', '.join(DISTRIBUTIONS)}.")
  check_sparsity(sparsity)
  leaves = prunable_leaves(params, is_prunable)
  overrides = dict(overrides or {})
  all_paths = [path_str(p) for p, _ in
               jax.tree_util.tree_flatten_with_path(params)[0]]
  for path, value in overrides.items():
    if path not in all_paths:
      raise ValueError(
          f"Override names {path!r}, which is not a leaf of the parameters. "
          f"Leaves: {', '.join(all_paths[:20])}"
          f"{' ...' if len(all_paths) > 20 else ''}.")
    check_sparsity(value, f"override for {path!r}")
  free = {k: tuple(v.shape) for k, v in leaves.items() if k not in overrides}
  if distribution == "uniform":
    result = {k: sparsity for k in free}
  else:
    result = erk_sparsities(free, sparsity, erk_power)
  ordered = {}
  for path in all_paths:
    if path in overrides:
      ordered[path] = float(overrides[path])
    elif path in result:
      ordered[path] = result[path]
  return ordered
