r"""SAM under overparameterization on the real Fashion-MNIST (overparam study).

The digits study's test set has 360 images (one image = 0.28 points), too few
to resolve gaps of a few tenths; Fashion-MNIST's 10,000 test images resolve
0.01 points. MLP 784-w-w-10 for w in 16..1024 (13K to 1.9M parameters), SGD
vs SAM (rho 0.05, not tuned), 3 seeds, dense only. SGD momentum 0.9, lr 0.05
cosine, coupled L2 5e-4, batch 128, 3,000 steps (6.4 epochs of 60,000),
per-channel normalization. Sharpness (Lanczos, 20 steps; 10 Hutchinson
probes) on 512 training examples.

Needs the Debian package's files (no network at run time):
  sudo apt install dataset-fashion-mnist
  python -m experiments.overparam --config=configs/overparam_fashion_mnist.py \
      --workdir=workdirs/overparam_fashion
(42 runs; 8 min 56 s measured on 2 CPU cores; `:long` 16 runs, 7 min 42 s.)
Other IDX files: --config.base.dataset.data_dir=DIR.
Variants: (default) the study above; `long` (12,000 steps = 25.6 epochs,
widths 16, 64, 256, 1024, 2 seeds: SAM needs longer training than 6.4
epochs); `tiny` (one width, 20 steps, one seed; what the tests run, on IDX
files they write).
"""

import ml_collections

from configs import overparam_digits
from flatsparse.train import config_schema

VARIANTS = ("", "long", "tiny")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"Unknown variant {variant!r}; allowed: "
                     f"{', '.join(map(repr, VARIANTS))}.")
  # The digits study's schedule, optimizer and sharpness settings.
  c = overparam_digits.get_config("tiny" if variant == "tiny" else "")
  c.base.dataset = ml_collections.ConfigDict(dict(
      name="fashion_mnist_debian", normalize=True, data_dir=None))
  c.sparse = None
  if variant == "tiny":
    return config_schema.complete(c)
  c.base.steps = c.base.eval_every = c.base.checkpoint_every = 3000
  c.base.log_every = 500
  c.widths = (16, 32, 64, 128, 256, 512, 1024)
  if variant == "long":
    c.base.steps = c.base.eval_every = c.base.checkpoint_every = 12_000
    c.seeds = (0, 1)
    c.widths = (16, 64, 256, 1024)
  return config_schema.complete(c)
