"""A second task added only by registration: regression on a synthetic target.

Importing this module registers the dataset ``linear_regression`` (targets
``y = x . w + noise`` with a fixed ``w``) and the task ``regression`` (mean
squared error); ``tests/train/regression_config.py`` imports it, so
``experiments/train.py`` trains it with no change to the loop.
"""

import jax.numpy as jnp
import numpy as np

from flatsparse import data
from flatsparse.train import tasks

DIM = 16
NOISE_STD = 0.1


def linear_regression(split: str, data_dir, *, num_examples: int = 512,
                      seed: int = 0) -> data.Dataset:
  """Features N(0, I), targets ``x . w + 0.1 z`` with ``w`` from ``seed``."""
  del data_dir  # generated
  w = np.random.default_rng([seed, 0]).normal(size=DIM) / np.sqrt(DIM)
  rng = np.random.default_rng([seed, 1 if split == "train" else 2])
  x = rng.normal(size=(num_examples, DIM)).astype(np.float32)
  y = (x @ w + NOISE_STD * rng.normal(size=num_examples)).astype(np.float32)
  return data.Dataset(x, y, num_classes=1)


class Regression(tasks.Task):
  """Mean squared error of a one-output model; eval reports ``mse``."""

  def loss(self, outputs, batch):
    return jnp.mean(jnp.square(outputs[:, 0].astype(jnp.float32)
                               - batch["label"]))

  def eval_sums(self, outputs, batch, weights):
    errors = jnp.square(outputs[:, 0].astype(jnp.float32) - batch["label"])
    return {"mse_sum": jnp.sum(jnp.where(weights > 0, errors, 0)),
            "count": jnp.sum(weights)}


data.register_dataset("linear_regression", linear_regression, overwrite=True)
tasks.register_task("regression", Regression(), overwrite=True)
