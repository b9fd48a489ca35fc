r"""Cost of one-shot pruning of one linear layer (SparseGPT, Wanda) on CPU.

What is measured, for one Flax kernel ``W`` of shape ``(in, out)`` (default
1024 x 1024, float32) and synthetic calibration inputs ``X`` of
``sequences x seq_len`` tokens (default 16 x 2048 = 32768): every stage is
one jitted call on fixed arguments, compiled and warmed up first, then
timed in interleaved rounds (``benchmarks.timing``: each call blocked on
and timed with ``time.perf_counter``; the median over ``--repeats``
rounds):

* ``dense_matmul``: ``X @ W`` (the baseline of every ratio: the cost of one
  forward pass of the layer on the calibration set);
* ``hessian_statistics``: ``statistics.accumulate`` with the Gram matrix
  ``X^T X`` and the norms (SparseGPT's statistics; the Hessian is ``2/n``
  times the Gram matrix);
* ``wanda_statistics``: the same without the Gram matrix (``||X_i||^2``);
* ``sparsegpt_50``, ``sparsegpt_2_4``: ``sparsegpt_prune`` at 50%
  unstructured and 2:4, block 128, dampening 0.01, given the Hessian;
* ``wanda_row_50``: ``wanda_prune`` with the per-output (``'row'``) top-k,
  Wanda's thresholds; ``wanda_2_4`` the same for 2:4.

Reported: seconds per stage (median, minimum), the ratios to
``dense_matmul`` (median, mean, minimum), the reference figures (the
official PyTorch code on one CPU thread, same layer) beside ours, the
relative layer error ``||X W - X W'||^2 / ||X W||^2`` of every method
(and of SparseGPT's 50% mask without its weight update, and of magnitude
pruning), and the peak memory of every stage: the process's resident-set
high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` after
``malloc_trim`` before each stage; ``tracemalloc`` does not see XLA's
buffers), minus the resident set before the stage (what the stage added),
XLA's own estimate of each compiled stage's scratch memory
(``memory_analysis().temp_size_in_bytes``), and the device's
``peak_bytes_in_use`` where jax reports memory statistics (accelerators).

The inputs mimic a transformer's: ``X = (Z + Z_r A / sqrt(r)) * s`` with
Gaussian ``Z``, a rank-``r`` (32) shared component (correlated features),
and per-feature log-normal scales ``s = exp(N(0, 1/4))`` (a few large
features); ``W`` is Gaussian with variance ``1/in``. Everything is float32.

``--threads 1`` runs single-threaded: it sets ``XLA_FLAGS=
--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`` and
one-thread BLAS variables (effective because no computation ran yet in a
``python -m`` process) and pins every thread of the process to one CPU, so
whatever threads a library starts share one core. ``cpu_utilization``
(process CPU seconds over wall seconds during the timed rounds) shows what
the process used.

Run on CPU from the repo root (prints one JSON object, progress on
stderr)::

    python -m benchmarks.oneshot_layer --threads 1 \
        --json-out benchmarks/results/oneshot_layer_cpu_1thread.json
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
import ctypes
import functools
import math
import os
import resource
import time
from typing import Any

import jax
import jax.numpy as jnp

from benchmarks import common
from benchmarks import timing
from flatsparse.oneshot import magnitude
from flatsparse.oneshot import pattern as pattern_lib
from flatsparse.oneshot import sparsegpt
from flatsparse.oneshot import statistics
from flatsparse.oneshot import wanda

NAME = "oneshot_layer"
SINGLE_THREAD_XLA_FLAGS = (
  "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                         "MKL_NUM_THREADS")
RANK = 32  # of the shared component of the synthetic inputs
# The official PyTorch code (SparseGPT's add_batch / fasterprune, Wanda's
# add_batch and per-row sort), one CPU thread, a 1024 x 1024 layer, 16 x
# 2048 calibration tokens: the figures the issue quotes.
REFERENCE_SECONDS = {
  "hessian_statistics": 0.88,
  "sparsegpt_50": 0.32,
  "sparsegpt_2_4": 0.32,
  "wanda_statistics": 0.25,
  "wanda_row_50": 0.08,
}
BASELINE = "dense_matmul"

log = common.make_log(NAME)


def single_thread() -> list[int]:
  """One thread for XLA and BLAS, every thread pinned to one CPU.

  The environment variables only act before the first computation of the
  process; the pinning acts on every existing thread (and the threads they
  start later inherit it).

  Returns:
    The CPU the process runs on, as a one-element list.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if SINGLE_THREAD_XLA_FLAGS not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} {SINGLE_THREAD_XLA_FLAGS}".strip()
  for name in BLAS_THREAD_VARIABLES:
    os.environ[name] = "1"
  cpu = min(os.sched_getaffinity(0))
  for task in os.listdir("/proc/self/task"):
    try:
      os.sched_setaffinity(int(task), {cpu})
    except OSError:  # a thread that ended meanwhile
      pass
  return [cpu]


def make_layer(
  in_features: int, out_features: int, sequences: int, seq_len: int,
  seed: int = 0,
) -> tuple[jax.Array, jax.Array]:
  """``(X, W)``: synthetic inputs ``(sequences, seq_len, in)`` and a kernel."""

  @jax.jit
  def make(key):
    kz, kr, ka, ks, kw = jax.random.split(key, 5)
    shape = (sequences, seq_len, in_features)
    shared = jax.random.normal(kr, (*shape[:2], RANK)) @ jax.random.normal(
      ka, (RANK, in_features)
    )
    scales = jnp.exp(0.5 * jax.random.normal(ks, (in_features,)))
    x = (jax.random.normal(kz, shape) + shared / math.sqrt(RANK)) * scales
    w = jax.random.normal(kw, (in_features, out_features)) / math.sqrt(
      in_features
    )
    return x, w

  return jax.block_until_ready(make(jax.random.PRNGKey(seed)))


def make_runners(
  x: jax.Array, w: jax.Array, hessian: jax.Array, sq_norms: jax.Array,
  block_size: int,
) -> dict[str, timing.Runner]:
  """Every timed stage, by name (insertion order is the timing order)."""
  in_features = w.shape[0]
  half = pattern_lib.parse_pattern(0.5)
  two_four = pattern_lib.parse_pattern(None, "2:4")
  row = pattern_lib.parse_pattern(0.5, "row")

  def collect(with_gram: bool) -> Callable[[jax.Array], Any]:
    def run(x):
      init = statistics.init_statistics(in_features, with_gram=with_gram)
      return statistics.accumulate(init, x)
    return jax.jit(run)

  def prune_sparsegpt(pattern):
    return jax.jit(functools.partial(
      sparsegpt.sparsegpt_prune, pattern=pattern, block_size=block_size
    ))

  def prune_wanda(pattern):
    return jax.jit(functools.partial(wanda.wanda_prune, pattern=pattern))

  return {
    BASELINE: timing.Runner(jax.jit(jnp.matmul), x, w),
    "hessian_statistics": timing.Runner(collect(True), x),
    "wanda_statistics": timing.Runner(collect(False), x),
    "sparsegpt_50": timing.Runner(prune_sparsegpt(half), w, hessian),
    "sparsegpt_2_4": timing.Runner(prune_sparsegpt(two_four), w, hessian),
    "wanda_row_50": timing.Runner(prune_wanda(row), w, sq_norms),
    "wanda_2_4": timing.Runner(prune_wanda(two_four), w, sq_norms),
  }


@jax.jit
def relative_error(x: jax.Array, w: jax.Array, pruned: jax.Array) -> jax.Array:
  """``||X W - X W'||^2 / ||X W||^2`` (float32, HIGHEST precision)."""
  highest = jax.lax.Precision.HIGHEST
  dense = jnp.matmul(x, w, precision=highest)
  diff = dense - jnp.matmul(x, pruned.astype(w.dtype), precision=highest)
  return jnp.sum(jnp.square(diff)) / jnp.sum(jnp.square(dense))


def layer_errors(
  x: jax.Array, w: jax.Array, runners: dict[str, timing.Runner],
) -> dict[str, float]:
  """The relative layer error of every pruning stage and of two controls."""
  errors = {}
  for name, runner in runners.items():
    if name.startswith(("sparsegpt", "wanda_row", "wanda_2")):
      pruned, mask = runner.fn(*runner.args())
      errors[name] = float(relative_error(x, w, pruned))
      if name == "sparsegpt_50":  # the same mask without the update
        errors["sparsegpt_50_mask_only"] = float(
          relative_error(x, w, jnp.where(mask, w, 0.0))
        )
  for label, scope in (("magnitude_50", "layer"), ("magnitude_2_4", "2:4")):
    pattern = pattern_lib.parse_pattern(
      0.5 if scope == "layer" else None, scope
    )
    errors[label] = float(
      relative_error(x, w, magnitude.magnitude_prune(w, pattern)[0])
    )
  return {k: round(v, 6) for k, v in errors.items()}


def _rss_kb(field: str) -> int | None:
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1])
  except OSError:
    pass
  return None


def _reset_peak_rss() -> bool:
  """Returns freed heap pages to the system, then resets ``VmHWM``."""
  try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):  # not glibc: the peak may start higher
    pass
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def peak_memory(runners: dict[str, timing.Runner]) -> dict[str, Any]:
  """Peak memory of one call of every stage (see the module docstring)."""
  out: dict[str, Any] = {"method": "", "peak_rss_mb": {},
                         "peak_rss_over_start_mb": {},
                         "xla_temp_mb": {}}
  exact = True
  for name, runner in runners.items():
    exact = _reset_peak_rss() and exact
    before = _rss_kb("VmRSS")
    jax.block_until_ready(runner.fn(*runner.args()))
    peak = _rss_kb("VmHWM")
    if peak is None or before is None:  # not Linux: the lifetime maximum
      peak, before, exact = resource.getrusage(
        resource.RUSAGE_SELF
      ).ru_maxrss, 0, False
    out["peak_rss_mb"][name] = round(peak / 1024, 1)
    out["peak_rss_over_start_mb"][name] = round((peak - before) / 1024, 1)
    memory = runner.compile().memory_analysis()
    if memory is not None:
      out["xla_temp_mb"][name] = round(memory.temp_size_in_bytes / 2**20, 1)
  out["method"] = (
    "process VmHWM reset per stage (malloc_trim, /proc/self/clear_refs)"
    if exact
    else "process ru_maxrss (lifetime maximum; stages not separated)"
  )
  stats = jax.devices()[0].memory_stats()
  if stats:
    out["device_peak_bytes_in_use"] = stats.get("peak_bytes_in_use")
  return out


def bench(args: argparse.Namespace, pinned: list[int] | None) -> dict[str, Any]:
  """The JSON section of the layer."""
  start = time.perf_counter()
  x, w = make_layer(args.in_features, args.out_features, args.sequences,
                    args.seq_len)
  log(f"layer {args.in_features} x {args.out_features}, "
      f"{args.sequences} x {args.seq_len} tokens")
  stats = jax.jit(
    lambda x: statistics.accumulate(
      statistics.init_statistics(args.in_features), x
    )
  )(x)
  hessian = statistics.hessian(stats)
  runners = make_runners(x, w, hessian, stats.sq_norms, args.block_size)
  timing.warm_up(runners, steps=1, log=log, threads=False)
  cpu0, wall0 = time.process_time(), time.perf_counter()
  times = timing.time_interleaved(runners, 1, args.repeats, log=log)
  utilization = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
  seconds = {n: round(t.ms() / 1e3, 6) for n, t in times.items()}
  return {
    "seconds": seconds,
    "seconds_min": {n: round(t.ms("min") / 1e3, 6) for n, t in times.items()},
    "ratios": timing.ratios(
      times, [f"{n}/{BASELINE}" for n in runners if n != BASELINE]
    ),
    "reference_seconds": REFERENCE_SECONDS,
    "ours_over_reference": {
      n: round(seconds[n] / s, 3) for n, s in REFERENCE_SECONDS.items()
    },
    "layer_error": layer_errors(x, w, runners),
    "memory": peak_memory(runners),
    "cpu_utilization": round(utilization, 2),
    "pinned_cpus": pinned,
    **common.workload_checks(runners, times, start),
  }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sizes = (("in-features", 1024), ("out-features", 1024), ("sequences", 16),
           ("seq-len", 2048), ("block-size", 128), ("repeats", 5))
  for flag, default in sizes:
    parser.add_argument(
      f"--{flag}", f"--{flag.replace('-', '_')}", type=int, default=default,
      help=f"Default {default}.",
    )
  parser.add_argument(
    "--threads", type=int, default=0, choices=(0, 1),
    help="1: single-threaded, pinned to one CPU; 0 (default): as XLA "
    "pleases.",
  )
  parser.add_argument(
    "--json-out", default=None, help="Also write the JSON object to this path."
  )
  args = parser.parse_args(argv)
  for flag, _ in sizes:
    value = getattr(args, flag.replace("-", "_"))
    if value < 1:
      raise SystemExit(f"--{flag} must be >= 1, got {value}.")
  if args.in_features % 4 or args.block_size % 4:
    raise SystemExit(
      f"--in-features and --block-size must be multiples of 4 (2:4 groups "
      f"run along the input axis), got {args.in_features} and "
      f"{args.block_size}."
    )
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  pinned = single_thread() if args.threads == 1 else None
  start = time.perf_counter()
  name = f"layer_{args.in_features}x{args.out_features}"
  result = {
    "benchmark": NAME,
    "device": common.device_info(),
    "config": {
      "in_features": args.in_features,
      "out_features": args.out_features,
      "sequences": args.sequences,
      "seq_len": args.seq_len,
      "tokens": args.sequences * args.seq_len,
      "block_size": args.block_size,
      "repeats": args.repeats,
      "threads": args.threads or "all",
      "dtype": "float32",
      "dampening": 0.01,
      "inputs": f"(Z + Z_r A / sqrt({RANK})) * exp(N(0, 1/4)) per feature",
    },
    "workloads": {name: bench(args, pinned)},
  }
  return common.finish(result, start, args.json_out)


if __name__ == "__main__":
  main()
