r"""CIFAR-10 ResNet-20 recipe (for users with the data and an accelerator).

Run (downloads CIFAR-10 through TFDS on first use; ~1 h on one GPU):
  python -m experiments.train --config=configs/cifar10_resnet20.py \
      --workdir=/tmp/c10_r20
Variants: dense, gmp (90%, default), rigl (90%, ERK), tiny (a few steps on TFDS
mock-able data; what the tests run). SGD momentum 0.9, lr 0.1 with 5-epoch
warm-up then cosine, coupled L2 weight decay 1e-4 (PyTorch-style),
batch 128, 200 epochs, random crop + flip, per-channel normalization.
"""

import ml_collections

from flatsparse.train import config_schema

_EPOCH = 50_000 // 128


VARIANTS = ("dense", "gmp", "rigl", "tiny")


def get_config(variant: str = "gmp") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.dataset = ml_collections.ConfigDict(dict(
      name="cifar10", augment=True, normalize=True))
  c.model = ml_collections.ConfigDict(dict(name="resnet20"))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=1e-4,
      schedule="warmup_cosine", warmup_steps=5 * _EPOCH))
  c.sparsity = ml_collections.ConfigDict(dict(
      algorithm="magnitude", sparsity=0.9, schedule="polynomial",
      update_freq=_EPOCH, update_start_step=10 * _EPOCH,
      update_end_step=150 * _EPOCH))
  c.steps = 200 * _EPOCH
  c.batch_size = 128
  c.accum_steps = 1
  c.log_every = 100
  c.eval_every = 10 * _EPOCH
  c.checkpoint_every = 10 * _EPOCH
  c.keep_checkpoints = 2
  if variant == "dense":
    c.sparsity = None
  elif variant == "rigl":
    c.sparsity = ml_collections.ConfigDict(dict(
        algorithm="rigl", sparsity=0.9, distribution="erk", schedule="periodic",
        update_freq=100, update_end_step=150 * _EPOCH, drop_fraction=0.3,
        drop_fraction_end_step=150 * _EPOCH))
  elif variant == "tiny":
    c.model = ml_collections.ConfigDict(dict(name="resnet20"))
    c.steps = 4
    c.batch_size = 8
    c.optimizer.warmup_steps = 1
    c.sparsity.update_start_step = 1
    c.sparsity.update_freq = 1
    c.sparsity.update_end_step = 3
    c.log_every = 2
    c.eval_every = 4
    c.checkpoint_every = 2
  elif variant != "gmp":
    raise ValueError(f"Unknown variant {variant!r}; allowed: "
                     f"{', '.join(VARIANTS)}.")
  return config_schema.complete(c)
