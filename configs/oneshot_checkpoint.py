r"""One-shot pruning of a Hugging Face checkpoint already on disk.

For users with bigger models: a LLaMA-style or OPT checkpoint directory
(`config.json`, `*.safetensors` or a sharded index, and `tokenizer.json`,
read with the `tokenizers` package of `make extras`), calibration text from
a local file or a TFDS text dataset (C4 is the reference: 128 sequences of
2048 tokens), perplexity on its held-out part.

  python -m experiments.oneshot \
      --config=configs/oneshot_checkpoint.py:opt125m \
      --config.model.checkpoint_dir=/models/opt-125m \
      --config.calibration.path=/data/text.txt \
      --config.evaluation.path=/data/text.txt \
      --workdir=workdirs/oneshot_opt125m
  # TFDS instead of a file:
  #   --config.calibration.source=tfds --config.calibration.tfds_name=c4/en
Variants: opt125m (OPT-125M, 2048-token windows), llama1b (a 1B LLaMA-style
model, e.g. TinyLlama-1.1B or Llama-3.2-1B without rope scaling).
"""

import ml_collections

from configs import oneshot_shakespeare

VARIANTS = ("opt125m", "llama1b")


def get_config(variant: str = "opt125m") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"Unknown variant {variant!r}; allowed: "
                     f"{', '.join(VARIANTS)}.")
  c = oneshot_shakespeare.get_config()
  c.model.source = "checkpoint"
  c.tokenizer = "hf"
  for section in (c.calibration, c.evaluation):
    section.source = "text_file"
    section.seq_len = 2048
  c.calibration.num_sequences = 128
  c.evaluation.num_sequences = 64
  c.batch_size = 1 if variant == "llama1b" else 4
  c.seeds = (0,)
  c.save_pruned = True
  c.methods = oneshot_shakespeare.methods(
      patterns=("0.5", "2:4"), reconstructions=("lr", "br+gp"))
  return c
