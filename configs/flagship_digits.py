r"""The flagship study on the embedded digits (what `make demo` runs).

Dense vs gradual magnitude pruning (GMP) vs RigL vs SAM+GMP, all at 90%
sparsity, MLP 64-256-256-10, 1,500 AdamW steps, 3 seeds; then SAFE at 90%
with the paper's recipe (SGD, momentum 0.9, cosine learning rate) beside dense
SGD. SAFE with AdamW as its base optimizer ends 2-3 points lower here (lambda
0.1-1, seed 0: 93.6-94.4%; Adam normalizes the penalty's pull).

Run (about 3.5 minutes on 2 CPU cores, no network):
  python -m experiments.study --config=configs/flagship_digits.py \
      --workdir=workdirs/demo
Variants: `tiny` (one seed, few steps; what the tests run).
The study's runs: `variants(config)`, one per entry of `config.variants`.
"""

import ml_collections

from configs import digits_mlp
from flatsparse import study
from flatsparse.train import config_schema

_GMP = dict(algorithm="magnitude", sparsity=0.9, schedule="polynomial",
            update_freq=50, update_start_step=200, update_end_step=1000)
_SGD = dict(name="sgd", learning_rate=0.1, momentum=0.9, schedule="cosine",
            weight_decay=1e-4)
# lambda, rho, K as tuned on a held-out split in configs/safe_digits.py.
_SAFE = dict(name="safe", sparsity=0.9, lam=0.3, rho=0.2, dual_period=32)
_RIGL = dict(algorithm="rigl", sparsity=0.9, distribution="erk",
             schedule="periodic", update_freq=100, update_end_step=1100,
             drop_fraction=0.3, drop_fraction_end_step=1100)


VARIANTS = ("", "tiny")


def variants(c: ml_collections.ConfigDict) -> list[study.Variant]:
  """The study's variants: one per entry of ``c.variants`` (``{name:
  top-level overrides}``, so each stays overridable on the command line),
  in name order."""
  return [study.Variant(name, study.plain(overrides))
          for name, overrides in c.variants.items()]


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.base = digits_mlp.get_config("dense")
  c.base.eval_every = 250
  c.seeds = (0, 1, 2)
  c.variants = ml_collections.ConfigDict({
      "dense": {},
      "gmp": {"sparsity": _GMP},
      "rigl": {"sparsity": _RIGL},
      "sam_gmp": {"sparsity": _GMP, "flatness": {"name": "sam", "rho": 0.05}},
      "dense_sgd": {"optimizer": _SGD},
      "safe_sgd": {"optimizer": _SGD, "safe": _SAFE},
  })
  # Row names of the README table (experiments.report --readme).
  c.labels = ml_collections.ConfigDict({
      "dense": "dense (AdamW)", "gmp": "GMP (AdamW)",
      "rigl": "RigL, ERK (AdamW)", "sam_gmp": "SAM (rho 0.05) + GMP (AdamW)",
      "dense_sgd": "dense (SGD)",
      "safe_sgd": "SAFE (SGD; lambda 0.3, rho 0.2, K 32, tuned on a "
                  "held-out split)"})
  if variant == "tiny":
    c.seeds = (0,)
    c.base.steps = 40
    c.base.model.hidden = (32,)
    c.base.eval_every = 20
    c.base.log_every = 10
    c.base.checkpoint_every = 20
    for name in ("gmp", "rigl", "sam_gmp"):
      c.variants[name].sparsity.update_start_step = 0
      c.variants[name].sparsity.update_freq = 10
      c.variants[name].sparsity.update_end_step = 30
    c.variants.rigl.sparsity.drop_fraction_end_step = 30
  elif variant:
    raise ValueError(f"Unknown variant {variant!r}; allowed: "
                     f"{', '.join(map(repr, VARIANTS))}.")
  return config_schema.complete(c)
