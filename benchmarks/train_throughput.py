r"""Images/s of the generic train step against a hand-written one, one process.

What is measured, per workload (``resnet18``: CIFAR ResNet-18 on 32x32x3 with
BatchNorm, batch statistics updated every step; ``vit_s``: ViT-S/16 shape with
``patch_size=4`` on 32x32x3, i.e. 64 patches + class token), 10 classes, one
fixed synthetic batch, softmax cross-entropy, ``optax.sgd(0.1, momentum=0.9)``:

* ``platform``: ``jax.jit(flatsparse.train.step.make_train_step(model, tx),
  donate_argnums=0)`` on a ``TrainState`` (as the experiments run it: it also
  folds a dropout rng, builds the ``value_fn`` extra argument and returns the
  ``loss``, ``accuracy`` and ``grad_norm`` metrics).
* ``minimal``: a hand-written jitted step: ``value_and_grad`` of the softmax
  cross-entropy (with mutable ``batch_stats`` for the ResNet), ``tx.update``,
  ``optax.apply_updates``; returns the new params, optimizer state and batch
  statistics and the loss, nothing else (params, optimizer state and batch
  statistics donated).

Both start from the same ``create_train_state`` initialization (the minimal
step gets copies) and see the same batch. Target: the platform step is
**within 3%** of the minimal one (``overhead_percent <= 3``): the platform
must not slow the work down.

How: both steps are compiled and warmed up first (``--warmup`` steps each),
then timed in interleaved rounds (for each round, for each variant:
``--steps`` steps, each blocked on and timed with ``time.perf_counter``), so
drifts in machine load hit both alike. Reported per workload: images/s per
variant (batch size / median step time), ``platform_over_minimal_time_ratio``
(median step time ratio), ``overhead_percent`` (``100 * (ratio - 1)``), the
same ratio per round (its spread shows the noise) and of the fastest steps
(``min_time_ratio``: other processes on a shared machine only add time, so
the minima are the cleaner figure there), the first-step losses of
both (they must agree: same work), each jitted step's compile-cache size after
timing (``_cache_size() == 1``: no recompilation) and, from the compiled
executables, XLA's flop and byte-access estimates, scratch bytes and the
number of HLO instructions, so a gap can be traced to extra work.

Run on CPU from the repo root (prints one JSON object, progress on stderr;
the defaults, batch 32, 5 rounds of 4 steps, take about 1.7 minutes on 2
idle cores and up to 3 when other processes share them, two thirds of it
the ViT)::

    python -m benchmarks.train_throughput
    python -m benchmarks.train_throughput --workloads resnet18 --batch-size 64 \
        --steps 10 --rounds 7 --json-out /tmp/train_throughput.json

On a GPU (the defaults become batch 256, 7 rounds of 20 steps) the command is
the same; jax must be a CUDA build. Through the device tool, from the repo
root (``$OUT`` comes back)::

    PYTHONPATH=$PWD python3 -m benchmarks.train_throughput \
        --json-out "$OUT/train_throughput_gpu.json"
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import time
from typing import Any

import flax.linen as nn
import jax
import optax

from benchmarks import common
from benchmarks import timing
from flatsparse.train.state import create_train_state
from flatsparse.train.state import TrainState
from flatsparse.train.step import make_train_step

TARGET_PERCENT = 3.0
SEED = 0
SCRIPT = common.Script(
  "train_throughput",
  common.workloads("resnet18", "vit_s"),
  cpu=common.Defaults("resnet18,vit_s", 32, 4, 5),
  accelerator=common.Defaults("resnet18,vit_s", 256, 20, 7),
)
log = SCRIPT.log


class PlatformRunner(timing.Runner):
  """``make_train_step`` on a ``TrainState``; the state is carried forward."""

  def __init__(
    self,
    model: nn.Module,
    tx: optax.GradientTransformation,
    state: TrainState,
    x: jax.Array,
    y: jax.Array,
  ):
    super().__init__(jax.jit(make_train_step(model, tx), donate_argnums=0))
    self.state, self.batch = state, {"image": x, "label": y}

  def args(self) -> tuple[Any, ...]:
    """``(state, batch)``."""
    return self.state, self.batch

  def update(self, out: Any) -> None:
    """Carries the new state forward; notes the first loss."""
    self.state, metrics = out
    self.note_loss(metrics["loss"])


# ---- one workload ------------------------------------------------------------


def bench_workload(
  workload: common.Workload, settings: common.Settings
) -> dict[str, Any]:
  """Times both steps on one workload; returns its JSON section."""
  batch_size, warmup = settings.batch_size, settings.args.warmup
  start = time.perf_counter()
  log(f"workload {workload.name}, batch {batch_size}")
  tx = common.sgd()
  x, y = common.make_batch(workload, batch_size)
  state = jax.jit(lambda x: create_train_state(workload.model, tx, x, SEED))(
    x[:1]
  )
  # Each variant owns (and donates) its own copy of the same initial state.
  runners: dict[str, timing.Runner] = {
    "platform": PlatformRunner(
      workload.model, tx, timing.copy_tree(state), x, y
    ),
    "minimal": common.step_runner(
      workload.model, tx, state.params, state.batch_stats, (x, y)
    ),
  }
  num_params = common.num_params(state.params)
  del state

  # One after the other: each compile time on its own.
  timing.warm_up(runners, warmup, log=log, threads=False)
  times = timing.time_interleaved(
    runners, settings.steps, settings.rounds, log=log
  )
  median_ms = {name: t.ms("median") for name, t in times.items()}
  min_ms = {name: t.ms("min") for name, t in times.items()}
  ratio = median_ms["platform"] / median_ms["minimal"]
  losses = {name: r.first_loss for name, r in runners.items()}
  return {
    "num_params": num_params,
    "batch_size": batch_size,
    "images_per_s": {
      name: round(1e3 * batch_size / ms, 2) for name, ms in median_ms.items()
    },
    "median_step_ms": {name: round(ms, 3) for name, ms in median_ms.items()},
    "platform_over_minimal_time_ratio": round(ratio, 4),
    "overhead_percent": round(100 * (ratio - 1), 2),
    "within_target": 100 * (ratio - 1) <= TARGET_PERCENT,
    "per_round_time_ratio": timing.per_round_ratios(
      times, "platform", "minimal"
    ),
    "min_step_ms": {name: round(ms, 3) for name, ms in min_ms.items()},
    "min_time_ratio": round(min_ms["platform"] / min_ms["minimal"], 4),
    "first_step_loss": losses,
    "same_first_loss": abs(losses["platform"] - losses["minimal"])
    <= 1e-4 * max(1.0, abs(losses["minimal"])),
    **common.workload_checks(
      runners,
      times,
      start,
      compiled=common.map_runners(common.compiled_stats, runners),
    ),
  }


# ---- main --------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = SCRIPT.parser(__doc__)
  parser.add_argument(
    "--warmup", type=int, default=2, help="Untimed steps per variant (>= 1)."
  )
  return parser.parse_args(argv)


def config(settings: common.Settings) -> dict[str, Any]:
  """The ``config`` section of the output."""
  return {
    **settings.fields("batch_size", "steps", "rounds"),
    "warmup": settings.args.warmup,
    "optimizer": "sgd(0.1, momentum=0.9)",
    "target_overhead_percent": TARGET_PERCENT,
  }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  return SCRIPT.run(
    parse_args(argv),
    config,
    bench_workload,
    positive=("warmup",),
    after=lambda workloads: {
      "all_within_target": all(
        w["within_target"] for w in workloads.values()
      )
    },
  )


if __name__ == "__main__":
  main()
