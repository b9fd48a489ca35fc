r"""Black-box prompt tuning on the miniature vision-language model
(experiments/zip.py).

  make extras
  python -m experiments.zip --config=configs/zip_fashion_mnist.py \
      --workdir=workdirs/zip
Variants (`:variant` after the path):
  study  ZIP, its ablations, the clip-threshold sweep and the baselines
         (SPSA-GC, Gaussian, CMA-ES) at 5,000 queries, 3 seeds (default)
  tiny   2 methods, 1 seed, 200 queries (what the tests run, with a tiny
         random text tower instead of MiniLM)
Data: Fashion-MNIST from Debian's dataset-fashion-mnist (apt install
dataset-fashion-mnist); --config.dataset=digits uses scikit-learn's digits.
"""

import ml_collections

VARIANTS = ("study", "tiny")
CLIP_MULTIPLIERS = (0.25, 0.5, 2.0, 4.0)


def get_config(variant: str = "study") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.dataset = "fashion_mnist"
  c.shots = 16
  c.rotation = 1
  c.image_steps = 300
  c.phrase = "a small black and white photo of a"  # 8 tokens, ZIP's count
  c.seeds = (0, 1, 2)
  c.budget = 5000
  c.eval_every = 250
  c.num_directions = 5
  # Step sizes a and c: the ZO baselines' chosen on the few-shot training
  # loss; ZIP's are its reference code's (BENCHMARKS.md has both probes).
  c.smoothing = 0.1
  c.learning_rate = 0.1
  c.zip_smoothing = 0.01
  c.zip_learning_rate = 0.01
  c.rank = 5
  c.intrinsic_dim = 62
  c.baseline_intrinsic_dim = 62
  c.projection_seed = 0
  c.cma_population = 10
  c.cma_sigma = 0.1
  c.methods = (("zip", "zip_no_low_rank", "zip_no_sharing", "zip_no_clip")
               + tuple(f"zip_clip_{m:g}" for m in CLIP_MULTIPLIERS)
               + ("spsa_gc", "gaussian", "cma_es"))
  if variant == "tiny":
    c.dataset = "digits"
    c.image_steps = 30
    c.seeds = (0,)
    c.budget = 200
    c.eval_every = 100
    c.methods = ("zip", "cma_es")
    c.phrase = "a photo of a"
  elif variant != "study":
    raise ValueError(f"Unknown variant {variant!r}; allowed: "
                     f"{', '.join(VARIANTS)}.")
  return c
