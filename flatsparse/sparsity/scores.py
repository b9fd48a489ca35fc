"""Importance scores: larger means keep. Pure functions of (weights, grads,
key).

References:
  Han et al., "Learning both Weights and Connections", NeurIPS 2015 (magnitude).
  Lee et al., "SNIP: Single-shot Network Pruning", ICLR 2019 (saliency |w * g|).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["magnitude", "random", "saliency", "SCORES", "get_score"]

Array = jax.Array
ScoreFn = Callable[[Array, Array | None, Array], Array]


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


def get_score(name: str | ScoreFn) -> ScoreFn:
  """Looks up a score by name, or passes a callable through."""
  if callable(name):
    return name
  if name not in SCORES:
    raise ValueError(f"Unknown score {name!r}; allowed: {', '.join(SCORES)}.")
  return SCORES[name]
