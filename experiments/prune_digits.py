"""Prunes an MLP on the embedded 8x8 digits and compares it with dense training.

  python -m experiments.prune_digits --config=configs/prune_digits.py

Trains the same MLP dense and with a sparsity wrapper (default: gradual
magnitude pruning to 90%) for each seed, then prints test accuracy (mean and
std over seeds) and the per-layer sparsity table of the first pruned model.
"""

from __future__ import annotations

import time
from typing import Any

from absl import app
from ml_collections import config_flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

import flatsparse as fs
from flatsparse import data
from flatsparse import models

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/prune_digits.py", "Experiment config.")


def train_one(config, seed: int, pruned: bool) -> tuple[float, Any]:
  """Trains one model; returns (test accuracy, final params)."""
  train, test = data.load_digits("train"), data.load_digits("test")
  model = models.MLP(hidden=tuple(config.hidden), num_classes=train.num_classes)
  params = model.init(jax.random.PRNGKey(seed), train.images[:1])["params"]
  tx = optax.adamw(config.learning_rate, weight_decay=config.weight_decay)
  if pruned:
    tx = fs.sparsity.create_updater_from_config(config.sparsity).wrap(tx)
  state = tx.init(params)

  @jax.jit
  def step(params, state, x, y):
    def loss_fn(p):
      logits = model.apply({"params": p}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    grads = jax.grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  batches = data.iterate_batches(train, config.batch_size, seed=seed,
                                 num_epochs=None)
  for _, (x, y) in zip(range(config.steps), batches):
    params, state = step(params, state, x, y)
  logits = model.apply({"params": params}, test.images)
  accuracy = float(np.mean(np.argmax(logits, -1) == test.labels))
  return accuracy, params


def run(config) -> dict[str, Any]:
  """Dense and pruned runs over ``config.seeds`` seeds."""
  results: dict[str, Any] = {"dense": [], "pruned": []}
  for seed in range(config.seeds):
    results["dense"].append(train_one(config, seed, pruned=False)[0])
    accuracy, params = train_one(config, seed, pruned=True)
    results["pruned"].append(accuracy)
    if seed == 0:
      results["summary"] = fs.sparsity.summarize_sparsity(params)
  return results


def main(argv):
  del argv
  config = _CONFIG.value
  start = time.time()
  results = run(config)
  print(f"MLP {tuple(config.hidden)} on digits, {config.steps} steps, "
        f"{config.seeds} seeds, {config.sparsity.algorithm} pruning to "
        f"{config.sparsity.sparsity:.0%}:")
  for name in ("dense", "pruned"):
    acc = np.array(results[name]) * 100
    print(f"  {name:7s} test accuracy {acc.mean():6.2f} +- {acc.std():.2f} %")
  print("\nPer-layer sparsity of the pruned model (seed 0):")
  print(fs.sparsity.format_sparsity_table(results["summary"]))
  print(f"\n({time.time() - start:.0f} s)")


if __name__ == "__main__":
  app.run(main)
