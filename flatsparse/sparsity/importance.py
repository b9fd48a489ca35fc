"""Importance: what ranks the entries a mask keeps (larger means keep).

One vocabulary (``spec.IMPORTANCES``), two ways of computing it:

* Scores of the current weights (and gradients), computed when a mask is
  chosen: ``(weights, grads, key) -> scores`` (:data:`SCORES`, the
  ``importance`` of the sparsity wrappers): ``magnitude`` ``|w|``,
  ``random`` uniform noise, ``saliency`` ``|w g|`` (SNIP). A callable of the
  same signature is a custom importance.
* A diagonal importance ``P`` kept in a transform's state, which ranks an
  entry ``v`` by ``sqrt(P) |v|`` (:func:`weighted_magnitude`, the
  ``importance`` of SAFE's ``Projection``): ``magnitude`` (``P = I``),
  ``activation`` (``P_jj = ||X_j||^2`` per input feature, Wanda-style,
  stored in :func:`importance_shape`), ``gradient`` (``P = g^2``: the score
  is SNIP's ``|g w|``), ``hessian`` (``P = |diag H|``, OBD) and ``custom``
  (a pytree the caller supplies). ``flatsparse.safe.safe.update_importance``
  collects them during training.

:func:`l2_normalize` is the global scope's optional per-leaf normalization
(``global_normalization='l2'``).

References:
  Han et al., "Learning both Weights and Connections", NeurIPS 2015 (magnitude).
  Lee et al., "SNIP: Single-shot Network Pruning", ICLR 2019 (saliency |w * g|).
  LeCun et al., "Optimal Brain Damage", NeurIPS 1990 (Hessian diagonal).
  Sun et al., "A Simple and Effective Pruning Approach for Large Language
  Models" (Wanda), ICLR 2024 (activation).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from flatsparse import tree_utils
from flatsparse.sparsity import spec

__all__ = ["magnitude", "random", "saliency", "SCORES", "CUSTOM_SCORE",
           "STORED", "get_score", "importance_shape", "weighted_magnitude",
           "l2_normalize"]

Array = jax.Array
ScoreFn = Callable[[Array, Array | None, Array], Array]

# How the sparsity wrappers take a custom importance.
CUSTOM_SCORE = "a callable (weights, grads, key) -> scores"
# Importances kept in a transform's state as a diagonal P (SAFE).
STORED = ("activation", "gradient", "hessian", "custom")


def magnitude(weights: Array, grads: Array | None, key: Array) -> Array:
  """``|w|``."""
  del grads, key
  return jnp.abs(weights)


def random(weights: Array, grads: Array | None, key: Array) -> Array:
  """Uniform noise: a random mask of the right size."""
  del grads
  return jax.random.uniform(key, weights.shape, jnp.float32)


def saliency(weights: Array, grads: Array | None, key: Array) -> Array:
  """First-order Taylor saliency ``|w * g|`` (needs gradients)."""
  del key
  if grads is None:
    raise ValueError("The saliency score needs gradients; pass grads=.")
  return jnp.abs(weights.astype(jnp.float32) * grads.astype(jnp.float32))


SCORES: dict[str, ScoreFn] = {
    "magnitude": magnitude,
    "random": random,
    "saliency": saliency,
}


def get_score(importance: str | ScoreFn, *, owner: str = "the sparsity "
              "wrappers") -> ScoreFn:
  """The score function of an importance name, or a callable passed through.

  Raises:
    ValueError: for a name that is not in :data:`SCORES` (naming them).
  """
  spec.check_importance(importance, SCORES, owner=owner, custom=CUSTOM_SCORE)
  return importance if callable(importance) else SCORES[importance]


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


def weighted_magnitude(v: Array, p: Array | None = None) -> Array:
  """``sqrt(P) * |v|`` (``|v|`` without ``P``), in ``v``'s dtype, at least
  float32; a negative ``P`` counts as 0."""
  s = jnp.abs(v.astype(tree_utils.moment_dtype(v)))
  return s if p is None else s * jnp.sqrt(jnp.maximum(p, 0.0))


def l2_normalize(scores: Array, eps: float = 1e-8) -> Array:
  """``s / (||s||_2 + eps)`` over the finite entries of one leaf.

  JaxPruner's global pruning ranks these (``use_normalization=True``,
  ``eps = 1e-8``): every leaf gets the same total weight in the shared
  ranking. Entries at ``-inf`` (the sparsity wrappers' inactive weights,
  whose JaxPruner score is ``|0| = 0``) count as 0 in the norm and stay
  ``-inf``.
  """
  norm = jnp.linalg.norm(jnp.where(jnp.isfinite(scores), scores, 0.0))
  return scores / (norm + eps)

