"""Tasks: what is specific to a kind of problem, as plug-ins of the loop.

A task owns which batch fields it reads, the model call, the training loss
and metrics, the eval reduction (sums over padded batches, then the metrics)
and the per-example outputs a study may need. The generic steps
(``flatsparse.train.step``) and the loop only call these methods, so a new
kind of problem (language modelling, concept bottlenecks, distillation) is a
new :class:`Task` registered by name, with no change to the loop::

  class Regression(tasks.Task):
    def loss(self, outputs, batch):
      return jnp.mean(jnp.square(outputs[:, 0] - batch["label"]))
    def eval_sums(self, outputs, batch, weights):
      errors = jnp.square(outputs[:, 0] - batch["label"])
      return {"squared_error": jnp.sum(jnp.where(weights > 0, errors, 0)),
              "count": jnp.sum(weights)}

  tasks.register_task("regression", Regression())
  # config.task = "regression"

``config.task`` names the task (default ``'classification'``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from flatsparse import validation

__all__ = ["Task", "Classification", "TASKS", "register_task", "get_task",
           "cross_entropy", "require_model"]

Batch = Mapping[str, jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy in float32."""
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels).mean()


class Task:
  """The interface the steps and the loop call (override what differs).

  The defaults describe a supervised task whose batches hold the model input
  under ``input_key`` and the target under ``target_key``, and whose eval
  batches hold ``'mask'`` (1 real example, 0 padding); a subclass must at
  least define :meth:`loss` and :meth:`eval_sums`.
  """

  input_key: str = "image"
  target_key: str = "label"

  def num_outputs(self, num_classes: int) -> int:
    """The model's output size given the dataset's ``num_classes``."""
    return num_classes

  def model_inputs(self, batch: Batch) -> Any:
    """What the model is called on (also the sample input of ``init``)."""
    return batch[self.input_key]

  def forward(self, model: nn.Module, variables: Mapping[str, Any],
              batch: Batch, *, train: bool, rng: jax.Array,
              mutable: Any = False) -> Any:
    """``model.apply`` on the batch; ``(outputs, updates)`` if ``mutable``.

    ``rng`` is the step's key, passed as the ``'dropout'`` stream.
    """
    return model.apply(variables, self.model_inputs(batch), train=train,
                       mutable=mutable, rngs={"dropout": rng})

  def frozen_variables(self, model: nn.Module) -> dict[str, Any]:
    """``{collection: variables}`` the forward reads and never trains (kept
    in ``TrainState.frozen``, passed in ``variables`` beside ``params``);
    ``{}`` by default, a distillation task's teacher."""
    del model
    return {}

  def loss(self, outputs: Any, batch: Batch) -> jax.Array:
    """The scalar training loss (float32) of a train-mode forward pass."""
    raise NotImplementedError

  def train_metrics(self, outputs: Any, batch: Batch) -> dict[str, jax.Array]:
    """Scalars logged beside the loss (the loss itself is added by the step)."""
    del outputs, batch
    return {}

  def eval_sums(self, outputs: Any, batch: Batch, weights: jax.Array
                ) -> dict[str, jax.Array]:
    """Sums over the real examples (``weights > 0``) of an eval batch.

    The loop adds them over batches and calls :meth:`eval_metrics`, so a
    padded last batch gives exact metrics. Must include ``'count'``.
    """
    raise NotImplementedError

  def eval_metrics(self, sums: Mapping[str, float]) -> dict[str, float]:
    """Metrics from the summed :meth:`eval_sums`: each sum / ``count``."""
    count = sums["count"]
    return {k.removesuffix("_sum"): v / count for k, v in sums.items()
            if k != "count"}

  def per_example(self, outputs: Any, batch: Batch) -> dict[str, jax.Array]:
    """Per-example values (e.g. for a study's calibration or error sets)."""
    del batch
    return {"outputs": outputs}


class Classification(Task):
  """Softmax classification of ``batch['image']`` into ``batch['label']``.

  Train metrics: ``accuracy``. Eval: ``accuracy`` and mean ``loss``.
  """

  def loss(self, outputs: jax.Array, batch: Batch) -> jax.Array:
    return cross_entropy(outputs, batch[self.target_key])

  def train_metrics(self, outputs: jax.Array, batch: Batch
                    ) -> dict[str, jax.Array]:
    return {"accuracy": jnp.mean(
        jnp.argmax(outputs, -1) == batch[self.target_key])}

  def eval_sums(self, outputs: jax.Array, batch: Batch, weights: jax.Array
                ) -> dict[str, jax.Array]:
    values = self.per_example(outputs, batch)
    # where, not multiply: a padded example must not turn the sum into NaN.
    return {"correct": jnp.sum(jnp.where(weights > 0, values["correct"], 0)),
            "loss_sum": jnp.sum(jnp.where(weights > 0, values["loss"], 0)),
            "count": jnp.sum(weights)}

  def eval_metrics(self, sums: Mapping[str, float]) -> dict[str, float]:
    return {"accuracy": sums["correct"] / sums["count"],
            "loss": sums["loss_sum"] / sums["count"]}

  def per_example(self, outputs: jax.Array, batch: Batch
                  ) -> dict[str, jax.Array]:
    labels = batch[self.target_key]
    return {
        "loss": optax.softmax_cross_entropy_with_integer_labels(
            outputs.astype(jnp.float32), labels),
        "correct": (jnp.argmax(outputs, -1) == labels).astype(jnp.float32),
        "logits": outputs,
    }


def require_model(model: nn.Module, cls: type, task: str, name: str) -> Any:
  """``model`` if it is a ``cls``, else a ValueError telling the ``task``'s
  user which ``config.model.name`` builds one."""
  if not isinstance(model, cls):
    raise ValueError(f"The {task} task needs model.name={name!r} (a "
                     f"{cls.__name__}), got {type(model).__name__}.")
  return model


TASKS: dict[str, Task] = {"classification": Classification()}


def register_task(name: str, task: Task, *, overwrite: bool = False) -> None:
  """Makes ``config.task = name`` train with ``task``."""
  validation.register(TASKS, "task", name, task, overwrite=overwrite,
                      valid=lambda t: isinstance(t, Task),
                      expected="a flatsparse.train.tasks.Task instance")


def get_task(name: str) -> Task:
  """The registered task ``name``; a ValueError lists the allowed names."""
  if name not in TASKS:
    raise ValueError(f"Unknown task {name!r}; allowed: {', '.join(TASKS)}.")
  return TASKS[name]
