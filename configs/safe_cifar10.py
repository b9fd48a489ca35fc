r"""SAFE vs its baselines on CIFAR-10 (for users with the data and a GPU).

The SAFE paper's recipe for every method: SGD momentum 0.9, lr 0.1 with a
5-epoch linear warm-up then cosine decay, coupled L2 1e-4, batch 128, 200
epochs, random crop + flip, per-channel normalization; SAFE with rho 0.1,
lambda 1e-3 (cosine ramp), K 32; ADMM with lambda 1e-3 (constant), K 32;
SAM+GMP with SAM rho 0.1; GMP prunes every epoch from epoch 10 to 150; IHT
projects every step after 10 dense epochs. Sparsity is global (one magnitude
threshold over all kernels; GMP is ``global_magnitude``), the default of the
public SAFE reference (github.com/LOG-postech/safe-jax). Dense, GMP, IHT,
ADMM, SAM+GMP, SAFE and SAFE+ (importance 'activation', SAFE's
hyperparameters) at 90, 95, 98 and 99% sparsity, 3 seeds; SAFE/SAFE+/ADMM/
IHT are evaluated at ``Proj(w_T)`` with BatchNorm statistics re-estimated on
10,000 training examples (the reference's batch-norm tuning sample).

Run (downloads CIFAR-10 through TFDS on first use; 75 runs of 200 epochs:
days on one GPU, so run variants or subsets on several machines):
  python -m experiments.sparsity_sweep --config=configs/safe_cifar10.py \
      --workdir=workdirs/safe_cifar10
Variants (``:variant`` after the path):
  resnet20     ResNet-20 (default)
  resnet32     ResNet-32
  vgg19        VGG-19
  label_noise  ResNet-20, symmetric label noise 25% and 50%, sparsity 70%
               and 90%, GMP vs ADMM vs SAFE (the paper reports SAFE 86.5% vs
               ADMM 59.2% at 50% noise and 70% sparsity)
  tiny         ResNet-20, dense/GMP/SAFE at 90%, 4 steps of batch 8 (what the
               tests run, on TFDS mock data)
Not run by us: no CIFAR data and no accelerator on the development machines.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from configs import cifar10_resnet20
from configs import safe_digits
from flatsparse.train import config_schema

EPOCH = 50_000 // 128
BN_EXAMPLES = 10_000
MODELS = {"resnet20": "resnet20", "resnet32": "resnet32", "vgg19": "vgg19"}
ORDER = ("dense", "gmp", "iht", "admm", "sam_gmp", "safe", "safe_plus")
VARIANTS = (*MODELS, "label_noise", "tiny")
# The sweep's shape is the digits study's: per label-noise level, dense once
# and every pruning method at every sparsity.
variants = safe_digits.variants


def methods(epoch: int = EPOCH, dual_period: int = 32
            ) -> dict[str, dict[str, Any]]:
  """The six methods of the paper's recipe (``epoch`` steps per epoch);
  :func:`variants` sets each run's sparsity."""
  gmp = {"algorithm": "global_magnitude", "schedule": "polynomial",
         "update_freq": epoch, "update_start_step": 10 * epoch,
         "update_end_step": 150 * epoch}
  common = {"scope": "global", "bn_recalibration_examples": BN_EXAMPLES}
  return {
      "dense": {},
      "gmp": {"sparsity": gmp},
      "iht": {"safe": {"name": "iht", **common, "period": 1,
                       "start_step": 10 * epoch}},
      "admm": {"safe": {"name": "admm", **common, "lam": 1e-3,
                        "dual_period": dual_period}},
      "sam_gmp": {"sparsity": gmp, "flatness": {"name": "sam", "rho": 0.1}},
      "safe": {"safe": {"name": "safe", **common, "lam": 1e-3, "rho": 0.1,
                        "dual_period": dual_period}},
      "safe_plus": {"safe": {"name": "safe_plus", **common,
                             "importance": "activation", "lam": 1e-3,
                             "rho": 0.1, "dual_period": dual_period}},
  }


def sweep(dataset: str, model: str, variant: str) -> ml_collections.ConfigDict:
  """The sweep on ``dataset`` (cifar10, cifar100) with ``model``; ``variant``
  only selects the label-noise study (``label_noise``) or the test-sized one
  (``tiny``)."""
  c = ml_collections.ConfigDict()
  c.base = cifar10_resnet20.get_config("dense")
  c.base.dataset.name = dataset
  c.base.model = ml_collections.ConfigDict({"name": model})
  c.methods = methods()
  c.order = ORDER
  c.sparsities = (0.9, 0.95, 0.98, 0.99)
  c.seeds = (0, 1, 2)
  c.sharpness = ml_collections.ConfigDict({
      "examples": 1024, "num_probes": 10, "iters": 20, "moments": (1,),
      "seed": 0})
  if variant == "label_noise":
    c.methods = {k: v for k, v in c.methods.items()
                 if k in ("dense", "gmp", "admm", "safe")}
    c.order = ("dense", "gmp", "admm", "safe")
    c.sparsities = (0.7, 0.9)
    c.label_noise = (0.25, 0.5)
    c.noise_kind = "symmetric"
    c.noise_seed = 0
  elif variant == "tiny":
    c.base.steps = 4
    c.base.batch_size = 8
    c.base.optimizer.warmup_steps = 1
    c.base.log_every = 2
    c.base.eval_every = 4
    c.base.checkpoint_every = 4
    c.base.eval_batch_size = 8
    tiny = methods(epoch=1, dual_period=2)
    tiny["gmp"]["sparsity"].update(update_start_step=1, update_end_step=3)
    c.methods = {k: tiny[k] for k in ("dense", "gmp", "safe")}
    c.order = ("dense", "gmp", "safe")
    c.sparsities = (0.9,)
    c.seeds = (0,)
    c.sharpness = ml_collections.ConfigDict({
        "examples": 8, "num_probes": 1, "iters": 2, "moments": (1,), "seed": 0})
  return config_schema.complete(c)


def get_config(variant: str = "resnet20") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"Unknown variant {variant!r}; allowed: "
                     f"{', '.join(VARIANTS)}.")
  model = MODELS.get(variant, "resnet20")
  return sweep("cifar10", model, variant)
