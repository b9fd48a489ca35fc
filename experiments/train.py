"""Generic trainer: every model/optimizer/sparsity combination from one config.

  python -m experiments.train --config=configs/digits_mlp.py:gmp --workdir=/tmp/run
  python -m experiments.train --config=configs/digits_mlp.py --config.steps=3000 \\
      --workdir=/tmp/run --seeds=0,1,2

Each seed runs in ``workdir/seed_<s>`` (resumed if a checkpoint is there).
``--multihost`` calls ``jax.distributed.initialize()`` first (multi-host TPU/GPU).
"""

from __future__ import annotations

import json
import os

from absl import app
from absl import flags
from ml_collections import config_flags
import jax

from flatsparse.train import loop

_CONFIG = None
_WORKDIR = None
_SEEDS = None
_MULTIHOST = None


def define_flags() -> None:
  """Defines the flags; called only when run as a program, so the
  experiment modules can be imported together (tests, other mains)."""
  global _CONFIG, _WORKDIR, _SEEDS, _MULTIHOST
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "Experiment config.", lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "Where the run writes.",
                                 required=True)
  _SEEDS = flags.DEFINE_list("seeds", None, "Seeds (default: config.seed).")
  _MULTIHOST = flags.DEFINE_bool("multihost", False,
                                 "Call jax.distributed.initialize() first.")


def main(argv):
  del argv
  if _MULTIHOST.value:
    jax.distributed.initialize()
  config = _CONFIG.value
  seeds = [int(s) for s in _SEEDS.value] if _SEEDS.value else [
      config.get("seed", 0)]
  results = {}
  for seed in seeds:
    with config.unlocked():
      config.seed = seed
    workdir = os.path.join(_WORKDIR.value, f"seed_{seed}")
    results[seed] = loop.train_and_evaluate(config, workdir)
    print(f"seed {seed}: {json.dumps(results[seed])}  ({workdir})")
  with open(os.path.join(_WORKDIR.value, "results.json"), "w") as f:
    json.dump({str(k): v for k, v in results.items()}, f, indent=2)


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["config"])
  app.run(main)
