r"""CIFAR-100 ResNet-32 recipe (for users with the data and an accelerator).

Run (downloads CIFAR-100 through TFDS on first use; ~1.5 h on one GPU):
  python -m experiments.train --config=configs/cifar100_resnet32.py \
      --workdir=/tmp/c100_r32
Same recipe as configs/cifar10_resnet20.py (SGD momentum 0.9, lr 0.1, 5-epoch
warm-up then cosine, L2 1e-4, 200 epochs, crop + flip, normalization) with
ResNet-32 and 100 classes. Variants: dense, gmp (default), rigl, tiny.
"""

import ml_collections

from configs import cifar10_resnet20
from flatsparse.train import config_schema

VARIANTS = cifar10_resnet20.VARIANTS


def get_config(variant: str = "gmp") -> ml_collections.ConfigDict:
  c = cifar10_resnet20.get_config(variant)
  c.dataset.name = "cifar100"
  c.model.name = "resnet32"
  return config_schema.complete(c)
