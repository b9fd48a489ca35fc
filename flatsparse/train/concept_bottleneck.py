"""The concept-bottleneck task of the loop (``config.task =
"concept_bottleneck"``).

Batches are the ``Loader``'s: ``'image'`` the input of ``g`` and
``'label'`` the packed ``(class, concepts...)`` labels of a concept dataset
(``flatsparse.data.concepts``). The model is a
:class:`flatsparse.cbm.ConceptBottleneck` (``config.model.name =
"concept_bottleneck"``); in training the task passes the true concepts to it
(the independent mode reads them).

Loss (Koh et al.'s weighting; batch means)::

  L = CE(f(.), y) + w * sum_i BCE(l_i, c_i)

with ``w = model.concept_weight``: by default ``1 / k`` (the mean over
concepts) in the independent and sequential modes, where ``g`` and ``f``
share no parameter and ``w`` only scales ``g``'s loss, and ``lambda = 0.01``
in the joint mode (Koh et al.'s and Shin et al.'s CUB value). Eval metrics
(exact over padded batches): ``accuracy`` and ``loss`` of the task,
``concept_accuracy`` (mean over examples and concepts of ``1[l_i > 0] ==
c_i``) and ``concept_loss`` (mean BCE). Per-concept metrics:
``flatsparse.cbm.evaluate``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from flatsparse.data import concepts as concept_data
from flatsparse.train import tasks

__all__ = ["ConceptBottleneckTask", "concept_bce", "concept_weight_of"]

Batch = Mapping[str, jax.Array]


def concept_bce(concept_logits: jax.Array, concepts: jax.Array) -> jax.Array:
  """Per-entry binary cross-entropy ``(B, k)`` in float32."""
  return optax.sigmoid_binary_cross_entropy(
      concept_logits.astype(jnp.float32), concepts.astype(jnp.float32))


def concept_weight_of(model: nn.Module, k: int) -> float:
  """``w`` of the loss: the model's ``concept_weight``, or its default."""
  weight = getattr(model, "concept_weight", None)
  if weight is not None:
    return float(weight)
  return 0.01 if getattr(model, "mode", "joint") == "joint" else 1.0 / k


class ConceptBottleneckTask(tasks.Task):
  """Class and concept prediction (module docstring)."""

  def num_outputs(self, num_classes: int) -> int:
    return num_classes

  def forward(self, model: nn.Module, variables: Mapping[str, Any],
              batch: Batch, *, train: bool, rng: jax.Array,
              mutable: Any = False) -> Any:
    _, concepts = concept_data.split_concept_labels(batch[self.target_key])
    result = model.apply(variables, self.model_inputs(batch), train=train,
                         concepts=concepts if train else None,
                         mutable=mutable, rngs={"dropout": rng})
    outputs = result[0] if mutable else result
    k = outputs["concept_logits"].shape[-1]
    if concepts.shape[-1] != k:
      raise ValueError(f"The data have {concepts.shape[-1]} concepts but "
                       f"the model predicts {k}.")
    outputs = {**outputs, "concept_weight": concept_weight_of(model, k)}
    return (outputs, result[1]) if mutable else outputs

  def loss(self, outputs: Mapping[str, Any], batch: Batch) -> jax.Array:
    classes, concepts = concept_data.split_concept_labels(
        batch[self.target_key])
    task = tasks.cross_entropy(outputs["logits"], classes)
    concept = jnp.sum(jnp.mean(
        concept_bce(outputs["concept_logits"], concepts), axis=0))
    return task + outputs["concept_weight"] * concept

  def train_metrics(self, outputs: Mapping[str, Any], batch: Batch
                    ) -> dict[str, jax.Array]:
    values = self.per_example(outputs, batch)
    return {"accuracy": jnp.mean(values["correct"]),
            "concept_accuracy": jnp.mean(values["concept_correct"])}

  def eval_sums(self, outputs: Mapping[str, Any], batch: Batch,
                weights: jax.Array) -> dict[str, jax.Array]:
    values = self.per_example(outputs, batch)
    real = weights > 0

    def total(x):
      return jnp.sum(jnp.where(real, x, 0))

    return {"correct": total(values["correct"]),
            "loss_sum": total(values["loss"]),
            "concept_correct": total(jnp.mean(values["concept_correct"], -1)),
            "concept_loss_sum": total(jnp.mean(values["concept_loss"], -1)),
            "count": jnp.sum(weights)}

  def eval_metrics(self, sums: Mapping[str, float]) -> dict[str, float]:
    n = sums["count"]
    return {"accuracy": sums["correct"] / n, "loss": sums["loss_sum"] / n,
            "concept_accuracy": sums["concept_correct"] / n,
            "concept_loss": sums["concept_loss_sum"] / n}

  def per_example(self, outputs: Mapping[str, Any], batch: Batch
                  ) -> dict[str, jax.Array]:
    classes, concepts = concept_data.split_concept_labels(
        batch[self.target_key])
    logits, concept_logits = outputs["logits"], outputs["concept_logits"]
    return {
        "loss": optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), classes),
        "correct": (jnp.argmax(logits, -1) == classes).astype(jnp.float32),
        "concept_correct": ((concept_logits > 0) == (concepts > 0)).astype(
            jnp.float32),
        "concept_loss": concept_bce(concept_logits, concepts),
        "logits": logits, "concept_logits": concept_logits}


tasks.register_task("concept_bottleneck", ConceptBottleneckTask())
