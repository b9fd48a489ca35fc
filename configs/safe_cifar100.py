r"""SAFE vs its baselines on CIFAR-100 (for users with the data and a GPU).

The recipe, methods, sparsities and seeds of ``configs/safe_cifar10.py``
(SGD momentum 0.9, lr 0.1, 5-epoch warm-up then cosine, L2 1e-4, 200 epochs;
SAFE rho 0.1, lambda 1e-3, K 32) on CIFAR-100 (100 classes).

Run (downloads CIFAR-100 through TFDS on first use; days on one GPU):
  python -m experiments.sparsity_sweep --config=configs/safe_cifar100.py \
      --workdir=workdirs/safe_cifar100
Variants: resnet32 (default), resnet20, vgg19, label_noise (ResNet-32), tiny
(ResNet-32, dense/GMP/SAFE at 90%, 4 steps of batch 8 on TFDS mock data;
what the tests run). Not run by us: no CIFAR data and no accelerator on the
development machines.
"""

import ml_collections

from configs import safe_cifar10

VARIANTS = safe_cifar10.VARIANTS
variants = safe_cifar10.variants  # the sweep: experiments/sparsity_sweep.py


def get_config(variant: str = "resnet32") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"Unknown variant {variant!r}; allowed: "
                     f"{', '.join(VARIANTS)}.")
  model = safe_cifar10.MODELS.get(variant, "resnet32")
  return safe_cifar10.sweep("cifar100", model, variant)
