r"""MLP on the embedded digits through the generic trainer
(experiments/train.py).

Run (about 20 s on 2 CPU cores, no network):
  python -m experiments.train --config=configs/digits_mlp.py \
      --workdir=/tmp/digits_mlp
Variants (`:variant` after the path):
  dense    no sparsity wrapper
  gmp      gradual magnitude pruning to 90% (default)
  rigl     RigL at 90% with ERK
  tiny     gmp with few steps and a small model (what the tests run)
Override anything, e.g. --config.sparsity.sparsity=0.95 --config.steps=3000;
every key of the schema is present (flatsparse/train/config_schema.py), unset
ones as None (e.g. --config.sparsity.seed=1, --config.host_mask_schedule=True).
"""

import ml_collections

from flatsparse.train import config_schema

VARIANTS = ("dense", "gmp", "rigl", "tiny")


def get_config(variant: str = "gmp") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.dataset = ml_collections.ConfigDict(dict(name="digits"))
  c.model = ml_collections.ConfigDict(dict(name="mlp", hidden=(256, 256)))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=1e-3, weight_decay=1e-4, schedule="cosine"))
  c.sparsity = ml_collections.ConfigDict(dict(
      algorithm="magnitude", sparsity=0.9, schedule="polynomial",
      update_freq=50, update_start_step=200, update_end_step=1000))
  c.steps = 1500
  c.batch_size = 128
  c.accum_steps = 1
  c.log_every = 100
  c.eval_every = 500
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  if variant == "dense":
    c.sparsity = None
  elif variant == "rigl":
    c.sparsity = ml_collections.ConfigDict(dict(
        algorithm="rigl", sparsity=0.9, distribution="erk", schedule="periodic",
        update_freq=100, update_end_step=1100, drop_fraction=0.3,
        drop_fraction_end_step=1100))
  elif variant == "tiny":
    c.model.hidden = (64,)
    c.optimizer.learning_rate = 1e-2
    c.steps = 60
    c.sparsity.update_start_step = 10
    c.sparsity.update_freq = 10
    c.sparsity.update_end_step = 40
    c.log_every = 10
    c.eval_every = 30
    c.checkpoint_every = 20
  elif variant != "gmp":
    raise ValueError(f"Unknown variant {variant!r}; allowed: "
                     f"{', '.join(VARIANTS)}.")
  return config_schema.complete(c)
