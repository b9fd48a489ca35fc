r"""SAM under overparameterization: CIFAR-10 ResNet-18 width sweep (TFDS).

For users with the data and an accelerator. CIFAR ResNet-18 with stage
widths ``w * (1, 2, 4, 8)`` for w in 4..128: 44.7K to 44.7M parameters, the
range of Shin et al. (about 0.04M to 45M); SGD vs SAM (rho 0.05), 3 seeds;
random-static and SNIP masks at step 0 on widths 32, 64, 128 at the
trained-parameter count of the dense w=16 model. SGD momentum 0.9, lr 0.1
with a 5-epoch warm-up then cosine, coupled L2 5e-4, batch 128, 200 epochs,
random crop + flip, per-channel normalization. Sharpness (Lanczos, 20 steps)
on 1,024 training examples.

Run (downloads CIFAR-10 through TFDS on first use; 2 x 6 x 3 dense + 2 x 2 x
3 x 3 sparse = 72 runs of 200 epochs: not measured here, budget several GPU
days):
  python -m experiments.overparam --config=configs/overparam_cifar10.py \
      --workdir=/tmp/overparam_c10
Variants: (default) the study above; `dense` without the sparse runs;
`tiny` (ResNet-18 at width 2, 2 steps on TFDS mock-able data, one seed,
SGD and SAM, no sparse runs; what the tests run).
"""

import ml_collections

from flatsparse.train import config_schema

_EPOCH = 50_000 // 128


VARIANTS = ("", "dense", "tiny")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  base = ml_collections.ConfigDict()
  base.seed = 0
  base.dataset = ml_collections.ConfigDict(dict(
      name="cifar10", augment=True, normalize=True))
  base.model = ml_collections.ConfigDict(dict(name="resnet18", width=64))
  base.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=5e-4,
      schedule="warmup_cosine", warmup_steps=5 * _EPOCH))
  base.sparsity = None
  base.flatness = None
  base.steps = 200 * _EPOCH
  base.batch_size = 128
  base.log_every = 100
  base.eval_every = 10 * _EPOCH
  base.checkpoint_every = 10 * _EPOCH
  base.keep_checkpoints = 1
  c.base = base
  c.seeds = (0, 1, 2)
  c.rho = 0.05
  c.width_key = "width"
  c.depth = 1
  c.widths = (4, 8, 16, 32, 64, 128)
  c.optimizers = ("sgd", "sam")
  c.sparse = ml_collections.ConfigDict(dict(
      budget_width=16, widths=(32, 64, 128), methods=("random", "snip"),
      snip_algorithm="saliency"))
  c.sharpness = ml_collections.ConfigDict(dict(
      batch_size=1024, num_probes=10, iters=20, moments=(1, 2, 4),
      method="lanczos"))
  if variant == "dense":
    c.sparse = None
  elif variant == "tiny":
    base.steps = 2
    base.batch_size = 8
    base.optimizer.warmup_steps = 1
    base.log_every = 1
    base.eval_every = base.checkpoint_every = 2
    c.seeds = (0,)
    c.widths = (2,)
    c.sparse = None
    c.sharpness = ml_collections.ConfigDict(dict(
        batch_size=8, num_probes=1, iters=2, moments=(1, 2), method="power"))
  elif variant:
    raise ValueError(f"Unknown variant {variant!r}; allowed: "
                     f"{', '.join(map(repr, VARIANTS))}.")
  return config_schema.complete(c)
