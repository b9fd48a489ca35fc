r"""Step cost of the flatness optimizers against their limits, one process.

What is measured, per workload (``mlp``: MLP 784-1024-1024-10; ``resnet18``:
CIFAR ResNet-18 on 32x32x3 with BatchNorm), 10 classes, one fixed synthetic
batch, softmax cross-entropy. Every variant is one full jitted train step
``(params, opt_state, batch_stats, x, y) -> (params, opt_state, batch_stats,
loss)`` with params, optimizer state and batch statistics donated:

* ``sgd``: the plain step, ``optax.sgd(0.1, momentum=0.9)`` (the baseline of
  the SAM ratios; the outer optimizer of every SAM variant).
* ``sam_limit``: a hand-written two-gradient SAM step, the limit for any SAM:
  ``g = grad f(w)``, ``e = rho g / ||g||``, ``g~ = grad f(w + e)``, the sgd
  update with ``g~``.
* ``sam_ours``: ``optax.chain(flatsparse.flatness.sam(rho), sgd)`` given the
  extra argument ``value_fn``.
* ``sam_optax``: ``optax.contrib.sam(sgd, chain(normalize(), sgd(rho)),
  opaque_mode=True)`` (sync period 2: one adversarial step per update, as its
  docstring's drop-in SAM), given ``grad_fn``.
* ``sassha``: ``flatsparse.flatness.sassha(0.15, rho=0.2, k=10)`` (the full
  update; one Hessian refresh every 10 steps, reuse otherwise).
* ``adamw``: ``optax.adamw(1e-3)`` (the baseline of the second-order ratios).
* ``sophia_optax``: ``optax.contrib.sophia(1e-3)`` (Hutchinson diagonal every
  ``update_interval=10`` steps, its default), given ``obj_fn``.

``rho = 0.05`` for the three SAM variants. ``value_fn`` / ``grad_fn`` /
``obj_fn`` close over the batch and the batch statistics *before* the step,
as ``flatsparse.train.make_train_step`` builds them: the perturbed and
curvature passes never change the statistics (the hand-written limit does the
same).

How: all variants start from the same initialization (each gets copies),
are compiled (in parallel threads) and warmed up, then timed in interleaved
rounds (for each round, for each variant: ``--steps`` steps, each blocked on
and timed with ``time.perf_counter``), so drifts in machine load hit all
variants alike. ``sassha`` and ``sophia_optax`` run their state forward
without resets, and each round runs a whole number of their 10-step periods
(``--steps`` rounded up to a multiple of 10): every window holds exactly one
refresh step and 9 reuse steps, so their *mean* step is the cost per step of
a long run (the median would only see the reuse steps).

Reported per workload: median, mean and minimum step ms per variant; for
``sassha`` and ``sophia_optax`` also the median refresh and reuse step and
the median over rounds of the window means; the ratios (median, mean and
minimum; other processes on a shared machine only add time, so minima are
the cleaner figure there) ``sam_limit/sgd``, ``sam_ours/sgd``,
``sam_ours/sam_limit``, ``sam_optax/sgd``, ``sam_optax/sam_limit``,
``sassha/adamw`` and ``sophia/adamw`` (mean; the headline for the lazy
second-order methods), the per-round ``sam_ours/sam_limit`` ratios (their
spread shows the noise), the first-step losses and the largest parameter
difference of ``sam_ours`` and ``sam_optax`` from ``sam_limit`` after one
step from the same state (same work), each jitted step's compile-cache size
after timing (1: refresh and reuse steps share one program, no
recompilation) and XLA's flop and byte-access estimates, scratch bytes and
HLO instruction counts of the compiled steps, to trace a gap to extra work.

On CPU with glibc, a step whose compiled scratch exceeds 32 MiB (``sassha``,
``sophia_optax`` on the MLP: both ``lax.cond`` branches get scratch) gets it
from a fresh ``mmap`` every call and page-faults all of it;
``--malloc-no-mmap`` turns that off (as in ``benchmarks.sparsity_overhead``).

Targets (from the issue, measured there on an H100): ``sam_ours`` within 2%
of ``sam_limit`` on both workloads; ``sassha`` mean step <= 2.2x ``adamw``
on ResNet-18 (batch 256); jit cache size 1 everywhere.

XLA:CPU runs a ResNet-18 gradient inside a ``lax.cond`` branch about 27x
slower than the same gradient at top level (batch 8: 3.8 s vs 0.14 s; the
MLP's matmuls are not affected). ``sassha`` takes the gradient at ``w~`` at
top level (``jax.linearize``), so only the refresh steps (the Hessian-vector
product) of ``sassha`` and ``sophia_optax`` run inside ``lax.cond`` and
measure that on CPU: time ResNet-18 on a GPU for the target.

Run on CPU from the repo root (prints one JSON object, progress on stderr;
the default, ``mlp`` at batch 256, 15 rounds of 20 steps, takes about 35 s
on 2 idle cores, 70 s with another process on them; the ResNet-18 line below
about 110 s)::

    python -m benchmarks.flatness_cost
    python -m benchmarks.flatness_cost --workloads resnet18 --batch-size 16 \
        --variants sgd,sam_limit,sam_ours,sam_optax --steps 10 --rounds 5

On an accelerator the defaults become ``mlp,resnet18`` at batch 256, 10
rounds of 20 steps; jax must be a CUDA build. Through the device tool, from
the repo root (``$OUT`` comes back)::

    PYTHONPATH=$PWD python3 -m benchmarks.flatness_cost \
        --json-out "$OUT/flatness_cost_gpu.json"
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from benchmarks import common
from benchmarks import timing
import flatsparse as fs

PyTree = Any

SEED = 0
RHO = 0.05  # SAM radius of the three SAM variants.
SASSHA_K = 10
SOPHIA_INTERVAL = 10  # optax.contrib.sophia's default update_interval.
SAM_TARGET_PERCENT = 2.0
SASSHA_TARGET_RATIO = 2.2


# ---- the variants ------------------------------------------------------------


def make_variants() -> dict[str, common.Variant]:
  """Every variant (insertion order is the timing order within a round)."""
  sgd, Variant = common.sgd, common.Variant
  adv = optax.chain(optax.contrib.normalize(), optax.sgd(RHO))
  return {
    "sgd": Variant(sgd()),
    "sam_limit": Variant(sgd(), sam_limit_rho=RHO),
    "sam_ours": Variant(
      optax.chain(fs.flatness.sam(RHO), sgd()), common.pass_value_fn
    ),
    "sam_optax": Variant(
      optax.contrib.sam(sgd(), adv, sync_period=2, opaque_mode=True),
      lambda f: {"grad_fn": lambda p, i: jax.grad(f)(p)},
    ),
    "sassha": Variant(
      fs.flatness.sassha(0.15, rho=0.2, k=SASSHA_K),
      common.pass_value_fn,
      SASSHA_K,
    ),
    "adamw": Variant(optax.adamw(1e-3)),
    "sophia_optax": Variant(
      optax.contrib.sophia(1e-3, update_interval=SOPHIA_INTERVAL),
      lambda f: {"obj_fn": f},
      SOPHIA_INTERVAL,
    ),
  }


SCRIPT = common.Script(
  "flatness_cost",
  common.workloads("mlp", "resnet18"),
  cpu=common.Defaults("mlp", 256, 20, 15),
  accelerator=common.Defaults("mlp,resnet18", 256, 20, 10),
  make_variants=make_variants,
)
VARIANTS = SCRIPT.variants
log = SCRIPT.log


# ---- one workload ------------------------------------------------------------


def max_abs_diff(a: PyTree, b: PyTree) -> float:
  """Largest absolute difference of two trees of the same structure."""
  return float(
    max(
      jnp.max(jnp.abs(x - y))
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )
  )


def diffs_from_sam_limit(
  runners: Mapping[str, timing.StepRunner],
) -> dict[str, float]:
  """The largest parameter difference of the other SAM variants from
  ``sam_limit`` (after the first step: all start from the same state)."""
  return {
    name: max_abs_diff(runners[name].state[0], runners["sam_limit"].state[0])
    for name in ("sam_ours", "sam_optax")
    if name in runners and "sam_limit" in runners
  }


def refresh_reuse_ms(times: timing.Timings, period: int) -> dict[str, float]:
  """Medians of the refresh steps (count divisible by the period) and of the
  reuse steps."""
  return times.split_ms(lambda c: c % period == 0, "refresh", "reuse")


# ``numerator/denominator`` of every reported ratio.
RATIOS = (
  "sam_limit/sgd", "sam_ours/sgd", "sam_ours/sam_limit", "sam_optax/sgd",
  "sam_optax/sam_limit", "sassha/adamw", "sophia_optax/adamw",
)


def targets(ratios: dict[str, dict[str, float]]) -> dict[str, Any]:
  """The issue's targets of the ratios that were measured, and whether met."""
  out: dict[str, Any] = {}
  if "sam_ours_over_sam_limit" in ratios:
    pct = 100 * (ratios["sam_ours_over_sam_limit"]["median"] - 1)
    out["sam_ours_over_sam_limit_percent"] = round(pct, 2)
    out["sam_ours_within_2_percent_of_limit"] = pct <= SAM_TARGET_PERCENT
  if "sassha_over_adamw" in ratios:
    mean = ratios["sassha_over_adamw"]["mean"]
    out["sassha_mean_over_adamw_mean"] = mean
    # The target is for ResNet-18 at batch 256 on a GPU.
    out["sassha_within_2_2x_adamw"] = mean <= SASSHA_TARGET_RATIO
  return out


def bench_workload(
  workload: common.Workload, settings: common.Settings
) -> dict[str, Any]:
  """Times the variants on one workload; returns its JSON section."""
  run = SCRIPT.time_variants(
    workload, settings, SEED, after_first=diffs_from_sam_limit
  )
  times, runners = run.times, run.runners
  compiled = (
    {}
    if settings.args.no_compiled_stats
    else common.map_runners(common.compiled_stats, runners)
  )
  ratios = timing.ratios(times, RATIOS)
  return {
    **run.head(settings.batch_size),
    "window_mean_step_ms": {
      n: round(times[n].window_mean_ms(), 3) for n in run.windowed
    },
    "refresh_and_reuse_step_ms": {
      n: refresh_reuse_ms(times[n], runners[n].period) for n in run.windowed
    },
    "ratios": ratios,
    "per_round_sam_ours_over_sam_limit": timing.per_round_ratios(
      times, "sam_ours", "sam_limit"
    ),
    "targets": targets(ratios),
    **run.tail(
      {"max_param_diff_from_sam_limit_after_one_step": run.after_first},
      compiled=compiled,
    ),
  }


# ---- main --------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = SCRIPT.parser(
    __doc__,
    batch_note=" ResNet-18 on CPU: pass a small one, e.g. 16.",
    steps_note=" (sassha and sophia_optax: rounded up to whole 10-step "
    "windows)",
    variants_note=" (ratios whose two variants both ran are reported). "
    "ResNet-18 on CPU: leave out sassha and sophia_optax (see the module "
    "docstring).",
  )
  parser.add_argument(
    "--malloc-no-mmap",
    action="store_true",
    help="CPU/glibc: never mmap large blocks (see "
    "common.disable_malloc_mmap): steps whose scratch exceeds 32 MiB (sassha, "
    "sophia_optax) then stop page-faulting it afresh every call.",
  )
  parser.add_argument(
    "--no-compiled-stats",
    action="store_true",
    help="Skip XLA's cost and memory analysis of the compiled steps.",
  )
  return parser.parse_args(argv)


def config(settings: common.Settings) -> dict[str, Any]:
  """The ``config`` section of the output."""
  return {
    **settings.fields("batch_size", "steps", "rounds"),
    "warmup": timing.WARMUP_STEPS,
    **settings.fields("variants", "malloc_no_mmap"),
    "outer_optimizer": "sgd(0.1, momentum=0.9)",
    "sam_rho": RHO,
    "sam_optax": "contrib.sam(sgd, chain(contrib.normalize(), sgd(rho)), "
    "sync_period=2, opaque_mode=True)",
    "sassha": f"flatness.sassha(0.15, rho=0.2, k={SASSHA_K})",
    "adamw": "adamw(1e-3)",
    "sophia_optax": f"contrib.sophia(1e-3, update_interval="
    f"{SOPHIA_INTERVAL})",
    "targets": {
      "sam_ours_over_sam_limit_percent": SAM_TARGET_PERCENT,
      "sassha_mean_over_adamw_mean_resnet18": SASSHA_TARGET_RATIO,
    },
  }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  return SCRIPT.run(parse_args(argv), config, bench_workload)


if __name__ == "__main__":
  main()
