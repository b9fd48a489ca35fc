"""Regression (a registered task) with magnitude pruning and SAM."""

import ml_collections

from flatsparse.train import config_schema
from tests.train import regression_plugin  # noqa: F401  (registers the task)


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "regression"
  c.dataset = ml_collections.ConfigDict(dict(name="linear_regression"))
  c.model = ml_collections.ConfigDict(dict(name="mlp", hidden=(32,)))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=0.05, momentum=0.9))
  c.sparsity = ml_collections.ConfigDict(dict(
      algorithm="magnitude", sparsity=0.5, schedule="one_shot",
      update_start_step=60))
  c.flatness = ml_collections.ConfigDict(dict(name="sam", rho=0.02))
  c.steps = 150
  c.batch_size = 32
  c.log_every = 50
  c.eval_every = 150
  c.checkpoint_every = 150
  return config_schema.complete(c)
