r"""Concept-bottleneck studies on the synthetic concept data (experiments/cbm).

  python -m experiments.cbm --config=configs/cbm_study.py:intervention \
      --workdir=workdirs/cbm_intervention
  python -m experiments.cbm --config=configs/cbm_study.py:noise \
      --workdir=workdirs/cbm_noise
Variants (`:variant` after the path):
  intervention  the three training modes (independent and sequential with a
                sigmoid bottleneck, joint soft with lambda 0.01), 3 seeds;
                plus joint with w = 0.1 (joint_w0.1); every criterion,
                individual concepts and groups of 2, each example's own
                budget and a shared one (default)
  noise         training concepts flipped at 0/10/20/30/40%, Adam vs Adam +
                SAM (rho 0.1), sequential sigmoid CBM, 3 seeds, on the data
                with z std 1.0 (at 2.0 the clean model's concepts are barely
                above the majority guess): accuracy, concept accuracy,
                intervention gain, susceptible concepts
  tiny          1 mode (or 2 noise levels), 1 seed, the tiny data, 100
                steps (what the tests run)
The data follow the paper's generator (100 concepts and classes, z std 2.0);
--config.base.dataset.z_std=1.0 gives data whose optimal error is closer to
the paper's figure (BENCHMARKS.md).
"""

import ml_collections

from configs import cbm_synthetic
from flatsparse import study

VARIANTS = ("intervention", "noise", "tiny")
MODES = {"independent": "sigmoid", "sequential": "sigmoid", "joint": "soft"}


def get_config(variant: str = "intervention") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.study = "noise" if variant == "noise" else "intervention"
  c.base = cbm_synthetic.get_config(
      "tiny" if variant == "tiny" else "sequential")
  c.seeds = (0, 1, 2)
  c.modes = tuple(MODES)
  # Joint-mode loss weights w of CE + w * sum_i BCE_i beyond the default
  # (Koh et al.'s 0.01): each adds a variant 'joint_w<w>'.
  c.joint_concept_weights = (0.1,)
  c.criteria = ("rand", "ucp", "lcp", "cctp", "ectp", "eudtp", "entropy")
  c.group_size = 2
  c.report_steps = (0, 5, 10, 20)
  c.percentiles_of = "train"  # or "evaluation" (the reference code)
  c.noise_levels = (0.0, 0.1, 0.2, 0.3, 0.4)
  c.sam_rho = 0.1
  c.noise_criteria = ("rand", "entropy", "lcp")
  c.gain_steps = 10
  if variant == "noise":
    c.base.dataset.z_std = 1.0
  if variant == "tiny":
    c.seeds = (0,)
    c.modes = ("sequential",)
    c.criteria = ("ucp",)
    c.noise_criteria = ("entropy",)
    c.noise_levels = (0.0, 0.2)
    c.base.steps = 100
  elif variant not in VARIANTS:
    raise ValueError(f"Unknown variant {variant!r}; allowed: "
                     f"{', '.join(VARIANTS)}.")
  return c


def variants(config: ml_collections.ConfigDict) -> list[study.Variant]:
  """The study's sweep: training modes, or noise levels x optimizers."""
  if config.study == "intervention":
    out = [study.Variant(mode, {"model.mode": mode,
                                "model.bottleneck": MODES[mode]},
                         tags={"mode": mode, "bottleneck": MODES[mode]})
           for mode in config.modes]
    if "joint" in config.modes:
      out += [study.Variant(f"joint_w{w:g}", {
          "model.mode": "joint", "model.bottleneck": "soft",
          "model.concept_weight": w}, tags={"mode": f"joint_w{w:g}",
                                            "bottleneck": "soft"})
              for w in config.joint_concept_weights]
    return out
  sam = {"name": "sam", "rho": config.sam_rho}
  return [study.Variant(f"noise_{level:g}/{opt}",
                        {"dataset.concept_noise": level,
                         "flatness": sam if opt == "sam" else None},
                        tags={"noise": level, "optimizer": opt})
          for level in config.noise_levels for opt in ("adam", "sam")]
