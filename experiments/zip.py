r"""Black-box prompt tuning: ZIP against zeroth-order baselines and CMA-ES.

  make extras      # all-MiniLM-L6-v2 and tokenizers (--no-deps)
  python -m experiments.zip --config=configs/zip_fashion_mnist.py \
      --workdir=workdirs/zip

The black box (``flatsparse.zeroth_order.BlackBox``) is the miniature
vision-language model of ``flatsparse.zeroth_order.vlm``: the real
all-MiniLM-L6-v2 text tower and an image tower trained here CLIP-style on
Fashion-MNIST (once, cached in ``<workdir>/image_tower.msgpack``). The task
is a shift the image tower never saw (test images rotated by 90 degrees),
tuned from 16 shots per class of the rotated training split (the run seed
picks them). Every method sees only loss values, counted by the box, up to
``budget`` queries; the rotated test split is evaluated every
``eval_every`` queries (evaluation is not charged).

Methods (``config.methods``; all with ``q`` directions per step and the
schedules ``a / (k + 1)^0.4``, ``c / k^0.1``; ZIP and its variants at
``zip_learning_rate``, ``zip_smoothing``, the ZO baselines at
``learning_rate``, ``smoothing``):

* ``zip``: ZIP's low-rank, feature-shared prompt (``ZipPrompt``), two-sided
  SPSA with ``|u_i| ~ U[0.5, 1]``, intrinsic clipping at ``sqrt(N)``, SGD.
* ``zip_no_low_rank``, ``zip_no_sharing``, ``zip_no_clip``: ablations;
  ``zip_clip_<m>``: a fixed clip at ``m * sqrt(N)`` (the threshold sweep).
* ``spsa_gc``: BlackVIP's SPSA with gradient correction (Bernoulli +-1
  SPSA and Nesterov momentum 0.9, optax's equivalent form) on a
  Black-Box-Tuning prompt (full ``Z``, one shared projection).
* ``gaussian``: two-sided Gaussian smoothing on the same prompt, SGD.
* ``cma_es``: CMA-ES (``evosax``) on the same prompt, population
  ``cma_population``, as BPT-VLM does.

Each run records the test-accuracy curve against queries; the study writes
the final accuracy at the budget, the queries each method needs to reach the
best baseline's final accuracy, ``report.md``, ``results.json`` and a PNG.

References:
  Park et al., "ZIP: An efficient zeroth-order prompt tuning for black-box
  vision-language models", ICLR 2025; Oh et al., "BlackVIP", CVPR 2023; Yu
  et al., "Black-box prompt tuning for vision-language model as a
  service" (BPT-VLM), IJCAI 2023; Sun et al., "Black-box tuning for
  language-model-as-a-service", ICML 2022.
"""

from __future__ import annotations

from collections.abc import Sequence
import math
import os
import time
from typing import Any

from flax import serialization
import jax
import jax.flatten_util
import ml_collections
import numpy as np
import optax

from experiments import cli
from flatsparse import study
from flatsparse import zeroth_order as zo
from flatsparse.zeroth_order import vlm
from flatsparse.zeroth_order.black_box import BlackBox

__all__ = ["METHOD_KINDS", "method_spec", "run_method", "run_study"]

BASELINES = ("spsa_gc", "gaussian", "cma_es")
METHOD_KINDS = ("zip", "zip_no_low_rank", "zip_no_sharing", "zip_no_clip",
                "zip_clip_<m>") + BASELINES


def method_spec(name: str, config: Any) -> dict[str, Any]:
  """The parameterization, estimator, clip and optimizer of a method."""
  full = dict(low_rank=False, feature_sharing=False, projection="shared",
              intrinsic_dim=config.baseline_intrinsic_dim)
  spec = dict(prompt={}, estimator="spsa", spsa_range=(0.5, 1.0),
              clip="intrinsic", momentum=None)
  if name == "zip":
    pass
  elif name == "zip_no_low_rank":
    spec["prompt"] = dict(low_rank=False)
  elif name == "zip_no_sharing":
    spec["prompt"] = dict(feature_sharing=False)
  elif name == "zip_no_clip":
    spec["clip"] = None
  elif name.startswith("zip_clip_"):
    spec["clip"] = float(name.removeprefix("zip_clip_"))
  elif name == "spsa_gc":
    spec.update(prompt=full, spsa_range=(1.0, 1.0), clip=None, momentum=0.9)
  elif name == "gaussian":
    spec.update(prompt=full, estimator="gaussian", clip=None)
  elif name == "cma_es":
    spec.update(prompt=full, estimator="cma_es", clip=None)
  else:
    raise ValueError(f"Unknown method {name!r}; allowed: "
                     f"{', '.join(METHOD_KINDS)}.")
  return spec


def _step_sizes(name: str, config: Any) -> tuple[float, float]:
  """``(a, c)`` of the step-size and smoothing schedules of a method."""
  if name.startswith("zip"):
    return config.zip_learning_rate, config.zip_smoothing
  return config.learning_rate, config.smoothing


def _run_config(name: str, config: Any) -> ml_collections.ConfigDict:
  """The keys a method's record depends on (the baselines ignore ZIP's
  own step sizes, so their records survive a change of those)."""
  keys = {k: v for k, v in config.to_dict().items()
          if k not in ("methods", "seeds")
          and not (k.startswith("zip_") and not name.startswith("zip"))}
  return ml_collections.ConfigDict(keys)


def _prompt(config, spec, task) -> zo.ZipPrompt:
  num_tokens, width = task.init_prompt.shape
  options = dict(num_tokens=num_tokens, width=width,
                 rank=min(config.rank, num_tokens),
                 intrinsic_dim=config.intrinsic_dim,
                 seed=config.projection_seed)
  return zo.ZipPrompt(**{**options, **spec["prompt"]})


def _curve_point(box, queries, prompt_fn, params, task):
  return [int(queries), float(box.accuracy(prompt_fn(params), task.test))]


def run_method(name: str, seed: int, task: vlm.PromptTask,
               config: Any) -> dict[str, Any]:
  """One method at one seed: the accuracy curve against counted queries."""
  spec = method_spec(name, config)
  box = BlackBox(task.loss, task.accuracy)
  prompt = _prompt(config, spec, task)
  projections = prompt.projection_matrices()

  def prompt_fn(p):
    return prompt(p, projections, task.init_prompt)

  params = prompt.init(seed)
  start = time.time()
  curve = [_curve_point(box, 0, prompt_fn, params, task)]
  if spec["estimator"] == "cma_es":
    params, curve = _run_cma_es(box, prompt_fn, params, task, config, seed,
                                curve)
  else:
    learning_rate, smoothing = _step_sizes(name, config)
    parts = [zo.zeroth_order_gradient(
        spec["estimator"], config.num_directions,
        zo.zip_smoothing(smoothing, 0.1),
        spsa_range=spec["spsa_range"], budget=config.budget, seed=seed)]
    if spec["clip"] == "intrinsic":
      parts.append(zo.intrinsic_clip())
    elif spec["clip"] is not None:
      parts.append(optax.clip_by_global_norm(
          spec["clip"] * math.sqrt(zo.num_numbers(params))))
    lr = zo.zip_learning_rate(learning_rate, 0.4)
    parts.append(optax.sgd(lr, momentum=spec["momentum"],
                           nesterov=spec["momentum"] is not None))
    tx = optax.chain(*parts)

    @jax.jit
    def step(params, state):
      updates, state = tx.update(
          params, state, params,
          value_fn=lambda p: box.loss(prompt_fn(p), task.train))
      return optax.apply_updates(params, updates), state

    state = tx.init(params)
    per_step = zo.queries_per_step(config.num_directions, True, True)
    steps = config.budget // per_step
    every = max(1, config.eval_every // per_step)
    for i in range(1, steps + 1):
      params, state = step(params, state)
      if i % every == 0 or i == steps:
        curve.append(_curve_point(box, zo.queries_used(state), prompt_fn,
                                  params, task))
  queries = box.queries
  if queries > config.budget:
    raise AssertionError(f"{name} spent {queries} queries, above the "
                         f"budget {config.budget}.")
  # The few-shot loss at the end, read past the box (evaluation, not a
  # query): what a user tunes step sizes on.
  train_loss = float(task.loss(prompt_fn(params), task.train))
  return {"method": name, "seed": seed, "curve": curve,
          "final_accuracy": curve[-1][1], "final_train_loss": train_loss,
          "queries": queries,
          "num_params": zo.num_numbers(params),
          "seconds": round(time.time() - start, 1)}


def _run_cma_es(box, prompt_fn, params, task, config, seed, curve):
  from evosax.algorithms import CMA_ES  # pylint: disable=g-import-not-at-top

  flat, unravel = jax.flatten_util.ravel_pytree(params)
  es = CMA_ES(population_size=config.cma_population, solution=flat)
  es_params = es.default_params.replace(std_init=config.cma_sigma)
  key = jax.random.key(seed)
  state = es.init(key, flat, es_params)
  population_loss = jax.jit(jax.vmap(
      lambda x: box.loss(prompt_fn(unravel(x)), task.train)))
  generations = config.budget // config.cma_population
  every = max(1, config.eval_every // config.cma_population)
  for g in range(1, generations + 1):
    key, ask_key, tell_key = jax.random.split(key, 3)
    population, state = es.ask(ask_key, state, es_params)
    fitness = population_loss(population)
    state, _ = es.tell(tell_key, population, fitness, state, es_params)
    if g % every == 0 or g == generations:
      curve.append(_curve_point(box, g * config.cma_population, prompt_fn,
                                unravel(state.mean), task))
  return unravel(state.mean), curve


def _image_tower(workdir: str, config: Any, text: vlm.TextTower) -> Any:
  """The trained image tower, trained once and cached in the workdir."""
  path = os.path.join(workdir, "image_tower.msgpack")
  if os.path.exists(path):
    with open(path, "rb") as f:  # nested dicts of arrays: the params
      return serialization.msgpack_restore(f.read())
  _, params = vlm.make_prompt_task(
      dataset=config.dataset, shots=config.shots, rotation=config.rotation,
      steps=config.image_steps, seed=0, phrase=config.phrase, text=text)
  os.makedirs(workdir, exist_ok=True)
  with open(path, "wb") as f:
    f.write(serialization.to_bytes(params))
  return params


def _queries_to(curve: Sequence[Sequence[float]], target: float
                ) -> int | None:
  for queries, accuracy in curve:
    if accuracy >= target:
      return int(queries)
  return None


def run_study(config: Any, workdir: str,
              text: vlm.TextTower | None = None) -> dict[str, Any]:
  """Every method x seed; returns the records, the summary and the report."""
  text = vlm.load_minilm() if text is None else text
  image_params = _image_tower(workdir, config, text)
  tasks = {}

  def task_of(seed):
    if seed not in tasks:
      tasks[seed] = vlm.make_prompt_task(
          dataset=config.dataset, shots=config.shots,
          rotation=config.rotation, seed=seed, phrase=config.phrase,
          text=text, image_params=image_params)[0]
    return tasks[seed]

  runs = [study.Run(study.Variant(m, tags={"method": m}), int(s),
                    _run_config(m, config))
          for s in config.seeds for m in config.methods]

  def fn(run, run_dir, stale):
    del run_dir, stale
    return run_method(run.variant.name, run.seed, task_of(run.seed), config)

  def progress(i, run, record, seconds):
    print(f"{i + 1}/{len(runs)} {run.path}: accuracy "
          f"{record['final_accuracy']:.4f} after {record['queries']} "
          f"queries ({seconds:.0f} s)", flush=True)

  records = study.run_or_load(runs, workdir, fn=fn, on_record=progress)
  task0 = task_of(config.seeds[0])
  zero_shot = {"source": vlm.zero_shot_accuracy(task0, task0.source_test),
               "shifted": vlm.zero_shot_accuracy(task0, task0.test)}
  summary = study.summarize(records, by=("method",),
                            fields=("final_accuracy",), ddof=0)
  finals = {row["method"]: row["final_accuracy"]["mean"] for row in summary}
  baselines = [m for m in config.methods if m in BASELINES]
  target = max(finals[m] for m in baselines) if baselines else None
  rows = []
  for row in summary:
    mine = [r for r in records if r["method"] == row["method"]]
    reached = [_queries_to(r["curve"], target) for r in mine] if (
        target is not None) else []
    hit = [q for q in reached if q is not None]
    rows.append([row["method"], str(mine[0]["num_params"]),
                 study.cell(row["final_accuracy"], scale=100, fmt=".2f"),
                 (f"{np.mean(hit):.0f} ({len(hit)}/{len(mine)} seeds)"
                  if hit else "not reached")])
  report = [
      "# Black-box prompt tuning (ZIP and baselines)", "",
      f"Zero-shot accuracy (plain class names): {zero_shot['source']:.2%} "
      f"unshifted, {zero_shot['shifted']:.2%} on the shifted test set; "
      f"budget {config.budget} queries, seeds {list(config.seeds)}, mean ± "
      f"std; target: the best baseline's final accuracy "
      f"({target:.2%})." if target is not None else "", "",
      study.markdown_table(["method", "trained numbers",
                            f"test accuracy (%) at {config.budget} queries",
                            "queries to the target (mean over seeds "
                            "reaching it)"], rows)]
  plot = _plot(config, records, os.path.join(workdir, "accuracy.png"))
  report += ["", f"![accuracy vs queries]({os.path.basename(plot)})"]
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write("\n".join(report) + "\n")
  results = {"zero_shot": zero_shot, "target": target, "runs": records,
             "summary": summary}
  study.save_record(os.path.join(workdir, "results.json"), results)
  return {**results, "report": "\n".join(report)}


def _plot(config, records, path):
  fig, axes = study.figure(1, (6.5, 4.5))
  for method in config.methods:
    curves = [np.asarray(r["curve"]) for r in records
              if r["method"] == method]
    length = min(len(c) for c in curves)
    stacked = np.stack([c[:length] for c in curves])
    axes[0].plot(stacked[0, :, 0], 100 * stacked[:, :, 1].mean(0),
                 label=method)
  axes[0].set_xlabel("queries")
  axes[0].set_ylabel("test accuracy (%), shifted task")
  return study.save_figure(fig, axes, path, legend_size=7)


if __name__ == "__main__":
  cli.define_flags("ZIP study config.", workdir="Where it writes.")
  cli.run(cli.report_main(run_study))
