"""Cost of the sparsity wrapper relative to a dense optax step, in one process.

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
* ``gradual``: ``Polynomial(update_freq=10, 0 -> 100)``; each round times the
  100-step window from a fresh state (10 mask updates), reported as its mean.
* mask functions alone (no train step): the 90% magnitude masks of all
  prunable leaves by a JaxPruner-style full ``jnp.argsort`` top-k, and by
  ``flatsparse.sparsity.topk_mask``; plus both on one 1024x1024 leaf.

How: everything is compiled and warmed up first (3 steps each), then timed in
interleaved rounds (for each round, for each variant: ``--steps`` steps, each
blocked on and timed with ``time.perf_counter``), so drifts in machine load hit
all variants alike. Reported: median ms per step, ratios to the dense median
(``steady_ratio``, ``mask_update_ratio``, ``packed_steady_ratio``,
``gradual_mean_ratio`` = gradual window mean / dense mean,
``argsort_mask_update_ratio`` = (dense + argsort masks) / dense), mask memory
(uint8 and packed) against parameter memory, and each jitted step's compile
cache size after timing (1 means no recompilation).

Run (prints one JSON object; defaults take < 3 minutes on a 2-core CPU for
``mlp``, and on one GPU for ``mlp`` + ``resnet18``)::

    python -m benchmarks.sparsity_overhead
    python -m benchmarks.sparsity_overhead --workloads mlp,resnet18 \\
        --steps 10 --rounds 5 --json-out /tmp/sparsity_overhead.json

On a GPU machine the same command runs both workloads by default (install the
CUDA jax wheels first, e.g. ``pip install -U "jax[cuda12]"``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import statistics
import time
from typing import Any, Callable, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import flatsparse as fs
from flatsparse import models

PyTree = Any
Batch = tuple[jax.Array, jax.Array]
State = tuple[PyTree, PyTree, PyTree]  # (params, opt_state, batch_stats)

SPARSITY = 0.9
BATCH_SIZE = 256
NUM_CLASSES = 10
WARMUP_STEPS = 3
GRADUAL_WINDOW = 100
GRADUAL_FREQ = 10
NEVER = 10**9  # A schedule start step that timing never reaches.
LEAF_SHAPE = (1024, 1024)


# ---- workloads ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    model: nn.Module
    input_shape: tuple[int, ...]  # One example, without the batch axis.


WORKLOADS: dict[str, Callable[[], Workload]] = {
    "mlp": lambda: Workload(
        "mlp", models.MLP(hidden=(1024, 1024), num_classes=NUM_CLASSES), (784,)),
    "resnet18": lambda: Workload(
        "resnet18", models.ResNet18(num_classes=NUM_CLASSES), (32, 32, 3)),
}


def make_batch(workload: Workload, seed: int = 0) -> Batch:
    """Fixed synthetic inputs and labels."""
    kx, ky = jax.random.split(jax.random.PRNGKey(seed))
    x = jax.random.normal(kx, (BATCH_SIZE, *workload.input_shape), jnp.float32)
    y = jax.random.randint(ky, (BATCH_SIZE,), 0, NUM_CLASSES)
    return x, y


def init_variables(workload: Workload, batch: Batch,
                   seed: int = 0) -> tuple[PyTree, PyTree]:
    """``(params, batch_stats)``; batch stats are ``{}`` without BatchNorm."""
    variables = jax.jit(lambda k, x: workload.model.init(k, x, train=False))(
        jax.random.PRNGKey(seed), batch[0])
    return variables["params"], variables.get("batch_stats", {})


# ---- the one train-step builder ---------------------------------------------


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    has_batch_stats: bool) -> Callable[..., Any]:
    """Jitted ``(params, opt_state, batch_stats, batch) -> (..., loss)``."""

    def loss_fn(params: PyTree, batch_stats: PyTree,
                batch: Batch) -> tuple[jax.Array, PyTree]:
        x, y = batch
        if has_batch_stats:
            logits, new_vars = model.apply(
                {"params": params, "batch_stats": batch_stats}, x, train=True,
                mutable=["batch_stats"])
            batch_stats = new_vars["batch_stats"]
        else:
            logits = model.apply({"params": params}, x, train=True)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, batch_stats

    def step(params, opt_state, batch_stats, batch):
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, batch_stats, loss

    return jax.jit(step, donate_argnums=(0, 1, 2))


def make_transforms() -> dict[str, optax.GradientTransformation]:
    """The optimizer of every train-step variant."""
    def base() -> optax.GradientTransformation:
        return optax.sgd(0.1, momentum=0.9)

    def pruned(schedule: Any, **kwargs: Any) -> optax.GradientTransformation:
        return fs.sparsity.magnitude_pruning(
            sparsity=SPARSITY, schedule=schedule, **kwargs).wrap(base())

    never = fs.sparsity.Periodic(update_freq=1, update_start_step=NEVER)
    return {
        "dense": base(),
        "pruned_steady": pruned(never),
        "pruned_mask_update": pruned(fs.sparsity.Periodic(update_freq=1)),
        "pruned_packed_steady": pruned(never, mask_storage="packed"),
        "gradual": pruned(fs.sparsity.Polynomial(
            update_freq=GRADUAL_FREQ, update_start_step=0,
            update_end_step=GRADUAL_WINDOW)),
    }


# ---- timed things -------------------------------------------------------------


def timed_call(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """Runs ``fn(*args)``, blocks on the result; returns it and seconds taken."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


class StepRunner:
    """One train-step variant and the training state it carries forward.

    With ``window``, every ``run`` starts from a fresh state (built outside the
    timed region) and times exactly ``window`` steps.
    """

    def __init__(self, step: Callable[..., Any], tx: optax.GradientTransformation,
                 params: PyTree, batch_stats: PyTree, batch: Batch,
                 window: int | None = None):
        self.step, self.batch, self.window = step, batch, window
        copy = jax.jit(lambda t: jax.tree.map(jnp.copy, t))
        init = jax.jit(tx.init)
        self._fresh = lambda: (copy(params), init(params), copy(batch_stats))
        self.state: State = self._fresh()

    def run(self, n: int) -> list[float]:
        if self.window is not None:
            self.state, n = jax.block_until_ready(self._fresh()), self.window
        times = []
        for _ in range(n):
            out, dt = timed_call(self.step, *self.state, self.batch)
            self.state = tuple(out[:3])
            times.append(dt)
        return times


class FnRunner:
    """A function of fixed arguments (e.g. all masks of the params)."""

    def __init__(self, fn: Callable[..., Any], *args: Any):
        self.fn, self.args = fn, args

    def run(self, n: int) -> list[float]:
        return [timed_call(self.fn, *self.args)[1] for _ in range(n)]


def time_interleaved(runners: dict[str, Any], reps: dict[str, int],
                     rounds: int) -> dict[str, list[list[float]]]:
    """Warm-up, then ``rounds`` rounds; returns ``{name: [round times]}``."""
    for runner in runners.values():
        runner.run(WARMUP_STEPS)
    times: dict[str, list[list[float]]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            times[name].append(runner.run(reps[name]))
    return times


def median_ms(rounds: list[list[float]]) -> float:
    return 1e3 * statistics.median(t for r in rounds for t in r)


def mean_ms(rounds: list[list[float]]) -> float:
    return 1e3 * statistics.fmean(t for r in rounds for t in r)


# ---- masks --------------------------------------------------------------------


def argsort_topk_mask(scores: jax.Array, sparsity: float) -> jax.Array:
    """Peer-style (JaxPruner) exact top-k mask via a full descending argsort.

    The threshold is the score at sorted position ``k - 1``; ties at it are
    kept up to that sorted index (argsort is stable), as JaxPruner does.
    """
    flat = scores.reshape(-1)
    k = max(1, round(flat.size * (1 - sparsity)))
    index = jnp.argsort(-flat)[k - 1]
    threshold = flat[index]
    keep = (flat > threshold) | ((flat == threshold)
                                 & (jnp.arange(flat.size) <= index))
    return keep.reshape(scores.shape).astype(jnp.uint8)


def flatsparse_topk_mask(scores: jax.Array, sparsity: float) -> jax.Array:
    k = scores.size - round(sparsity * scores.size)
    return fs.sparsity.topk_mask(scores, k).astype(jnp.uint8)


def all_masks_fn(mask_fn: Callable[[jax.Array, float], jax.Array]
                 ) -> Callable[[list[jax.Array]], list[jax.Array]]:
    """Jitted: the magnitude mask of every leaf at ``SPARSITY``."""
    return jax.jit(lambda leaves: [mask_fn(jnp.abs(w), SPARSITY)
                                   for w in leaves])


def prunable(params: PyTree) -> list[jax.Array]:
    return list(fs.sparsity.distributions.prunable_leaves(params).values())


def tree_nbytes(tree: PyTree) -> int:
    return int(sum(x.nbytes for x in jax.tree.leaves(tree)))


def mask_nbytes(opt_state: PyTree) -> int:
    return tree_nbytes(fs.sparsity.find_sparse_state(opt_state).masks)


# ---- one workload -------------------------------------------------------------


def cache_size(fn: Any) -> int | None:
    size = getattr(fn, "_cache_size", None)
    return size() if callable(size) else None


def bench_workload(workload: Workload, steps: int, rounds: int,
                   mask_reps: int) -> dict[str, Any]:
    """Times every variant of one workload; returns its JSON section."""
    start = time.perf_counter()
    batch = make_batch(workload)
    params, batch_stats = init_variables(workload, batch)
    has_bs = bool(jax.tree.leaves(batch_stats))
    runners: dict[str, Any] = {}
    for name, tx in make_transforms().items():
        runners[name] = StepRunner(
            make_train_step(workload.model, tx, has_bs), tx, params,
            batch_stats, batch, GRADUAL_WINDOW if name == "gradual" else None)
    leaves = prunable(params)
    runners["argsort_masks"] = FnRunner(all_masks_fn(argsort_topk_mask), leaves)
    runners["topk_masks"] = FnRunner(all_masks_fn(flatsparse_topk_mask), leaves)
    reps = {name: steps for name in runners}
    reps.update(argsort_masks=mask_reps, topk_masks=mask_reps)
    times = time_interleaved(runners, reps, rounds)

    ms = {name: median_ms(t) for name, t in times.items()}
    gradual_window_ms = 1e3 * statistics.median(
        statistics.fmean(r) for r in times["gradual"])
    dense, dense_mean = ms["dense"], mean_ms(times["dense"])
    states = {name: r.state for name, r in runners.items()
              if isinstance(r, StepRunner)}
    return {
        "num_params": int(sum(x.size for x in jax.tree.leaves(params))),
        "num_prunable_leaves": len(leaves),
        "median_step_ms": {k: round(v, 3) for k, v in ms.items()
                           if k != "gradual"},
        "dense_mean_step_ms": round(dense_mean, 3),
        "gradual_window_mean_step_ms": round(gradual_window_ms, 3),
        "ratios": {
            "steady_ratio": ms["pruned_steady"] / dense,
            "mask_update_ratio": ms["pruned_mask_update"] / dense,
            "packed_steady_ratio": ms["pruned_packed_steady"] / dense,
            "gradual_mean_ratio": gradual_window_ms / dense_mean,
            "argsort_mask_update_ratio": (dense + ms["argsort_masks"]) / dense,
            "topk_standalone_mask_update_ratio":
                (dense + ms["topk_masks"]) / dense,
        },
        "memory_bytes": {
            "params": tree_nbytes(params),
            "prunable_params": tree_nbytes(leaves),
            "masks_uint8": mask_nbytes(states["pruned_steady"][1]),
            "masks_packed": mask_nbytes(states["pruned_packed_steady"][1]),
        },
        "final_prunable_sparsity": {
            name: fs.sparsity.summarize_sparsity(states[name][0])[
                "prunable_sparsity"]
            for name in ("pruned_mask_update", "gradual")},
        "jit_cache_sizes": {name: cache_size(r.step)
                            for name, r in runners.items()
                            if isinstance(r, StepRunner)},
        "samples": {name: sum(len(r) for r in t) for name, t in times.items()},
        "wall_s": round(time.perf_counter() - start, 1),
    }


def bench_leaf(rounds: int, reps: int) -> dict[str, float]:
    """argsort vs ``topk_mask`` on one 1024x1024 leaf (ms per mask)."""
    leaf = [jax.random.normal(jax.random.PRNGKey(1), LEAF_SHAPE)]
    runners = {"argsort": FnRunner(all_masks_fn(argsort_topk_mask), leaf),
               "topk_mask": FnRunner(all_masks_fn(flatsparse_topk_mask), leaf)}
    times = time_interleaved(runners, dict.fromkeys(runners, reps), rounds)
    out = {f"{name}_ms": round(median_ms(t), 3) for name, t in times.items()}
    out["speedup"] = round(out["argsort_ms"] / out["topk_mask_ms"], 2)
    return out


# ---- main ---------------------------------------------------------------------


def device_info() -> dict[str, Any]:
    device = jax.devices()[0]
    return {
        "device_kind": device.device_kind,
        "platform": device.platform,
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "optax": optax.__version__,
        "flax": flax.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workloads", default=None,
        help="Comma-separated subset of: " + ",".join(WORKLOADS)
        + ". Default: mlp on CPU, mlp,resnet18 on an accelerator.")
    parser.add_argument("--steps", type=int, default=10,
                        help="Timed steps per variant per round.")
    parser.add_argument("--rounds", type=int, default=5,
                        help="Interleaved rounds.")
    parser.add_argument("--mask-reps", type=int, default=2,
                        help="Timed calls of each mask function per round.")
    parser.add_argument("--json-out", default=None,
                        help="Also write the JSON object to this path.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    start = time.perf_counter()
    on_cpu = jax.devices()[0].platform == "cpu"
    names = (args.workloads or ("mlp" if on_cpu else "mlp,resnet18")).split(",")
    unknown = set(names) - set(WORKLOADS)
    if unknown:
        raise SystemExit(f"Unknown workloads {sorted(unknown)}; "
                         f"allowed: {', '.join(WORKLOADS)}.")
    result: dict[str, Any] = {
        "benchmark": "sparsity_overhead",
        "device": device_info(),
        "config": {"steps": args.steps, "rounds": args.rounds,
                   "mask_reps": args.mask_reps, "warmup": WARMUP_STEPS,
                   "batch_size": BATCH_SIZE, "sparsity": SPARSITY,
                   "optimizer": "sgd(0.1, momentum=0.9)",
                   "gradual": f"Polynomial(update_freq={GRADUAL_FREQ}, "
                              f"0 -> {GRADUAL_WINDOW}), {GRADUAL_WINDOW}-step "
                              "window per round"},
        "leaf_1024x1024": bench_leaf(args.rounds, args.mask_reps),
        "workloads": {},
    }
    for name in names:
        result["workloads"][name] = bench_workload(
            WORKLOADS[name](), args.steps, args.rounds, args.mask_reps)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
