r"""Forward-Forward on the embedded digits through the generic trainer
(config.task = "forward_forward"; experiments/train.py).

  python -m experiments.train --config=configs/forward_forward_digits.py \
      --workdir=/tmp/ff_digits
Variants (`:variant` after the path):
  dense    an FFMLP 64-256-256, Adam, 2,000 steps (default)
  gmp      the same with gradual magnitude pruning to 80%
  tiny     few steps, a small model (what the tests run)
One central Forward-Forward run (no clients): the loop's optimizer and
pruning wrapper see the summed layer-local losses, whose gradient is every
layer's own (flatsparse/train/forward_forward.py). The federated study is
configs/fedfwd_fashion_mnist.py.
"""

import ml_collections

from flatsparse.train import config_schema

VARIANTS = ("dense", "gmp", "tiny")


def get_config(variant: str = "dense") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "forward_forward"
  c.dataset = ml_collections.ConfigDict(dict(name="digits"))
  c.model = ml_collections.ConfigDict(dict(
      name="ff_mlp", features=(256, 256), threshold=2.0, readout=True))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adam", learning_rate=3e-3))
  c.sparsity = None
  c.steps = 2000
  c.batch_size = 64
  c.accum_steps = 1
  c.log_every = 100
  c.eval_every = 500
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  if variant == "gmp":
    c.sparsity = ml_collections.ConfigDict(dict(
        algorithm="magnitude", sparsity=0.8, schedule="polynomial",
        update_freq=50, update_start_step=200, update_end_step=1200))
  elif variant == "tiny":
    c.model.features = (128, 128)
    c.sparsity = ml_collections.ConfigDict(dict(
        algorithm="magnitude", sparsity=0.5, schedule="polynomial",
        update_freq=50, update_start_step=100, update_end_step=300))
    c.steps = 400
    c.log_every = 100
    c.eval_every = 200
    c.checkpoint_every = 200
  elif variant != "dense":
    raise ValueError(f"Unknown variant {variant!r}; allowed: "
                     f"{', '.join(VARIANTS)}.")
  return config_schema.complete(c)
