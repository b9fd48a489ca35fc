"""Gradual magnitude pruning of an MLP on the embedded digits (the demo).

Run (about 30 s on 2 CPU cores, no network):
  python -m experiments.prune_digits --config=configs/prune_digits.py
Variants: `get_config("tiny")` (few steps, what the tests run).
Override anything: --config.sparsity.sparsity=0.95 --config.seeds=5
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.hidden = (256, 256)
  c.batch_size = 128
  c.learning_rate = 1e-3
  c.weight_decay = 1e-4
  c.steps = 1500
  c.seeds = 3
  c.sparsity = ml_collections.ConfigDict(dict(
      algorithm="magnitude", sparsity=0.9, dist_type="uniform",
      schedule="polynomial", update_freq=50, update_start_step=200,
      update_end_step=1000))
  if variant == "tiny":
    c.steps = 300
    c.seeds = 1
    c.sparsity.update_start_step = 50
    c.sparsity.update_freq = 25
    c.sparsity.update_end_step = 200
  elif variant:
    raise ValueError(f"Unknown variant {variant!r}; allowed: '', 'tiny'.")
  return c
