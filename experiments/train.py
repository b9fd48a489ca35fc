r"""Generic trainer: every model/optimizer/sparsity combination from one config.

  python -m experiments.train --config=configs/digits_mlp.py:gmp \
      --workdir=/tmp/run
  python -m experiments.train --config=configs/digits_mlp.py \
      --config.steps=3000 --workdir=/tmp/run --seeds=0,1,2

Each seed runs in ``workdir/seed_<s>`` (resumed if a checkpoint is there).
``--multihost`` calls ``jax.distributed.initialize()`` first (multi-host
TPU/GPU). SIGTERM/SIGINT save a checkpoint at the current step and exit with
status 143/130 (rerun the same command to resume); resuming with a config that
differs from the workdir's ``config.json`` needs ``--allow_config_change``.
"""

from __future__ import annotations

import json
import os

from absl import flags
import jax
from ml_collections import config_flags

from experiments import cli
from flatsparse.train import loop

_CONFIG = None
_WORKDIR = None
_SEEDS = None
_MULTIHOST = None
_ALLOW_CONFIG_CHANGE = None


def define_flags() -> None:
  """Defines the flags; called only when run as a program, so the
  experiment modules can be imported together (tests, other mains)."""
  global _CONFIG, _WORKDIR, _SEEDS, _MULTIHOST, _ALLOW_CONFIG_CHANGE
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "Experiment config.", lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "Where the run writes.",
                                 required=True)
  _SEEDS = flags.DEFINE_list("seeds", None, "Seeds (default: config.seed).")
  _MULTIHOST = flags.DEFINE_bool("multihost", False,
                                 "Call jax.distributed.initialize() first.")
  _ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
      "allow_config_change", False,
      "Resume a workdir whose config.json differs from --config (the old "
      "one is kept as config.<step>.json); by default that is an error.")
  cli.define_flags()


def main(argv):
  del argv
  cli.setup_logging(_WORKDIR.value)
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
    results[seed] = loop.train_and_evaluate(
        config, workdir, allow_config_change=_ALLOW_CONFIG_CHANGE.value)
    print(f"seed {seed}: {json.dumps(results[seed])}  ({workdir})")
  with open(os.path.join(_WORKDIR.value, "results.json"), "w") as f:
    json.dump({str(k): v for k, v in results.items()}, f, indent=2)


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["config"])
  cli.run(main)
