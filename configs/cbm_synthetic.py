r"""A concept bottleneck model on the synthetic concept data (generic trainer).

The data of Shin et al. (ICML 2023): 100 concepts, 100 classes, 100 input
dimensions, 10,000 examples split 70/15/15 (``flatsparse.data.concepts``).
``g``: an MLP (hidden 256) to the 100 concept logits; ``f``: linear.

Run (no network; ~1 minute on 2 CPU cores):
  python -m experiments.train --config=configs/cbm_synthetic.py \
      --workdir=/tmp/cbm_synthetic
Variants (`:variant` after the path):
  independent  f trained on the true concepts, sigmoid bottleneck
  sequential   f trained on g's predictions (stop-gradient), sigmoid (default)
  joint        task loss + 0.01 x concept loss, soft (logit) bottleneck
  tiny         sequential on 20 classes / 50 concepts, 200 steps (tests)
Then the intervention curves: experiments/cbm.py (configs/cbm_study.py).
Override anything, e.g. --config.model.bottleneck=hard,
--config.dataset.concept_noise=0.2 (exact fraction of flipped training
concepts), --config.flatness.name=sam --config.flatness.rho=0.1, or a
pruning section (--config.sparsity...).
"""

import ml_collections

from flatsparse.train import config_schema

VARIANTS = ("independent", "sequential", "joint", "tiny")


def get_config(variant: str = "sequential") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "concept_bottleneck"
  # Every option of the generator (flatsparse.data.concepts), so each can
  # be set on the command line; the noise keys touch the train split only.
  c.dataset = ml_collections.ConfigDict(dict(
      name="cbm_synthetic", eval_split="test", num_concepts=100,
      num_classes=100, input_dim=100, num_class_groups=50,
      samples_per_class=100, alpha_mean=0.8, alpha_std=0.1, w_std=0.1,
      z_std=2.0, hidden_fraction=0.0, flip_probability=0.0, seed=0,
      concept_noise=0.0, concept_noise_seed=0))
  c.model = ml_collections.ConfigDict(dict(
      name="concept_bottleneck", num_concepts=100, mode="sequential",
      bottleneck="sigmoid", task_hidden=(),
      backbone=ml_collections.ConfigDict(dict(name="mlp", hidden=(256,)))))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adam", learning_rate=1e-3, schedule="cosine"))
  c.steps = 3000
  c.batch_size = 64
  c.accum_steps = 1
  c.log_every = 500
  c.eval_every = 1000
  c.checkpoint_every = 1000
  c.keep_checkpoints = 1
  c.eval_batch_size = 1500
  if variant == "independent":
    c.model.mode = "independent"
  elif variant == "joint":
    c.model.mode = "joint"
    c.model.bottleneck = "soft"
  elif variant == "tiny":
    c.dataset.num_concepts = 50
    c.dataset.num_classes = 20
    c.dataset.num_class_groups = 10
    c.dataset.input_dim = 50
    c.dataset.z_std = 1.0
    c.dataset.w_std = 0.2
    c.model.num_concepts = 50
    c.model.backbone.hidden = (32,)
    c.optimizer.learning_rate = 1e-2
    c.steps = 200
    c.batch_size = 32
    c.log_every = 50
    c.eval_every = 100
    c.checkpoint_every = 100
    c.eval_batch_size = 256
  elif variant != "sequential":
    raise ValueError(f"Unknown variant {variant!r}; allowed: "
                     f"{', '.join(VARIANTS)}.")
  return config_schema.complete(c)
