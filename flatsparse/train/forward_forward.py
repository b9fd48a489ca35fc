"""The Forward-Forward task of the loop (``config.task = "forward_forward"``).

The model is a :class:`flatsparse.models.FFMLP` (``config.model.name =
"ff_mlp"``). A training step embeds the true label (positive) and a wrong
one drawn with the step's key (negative) into each image and minimizes the
summed layer-local losses (:mod:`flatsparse.federated.forward_forward`);
the model's ``stop_gradient`` between layers makes the gradient of that sum
every layer's own, so the loop's optimizer, pruning wrappers and schedules
apply unchanged. A flatness method in the loop sees the summed loss, so its
perturbation is scaled over all layers together; for SAM per layer use
:func:`flatsparse.federated.layerwise` directly.

Evaluation predicts by summed goodness over all layers but the first:
``accuracy``, and ``loss`` the cross-entropy of the goodness scores read as
logits (a ranking measure, not the training loss); with a readout also
``readout_accuracy``. Train metrics: ``layer_<l>`` (each layer's loss),
``readout`` (its cross-entropy), ``separation`` (the fraction of examples
whose positive goodness beats their negative one, last layer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from flatsparse.federated import forward_forward as ff
from flatsparse.models import ff_mlp
from flatsparse.train import tasks

__all__ = ["ForwardForwardTask"]

Batch = Mapping[str, jax.Array]


def _ff_model(model: nn.Module) -> ff_mlp.FFMLP:
  return tasks.require_model(model, ff_mlp.FFMLP, "forward_forward", "ff_mlp")


class ForwardForwardTask(tasks.Classification):
  """Forward-Forward training, goodness prediction (module docstring)."""

  def forward(self, model: nn.Module, variables: Mapping[str, Any],
              batch: Batch, *, train: bool, rng: jax.Array,
              mutable: Any = False) -> Any:
    """Train: the loss terms (at the model's threshold) and the last
    layer's separation; eval: the goodness scores (and readout logits)."""
    model = _ff_model(model)
    images = batch[self.input_key]
    if train:
      labels = batch[self.target_key]
      out = ff.ff_forward(model, variables, images, labels, rng)
      _, terms = ff.ff_loss(out, labels, threshold=model.threshold)
      outputs = {"terms": terms, "separation": jnp.mean(
          ff.goodness(out.positive[-1]) > ff.goodness(out.negative[-1]))}
    else:
      outputs = {"scores": ff.goodness_scores(model, variables, images)}
      if model.readout:
        outputs["logits"] = model.apply(variables, ff.embed_neutral(
            images, model.num_labels)).logits
    return (outputs, {}) if mutable else outputs

  def loss(self, outputs: Mapping[str, Any], batch: Batch) -> jax.Array:
    return sum(outputs["terms"].values())

  def train_metrics(self, outputs: Mapping[str, Any], batch: Batch
                    ) -> dict[str, jax.Array]:
    return {**outputs["terms"], "separation": outputs["separation"]}

  def eval_sums(self, outputs: Mapping[str, Any], batch: Batch,
                weights: jax.Array) -> dict[str, jax.Array]:
    sums = super().eval_sums(outputs["scores"], batch, weights)
    if "logits" in outputs:
      hits = jnp.argmax(outputs["logits"], -1) == batch[self.target_key]
      sums["readout_correct"] = jnp.sum(jnp.where(weights > 0, hits, 0))
    return sums

  def eval_metrics(self, sums: Mapping[str, float]) -> dict[str, float]:
    metrics = super().eval_metrics(sums)
    if "readout_correct" in sums:
      metrics["readout_accuracy"] = sums["readout_correct"] / sums["count"]
    return metrics

  def per_example(self, outputs: Any, batch: Batch) -> dict[str, jax.Array]:
    if isinstance(outputs, Mapping):
      outputs = outputs["scores"]
    return super().per_example(outputs, batch)


tasks.register_task("forward_forward", ForwardForwardTask())
