r"""Cost of the sparsity wrapper relative to a dense optax step, in one process.

What is measured, per workload (``mlp``: MLP 784-1024-1024-10; ``resnet18``:
CIFAR ResNet-18 on 32x32x3 with BatchNorm), batch 256 of fixed synthetic data,
softmax cross-entropy, ``optax.sgd(0.1, momentum=0.9)``. Every variant is one
full jitted train step ``(params, opt_state, batch_stats, batch) ->
(params, opt_state, batch_stats, loss)`` built by the same function, with
params, optimizer state and batch stats donated; only the transform differs:

* ``dense``: the plain optimizer.
* ``pruned_steady``: ``magnitude_pruning(sparsity=0.9)`` wrapping it, with a
  schedule whose first update step is never reached: mask application and the
  not-taken ``lax.cond`` (the wrapper's steady-state cost).
* ``pruned_mask_update``: the same wrapper with ``Periodic(update_freq=1)``:
  every step recomputes the masks (exact top-k per leaf).
* ``pruned_packed_steady``: as ``pruned_steady`` with ``mask_storage='packed'``.
* ``pruned_host_steady`` / ``pruned_host_mask_update``: host-scheduled mode,
  the static extra argument ``mask_update=False`` / ``True`` (no conditional
  in the compiled step).
* ``gradual``: ``Polynomial(update_freq=10, 0 -> 100)``; each round times the
  100-step window from a fresh state (10 mask updates), reported as its mean.
* mask functions alone (no train step): the 90% magnitude masks of all
  prunable leaves by a JaxPruner-style full ``jnp.argsort`` top-k, and by
  ``flatsparse.sparsity.masks.masks_for_leaves`` (all leaves in one joint
  bisection); plus both on one 1024x1024 leaf.

How: everything is compiled and warmed up first (3 steps each, variants
compiling in parallel threads), then timed in interleaved rounds (for each
round, for each variant: ``--steps`` steps, each blocked on and timed with
``time.perf_counter``), so drifts in machine load hit all variants alike.

Reported (ratios are to the dense median step): ``steady_ratio``,
``mask_update_ratio``, ``packed_steady_ratio``, ``gradual_mean_ratio`` (gradual
window mean / dense mean), ``argsort_mask_update_ratio`` ((dense + argsort
masks) / dense) and, for comparison, ``topk_standalone_mask_update_ratio``;
mask memory (uint8 and packed) against parameter memory; and diagnostics: each
jitted step's compile-cache size after timing (1 = no recompilation), the
compiled step's scratch bytes (``memory_analysis``; a ``lax.cond`` reserves
scratch for its branch even when not taken) and minor page faults per call.

On CPU with glibc, a step whose scratch exceeds 32 MiB gets it from a fresh
``mmap`` every call and page-faults all its temporaries; ``--malloc-no-mmap``
turns that off (``mallopt``) to show the overhead without it.

Run (prints one JSON object, progress on stderr)::

    python -m benchmarks.sparsity_overhead
    python -m benchmarks.sparsity_overhead --workloads mlp,resnet18 \
        --steps 20 --rounds 7 --json-out /tmp/sparsity_overhead.json

Defaults: ``mlp`` on CPU (about 40 s on 2 cores), ``mlp,resnet18`` when the
default device is an accelerator (about 65 s on one H200, compiles included).
On a GPU machine the command is the same; jax must be a CUDA build (e.g.
``pip install -U "jax[cuda12]"``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
import time
from typing import Any

import jax
import jax.numpy as jnp
import optax

from benchmarks import common
from benchmarks import timing
import flatsparse as fs

PyTree = Any
Batch = tuple[jax.Array, jax.Array]

SPARSITY = 0.9
GRADUAL_WINDOW = 100
GRADUAL_FREQ = 10
NEVER = 10**9  # A schedule start step that timing never reaches.
LEAF_SHAPE = (1024, 1024)
SCRIPT = common.Script(
  "sparsity_overhead",
  common.workloads("mlp", "resnet18"),
  cpu=common.Defaults("mlp", 256, 20, 7),
  accelerator=common.Defaults("mlp,resnet18", 256, 20, 7),
)
log = SCRIPT.log


# ---- the transforms ----------------------------------------------------------


def make_transforms() -> dict[str, optax.GradientTransformation]:
  """The optimizer of every train-step variant."""

  def pruned(schedule: Any, **kwargs: Any) -> optax.GradientTransformation:
    return fs.sparsity.magnitude_pruning(
      sparsity=SPARSITY, schedule=schedule, **kwargs
    ).wrap(common.sgd())

  def host_scheduled(
    tx: optax.GradientTransformation, mask_update: bool
  ) -> optax.GradientTransformation:
    """Passes the static ``mask_update`` extra argument on every step."""
    return optax.GradientTransformationExtraArgs(
      tx.init,
      lambda u, s, p=None, **e: tx.update(
        u, s, p, mask_update=mask_update, **e
      ),
    )

  never = fs.sparsity.Periodic(update_freq=1, update_start_step=NEVER)
  return {
    "dense": common.sgd(),
    "pruned_steady": pruned(never),
    "pruned_host_steady": host_scheduled(pruned(never), False),
    "pruned_host_mask_update": host_scheduled(pruned(never), True),
    "pruned_mask_update": pruned(fs.sparsity.Periodic(update_freq=1)),
    "pruned_packed_steady": pruned(never, mask_storage="packed"),
    "gradual": pruned(
      fs.sparsity.Polynomial(
        update_freq=GRADUAL_FREQ,
        update_start_step=0,
        update_end_step=GRADUAL_WINDOW,
      )
    ),
  }


# ---- masks -------------------------------------------------------------------


def argsort_topk_mask(scores: jax.Array, sparsity: float) -> jax.Array:
  """Peer-style (JaxPruner) exact top-k mask via a full descending argsort.

  The threshold is the score at sorted position ``k - 1``; ties at it are
  kept up to that sorted index (argsort is stable), as JaxPruner does.
  """
  flat = scores.reshape(-1)
  k = max(1, round(flat.size * (1 - sparsity)))
  index = jnp.argsort(-flat)[k - 1]
  threshold = flat[index]
  keep = (flat > threshold) | (
    (flat == threshold) & (jnp.arange(flat.size) <= index)
  )
  return keep.reshape(scores.shape).astype(jnp.uint8)


def flatsparse_masks(leaves: list[jax.Array]) -> list[jax.Array]:
  """Our masks of all leaves at ``SPARSITY``: one joint bisection."""
  chosen = fs.sparsity.masks.masks_for_leaves(
    fs.sparsity.Unstructured(),
    [jnp.abs(w) for w in leaves],
    [SPARSITY] * len(leaves),
  )
  return [m.astype(jnp.uint8) for m in chosen]


def all_masks_fn(
  mask_fn: Callable[[jax.Array, float], jax.Array],
) -> Callable[[list[jax.Array]], list[jax.Array]]:
  """Jitted: the magnitude mask of every leaf at ``SPARSITY``, leaf by leaf."""
  return jax.jit(lambda leaves: [mask_fn(jnp.abs(w), SPARSITY) for w in leaves])


def prunable(params: PyTree) -> list[jax.Array]:
  """The leaves of ``params`` that pruning masks."""
  return list(fs.sparsity.distributions.prunable_leaves(params).values())


def tree_nbytes(tree: PyTree) -> int:
  """Bytes of all leaves of ``tree``."""
  return int(sum(x.nbytes for x in jax.tree.leaves(tree)))


def mask_nbytes(opt_state: PyTree) -> int:
  """Bytes of the masks a sparsity wrapper keeps in ``opt_state``."""
  return tree_nbytes(fs.sparsity.find_sparse_state(opt_state).masks)


# ---- one workload ------------------------------------------------------------


def make_runners(
  workload: common.Workload, params: PyTree, batch_stats: PyTree, batch: Batch
) -> tuple[dict[str, timing.StepRunner], dict[str, timing.Runner]]:
  """Every train-step variant (``gradual``: a fresh window per run), and
  the two all-leaf mask functions."""
  train = {
    name: common.step_runner(
      workload.model,
      tx,
      params,
      batch_stats,
      batch,
      period=GRADUAL_WINDOW if name == "gradual" else 1,
      reset=name == "gradual",
    )
    for name, tx in make_transforms().items()
  }
  leaves = prunable(params)
  masks = {
    "argsort_masks": timing.Runner(all_masks_fn(argsort_topk_mask), leaves),
    "topk_masks": timing.Runner(jax.jit(flatsparse_masks), leaves),
  }
  return train, masks


def temp_bytes(runner: timing.Runner) -> int | None:
  """Scratch memory of the compiled step (both ``lax.cond`` branches)."""
  analysis = runner.compile().memory_analysis()
  return getattr(analysis, "temp_size_in_bytes", None)


def ratios(
  ms: dict[str, float], gradual_ms: float, dense_mean_ms: float
) -> dict[str, float]:
  """The reported ratios, from median step ms, the gradual window mean and
  the dense mean step."""
  dense = ms["dense"]
  return {
    "steady_ratio": ms["pruned_steady"] / dense,
    "mask_update_ratio": ms["pruned_mask_update"] / dense,
    "packed_steady_ratio": ms["pruned_packed_steady"] / dense,
    "host_steady_ratio": ms["pruned_host_steady"] / dense,
    "host_mask_update_ratio": ms["pruned_host_mask_update"] / dense,
    "gradual_mean_ratio": gradual_ms / dense_mean_ms,
    "argsort_mask_update_ratio": (dense + ms["argsort_masks"]) / dense,
    "topk_standalone_mask_update_ratio": (dense + ms["topk_masks"]) / dense,
  }


def time_runners(
  runners: dict[str, timing.Runner], reps: dict[str, int], rounds: int
) -> dict[str, timing.Timings]:
  """Warm-up (a whole window for ``gradual``), then the interleaved rounds."""
  timing.warm_up(runners, log=log, whole_periods=True)
  return timing.time_interleaved(runners, reps, rounds, log=log)


def bench_workload(
  workload: common.Workload, settings: common.Settings
) -> dict[str, Any]:
  """Times every variant of one workload; returns its JSON section."""
  start = time.perf_counter()
  batch, params, batch_stats = common.prepare(
    workload, settings.batch_size, log
  )
  train, masks = make_runners(workload, params, batch_stats, batch)
  reps = {
    **dict.fromkeys(train, settings.steps),
    **dict.fromkeys(masks, settings.args.mask_reps),
  }
  times = time_runners({**train, **masks}, reps, settings.rounds)

  ms = {name: t.ms("median") for name, t in times.items()}
  gradual_ms = times["gradual"].window_mean_ms()
  del ms["gradual"]  # A window mean, not a median, is its figure.
  dense_mean = times["dense"].ms("mean")
  sparsity = {
    name: fs.sparsity.summarize_sparsity(train[name].state[0])[
      "prunable_sparsity"
    ]
    for name in ("pruned_mask_update", "gradual")
  }
  return {
    "num_params": common.num_params(params),
    "num_prunable_leaves": len(prunable(params)),
    "median_step_ms": {k: round(v, 3) for k, v in ms.items()},
    "dense_mean_step_ms": round(dense_mean, 3),
    "gradual_window_mean_step_ms": round(gradual_ms, 3),
    "ratios": {
      k: round(v, 4) for k, v in ratios(ms, gradual_ms, dense_mean).items()
    },
    "memory_bytes": {
      "params": tree_nbytes(params),
      "prunable_params": tree_nbytes(prunable(params)),
      "masks_uint8": mask_nbytes(train["pruned_steady"].state[1]),
      "masks_packed": mask_nbytes(train["pruned_packed_steady"].state[1]),
    },
    "final_prunable_sparsity": sparsity,
    **common.workload_checks(
      train,
      times,
      start,
      compiled_temp_bytes=common.map_runners(temp_bytes, train),
      minor_page_faults_per_call={
        name: t.faults_per_call() for name, t in times.items()
      },
    ),
  }


def bench_leaf(rounds: int, reps: int) -> dict[str, float]:
  """argsort vs ``topk_mask`` on one 1024x1024 leaf (ms per mask)."""
  leaf = [jax.random.normal(jax.random.PRNGKey(1), LEAF_SHAPE)]
  runners = {
    "argsort": timing.Runner(all_masks_fn(argsort_topk_mask), leaf),
    "topk_mask": timing.Runner(jax.jit(flatsparse_masks), leaf),
  }
  times = time_runners(runners, dict.fromkeys(runners, reps), rounds)
  out = {f"{name}_ms": round(t.ms("median"), 3) for name, t in times.items()}
  out["speedup"] = round(out["argsort_ms"] / out["topk_mask_ms"], 2)
  return out


# ---- main --------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = SCRIPT.parser(__doc__)
  parser.add_argument(
    "--mask-reps",
    type=int,
    default=2,
    help="Timed calls of each mask function per round.",
  )
  parser.add_argument(
    "--malloc-no-mmap",
    action="store_true",
    help="CPU/glibc: never mmap large blocks (see common.disable_malloc_mmap); "
    "shows the overhead without per-step page faults.",
  )
  return parser.parse_args(argv)


def config(settings: common.Settings) -> dict[str, Any]:
  """The ``config`` section of the output."""
  return {
    **settings.fields("steps", "rounds"),
    "mask_reps": settings.args.mask_reps,
    "warmup": timing.WARMUP_STEPS,
    **settings.fields("malloc_no_mmap", "batch_size"),
    "sparsity": SPARSITY,
    "optimizer": "sgd(0.1, momentum=0.9)",
    "gradual": f"Polynomial(update_freq={GRADUAL_FREQ}, "
    f"0 -> {GRADUAL_WINDOW}), {GRADUAL_WINDOW}-step "
    "window per round",
  }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  return SCRIPT.run(
    parse_args(argv),
    config,
    bench_workload,
    positive=("mask_reps",),
    before=lambda s: {
      "leaf_1024x1024": bench_leaf(s.rounds, s.args.mask_reps)
    },
  )


if __name__ == "__main__":
  main()
