r"""SAM under overparameterization on the embedded digits (overparam study).

MLP 64-w-w-10 for w in 8..2048 (682 to 4,349,962 parameters), SGD vs SAM
(rho 0.05), 3 seeds; plus random-static and SNIP masks fixed at step 0 on
widths 64, 128, 256 at the trained-parameter count of the dense w=32 model
(3,466). SGD momentum 0.9, lr 0.05 cosine, coupled L2 5e-4, batch 128, 1,500
steps (134 epochs of the 1,437 training digits). Sharpness of every solution
(Lanczos, 20 steps; 10 Hutchinson probes) on 512 training examples.

Run (no network; 13 min 41 s measured on 2 CPU cores, partly shared with
another job; the six w=2048 runs take 350 s of it):
  python -m experiments.overparam --config=configs/overparam_digits.py \
      --workdir=workdirs/overparam_digits
Variants (`:variant` after the path):
  (default)    the study above (90 runs)
  label_noise  the dense sweep with 20% symmetric label noise on the train
               split (54 runs; 7 min 0 s measured)
  resnet       CIFAR ResNet-18 (the paper's model) at stem width 2..32
               (11K to 2.8M parameters) on the 8x8 digits, dense, lr 0.1,
               600 steps, 3 seeds (30 runs; 34 min 32 s measured on 2 CPU
               cores). Its sharpness unrolls the curvature loops (XLA:CPU
               runs convolutions inside loop bodies slowly). Width 64 costs
               ~17x width 32 per step on these CPUs.
  tiny         one dense width, one sparse width, 20 steps, one seed (what
               the tests run)
Override anything, e.g. --config.seeds=0,1 --config.rho=0.1.
"""

import ml_collections

from flatsparse.train import config_schema

VARIANTS = ("", "label_noise", "resnet", "tiny")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  base = ml_collections.ConfigDict()
  base.seed = 0
  base.dataset = ml_collections.ConfigDict(dict(name="digits"))
  base.model = ml_collections.ConfigDict(dict(name="mlp", hidden=(64, 64)))
  base.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=0.05, momentum=0.9, weight_decay=5e-4,
      schedule="cosine"))
  base.sparsity = None
  base.flatness = None
  base.steps = 1500
  base.batch_size = 128
  base.log_every = 250
  base.eval_every = 1500
  base.checkpoint_every = 1500
  base.keep_checkpoints = 1
  c.base = base
  c.seeds = (0, 1, 2)
  c.rho = 0.05
  # model.hidden = (w,) * depth for the MLP; other models get
  # model[width_key] = w (e.g. width_key="width" for resnet18).
  c.width_key = "hidden"
  c.depth = 2
  c.widths = (8, 16, 32, 64, 128, 256, 512, 1024, 2048)
  c.optimizers = ("sgd", "sam")
  c.sparse = ml_collections.ConfigDict(dict(
      budget_width=32, widths=(64, 128, 256), methods=("random", "snip"),
      snip_algorithm="saliency"))
  c.sharpness = ml_collections.ConfigDict(dict(
      batch_size=512, num_probes=10, iters=20, moments=(1, 2, 4),
      method="lanczos"))
  if variant == "label_noise":
    base.dataset.label_noise = 0.2  # symmetric, train split only
    c.sparse = None
  elif variant == "resnet":
    # The paper's model: CIFAR ResNet-18 at stem width w (11K to 2.8M
    # parameters); on 8x8 inputs its last stage is 1x1.
    base.model = ml_collections.ConfigDict(dict(name="resnet18"))
    base.optimizer.learning_rate = 0.1
    base.steps = 600
    base.eval_every = base.checkpoint_every = 600
    c.width_key = "width"
    c.widths = (2, 4, 8, 16, 32)
    c.sparse = None
    c.sharpness.batch_size = 256
    # XLA:CPU runs convolutions in loop bodies ~17x slower: unroll them.
    c.sharpness.unroll = True
  elif variant == "tiny":
    base.steps = 20
    base.log_every = 10
    base.eval_every = base.checkpoint_every = 20
    c.seeds = (0,)
    c.widths = (8,)
    c.sparse.budget_width = 8
    c.sparse.widths = (16,)
    c.sharpness = ml_collections.ConfigDict(dict(
        batch_size=64, num_probes=2, iters=3, moments=(1, 2),
        method="power"))
  elif variant:
    raise ValueError(f"Unknown variant {variant!r}; allowed: "
                     f"{', '.join(map(repr, VARIANTS))}.")
  return config_schema.complete(c)
