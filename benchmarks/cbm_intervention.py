r"""Cost of a full test-time intervention curve against a per-example loop.

What is measured: the task error after ``0..k`` corrected concepts
(individual concepts, per-example budget) of a concept bottleneck model on
``--examples`` (default 10,000) synthetic test examples
(``load_concept_synthetic``: ``--concepts`` 100, ``--classes`` 100), for
every criterion of ``criteria.CRITERIA``, two ways:

* ``vectorized``: ``intervention.intervention_curve``, the whole curve of
  one criterion in one jitted computation (scores, ranks and a ``lax.map``
  of ``f`` over steps), host conversions included;
* ``baseline``: the reference code's loop, on the same model: for each
  example, its concept scores from a jitted function on a batch of one
  (the same ``criteria.concept_scores``), an argsort of them on the host
  (numpy, stable, highest first), then for ``n = 0..k`` the ``n`` best
  concepts set to the truth and a jitted ``f`` called on that one example
  (its argmax compared with the class on the host).

The loop is slow, so it runs on the first ``--baseline-examples`` (200)
examples only and its time is **extrapolated** linearly to ``--examples``
(``seconds * examples / baseline_examples``: every example costs the same
``k + 2`` calls); both the measured and the extrapolated seconds are
reported. ``speedup`` is the extrapolated baseline over the vectorized
seconds, per criterion and overall (sums); the issue's target is 20x on CPU.

The model: ``g = MLP(hidden=(100,), num_classes=concepts)``, ``f`` linear,
bottleneck ``'sigmoid'`` (corrections 0 / 1), mode ``'sequential'``. No
training is done: the cost does not depend on the parameter values (the
same computations run on any), so ``g`` keeps its random initialization.
Only so that the curves (and the agreement check) are not flat, ``f`` is
set by hand to the nearest class concept vector, ``f_y(v) = -||v -
c_y||^2 + ||v||^2 = 2 c_y . v - |c_y|`` (exact once every concept is
corrected); a random ``f`` would cost the same. The concept logits of
``g`` are computed once, untimed (both paths start from them).

Timing (``benchmarks.timing``): every runner is called once first (the
vectorized path's compile, reported as ``first_call_s`` and ``compile_s`` =
first call minus the median call; the baseline's jitted functions are
compiled on two examples), then timed in ``--repeats`` interleaved rounds,
each call blocked on (``jax.block_until_ready``); the median is reported.

Agreement (``agree``): for the deterministic criteria UCP and ECTP, the
baseline's per-example errors on its subset must equal
``intervention_curve`` on each example alone (a batch of one), and the mean
of them must equal ``intervention_curve`` on the whole subset.

Run on CPU from the repo root (prints one JSON object, progress on
stderr)::

    python -m benchmarks.cbm_intervention \
        --out benchmarks/results/cbm_intervention_cpu.json
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
import functools
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from benchmarks import timing
from flatsparse import models
from flatsparse.cbm import analysis
from flatsparse.cbm import criteria as criteria_lib
from flatsparse.cbm import intervention
from flatsparse.cbm.model import bottleneck_values
from flatsparse.cbm.model import ConceptBottleneck
from flatsparse.data import concepts as concepts_lib

NAME = "cbm_intervention"
TARGET_SPEEDUP = 20.0  # The target on CPU.
CHECKED = ("ucp", "ectp")  # Deterministic criteria of the agreement check.
TEST_FRACTION = 0.15  # Of each class's examples (load_concept_synthetic).
BOTTLENECK = "sigmoid"

log = common.make_log(NAME)


# ---- data and model ----------------------------------------------------------


def load_test_rows(examples: int, concepts: int, classes: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
  """Exactly ``examples`` rows of the synthetic test split.

  ``samples_per_class`` is the smallest whose test split has at least
  ``examples`` rows (667 for 10,000 rows of 100 classes: exactly 100 per
  class); a larger split is trimmed to a fixed random subset.

  Returns:
    ``(x, classes (N,), concepts (N, k), samples_per_class, split rows)``.
  """
  per_class = max(1, math.ceil(examples / (TEST_FRACTION * classes)))
  while True:
    ds = concepts_lib.load_concept_synthetic(
        "test", num_concepts=concepts, num_classes=classes,
        num_class_groups=class_groups(classes), samples_per_class=per_class)
    if ds.labels.shape[0] >= examples:
      break
    per_class += 1
  rows = ds.labels.shape[0]
  keep = np.arange(rows)
  if rows > examples:
    keep = np.sort(np.random.default_rng(0).permutation(rows)[:examples])
  y, c = concepts_lib.split_concept_labels(ds.labels[keep])
  return np.asarray(ds.images)[keep], y, c, per_class, rows


def class_groups(classes: int) -> int:
  """Class groups of the synthetic task: pairs of classes (the default
  50 for 100), or one class per group for an odd count."""
  return classes // 2 if classes % 2 == 0 else classes


def nearest_class_head(params: Any, concepts: int, classes: int) -> Any:
  """``params`` with ``f`` the nearest class concept vector rule (kernel
  ``2 c_y``, bias ``-|c_y|``; module docstring)."""
  c = concepts_lib.synthetic_class_concepts(
      concepts, classes, class_groups(classes)).astype(np.float32)
  head = {"kernel": jnp.asarray(2.0 * c.T), "bias": jnp.asarray(-c.sum(1))}
  return {**params, "task_head": head}


def make_model(concepts: int, classes: int) -> ConceptBottleneck:
  """The benchmarked CBM (module docstring)."""
  return ConceptBottleneck(
      concept_model=models.MLP(hidden=(100,), num_classes=concepts),
      num_classes=classes, bottleneck=BOTTLENECK, mode="sequential")


# ---- the per-example baseline ------------------------------------------------


class Baseline:
  """The reference code's loop over examples and steps (module docstring).

  Attributes:
    scores_one: Jitted ``(f_params, logits (1, k), concepts (1, k), key)
      -> (scores (k,), values (k,))`` of one criterion.
    predict_one: Jitted ``(f_params, values (k,)) -> class``: ``f``'s
      argmax on one example.
  """

  def __init__(self, model: ConceptBottleneck, criterion: str,
               low: np.ndarray, high: np.ndarray):
    def predict(f_params, v):
      return model.apply({"params": f_params}, v,
                         method=ConceptBottleneck.predict_from_concepts)

    @jax.jit
    def scores_one(f_params, logits, concepts, key):
      values = bottleneck_values(logits, model.bottleneck)
      scores = criteria_lib.concept_scores(
          criterion, concept_logits=logits, concepts=concepts,
          values=values, predict=functools.partial(predict, f_params),
          low=jnp.asarray(low), high=jnp.asarray(high), key=key)
      return scores[0], values[0]

    self.scores_one = scores_one
    self.predict_one = jax.jit(
        lambda f_params, v: jnp.argmax(predict(f_params, v[None])[0]))
    self.low, self.high = low, high

  def errors(self, f_params: Any, logits: np.ndarray, concepts: np.ndarray,
             classes: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """bool ``(N, k + 1)``: whether example ``i`` is misclassified after
    ``n`` corrections, one example and one step at a time."""
    n, k = logits.shape
    out = np.empty((n, k + 1), bool)
    for i in range(n):
      scores, values = jax.device_get(self.scores_one(
          f_params, logits[i:i + 1], concepts[i:i + 1], keys[i]))
      order = np.argsort(-scores, kind="stable")
      truth = np.where(concepts[i] > 0, self.high, self.low)
      v = np.array(values)
      for step in range(k + 1):
        if step:
          j = order[step - 1]
          v[j] = truth[j]
        out[i, step] = int(self.predict_one(f_params, v)) != classes[i]
    return out


class KeepLast(timing.Runner):
  """A runner that keeps its last result (:attr:`last`)."""

  last: Any = None

  def update(self, out: Any) -> None:
    """Keeps ``out``."""
    self.last = out


# ---- the benchmark -----------------------------------------------------------


def agreement(model: ConceptBottleneck, f_params: Any, logits: np.ndarray,
              concepts: np.ndarray, classes: np.ndarray,
              loop_errors: np.ndarray, criterion: str) -> dict[str, Any]:
  """The baseline's errors on its subset against ``intervention_curve``'s,
  per example (batches of one) and as the subset's curve."""
  k = logits.shape[1]

  def curve(rows: slice) -> np.ndarray:
    return intervention.intervention_curve(
        model, f_params, logits[rows], concepts[rows], classes[rows],
        criterion=criterion, max_steps=k)

  single = np.stack([curve(slice(i, i + 1))
                     for i in range(loop_errors.shape[0])])
  mismatched = int(np.sum(np.any(single != loop_errors, axis=1)))
  diff = float(np.max(np.abs(curve(slice(0, loop_errors.shape[0]))
                             - loop_errors.mean(0))))
  return {"mismatched_examples": mismatched,
          "subset_curve_max_abs_diff": diff,
          "agree": mismatched == 0 and diff < 1e-6}


def bench(args: argparse.Namespace, chosen: Sequence[str]) -> dict[str, Any]:
  """The JSON section of the synthetic test set."""
  start = time.perf_counter()
  x, classes, concepts, per_class, rows = load_test_rows(
      args.examples, args.concepts, args.classes)
  log(f"{x.shape[0]} test examples ({per_class} samples per class, split "
      f"of {rows}), {args.concepts} concepts, {args.classes} classes")
  model = make_model(args.concepts, args.classes)
  variables = jax.jit(lambda key, x: model.init(key, x))(
      jax.random.PRNGKey(0), jnp.asarray(x[:1]))
  logits, _ = analysis.predict_concepts(model, variables, x)
  f_params = nearest_class_head(variables["params"], args.concepts,
                                args.classes)
  low, high = intervention.replacement_values(BOTTLENECK)
  k = args.concepts
  low_k = np.full(k, low, np.float32)
  high_k = np.full(k, high, np.float32)
  sub = args.baseline_examples
  sub_rows = (logits[:sub], concepts[:sub], classes[:sub])
  keys = np.asarray(jax.random.split(jax.random.PRNGKey(0), sub))

  def vectorized(criterion: str) -> Callable[[], np.ndarray]:
    return lambda: intervention.intervention_curve(
        model, f_params, logits, concepts, classes, criterion=criterion,
        low=low, high=high, budget="example", max_steps=k, seed=0)

  baselines = {c: Baseline(model, c, low_k, high_k) for c in chosen}
  runners: dict[str, timing.Runner] = {}
  for c in chosen:
    runners[f"vectorized_{c}"] = timing.Runner(vectorized(c))
    runners[f"baseline_{c}"] = KeepLast(functools.partial(
        baselines[c].errors, f_params, *sub_rows, keys))

  # Compile: the vectorized path's first call is timed; the baseline's
  # jitted functions compile on two examples (the same shapes as any).
  first_call = {}
  for c in chosen:
    first_call[c] = runners[f"vectorized_{c}"].run(1)[0][1]
    baselines[c].errors(f_params, *(a[:2] for a in sub_rows), keys[:2])
    log(f"  {c}: first vectorized call {first_call[c]:.2f}s")
  # intervention_curve's compiled computations, before and after timing.
  compiled = common.cache_size(intervention.compiled_curve)
  times = timing.time_interleaved(runners, 1, args.repeats, log=log)
  recompiled = common.cache_size(intervention.compiled_curve) != compiled

  vec = {c: times[f"vectorized_{c}"].ms() / 1e3 for c in chosen}
  loop = {c: times[f"baseline_{c}"].ms() / 1e3 for c in chosen}
  scale = args.examples / sub
  extrapolated = {c: loop[c] * scale for c in chosen}
  speedup = {c: extrapolated[c] / vec[c] for c in chosen}
  speedup["overall"] = sum(extrapolated.values()) / sum(vec.values())

  checks = {}
  for c in (c for c in CHECKED if c in chosen):
    checks[c] = agreement(model, f_params, *sub_rows,
                          runners[f"baseline_{c}"].last, c)
  curves = {c: runners[f"vectorized_{c}"].fn() for c in chosen}
  cache_sizes = {
      "intervention_curve": compiled,
      **{f"baseline_scores_{c}": common.cache_size(b.scores_one)
         for c, b in baselines.items()},
      **{f"baseline_predict_{c}": common.cache_size(b.predict_one)
         for c, b in baselines.items()},
  }

  def r6(d: dict[str, float]) -> dict[str, float]:
    return {n: round(v, 6) for n, v in d.items()}

  return {
      "examples": int(x.shape[0]),
      "samples_per_class": per_class,
      "test_split_rows": rows,
      "vectorized": {
          "seconds": r6(vec),
          "seconds_min": r6({c: times[f"vectorized_{c}"].ms("min") / 1e3
                             for c in chosen}),
          "total_s": round(sum(vec.values()), 6),
          "first_call_s": r6(first_call),
          "compile_s": r6({c: first_call[c] - vec[c] for c in chosen}),
          "compile_total_s": round(
              sum(first_call[c] - vec[c] for c in chosen), 6),
      },
      "baseline": {
          "examples": sub,
          "seconds": r6(loop),
          "total_s": round(sum(loop.values()), 6),
          "per_example_ms": {c: round(1e3 * loop[c] / sub, 4)
                             for c in chosen},
          "extrapolated": True,
          "extrapolated_to": args.examples,
          "extrapolated_seconds": r6(extrapolated),
          "extrapolated_total_s": round(sum(extrapolated.values()), 6),
      },
      "speedup": {n: round(v, 2) for n, v in speedup.items()},
      "target_speedup": TARGET_SPEEDUP,
      "meets_target": speedup["overall"] >= TARGET_SPEEDUP,
      "agree": all(v["agree"] for v in checks.values()) if checks else None,
      "agreement": checks,
      # The curves in brief: the error after 0 and k corrections, and the
      # mean over the k + 1 steps (lower: a better criterion).
      "error_first_last": {c: [round(float(v[0]), 4), round(float(v[-1]), 4)]
                           for c, v in curves.items()},
      "mean_error_over_steps": {c: round(float(np.mean(v)), 4)
                                for c, v in curves.items()},
      "jit_cache_sizes": cache_sizes,
      "no_recompilation": not recompiled and all(
          v in (None, 1) for n, v in cache_sizes.items()
          if n != "intervention_curve"),
      "samples": {n: t.samples for n, t in times.items()},
      "wall_s": round(time.perf_counter() - start, 1),
  }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  """The flags (module docstring); SystemExit on a bad value."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sizes = (("examples", 10_000), ("concepts", 100), ("classes", 100),
           ("baseline-examples", 200), ("repeats", 3))
  for flag, default in sizes:
    parser.add_argument(
        f"--{flag}", f"--{flag.replace('-', '_')}", type=int,
        default=default, help=f"Default {default}.")
  parser.add_argument(
      "--criteria", default=",".join(criteria_lib.CRITERIA),
      help="Comma-separated subset of: " + ",".join(criteria_lib.CRITERIA)
      + " (default all).")
  parser.add_argument(
      "--out", "--json-out", dest="out", default=None,
      help="Also write the JSON object to this path.")
  args = parser.parse_args(argv)
  for flag, _ in sizes:
    value = getattr(args, flag.replace("-", "_"))
    if value < 1:
      raise SystemExit(f"--{flag} must be >= 1, got {value}.")
  if args.baseline_examples > args.examples:
    raise SystemExit(f"--baseline-examples ({args.baseline_examples}) must "
                     f"be at most --examples ({args.examples}).")
  return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the benchmark; prints and returns the result object."""
  args = parse_args(argv)
  chosen = common.parse_names(args.criteria, criteria_lib.CRITERIA,
                              "criteria")
  start = time.perf_counter()
  result = {
      "benchmark": NAME,
      "device": common.device_info(),
      "config": {
          "examples": args.examples,
          "concepts": args.concepts,
          "classes": args.classes,
          "baseline_examples": args.baseline_examples,
          "repeats": args.repeats,
          "criteria": chosen,
          "level": "individual concepts",
          "budget": "example",
          "max_steps": args.concepts,
          "model": "g MLP(hidden=(100,)) at random init, f linear set to "
                   "the nearest class concept vector, bottleneck sigmoid, "
                   "mode sequential (untrained)",
          "dtype": "float32",
      },
      "workloads": {"cbm_synthetic_test": bench(args, chosen)},
  }
  return common.finish(result, start, args.out)


if __name__ == "__main__":
  main()
