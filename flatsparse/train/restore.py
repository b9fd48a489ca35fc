"""A trained run of the platform, back from its workdir: its model and state.

``restore_trained(workdir)`` rebuilds the run's model and optimizer from the
workdir's ``config.json`` (exactly as the loop built them) and restores the
newest readable orbax checkpoint into that state; ``model_of_workdir`` only
builds the model. What a distillation teacher, a one-shot pruner or an
analysis starts from.

Both need two facts of the run's dataset: its number of classes and a sample
of the model's inputs (``run_data``). The dataset is loaded for them once
per process and run config: a distillation run builds the teacher's model
(``model_of_workdir``) and then restores its weights (``restore_trained``),
and a study asks again for every student, all from that one load.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

import flax.linen as nn
import numpy as np

from flatsparse.train import builders
from flatsparse.train import checkpoint as checkpoint_lib
from flatsparse.train import loop
from flatsparse.train import metrics as metrics_lib
from flatsparse.train import state as state_lib
from flatsparse.train import tasks as tasks_lib

__all__ = ["RunData", "model_of_workdir", "restore_trained", "run_config",
           "run_data"]


class RunData(NamedTuple):
  """What a run's model and state are built from besides its config.

  Attributes:
    num_classes: The dataset's number of classes.
    sample_input: The task's model inputs of the first train example
      (what ``model.init`` is called on).
  """

  num_classes: int
  sample_input: np.ndarray


# run_data's memo: (workdir's real path, config.json's text) -> RunData.
_RUN_DATA: dict[tuple[str, str], RunData] = {}
_RUN_DATA_SIZE = 16


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


def _config_text(workdir: str) -> str:
  with open(os.path.join(workdir, metrics_lib.CONFIG_FILE),
            encoding="utf-8") as f:
    return f.read()


def run_data(workdir: str) -> RunData:
  """The number of classes and a sample input of the run in ``workdir``.

  Its dataset is loaded the first time only: later calls for the same
  workdir and ``config.json`` in this process return the same facts.

  Raises:
    FileNotFoundError: ``workdir`` has no ``config.json``.
  """
  cfg = run_config(workdir)
  key = (os.path.realpath(workdir), _config_text(workdir))
  if key not in _RUN_DATA:
    task = tasks_lib.get_task(cfg["task"])
    loader, _ = loop.make_loader(cfg["dataset"], cfg["batch_size"])
    if len(_RUN_DATA) >= _RUN_DATA_SIZE:
      del _RUN_DATA[next(iter(_RUN_DATA))]
    sample = np.array(task.model_inputs(loader.example_batch()))
    sample.setflags(write=False)  # shared by every caller
    _RUN_DATA[key] = RunData(loader.num_classes, sample)
  return _RUN_DATA[key]


def model_of_workdir(workdir: str) -> nn.Module:
  """The model the run in ``workdir`` trained (built from its config and
  the number of classes of :func:`run_data`)."""
  cfg = run_config(workdir)
  task = tasks_lib.get_task(cfg["task"])
  return builders.build_model(
      cfg["model"], task.num_outputs(run_data(workdir).num_classes))


def restore_trained(workdir: str, step: int | None = None
                    ) -> tuple[nn.Module, state_lib.TrainState]:
  """``(model, state)`` of the run in ``workdir`` at ``step`` (None: the
  newest readable checkpoint).

  Raises:
    FileNotFoundError: no ``config.json`` or no checkpoint.
  """
  cfg = run_config(workdir)
  data = run_data(workdir)
  model, _, state = loop.build_model_and_state(cfg, data.num_classes,
                                               data.sample_input)
  with checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                   every_steps=cfg["checkpoint_every"],
                                   keep=cfg["keep_checkpoints"]) as checkpoints:
    state, _ = checkpoints.restore(state, step)
  return model, state
