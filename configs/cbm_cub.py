r"""A concept bottleneck model on CUB-200-2011 (112 concepts; not run in CI).

The data are not shipped: download CUB_200_2011.tgz from Caltech, unpack it
and point --config.dataset.data_dir (or $CUB_DIR) at its CUB_200_2011
folder (flatsparse/data/cub.py: layout, majority voting). g: ResNet-50 from
scratch (Koh et al. fine-tune an ImageNet Inception-v3, which this library
does not ship) to the 112 concept logits; f: linear. Memory: the train split
at 224 x 224 is 3.6 GB of float32 images.

  python -m experiments.train --config=configs/cbm_cub.py \
      --config.dataset.data_dir=/data/CUB_200_2011 --workdir=workdirs/cub
Variants (`:variant` after the path):
  sequential   sigmoid bottleneck (default)
  independent  f on the true concepts
  joint        soft bottleneck, lambda 0.01 (Koh et al.'s CUB value)
  sam          sequential with SAM (rho 0.1), the noisy-concept paper's
               optimizer; add --config.dataset.concept_noise=0.2 for noise
Intervention curves on the trained state: flatsparse.cbm.intervention_curve,
with experiments.cbm.split_of and experiments.cbm.concept_groups (CUB's
attribute groups, e.g. has_bill_shape) for the data.
"""

import ml_collections

from flatsparse.train import config_schema

VARIANTS = ("sequential", "independent", "joint", "sam")


def get_config(variant: str = "sequential") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "concept_bottleneck"
  c.dataset = ml_collections.ConfigDict(dict(
      name="cub", data_dir="", image_size=224, min_class_count=10,
      augment=True, normalize=True, concept_noise=0.0, concept_noise_seed=0))
  c.model = ml_collections.ConfigDict(dict(
      name="concept_bottleneck", num_concepts=112, mode="sequential",
      bottleneck="sigmoid", task_hidden=(),
      backbone=ml_collections.ConfigDict(dict(name="resnet50"))))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=0.01, momentum=0.9, weight_decay=4e-5,
      schedule="cosine"))
  c.steps = 20000
  c.batch_size = 64
  c.accum_steps = 1
  c.log_every = 200
  c.eval_every = 2000
  c.checkpoint_every = 2000
  c.keep_checkpoints = 2
  c.eval_batch_size = 128
  if variant == "independent":
    c.model.mode = "independent"
  elif variant == "joint":
    c.model.mode = "joint"
    c.model.bottleneck = "soft"
  elif variant == "sam":
    c.flatness = ml_collections.ConfigDict(dict(name="sam", rho=0.1))
  elif variant != "sequential":
    raise ValueError(f"Unknown variant {variant!r}; allowed: "
                     f"{', '.join(VARIANTS)}.")
  return config_schema.complete(c)
