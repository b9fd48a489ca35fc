"""Concept bottleneck models: x -> concept logits -> class logits.

A CBM is ``g: x -> k concept logits`` (any model of ``flatsparse.models``
built with ``num_classes = k``) and ``f: bottleneck values -> class logits``
(linear, or an MLP of widths ``task_hidden``). What ``f`` reads is the
bottleneck representation of the concept logits ``l``:

* ``'soft'``: the logits ``l`` themselves (the intervention paper's soft
  CBM; an expert's correction is the 5th / 95th percentile of the training
  logits of that concept);
* ``'sigmoid'``: the probabilities ``sigmoid(l)`` (the reference code's
  ``use_sigmoid``; corrections are 0 / 1);
* ``'hard'``: ``1[l > 0]`` (corrections are 0 / 1).

Training modes (Koh et al., 2020), chosen by ``mode`` and realised in one
forward pass so every mode trains in the generic loop with any optimizer,
SAM or pruning wrapper:

* ``'independent'``: in training ``f`` reads the true concepts; ``g`` and
  ``f`` share no parameter, so the summed loss trains each alone. Needs a
  0/1 representation (``'sigmoid'`` or ``'hard'``): true concepts are 0/1.
* ``'sequential'``: ``f`` reads ``stop_gradient`` of ``g``'s bottleneck
  values, so ``g`` learns from the concept loss only. The reference trains
  ``g`` to the end first, then ``f``; here ``f`` trains alongside on the
  current ``g`` (``g``'s training is identical; ``f``'s early steps see an
  unfinished ``g``).
* ``'joint'``: ``f`` reads ``g``'s values and the task loss reaches ``g``;
  the loss adds ``lambda`` times the concept loss (the task's weight).
  Needs a differentiable representation (``'soft'`` or ``'sigmoid'``).

Outputs ``{'concept_logits': (B, k), 'logits': (B, classes)}``;
:meth:`ConceptBottleneck.predict_from_concepts` applies ``f`` alone (what
interventions call).

References:
  Koh et al., "Concept bottleneck models", ICML 2020; Shin et al., "A closer
  look at the intervention procedure of concept bottleneck models", ICML 2023.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from flatsparse import validation

__all__ = ["BOTTLENECKS", "MODES", "ZERO_ONE", "bottleneck_values",
           "ConceptBottleneck", "check_mode"]

BOTTLENECKS = ("soft", "sigmoid", "hard")
MODES = ("independent", "sequential", "joint")
# Representations whose corrections are the 0/1 truth itself.
ZERO_ONE = ("sigmoid", "hard")


def check_mode(mode: str, bottleneck: str) -> None:
  """Raises for an unknown mode or bottleneck, or one the mode cannot use."""
  validation.check_choice("CBM mode", mode, MODES)
  validation.check_choice("bottleneck", bottleneck, BOTTLENECKS)
  if mode == "independent" and bottleneck not in ZERO_ONE:
    raise ValueError(
        f"mode 'independent' trains f on the true 0/1 concepts, so the "
        f"bottleneck must be one of {ZERO_ONE}, got {bottleneck!r}.")
  if mode == "joint" and bottleneck == "hard":
    raise ValueError("mode 'joint' backpropagates through the bottleneck, "
                     "which 'hard' cuts; use 'soft' or 'sigmoid'.")


def bottleneck_values(concept_logits: jax.Array, bottleneck: str
                      ) -> jax.Array:
  """What ``f`` reads: logits (soft), probabilities or 0/1 (hard)."""
  if bottleneck == "soft":
    return concept_logits
  if bottleneck == "sigmoid":
    return jax.nn.sigmoid(concept_logits)
  if bottleneck == "hard":
    return (concept_logits > 0).astype(concept_logits.dtype)
  raise ValueError(f"Unknown bottleneck {bottleneck!r}; allowed: "
                   f"{', '.join(BOTTLENECKS)}.")


class ConceptBottleneck(nn.Module):
  """``g`` then ``f`` (module docstring).

  Attributes:
    concept_model: ``g``, called as ``concept_model(x, train=train)`` and
      returning ``(B, k)`` concept logits.
    num_classes: Class logits of ``f``.
    bottleneck: ``'soft'``, ``'sigmoid'`` or ``'hard'``.
    mode: ``'independent'``, ``'sequential'`` or ``'joint'``.
    task_hidden: Hidden widths of ``f`` (ReLU); ``()`` is a linear ``f``.
    concept_weight: ``w`` of the loss ``CE + w * sum_i BCE_i`` (the
      concept-bottleneck task); None: 0.01 in the joint mode (Koh et al.'s
      lambda), ``1 / k`` in the others.
    dtype: Computation dtype of ``f``.
  """

  concept_model: nn.Module
  num_classes: int
  bottleneck: str = "soft"
  mode: str = "joint"
  task_hidden: Sequence[int] = ()
  concept_weight: float | None = None
  dtype: Any = jnp.float32

  def setup(self):
    check_mode(self.mode, self.bottleneck)
    self.task_layers = [nn.Dense(w, dtype=self.dtype, name=f"task_{i}")
                        for i, w in enumerate(self.task_hidden)]
    self.task_head = nn.Dense(self.num_classes, dtype=self.dtype,
                              name="task_head")

  def predict_from_concepts(self, values: jax.Array) -> jax.Array:
    """``f``: class logits from bottleneck values ``(..., k)``."""
    for layer in self.task_layers:
      values = nn.relu(layer(values))
    return self.task_head(values)

  def __call__(self, x: jax.Array, train: bool = False,
               concepts: jax.Array | None = None) -> dict[str, jax.Array]:
    """Concept and class logits.

    Args:
      x: Inputs of ``g``.
      train: Passed to ``g`` (BatchNorm, dropout).
      concepts: The true 0/1 concepts ``(B, k)``; only the independent mode
        reads them (in training ``f`` sees them instead of ``g``'s values).

    Returns:
      ``{'concept_logits', 'logits'}``.
    """
    concept_logits = self.concept_model(x, train=train)
    values = bottleneck_values(concept_logits, self.bottleneck)
    if self.mode == "sequential":
      values = jax.lax.stop_gradient(values)
    elif self.mode == "independent" and concepts is not None:
      if concepts.shape != concept_logits.shape:
        raise ValueError(
            f"The data have {concepts.shape[-1]} concepts but the model "
            f"predicts {concept_logits.shape[-1]} (shapes {concepts.shape} "
            f"and {concept_logits.shape}).")
      values = concepts.astype(concept_logits.dtype)
    return {"concept_logits": concept_logits,
            "logits": self.predict_from_concepts(values)}
