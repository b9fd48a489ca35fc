r"""SAFE vs ADMM vs GMP (and SAM+GMP) under symmetric label noise, digits.

0%, 25% and 50% of the training labels replaced by a different class
(``flatsparse.data.add_label_noise``, exact counts, the same noisy labels for
every method and seed), 70% and 90% sparsity, 3 seeds, dense as the
reference; test labels stay clean. The model, base optimizer (SGD momentum
0.9, lr 0.1, cosine, L2 1e-4, 1,500 steps) and each method's hyperparameters
are those of ``configs/safe_digits.py`` (tuned there without noise). The
paper's reference point: SAFE 86.5% vs ADMM 59.2% (CIFAR-10, ResNet-20, 50%
noise, 70% sparsity).

Run (measured: 6 min 45 s wall for the 81 runs on 2 CPU cores shared with
other jobs, no network):
  python -m experiments.sparsity_sweep \
      --config=configs/safe_label_noise_digits.py \
      --workdir=workdirs/safe_label_noise_digits
Variants: ``tiny`` (dense, GMP and SAFE, 0% and 50% noise, 70% sparsity, one
seed, 40 steps of a 64-32-10 MLP; what the tests run).
"""

import ml_collections

from configs import safe_digits
from flatsparse.train import config_schema

# SAM+GMP is the control: is SAFE's robustness SAM's alone?
METHODS = ("dense", "gmp", "admm", "sam_gmp", "safe")
VARIANTS = ("", "tiny")
variants = safe_digits.variants  # the sweep, per label-noise level


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = safe_digits.get_config("tiny" if variant == "tiny" else "")
  all_methods = c.methods
  c.methods = ml_collections.ConfigDict({
      name: all_methods[name] for name in METHODS})
  c.order = METHODS
  c.sparsities = (0.7, 0.9)
  c.label_noise = (0.0, 0.25, 0.5)
  c.noise_kind = "symmetric"
  c.noise_seed = 0
  if variant == "tiny":
    c.methods = {k: c.methods[k] for k in ("dense", "gmp", "safe")}
    c.order = ("dense", "gmp", "safe")
    c.sparsities = (0.7,)
    c.label_noise = (0.0, 0.5)
  elif variant:
    raise ValueError(f"Unknown variant {variant!r}; allowed: "
                     f"{', '.join(map(repr, VARIANTS))}.")
  return config_schema.complete(c)
