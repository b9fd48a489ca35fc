"""Per-concept metrics and the susceptibility analysis of noisy concepts.

``susceptibility(clean, noisy)``: the per-concept accuracy drop of a model
trained on noisy concepts against one trained on clean concepts; concepts
whose drop exceeds the mean drop are flagged *susceptible*.
``explained_fraction`` then asks how much of the task-accuracy loss they
explain: correct only the flagged concepts of the noisy model (every test
example, true values) and measure the share of the clean-noisy accuracy gap
that this recovers (the paper reports over 90% on its data).

References:
  Park, Mun, Oh and Lee, "An analysis of concept bottleneck models:
  measuring, understanding, and mitigating the impact of noisy
  annotations", 2025 (arXiv:2505.16705).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flatsparse import validation
from flatsparse.cbm.intervention import corrected_values
from flatsparse.cbm.model import bottleneck_values
from flatsparse.cbm.model import ConceptBottleneck

__all__ = ["predict_concepts", "per_concept_accuracy", "Susceptibility",
           "susceptibility", "explained_fraction"]


@functools.partial(jax.jit, static_argnames=("model",))
def _predict(model: ConceptBottleneck, variables: Any, x: jax.Array):
  out = model.apply(variables, x, train=False)
  return out["concept_logits"], out["logits"]


def predict_concepts(model: ConceptBottleneck, variables: Any, inputs: Any,
                     *, batch_size: int = 1024) -> tuple[np.ndarray,
                                                         np.ndarray]:
  """``(concept_logits (N, k), class_logits (N, C))`` in eval mode, in
  batches of one shape (the last padded), as numpy arrays."""
  batch_size = validation.check_count("batch_size", batch_size)
  inputs = np.asarray(inputs)
  concept_parts, class_parts = [], []
  for start in range(0, inputs.shape[0], batch_size):
    rows = inputs[start:start + batch_size]
    real = rows.shape[0]
    if real < batch_size:
      rows = np.concatenate([rows, np.zeros((batch_size - real,
                                             *rows.shape[1:]), rows.dtype)])
    c, y = jax.device_get(_predict(model, variables, jnp.asarray(rows)))
    concept_parts.append(c[:real])
    class_parts.append(y[:real])
  return np.concatenate(concept_parts), np.concatenate(class_parts)


def per_concept_accuracy(concept_logits: Any, concepts: Any) -> np.ndarray:
  """float64 ``(k,)``: the share of examples whose ``1[l_i > 0]`` is
  ``c_i``."""
  concept_logits, concepts = np.asarray(concept_logits), np.asarray(concepts)
  if concept_logits.shape != concepts.shape:
    raise ValueError(f"concept_logits {concept_logits.shape} and concepts "
                     f"{concepts.shape} differ in shape.")
  return np.mean((concept_logits > 0) == (concepts > 0), axis=0,
                 dtype=np.float64)


class Susceptibility(NamedTuple):
  """Per-concept accuracy drop under noise (clean minus noisy).

  Attributes:
    drop: ``(k,)`` accuracy drops.
    mean_drop: Their mean.
    flagged: ``(k,)`` bool, ``drop > mean_drop``.
  """

  drop: np.ndarray
  mean_drop: float
  flagged: np.ndarray


def susceptibility(clean_accuracy: Any, noisy_accuracy: Any
                   ) -> Susceptibility:
  """Flags the concepts whose accuracy drop exceeds the mean drop."""
  clean = np.asarray(clean_accuracy, np.float64)
  noisy = np.asarray(noisy_accuracy, np.float64)
  if clean.shape != noisy.shape or clean.ndim != 1:
    raise ValueError(f"Need two (k,) accuracy vectors; got {clean.shape} "
                     f"and {noisy.shape}.")
  drop = clean - noisy
  mean = float(drop.mean())
  return Susceptibility(drop, mean, drop > mean)


@functools.partial(jax.jit, static_argnames=("model",))
def _accuracy_corrected(model: ConceptBottleneck, params: Any,
                        concept_logits: jax.Array, concepts: jax.Array,
                        classes: jax.Array, selected: jax.Array,
                        low: jax.Array, high: jax.Array) -> jax.Array:
  values = bottleneck_values(concept_logits, model.bottleneck)
  logits = model.apply({"params": params}, corrected_values(
      values, concepts, selected, low, high),
                       method=ConceptBottleneck.predict_from_concepts)
  return jnp.mean((jnp.argmax(logits, -1) == classes).astype(jnp.float32))


def explained_fraction(model: ConceptBottleneck, params: Any,
                       concept_logits: Any, concepts: Any, classes: Any,
                       flagged: Any, *, clean_accuracy: float,
                       low: Any = 0.0, high: Any = 1.0,
                       random_draws: int = 5, seed: int = 0
                       ) -> dict[str, float]:
  """How much of the clean-noisy task-accuracy gap correcting the flagged
  concepts recovers, and as much for as many random concepts.

  Correcting many concepts by their true values can beat the clean model,
  so a recovered share above 1 is possible; the random sets of the same
  size (``random_draws`` of them, mean) say how much of it is owed to the
  flagged concepts being flagged.

  Returns:
    ``{'noisy_accuracy', 'corrected_accuracy', 'clean_accuracy',
    'explained', 'random_corrected_accuracy', 'random_explained'}`` with
    ``explained = (corrected - noisy) / (clean - noisy)`` (NaN when there
    is no gap).
  """
  concept_logits = jnp.asarray(concept_logits)
  k = concept_logits.shape[-1]
  flagged = jnp.broadcast_to(jnp.asarray(flagged, bool), concept_logits.shape)
  low = jnp.broadcast_to(jnp.asarray(low, concept_logits.dtype), (k,))
  high = jnp.broadcast_to(jnp.asarray(high, concept_logits.dtype), (k,))
  args = (model, params, concept_logits, jnp.asarray(concepts),
          jnp.asarray(classes))
  noisy = float(_accuracy_corrected(*args, jnp.zeros_like(flagged), low,
                                    high))
  corrected = float(_accuracy_corrected(*args, flagged, low, high))
  count = int(np.sum(np.asarray(flagged[0])))
  draws = np.random.default_rng(seed)
  random_sets = []
  for _ in range(validation.check_count("random_draws", random_draws)):
    chosen = np.zeros(k, bool)
    chosen[draws.choice(k, count, replace=False)] = True
    random_sets.append(float(_accuracy_corrected(
        *args, jnp.broadcast_to(jnp.asarray(chosen), flagged.shape), low,
        high)))
  random_corrected = float(np.mean(random_sets))
  gap = clean_accuracy - noisy

  def share(acc):
    return (acc - noisy) / gap if gap else float("nan")

  return {"noisy_accuracy": noisy, "corrected_accuracy": corrected,
          "clean_accuracy": float(clean_accuracy),
          "explained": share(corrected),
          "random_corrected_accuracy": random_corrected,
          "random_explained": share(random_corrected)}
