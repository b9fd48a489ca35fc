r"""ImageNet ResNet-50 recipe (for users with ImageNet prepared for TFDS and
GPUs/TPUs).

Run (needs imagenet2012 prepared in the TFDS data dir; days on one GPU):
  python -m experiments.train --config=configs/imagenet_resnet50.py \
      --workdir=/tmp/in_r50 \
      --config.dataset.data_dir=/path/to/tensorflow_datasets
Recipe: SGD momentum 0.9, batch 1024, lr 0.4 (0.1 x batch/256) with 5-epoch
warm-up then cosine, L2 5e-5, 100 epochs, 224x224 center-crop resize,
normalization, gradual magnitude pruning to 80% from epoch 5 to 80 (variants:
dense, gmp, rigl, tiny). The `tiny` variant runs a few steps at 64x64 on TFDS
mock data in the tests.
"""

import ml_collections

from flatsparse.train import config_schema

_EPOCH = 1_281_167 // 1024


VARIANTS = ("dense", "gmp", "rigl", "tiny")


def get_config(variant: str = "gmp") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.dataset = ml_collections.ConfigDict(dict(
      name="imagenet2012", eval_split="validation", image_size=224,
      normalize=((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))))
  c.model = ml_collections.ConfigDict(dict(name="resnet50"))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=0.4, momentum=0.9, weight_decay=5e-5,
      schedule="warmup_cosine", warmup_steps=5 * _EPOCH))
  c.sparsity = ml_collections.ConfigDict(dict(
      algorithm="magnitude", sparsity=0.8, schedule="polynomial",
      update_freq=_EPOCH // 4, update_start_step=5 * _EPOCH,
      update_end_step=80 * _EPOCH))
  c.steps = 100 * _EPOCH
  c.batch_size = 1024
  c.accum_steps = 1
  c.log_every = 100
  c.eval_every = 5 * _EPOCH
  c.checkpoint_every = _EPOCH
  c.keep_checkpoints = 2
  c.eval_batch_size = 1000
  if variant == "dense":
    c.sparsity = None
  elif variant == "rigl":
    c.sparsity = ml_collections.ConfigDict(dict(
        algorithm="rigl", sparsity=0.8, distribution="erk", schedule="periodic",
        update_freq=100, update_end_step=75 * _EPOCH, drop_fraction=0.3,
        drop_fraction_end_step=75 * _EPOCH))
  elif variant == "tiny":
    c.dataset.image_size = 32
    c.model.width_multiplier = 1
    c.steps = 2
    c.batch_size = 4
    c.eval_batch_size = 4
    c.optimizer.warmup_steps = 1
    c.optimizer.learning_rate = 0.01  # random mock images, batch 4
    c.sparsity.update_start_step = 1
    c.sparsity.update_freq = 1
    c.sparsity.update_end_step = 2
    c.log_every = 1
    c.eval_every = 2
    c.checkpoint_every = 2
  elif variant != "gmp":
    raise ValueError(f"Unknown variant {variant!r}; allowed: "
                     f"{', '.join(VARIANTS)}.")
  return config_schema.complete(c)
