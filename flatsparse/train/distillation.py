"""The distillation task of the loop (``config.task = "distillation"``).

The model is a :class:`flatsparse.distill.Distiller` (``config.model.name =
"distillation"``: a ``student`` model section, the teacher's run
``teacher_workdir``, and MaskedKD's knobs). The teacher's weights are
restored once from that workdir into the frozen variables of the train state
(``TrainState.frozen['teacher']``): passed to every step, never trained,
never seen by the optimizer (so SAM, sparsity wrappers and weight decay
touch the student only). A training step runs the student, picks the
teacher's patches and runs the teacher on them
(``flatsparse.distill.masked_kd_outputs``); the loss is

  L = mean_b [(1 - alpha) * CE(s_b, y_b) + alpha * KD_b]

(``flatsparse.distill.distillation_terms``; ``alpha = 0`` never runs the
teacher). Evaluation scores the student alone (the mean of its two heads
with a distillation token): ``accuracy`` and ``loss`` as classification.
Train metrics: ``accuracy``, ``ce``, ``kd``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from flatsparse.distill import loss as loss_lib
from flatsparse.distill import masked_kd
from flatsparse.train import tasks

__all__ = ["DistillationTask"]

Batch = Mapping[str, jax.Array]


def _distiller(model: nn.Module) -> masked_kd.Distiller:
  return tasks.require_model(model, masked_kd.Distiller, "distillation",
                             "distillation")


class DistillationTask(tasks.Task):
  """Student from teacher (module docstring)."""

  def frozen_variables(self, model: nn.Module) -> dict[str, Any]:
    model = _distiller(model)
    if model.alpha == 0:
      return {}
    if model.teacher_workdir is None:
      raise ValueError(
          f"model.teacher_workdir is None with alpha={model.alpha}: the "
          "distillation task restores the teacher from a trained run's "
          "workdir (or set alpha=0 for no distillation).")
    from flatsparse.train import restore  # pylint: disable=g-import-not-at-top
    _, state = restore.restore_trained(model.teacher_workdir)
    return {"teacher": state.params}

  def forward(self, model: nn.Module, variables: Mapping[str, Any],
              batch: Batch, *, train: bool, rng: jax.Array,
              mutable: Any = False) -> Any:
    model = _distiller(model)
    variables = dict(variables)
    teacher_params = variables.pop("teacher", None)
    images = batch[self.input_key]
    if not train:
      return model.apply(variables, images, train=False, mutable=mutable)
    select_key, dropout_key = jax.random.split(rng)
    updates = {}

    def student_apply(x, **kwargs):
      out = model.apply(variables, x, train=True, mutable=mutable,
                        rngs={"dropout": dropout_key}, **kwargs)
      if mutable:
        out, new = out
        updates.update(new)
      return out

    if model.alpha == 0:
      heads = ({"separate_heads": True}
               if model.student.distillation_token else {})
      outputs = {"student": student_apply(images, **heads)}
    else:
      if teacher_params is None:
        raise ValueError("No teacher variables in the state: build it with "
                         "frozen=task.frozen_variables(model).")
      outputs = masked_kd.masked_kd_outputs(
          student_apply, model.student, model.teacher, teacher_params,
          images, keep_ratio=model.keep_ratio, selection=model.selection,
          key=select_key)
    labels = batch[self.target_key]
    if model.alpha == 0:
      ce = optax.softmax_cross_entropy_with_integer_labels(
          _class_head(outputs["student"]).astype(jnp.float32), labels)
      kd = jnp.zeros_like(ce)
    else:
      ce, kd = loss_lib.distillation_terms(
          outputs["student"], outputs["teacher"], labels,
          temperature=model.temperature, kind=model.kind)
    # Per-example terms and weight: batch-mean losses that survive the
    # loop's micro-batch reshapes.
    terms = {"logits": _class_head(outputs["student"]), "ce": ce, "kd": kd,
             "alpha": jnp.full_like(ce, model.alpha)}
    return (terms, updates) if mutable else terms

  def loss(self, outputs: Any, batch: Batch) -> jax.Array:
    alpha = outputs["alpha"]
    return jnp.mean((1.0 - alpha) * outputs["ce"] + alpha * outputs["kd"])

  def train_metrics(self, outputs: Any, batch: Batch
                    ) -> dict[str, jax.Array]:
    return {"accuracy": jnp.mean(jnp.argmax(outputs["logits"], -1)
                                 == batch[self.target_key]),
            "ce": jnp.mean(outputs["ce"]), "kd": jnp.mean(outputs["kd"])}

  def eval_sums(self, outputs: Any, batch: Batch, weights: jax.Array
                ) -> dict[str, jax.Array]:
    return tasks.Classification().eval_sums(outputs, batch, weights)

  def eval_metrics(self, sums: Mapping[str, float]) -> dict[str, float]:
    return tasks.Classification().eval_metrics(sums)

  def per_example(self, outputs: Any, batch: Batch) -> dict[str, jax.Array]:
    return tasks.Classification().per_example(outputs, batch)


def _class_head(logits: Any) -> jax.Array:
  return logits[0] if isinstance(logits, (tuple, list)) else logits


tasks.register_task("distillation", DistillationTask())
