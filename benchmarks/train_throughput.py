"""Images/s of the generic train step against a hand-written one, one process.

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
    python -m benchmarks.train_throughput --workloads resnet18 --batch-size 64 \\
        --steps 10 --rounds 7 --json-out /tmp/train_throughput.json

On a GPU (the defaults become batch 256, 7 rounds of 20 steps) the command is
the same; jax must be a CUDA build. Through the device tool, from the repo
root (``$OUT`` comes back)::

    PYTHONPATH=$PWD python3 -m benchmarks.train_throughput \\
        --json-out "$OUT/train_throughput_gpu.json"
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from benchmarks import common
from flatsparse.train.state import TrainState, create_train_state
from flatsparse.train.step import make_train_step

PyTree = Any

NUM_CLASSES = common.NUM_CLASSES
TARGET_PERCENT = 3.0
SEED = 0
CPU_DEFAULTS = common.Defaults("resnet18,vit_s", 32, 4, 5)
ACCELERATOR_DEFAULTS = common.Defaults("resnet18,vit_s", 256, 20, 7)


# ---- workloads ----------------------------------------------------------------


Workload = common.Workload
WORKLOADS = common.workloads("resnet18", "vit_s")


def make_tx() -> optax.GradientTransformation:
  return optax.sgd(0.1, momentum=0.9)


# ---- the two steps ------------------------------------------------------------


def make_minimal_step(
  model: nn.Module, tx: optax.GradientTransformation, has_batch_stats: bool
) -> Callable[..., Any]:
  """Jitted ``(params, opt_state, batch_stats, x, y) -> (..., loss)``."""

  loss_fn = common.classification_loss(model, has_batch_stats)

  def step(
    params: PyTree,
    opt_state: PyTree,
    batch_stats: PyTree,
    x: jax.Array,
    y: jax.Array,
  ) -> tuple[PyTree, PyTree, PyTree, jax.Array]:
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      params, batch_stats, x, y
    )
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, batch_stats, loss

  return jax.jit(step, donate_argnums=(0, 1, 2))


class PlatformRunner:
  """``make_train_step`` on a ``TrainState``; the state is carried forward."""

  def __init__(
    self,
    model: nn.Module,
    tx: optax.GradientTransformation,
    state: TrainState,
    x: jax.Array,
    y: jax.Array,
  ):
    self.step = jax.jit(make_train_step(model, tx), donate_argnums=0)
    self.state, self.batch = state, {"image": x, "label": y}
    self.first_loss: float | None = None

  def args(self) -> tuple[Any, ...]:
    return self.state, self.batch

  def run(self, n: int) -> list[float]:
    times = []
    for _ in range(n):
      start = time.perf_counter()
      self.state, metrics = jax.block_until_ready(self.step(*self.args()))
      times.append(time.perf_counter() - start)
      if self.first_loss is None:
        self.first_loss = float(metrics["loss"])
    return times


class MinimalRunner:
  """The hand-written step on ``(params, opt_state, batch_stats)``."""

  def __init__(
    self,
    model: nn.Module,
    tx: optax.GradientTransformation,
    state: TrainState,
    x: jax.Array,
    y: jax.Array,
  ):
    has_bs = bool(jax.tree.leaves(state.batch_stats))
    self.step = make_minimal_step(model, tx, has_bs)
    self.state = (state.params, state.opt_state, state.batch_stats)
    self.x, self.y = x, y
    self.first_loss: float | None = None

  def args(self) -> tuple[Any, ...]:
    return (*self.state, self.x, self.y)

  def run(self, n: int) -> list[float]:
    times = []
    for _ in range(n):
      start = time.perf_counter()
      *state, loss = jax.block_until_ready(self.step(*self.args()))
      times.append(time.perf_counter() - start)
      self.state = tuple(state)
      if self.first_loss is None:
        self.first_loss = float(loss)
    return times


Runner = PlatformRunner | MinimalRunner


# ---- diagnostics --------------------------------------------------------------


log = common.make_log("train_throughput")


# ---- one workload -------------------------------------------------------------


def bench_workload(
  workload: Workload, batch_size: int, steps: int, rounds: int, warmup: int
) -> dict[str, Any]:
  start = time.perf_counter()
  log(f"workload {workload.name}, batch {batch_size}")
  tx = make_tx()
  x, y = common.make_batch(workload, batch_size)
  state = jax.jit(lambda x: create_train_state(workload.model, tx, x, SEED))(
    x[:1]
  )
  # Each variant owns (and donates) its own copy of the same initial state.
  copy = jax.jit(lambda t: jax.tree.map(jnp.copy, t))
  runners: dict[str, Runner] = {
    "platform": PlatformRunner(workload.model, tx, copy(state), x, y),
    "minimal": MinimalRunner(workload.model, tx, copy(state), x, y),
  }
  num_params = int(sum(a.size for a in jax.tree.leaves(state.params)))
  del state

  for name, runner in runners.items():
    t0 = time.perf_counter()
    runner.run(1)  # Compiles.
    log(f"  {name}: compiled and ran in {time.perf_counter() - t0:.1f}s")
    runner.run(max(0, warmup - 1))
  times: dict[str, list[list[float]]] = {name: [] for name in runners}
  for i in range(rounds):
    for name, runner in runners.items():
      times[name].append(runner.run(steps))
    log(
      f"  round {i + 1}/{rounds}: "
      + ", ".join(
        f"{n} {1e3 * statistics.median(t[-1]):.1f} ms" for n, t in times.items()
      )
    )

  cache_sizes = {name: common.cache_size(r.step) for name, r in runners.items()}
  median_s = {
    name: statistics.median(s for r in t for s in r)
    for name, t in times.items()
  }
  min_s = {name: min(s for r in t for s in r) for name, t in times.items()}
  ratio = median_s["platform"] / median_s["minimal"]
  per_round = [
    statistics.median(p) / statistics.median(m)
    for p, m in zip(times["platform"], times["minimal"])
  ]
  losses = {name: r.first_loss for name, r in runners.items()}
  return {
    "num_params": num_params,
    "batch_size": batch_size,
    "images_per_s": {
      name: round(batch_size / s, 2) for name, s in median_s.items()
    },
    "median_step_ms": {name: round(1e3 * s, 3) for name, s in median_s.items()},
    "platform_over_minimal_time_ratio": round(ratio, 4),
    "overhead_percent": round(100 * (ratio - 1), 2),
    "within_target": 100 * (ratio - 1) <= TARGET_PERCENT,
    "per_round_time_ratio": [round(r, 4) for r in per_round],
    "min_step_ms": {name: round(1e3 * s, 3) for name, s in min_s.items()},
    "min_time_ratio": round(min_s["platform"] / min_s["minimal"], 4),
    "first_step_loss": losses,
    "same_first_loss": abs(losses["platform"] - losses["minimal"])
    <= 1e-4 * max(1.0, abs(losses["minimal"])),
    "jit_cache_sizes": cache_sizes,
    "no_recompilation": common.no_recompilation(cache_sizes),
    "compiled": {name: common.compiled_stats(r) for name, r in runners.items()},
    "samples": {name: sum(len(r) for r in t) for name, t in times.items()},
    "wall_s": round(time.perf_counter() - start, 1),
  }


# ---- main ---------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  common.add_run_args(parser, WORKLOADS, CPU_DEFAULTS, ACCELERATOR_DEFAULTS)
  parser.add_argument(
    "--warmup", type=int, default=2, help="Untimed steps per variant (>= 1)."
  )
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  start = time.perf_counter()
  names, batch_size, steps, rounds = common.run_settings(
    args, WORKLOADS, CPU_DEFAULTS, ACCELERATOR_DEFAULTS
  )
  if args.warmup < 1:
    raise SystemExit(f"--warmup must be >= 1, got {args.warmup}.")
  result: dict[str, Any] = {
    "benchmark": "train_throughput",
    "device": common.device_info(),
    "config": {
      "batch_size": batch_size,
      "steps": steps,
      "rounds": rounds,
      "warmup": args.warmup,
      "optimizer": "sgd(0.1, momentum=0.9)",
      "target_overhead_percent": TARGET_PERCENT,
    },
    "workloads": {},
  }
  for name in names:
    result["workloads"][name] = bench_workload(
      WORKLOADS[name](), batch_size, steps, rounds, args.warmup
    )
  result["all_within_target"] = all(
    w["within_target"] for w in result["workloads"].values()
  )
  return common.finish(result, start, args.json_out)


if __name__ == "__main__":
  main()
