r"""Generic trainer: every model/optimizer/sparsity combination from one config.

  python -m experiments.train --config=configs/digits_mlp.py:gmp \
      --workdir=/tmp/run
  python -m experiments.train --config=configs/digits_mlp.py \
      --config.steps=3000 --workdir=/tmp/run --seeds=0,1,2

Each seed runs in ``workdir/seed_<s>`` (resumed if a checkpoint is there).
``--multihost`` calls ``jax.distributed.initialize()`` first (multi-host TPU,
GPU or CPU; ``--coordinator_address``, ``--num_processes``, ``--process_id``
where the platform does not supply them): every process runs this command,
reads only its rows of each batch, and process 0 writes. SIGTERM/SIGINT save a
checkpoint at the current step and exit with status 143/130 (rerun the same
command to resume); resuming with a config that differs from the workdir's
``config.json`` needs ``--allow_config_change``.
"""

from __future__ import annotations

import json
import os

from absl import flags
import jax

from experiments import cli
from flatsparse.train import loop

_FLAGS: dict[str, flags.FlagHolder] = {}


def define_flags() -> None:
  """The shared flags (``cli.define_flags``) and this main's own; called
  only when run as a program."""
  cli.define_flags("Experiment config.", workdir="Where the run writes.",
                   lock_config=True)
  _FLAGS["seeds"] = flags.DEFINE_list("seeds", None,
                                      "Seeds (default: config.seed).")
  _FLAGS["multihost"] = flags.DEFINE_bool(
      "multihost", False,
      "Call jax.distributed.initialize() first (JAX's multi-controller "
      "runtime; CPU collectives over gloo).")
  _FLAGS["coordinator_address"] = flags.DEFINE_string(
      "coordinator_address", None,
      "With --multihost: host:port of process 0 (None: detected on TPU, "
      "SLURM, ...).")
  _FLAGS["num_processes"] = flags.DEFINE_integer(
      "num_processes", None, "With --multihost: the number of processes.")
  _FLAGS["process_id"] = flags.DEFINE_integer(
      "process_id", None, "With --multihost: this process's index.")
  _FLAGS["allow_config_change"] = flags.DEFINE_bool(
      "allow_config_change", False,
      "Resume a workdir whose config.json differs from --config (the old "
      "one is kept as config.<step>.json); by default that is an error.")


def main(argv):
  del argv
  workdir = cli.workdir()
  cli.setup_logging(workdir)
  if _FLAGS["multihost"].value:
    # Cross-process reductions of CPU devices (tests, CPU clusters); other
    # backends use their own collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=_FLAGS["coordinator_address"].value,
        num_processes=_FLAGS["num_processes"].value,
        process_id=_FLAGS["process_id"].value)
  config = cli.config()
  seeds = _FLAGS["seeds"].value
  seeds = [int(s) for s in seeds] if seeds else [config.get("seed", 0)]
  results = {}
  for seed in seeds:
    with config.unlocked():
      config.seed = seed
    run_dir = os.path.join(workdir, f"seed_{seed}")
    results[seed] = loop.train_and_evaluate(
        config, run_dir,
        allow_config_change=_FLAGS["allow_config_change"].value)
    print(f"seed {seed}: {json.dumps(results[seed])}  ({run_dir})")
  if jax.process_index() == 0:  # written once in multi-host runs
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump({str(k): v for k, v in results.items()}, f, indent=2)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
