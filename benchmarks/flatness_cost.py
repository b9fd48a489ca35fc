"""Step cost of the flatness optimizers against their limits, one process.

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
    python -m benchmarks.flatness_cost --workloads resnet18 --batch-size 16 \\
        --variants sgd,sam_limit,sam_ours,sam_optax --steps 10 --rounds 5

On an accelerator the defaults become ``mlp,resnet18`` at batch 256, 10
rounds of 20 steps; jax must be a CUDA build. Through the device tool, from
the repo root (``$OUT`` comes back)::

    PYTHONPATH=$PWD python3 -m benchmarks.flatness_cost \\
        --json-out "$OUT/flatness_cost_gpu.json"
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import math
import statistics
import time
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from benchmarks import common
import flatsparse as fs

PyTree = Any
Batch = tuple[jax.Array, jax.Array]

NUM_CLASSES = common.NUM_CLASSES
SEED = 0
RHO = 0.05  # SAM radius of the three SAM variants.
SASSHA_K = 10
SOPHIA_INTERVAL = 10  # optax.contrib.sophia's default update_interval.
SAM_TARGET_PERCENT = 2.0
SASSHA_TARGET_RATIO = 2.2
WARMUP_STEPS = 3
CPU_DEFAULTS = common.Defaults("mlp", 256, 20, 15)
ACCELERATOR_DEFAULTS = common.Defaults("mlp,resnet18", 256, 20, 10)


# ---- workloads ----------------------------------------------------------------


Workload = common.Workload
WORKLOADS = common.workloads("mlp", "resnet18")


def init_variables(workload: Workload, x: jax.Array) -> tuple[PyTree, PyTree]:
  """``(params, batch_stats)``; batch stats are ``{}`` without BatchNorm."""
  variables = jax.jit(lambda k, x: workload.model.init(k, x, train=False))(
    jax.random.PRNGKey(SEED), x[:1]
  )
  return variables["params"], variables.get("batch_stats", {})


# ---- the variants -------------------------------------------------------------


def sgd() -> optax.GradientTransformation:
  return optax.sgd(0.1, momentum=0.9)


# Extra arguments of ``tx.update`` given the step's ``value_fn``.
Extras = Callable[[Callable[[PyTree], jax.Array]], dict[str, Any]]


def no_extras(value_fn: Callable[[PyTree], jax.Array]) -> dict[str, Any]:
  del value_fn
  return {}


@dataclasses.dataclass(frozen=True)
class Variant:
  tx: optax.GradientTransformation
  extras: Extras | None  # None: the hand-written SAM limit.
  period: int = 1  # Steps per refresh window (>1: timed in whole windows).


def make_variants() -> dict[str, Variant]:
  """Every variant (insertion order is the timing order within a round)."""
  adv = optax.chain(optax.contrib.normalize(), optax.sgd(RHO))
  return {
    "sgd": Variant(sgd(), no_extras),
    "sam_limit": Variant(sgd(), None),
    "sam_ours": Variant(
      optax.chain(fs.flatness.sam(RHO), sgd()),
      lambda f: {"value_fn": f},
    ),
    "sam_optax": Variant(
      optax.contrib.sam(sgd(), adv, sync_period=2, opaque_mode=True),
      lambda f: {"grad_fn": lambda p, i: jax.grad(f)(p)},
    ),
    "sassha": Variant(
      fs.flatness.sassha(0.15, rho=0.2, k=SASSHA_K),
      lambda f: {"value_fn": f},
      SASSHA_K,
    ),
    "adamw": Variant(optax.adamw(1e-3), no_extras),
    "sophia_optax": Variant(
      optax.contrib.sophia(1e-3, update_interval=SOPHIA_INTERVAL),
      lambda f: {"obj_fn": f},
      SOPHIA_INTERVAL,
    ),
  }


VARIANTS = tuple(make_variants())


def make_step(
  model: nn.Module,
  tx: optax.GradientTransformation,
  extras: Extras | None,
  has_batch_stats: bool,
) -> Callable[..., Any]:
  """Jitted ``(params, opt_state, batch_stats, x, y) -> (..., loss)``.

  With ``extras=None``, the hand-written two-gradient SAM step.
  """
  loss_fn = common.classification_loss(model, has_batch_stats)

  def step(
    params: PyTree,
    opt_state: PyTree,
    batch_stats: PyTree,
    x: jax.Array,
    y: jax.Array,
  ) -> tuple[PyTree, PyTree, PyTree, jax.Array]:
    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      params, batch_stats, x, y
    )

    def value_fn(p: PyTree) -> jax.Array:
      # Same batch and the pre-step statistics; new statistics discarded.
      return loss_fn(p, batch_stats, x, y)[0]

    if extras is None:
      scale = RHO / (optax.tree.norm(grads) + 1e-12)
      perturbed = jax.tree.map(lambda w, g: w + scale * g, params, grads)
      grads = jax.grad(value_fn)(perturbed)
      updates, opt_state = tx.update(grads, opt_state, params)
    else:
      updates, opt_state = tx.update(
        grads, opt_state, params, **extras(value_fn)
      )
    return optax.apply_updates(params, updates), opt_state, new_stats, loss

  return jax.jit(step, donate_argnums=(0, 1, 2))


# ---- timing -------------------------------------------------------------------


log = common.make_log("flatness_cost")


class StepRunner:
  """One variant and the training state it carries forward (never reset)."""

  def __init__(
    self,
    variant: Variant,
    model: nn.Module,
    params: PyTree,
    batch_stats: PyTree,
    batch: Batch,
  ):
    has_bs = bool(jax.tree.leaves(batch_stats))
    self.step = make_step(model, variant.tx, variant.extras, has_bs)
    self.period = variant.period
    self.batch = batch
    copy = jax.jit(lambda t: jax.tree.map(jnp.copy, t))
    self.state = (
      copy(params),
      jax.jit(variant.tx.init)(params),
      copy(batch_stats),
    )
    self.count = 0  # Steps taken; the optimizer's count before the next one.
    self.first_loss: float | None = None

  def args(self) -> tuple[Any, ...]:
    return (*self.state, *self.batch)

  def steps_for(self, n: int) -> int:
    """``n`` rounded up to whole refresh windows."""
    return self.period * math.ceil(n / self.period)

  def run(self, n: int) -> list[tuple[int, float]]:
    """Takes ``n`` steps; returns ``(count before the step, seconds)``."""
    out = []
    for _ in range(n):
      start = time.perf_counter()
      *state, loss = jax.block_until_ready(self.step(*self.args()))
      out.append((self.count, time.perf_counter() - start))
      self.state, self.count = tuple(state), self.count + 1
      if self.first_loss is None:
        self.first_loss = float(loss)
    return out


def max_abs_diff(a: PyTree, b: PyTree) -> float:
  return float(
    max(
      jnp.max(jnp.abs(x - y))
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )
  )


def warm_up(runners: dict[str, StepRunner]) -> dict[str, float]:
  """Compiles and runs every variant ``WARMUP_STEPS`` times, in threads
  (XLA compiles without the GIL). Returns the largest parameter difference
  of the other SAM variants from ``sam_limit`` after the first step (all
  start from the same state)."""
  with concurrent.futures.ThreadPoolExecutor(len(runners)) as pool:
    list(pool.map(lambda r: r.run(1), runners.values()))
    diffs = {
      name: max_abs_diff(runners[name].state[0], runners["sam_limit"].state[0])
      for name in ("sam_ours", "sam_optax")
      if name in runners and "sam_limit" in runners
    }
    list(pool.map(lambda r: r.run(WARMUP_STEPS - 1), runners.values()))
  return diffs


@dataclasses.dataclass
class Timings:
  rounds: list[list[tuple[int, float]]] = dataclasses.field(
    default_factory=list
  )

  def all(self) -> list[float]:
    return [s for r in self.rounds for _, s in r]

  def median_ms(self) -> float:
    return 1e3 * statistics.median(self.all())

  def mean_ms(self) -> float:
    return 1e3 * statistics.fmean(self.all())

  def min_ms(self) -> float:
    return 1e3 * min(self.all())

  def window_mean_ms(self) -> float:
    """Median over rounds of each round's mean (whole windows per round)."""
    return 1e3 * statistics.median(
      statistics.fmean(s for _, s in r) for r in self.rounds
    )

  def split_ms(
    self, is_special: Callable[[int], bool], special: str, other: str
  ) -> dict[str, float]:
    """Medians of the steps whose count satisfies ``is_special`` and of the
    others (e.g. refresh vs reuse steps, projection vs plain steps)."""
    hit = [s for r in self.rounds for c, s in r if is_special(c)]
    rest = [s for r in self.rounds for c, s in r if not is_special(c)]
    return {
      f"{special}_median": round(1e3 * statistics.median(hit), 3),
      f"{other}_median": round(1e3 * statistics.median(rest), 3),
      f"{special}_steps": len(hit),
      f"{other}_steps": len(rest),
    }

  def refresh_reuse_ms(self, period: int) -> dict[str, float]:
    return self.split_ms(lambda c: c % period == 0, "refresh", "reuse")


def time_interleaved(
  runners: dict[str, StepRunner],
  steps: int,
  rounds: int,
  log: Callable[[str], None] = log,
  summary: str = "median",
) -> dict[str, Timings]:
  """``rounds`` rounds of ``steps`` steps (whole windows) per variant,
  logging each round's ``summary`` (``'median'`` or ``'mean'``) step."""
  reduce = {"median": statistics.median, "mean": statistics.fmean}[summary]
  times = {name: Timings() for name in runners}
  for i in range(rounds):
    for name, runner in runners.items():
      times[name].rounds.append(runner.run(runner.steps_for(steps)))
    log(
      f"  round {i + 1}/{rounds}: "
      + ", ".join(
        f"{n} {1e3 * reduce(s for _, s in t.rounds[-1]):.2f}"
        for n, t in times.items()
      )
      + (" ms" if summary == "median" else f" ms ({summary})")
    )
  return times


# ---- one workload -------------------------------------------------------------


def ratio(times: dict[str, Timings], num: str, den: str) -> dict[str, float]:
  a, b = times[num], times[den]
  return {
    "median": round(a.median_ms() / b.median_ms(), 4),
    "mean": round(a.mean_ms() / b.mean_ms(), 4),
    "min": round(a.min_ms() / b.min_ms(), 4),
  }


# (name, numerator, denominator) of every reported ratio.
RATIOS = (
  ("sam_limit_over_sgd", "sam_limit", "sgd"),
  ("sam_ours_over_sgd", "sam_ours", "sgd"),
  ("sam_ours_over_sam_limit", "sam_ours", "sam_limit"),
  ("sam_optax_over_sgd", "sam_optax", "sgd"),
  ("sam_optax_over_sam_limit", "sam_optax", "sam_limit"),
  ("sassha_over_adamw", "sassha", "adamw"),
  ("sophia_optax_over_adamw", "sophia_optax", "adamw"),
)


def targets(ratios: dict[str, dict[str, float]]) -> dict[str, Any]:
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
  workload: Workload,
  variants: Sequence[str],
  batch_size: int,
  steps: int,
  rounds: int,
  with_compiled: bool,
) -> dict[str, Any]:
  start = time.perf_counter()
  log(f"workload {workload.name}, batch {batch_size}")
  batch = common.make_batch(workload, batch_size)
  params, batch_stats = init_variables(workload, batch[0])
  runners = {
    name: StepRunner(v, workload.model, params, batch_stats, batch)
    for name, v in make_variants().items()
    if name in variants
  }
  t0 = time.perf_counter()
  diffs = warm_up(runners)
  log(
    f"  compiled and warmed up {len(runners)} variants in "
    f"{time.perf_counter() - t0:.1f}s; timing {rounds} rounds"
  )
  times = time_interleaved(runners, steps, rounds)
  cache_sizes = {name: common.cache_size(r.step) for name, r in runners.items()}

  compiled: dict[str, Any] = {}
  if with_compiled:
    with concurrent.futures.ThreadPoolExecutor(len(runners)) as pool:
      compiled = dict(
        zip(runners, pool.map(common.compiled_stats, runners.values()))
      )

  ratios = {
    name: ratio(times, num, den)
    for name, num, den in RATIOS
    if num in times and den in times
  }
  ours_vs_limit = [
    statistics.median(s for _, s in o) / statistics.median(s for _, s in m)
    for o, m in zip(
      times.get("sam_ours", Timings()).rounds,
      times.get("sam_limit", Timings()).rounds,
    )
  ]
  windowed = [n for n, r in runners.items() if r.period > 1]
  losses = {name: r.first_loss for name, r in runners.items()}
  return {
    "num_params": int(sum(a.size for a in jax.tree.leaves(params))),
    "batch_size": batch_size,
    "median_step_ms": {n: round(t.median_ms(), 3) for n, t in times.items()},
    "mean_step_ms": {n: round(t.mean_ms(), 3) for n, t in times.items()},
    "min_step_ms": {n: round(t.min_ms(), 3) for n, t in times.items()},
    "window_mean_step_ms": {
      n: round(times[n].window_mean_ms(), 3) for n in windowed
    },
    "refresh_and_reuse_step_ms": {
      n: times[n].refresh_reuse_ms(runners[n].period) for n in windowed
    },
    "ratios": ratios,
    "per_round_sam_ours_over_sam_limit": [round(r, 4) for r in ours_vs_limit],
    "targets": targets(ratios),
    "first_step_loss": losses,
    "max_param_diff_from_sam_limit_after_one_step": diffs,
    "jit_cache_sizes": cache_sizes,
    "no_recompilation": common.no_recompilation(cache_sizes),
    "compiled": compiled,
    "samples": {n: len(t.all()) for n, t in times.items()},
    "wall_s": round(time.perf_counter() - start, 1),
  }


# ---- main ---------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  common.add_run_args(
    parser,
    WORKLOADS,
    CPU_DEFAULTS,
    ACCELERATOR_DEFAULTS,
    batch_note=" ResNet-18 on CPU: pass a small one, e.g. 16.",
    steps_note=" (sassha and sophia_optax: rounded up to whole 10-step "
    "windows)",
  )
  parser.add_argument(
    "--variants",
    default=",".join(VARIANTS),
    help="Comma-separated subset of: " + ",".join(VARIANTS) + " (ratios "
    "whose two variants both ran are reported). ResNet-18 on CPU: leave out "
    "sassha and sophia_optax (see the module docstring).",
  )
  parser.add_argument(
    "--malloc-no-mmap",
    action="store_true",
    help="CPU/glibc: never mmap large blocks (see sparsity_overhead's "
    "disable_malloc_mmap): steps whose scratch exceeds 32 MiB (sassha, "
    "sophia_optax) then stop page-faulting it afresh every call.",
  )
  parser.add_argument(
    "--no-compiled-stats",
    action="store_true",
    help="Skip XLA's cost and memory analysis of the compiled steps.",
  )
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  no_mmap = args.malloc_no_mmap and common.disable_malloc_mmap()
  start = time.perf_counter()
  names, batch_size, steps, rounds = common.run_settings(
    args, WORKLOADS, CPU_DEFAULTS, ACCELERATOR_DEFAULTS
  )
  variants = common.parse_names(args.variants, VARIANTS, "variants")
  result: dict[str, Any] = {
    "benchmark": "flatness_cost",
    "device": common.device_info(),
    "config": {
      "batch_size": batch_size,
      "steps": steps,
      "rounds": rounds,
      "warmup": WARMUP_STEPS,
      "variants": variants,
      "malloc_no_mmap": no_mmap,
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
    },
    "workloads": {},
  }
  for name in names:
    result["workloads"][name] = bench_workload(
      WORKLOADS[name](),
      variants,
      batch_size,
      steps,
      rounds,
      not args.no_compiled_stats,
    )
  return common.finish(result, start, args.json_out)


if __name__ == "__main__":
  main()
