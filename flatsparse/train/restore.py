"""A trained run of the platform, back from its workdir: its model and state.

``restore_trained(workdir)`` rebuilds the run's model and optimizer from the
workdir's ``config.json`` (exactly as the loop built them) and restores the
newest readable orbax checkpoint into that state; ``model_of_workdir`` only
builds the model. What a distillation teacher, a one-shot pruner or an
analysis starts from.
"""

from __future__ import annotations

import json
import os
from typing import Any

import flax.linen as nn

from flatsparse.train import builders
from flatsparse.train import checkpoint as checkpoint_lib
from flatsparse.train import loop
from flatsparse.train import metrics as metrics_lib
from flatsparse.train import state as state_lib
from flatsparse.train import tasks as tasks_lib

__all__ = ["model_of_workdir", "restore_trained", "run_config"]


def run_config(workdir: str) -> dict[str, Any]:
  """The validated config of the run in ``workdir`` (its ``config.json``).

  Raises:
    FileNotFoundError: ``workdir`` has no ``config.json``.
  """
  path = os.path.join(workdir, metrics_lib.CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path} does not exist: {workdir!r} is not the workdir of a run "
        "(train_and_evaluate writes config.json there).")
  with open(path, encoding="utf-8") as f:
    return loop.validate_config(json.load(f))


def model_of_workdir(workdir: str) -> nn.Module:
  """The model the run in ``workdir`` trained (built from its config; its
  dataset is loaded for the number of classes)."""
  cfg = run_config(workdir)
  task = tasks_lib.get_task(cfg["task"])
  loader, _ = loop.make_loader(cfg["dataset"], cfg["batch_size"])
  return builders.build_model(cfg["model"],
                              task.num_outputs(loader.num_classes))


def restore_trained(workdir: str, step: int | None = None
                    ) -> tuple[nn.Module, state_lib.TrainState]:
  """``(model, state)`` of the run in ``workdir`` at ``step`` (None: the
  newest readable checkpoint).

  Raises:
    FileNotFoundError: no ``config.json`` or no checkpoint.
  """
  cfg = run_config(workdir)
  _, _, model, _, state = loop.build_run(cfg)
  with checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                   every_steps=cfg["checkpoint_every"],
                                   keep=cfg["keep_checkpoints"]) as checkpoints:
    state, _ = checkpoints.restore(state, step)
  return model, state
