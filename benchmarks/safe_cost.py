"""Step cost of SAFE and ADMM against a plain and a SAM step, one process.

What is measured, per workload of ``benchmarks.common`` (``mlp``: MLP
784-1024-1024-10; ``resnet18``: CIFAR ResNet-18 with BatchNorm; ``vit_s``:
ViT-S/4 on 32x32x3), 10 classes, one fixed synthetic batch, softmax
cross-entropy. Every variant is one full jitted train step ``(params,
opt_state, batch_stats, x, y) -> (params, opt_state, batch_stats, loss)``
with params, optimizer state and batch statistics donated (the step of
``benchmarks.flatness_cost``):

* ``sgd``: the plain step, ``optax.sgd(0.1, momentum=0.9)`` (the baseline of
  every ratio; the base optimizer of all the others).
* ``sam``: ``optax.chain(flatsparse.sam(rho=0.1), sgd)`` given ``value_fn``
  (two gradients per step).
* ``admm``: ``flatsparse.safe.admm(sgd, Projection(0.9), lam=1e-3,
  dual_period=32)`` (SAFE with rho = 0: one gradient, the penalty term, and
  every 32nd step the projection ``z = Proj(w + u)`` and ``u`` update).
* ``safe``: ``flatsparse.safe.safe(sgd, Projection(0.9), lam=1e-3, rho=0.1,
  dual_period=32)`` given ``value_fn`` (the SAM gradient plus ADMM's work).

The projection is magnitude, per layer, uniform 90% (exact counts by the
bisection top-k of ``flatsparse.sparsity.masks``), inside the step under
``lax.cond``.

How: all variants start from the same initialization, are compiled (in
parallel threads) and warmed up, then timed in interleaved rounds (for each
round, for each variant: ``--steps`` steps, each blocked on and timed), so
machine-load drifts hit all variants alike. ``--steps`` is rounded up to a
whole number of 32-step dual periods and the states run forward without
resets, so every round of ``admm`` and ``safe`` holds the same share of
projection steps and their *mean* step is the cost per step of a long run
(the median only sees the steps without a projection).

Reported per workload: median, mean and minimum step ms per variant; for
``admm`` and ``safe`` the median projection and plain step; the ratios
(median, mean, minimum) ``sam/sgd``, ``admm/sgd``, ``safe/sgd``,
``safe/sam`` and ``safe/admm``; the jit cache sizes (1: projection and plain
steps share one program); the first-step losses.

Run on CPU from the repo root (prints one JSON object, progress on stderr;
measured on the 2-core development machine while other jobs shared it: the
default, ``mlp`` at batch 256, 15 rounds of 32 steps, 49 s; the ResNet-18
line 6 min, most of it compiling and the slow CPU convolutions)::

    python -m benchmarks.safe_cost \\
        --json-out benchmarks/results/safe_cost_cpu.json
    python -m benchmarks.safe_cost --workloads resnet18 --batch-size 16 \\
        --steps 32 --rounds 3 \\
        --json-out benchmarks/results/safe_cost_cpu_resnet18.json

On an accelerator the defaults become ``mlp,resnet18,vit_s`` at batch 256,
64 steps per round, 10 rounds; jax must be a CUDA build. Through the device
tool, from the repo root (``$OUT`` comes back)::

    PYTHONPATH=$PWD python3 -m benchmarks.safe_cost \\
        --json-out "$OUT/safe_cost_gpu.json"
"""

from __future__ import annotations

import argparse
import concurrent.futures
import time
from typing import Any
from collections.abc import Sequence

import jax
import optax

from benchmarks import common
from benchmarks import flatness_cost as fc
import flatsparse as fs

RHO = 0.1  # SAM radius of sam and safe (the SAFE paper's).
LAM = 1e-3
DUAL_PERIOD = 32
SPARSITY = 0.9
TOTAL_STEPS = 10_000  # of SAFE's cosine penalty ramp (no effect on cost)
CPU_DEFAULTS = common.Defaults("mlp", 256, 32, 15)
ACCELERATOR_DEFAULTS = common.Defaults("mlp,resnet18,vit_s", 256, 64, 10)
WORKLOADS = common.workloads("mlp", "resnet18", "vit_s")


def make_variants() -> dict[str, fc.Variant]:
  """Every variant (insertion order is the timing order within a round)."""
  projection = fs.safe.Projection(sparsity=SPARSITY, scope="layer")
  value_fn = lambda f: {"value_fn": f}
  return {
    "sgd": fc.Variant(fc.sgd(), fc.no_extras),
    "sam": fc.Variant(optax.chain(fs.sam(rho=RHO), fc.sgd()), value_fn),
    "admm": fc.Variant(
      fs.safe.admm(fc.sgd(), projection, lam=LAM, dual_period=DUAL_PERIOD),
      fc.no_extras,
      DUAL_PERIOD,
    ),
    "safe": fc.Variant(
      fs.safe.safe(
        fc.sgd(),
        projection,
        lam=LAM,
        rho=RHO,
        dual_period=DUAL_PERIOD,
        total_steps=TOTAL_STEPS,
      ),
      value_fn,
      DUAL_PERIOD,
    ),
  }


VARIANTS = tuple(make_variants())
RATIOS = (
  ("sam_over_sgd", "sam", "sgd"),
  ("admm_over_sgd", "admm", "sgd"),
  ("safe_over_sgd", "safe", "sgd"),
  ("safe_over_sam", "safe", "sam"),
  ("safe_over_admm", "safe", "admm"),
)

log = common.make_log("safe_cost")


def projection_split_ms(times: fc.Timings, period: int) -> dict[str, Any]:
  """Median of the steps that project (count + 1 divisible by the period)
  and of the others."""
  return times.split_ms(lambda c: (c + 1) % period == 0, "projection",
                        "plain")


def bench_workload(
  workload: common.Workload,
  variants: Sequence[str],
  batch_size: int,
  steps: int,
  rounds: int,
) -> dict[str, Any]:
  start = time.perf_counter()
  log(f"workload {workload.name}, batch {batch_size}")
  batch = common.make_batch(workload, batch_size)
  params, batch_stats = fc.init_variables(workload, batch[0])
  runners = {
    name: fc.StepRunner(v, workload.model, params, batch_stats, batch)
    for name, v in make_variants().items()
    if name in variants
  }
  t0 = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(len(runners)) as pool:
    # Whole dual periods, so timing starts at a period boundary.
    list(pool.map(lambda r: r.run(r.steps_for(fc.WARMUP_STEPS)),
                  runners.values()))
  log(
    f"  compiled and warmed up {len(runners)} variants in "
    f"{time.perf_counter() - t0:.1f}s; timing {rounds} rounds"
  )
  times = fc.time_interleaved(runners, steps, rounds, log=log,
                              summary="mean")
  cache_sizes = {name: common.cache_size(r.step) for name, r in runners.items()}
  ratios = {
    name: fc.ratio(times, num, den)
    for name, num, den in RATIOS
    if num in times and den in times
  }
  windowed = [n for n, r in runners.items() if r.period > 1]
  return {
    "num_params": int(sum(a.size for a in jax.tree.leaves(params))),
    "batch_size": batch_size,
    "median_step_ms": {n: round(t.median_ms(), 3) for n, t in times.items()},
    "mean_step_ms": {n: round(t.mean_ms(), 3) for n, t in times.items()},
    "min_step_ms": {n: round(t.min_ms(), 3) for n, t in times.items()},
    "projection_and_plain_step_ms": {
      n: projection_split_ms(times[n], runners[n].period) for n in windowed
    },
    "ratios": ratios,
    "first_step_loss": {n: r.first_loss for n, r in runners.items()},
    "jit_cache_sizes": cache_sizes,
    "no_recompilation": common.no_recompilation(cache_sizes),
    "samples": {n: len(t.all()) for n, t in times.items()},
    "wall_s": round(time.perf_counter() - start, 1),
  }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  common.add_run_args(
    parser,
    WORKLOADS,
    CPU_DEFAULTS,
    ACCELERATOR_DEFAULTS,
    batch_note=" ResNet-18 on CPU: pass a small one.",
    steps_note=f" (admm and safe: rounded up to whole {DUAL_PERIOD}-step "
    "dual periods)",
  )
  parser.add_argument(
    "--variants",
    default=",".join(VARIANTS),
    help="Comma-separated subset of: " + ",".join(VARIANTS) + ".",
  )
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  start = time.perf_counter()
  names, batch_size, steps, rounds = common.run_settings(
    args, WORKLOADS, CPU_DEFAULTS, ACCELERATOR_DEFAULTS
  )
  variants = common.parse_names(args.variants, VARIANTS, "variants")
  result: dict[str, Any] = {
    "benchmark": "safe_cost",
    "device": common.device_info(),
    "config": {
      "batch_size": batch_size,
      "steps": steps,
      "rounds": rounds,
      "variants": variants,
      "base_optimizer": "sgd(0.1, momentum=0.9)",
      "sam": f"chain(flatsparse.sam(rho={RHO}), sgd)",
      "projection": f"Projection(sparsity={SPARSITY}, scope='layer', "
      "importance='magnitude')",
      "admm": f"safe.admm(sgd, projection, lam={LAM}, "
      f"dual_period={DUAL_PERIOD})",
      "safe": f"safe.safe(sgd, projection, lam={LAM}, rho={RHO}, "
      f"dual_period={DUAL_PERIOD})",
    },
    "workloads": {},
  }
  for name in names:
    result["workloads"][name] = bench_workload(
      WORKLOADS[name](), variants, batch_size, steps, rounds
    )
  return common.finish(result, start, args.json_out)


if __name__ == "__main__":
  main()
