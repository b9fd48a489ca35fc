r"""Step cost of SAFE and ADMM against a plain and a SAM step, one process.

What is measured, per workload of ``benchmarks.common`` (``mlp``: MLP
784-1024-1024-10; ``resnet18``: CIFAR ResNet-18 with BatchNorm; ``vit_s``:
ViT-S/4 on 32x32x3), 10 classes, one fixed synthetic batch, softmax
cross-entropy. Every variant is one full jitted train step ``(params,
opt_state, batch_stats, x, y) -> (params, opt_state, batch_stats, loss)``
with params, optimizer state and batch statistics donated (the step of
``benchmarks.flatness_cost``, ``benchmarks.common.make_step``):

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

    python -m benchmarks.safe_cost \
        --json-out benchmarks/results/safe_cost_cpu.json
    python -m benchmarks.safe_cost --workloads resnet18 --batch-size 16 \
        --steps 32 --rounds 3 \
        --json-out benchmarks/results/safe_cost_cpu_resnet18.json

On an accelerator the defaults become ``mlp,resnet18,vit_s`` at batch 256,
64 steps per round, 10 rounds; jax must be a CUDA build. Through the device
tool, from the repo root (``$OUT`` comes back)::

    PYTHONPATH=$PWD python3 -m benchmarks.safe_cost \
        --json-out "$OUT/safe_cost_gpu.json"
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import optax

from benchmarks import common
from benchmarks import timing
import flatsparse as fs

RHO = 0.1  # SAM radius of sam and safe (the SAFE paper's).
LAM = 1e-3
DUAL_PERIOD = 32
SPARSITY = 0.9
TOTAL_STEPS = 10_000  # of SAFE's cosine penalty ramp (no effect on cost)


def make_variants() -> dict[str, common.Variant]:
  """Every variant (insertion order is the timing order within a round)."""
  sgd, Variant = common.sgd, common.Variant
  projection = fs.safe.Projection(sparsity=SPARSITY, scope="layer")
  return {
    "sgd": Variant(sgd()),
    "sam": Variant(
      optax.chain(fs.sam(rho=RHO), sgd()), common.pass_value_fn
    ),
    "admm": Variant(
      fs.safe.admm(sgd(), projection, lam=LAM, dual_period=DUAL_PERIOD),
      period=DUAL_PERIOD,
    ),
    "safe": Variant(
      fs.safe.safe(
        sgd(),
        projection,
        lam=LAM,
        rho=RHO,
        dual_period=DUAL_PERIOD,
        total_steps=TOTAL_STEPS,
      ),
      common.pass_value_fn,
      DUAL_PERIOD,
    ),
  }


SCRIPT = common.Script(
  "safe_cost",
  common.workloads("mlp", "resnet18", "vit_s"),
  cpu=common.Defaults("mlp", 256, 32, 15),
  accelerator=common.Defaults("mlp,resnet18,vit_s", 256, 64, 10),
  make_variants=make_variants,
)
VARIANTS = SCRIPT.variants
# ``numerator/denominator`` of every reported ratio.
RATIOS = ("sam/sgd", "admm/sgd", "safe/sgd", "safe/sam", "safe/admm")

log = SCRIPT.log


def projection_split_ms(
  times: timing.Timings, period: int
) -> dict[str, float]:
  """Median of the steps that project (count + 1 divisible by the period)
  and of the others."""
  return times.split_ms(
    lambda c: (c + 1) % period == 0, "projection", "plain"
  )


def bench_workload(
  workload: common.Workload, settings: common.Settings
) -> dict[str, Any]:
  """Times the variants on one workload; returns its JSON section."""
  # Whole dual periods, so timing starts at a period boundary.
  run = SCRIPT.time_variants(
    workload, settings, whole_periods=True, summary="mean"
  )
  return {
    **run.head(settings.batch_size),
    "projection_and_plain_step_ms": {
      n: projection_split_ms(run.times[n], run.runners[n].period)
      for n in run.windowed
    },
    "ratios": timing.ratios(run.times, RATIOS),
    **run.tail(),
  }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  return SCRIPT.parser(
    __doc__,
    batch_note=" ResNet-18 on CPU: pass a small one.",
    steps_note=f" (admm and safe: rounded up to whole {DUAL_PERIOD}-step "
    "dual periods)",
  ).parse_args(argv)


def config(settings: common.Settings) -> dict[str, Any]:
  """The ``config`` section of the output."""
  return {
    **settings.fields("batch_size", "steps", "rounds", "variants"),
    "base_optimizer": "sgd(0.1, momentum=0.9)",
    "sam": f"chain(flatsparse.sam(rho={RHO}), sgd)",
    "projection": f"Projection(sparsity={SPARSITY}, scope='layer', "
    "importance='magnitude')",
    "admm": f"safe.admm(sgd, projection, lam={LAM}, "
    f"dual_period={DUAL_PERIOD})",
    "safe": f"safe.safe(sgd, projection, lam={LAM}, rho={RHO}, "
    f"dual_period={DUAL_PERIOD})",
  }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  return SCRIPT.run(parse_args(argv), config, bench_workload)


if __name__ == "__main__":
  main()
