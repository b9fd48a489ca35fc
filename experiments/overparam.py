r"""SAM under overparameterization: width sweeps of SGD vs SAM, dense and
sparse.

  python -m experiments.overparam --config=configs/overparam_digits.py \
      --workdir=workdirs/overparam

Reproduces the design of Shin, Lee, Andriushchenko & Lee at small scale:

* **Dense width sweep**: for every width ``w`` in ``config.widths``,
  the base model at that width trained with SGD and with SAM (same seed, same
  data order, same schedule: the only difference is the SAM gradient).
* **Sparse at initialization, equal trained-parameter counts**: wider models
  (``config.sparse.widths``) with masks fixed at step 0 at the sparsity that
  leaves as many trained parameters as the dense model at
  ``config.sparse.budget_width``: random static masks (``static_sparse``) and
  SNIP (``saliency`` scores ``|w * g|`` of the first batch, schedule
  ``one_shot`` at step 0; ``global_saliency`` for SNIP's single global
  threshold). Prunable leaves are the kernels; every kernel gets the same
  sparsity (``uniform``), biases stay dense.

Per run it records the test accuracy and loss and, on a fixed batch of
``config.sharpness.batch_size`` training examples, the sharpness of the
final parameters (``flatsparse.train.sharpness``, eval mode, restricted to
the trained weights of sparse models: the sparsity wrapper's masks): top
Hessian eigenvalue, trace and moments ``tr(H^k) / d``. Runs go to
``workdir/<family>/w<width>/<opt>/seed_<s>`` (a finished run's record is
cached in ``record.json`` and not trained again; ``flatsparse.study``);
the study writes ``results.json``, ``report.md`` and two
PNG plots (SAM-minus-SGD accuracy gap and top eigenvalue against the number
of trained parameters, mean +- std over seeds of the per-seed differences).

References:
  Shin, Lee, Andriushchenko & Lee, "Critical Influence of
  Overparameterization on Sharpness-aware Minimization", UAI 2025.
  Foret et al., "Sharpness-Aware Minimization", ICLR 2021.
  Lee, Ajanthan & Torr, "SNIP: Single-shot Network Pruning", ICLR 2019.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments import cli
from flatsparse import sparsity as sparsity_lib
from flatsparse import study as study_lib
from flatsparse.sparsity import distributions
from flatsparse.train import builders
from flatsparse.train import config_schema
from flatsparse.train import loop
from flatsparse.train.sharpness import sharpness

OPTIMIZERS = ("sgd", "sam")
SPARSE_METHODS = ("random", "snip")
FAMILIES = ("dense",) + SPARSE_METHODS
RECORD = "record.json"
# Population std over seeds (numpy's default): what every recorded table of
# this study used (benchmarks/results/studies/overparam_*).
DDOF = 0


# ---- the runs -------------------------------------------------------------


def model_config(study: Any, width: int) -> dict[str, Any]:
  """``study.base.model`` at ``width``: ``hidden = (width,) * study.depth``
  when ``study.width_key == 'hidden'`` (MLP), else ``model[width_key] =
  width``."""
  model = config_schema.drop_unset("model", study.base.model)
  if study.width_key == "hidden":
    model["hidden"] = (int(width),) * int(study.depth)
  else:
    model[study.width_key] = int(width)
  return model


def param_counts(model_cfg: dict[str, Any], sample: np.ndarray,
                 num_classes: int) -> tuple[int, int]:
  """``(total, prunable)`` parameter counts of a model config (no compute)."""
  model = builders.build_model(model_cfg, num_classes)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.asarray(sample),
                         train=False))["params"]
  total = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
  prunable = sum(math.prod(x.shape) for x in distributions.prunable_leaves(
      shapes).values())
  return total, prunable


def matching_sparsity(total: int, prunable: int, budget: int) -> float:
  """Sparsity of the prunable leaves that leaves ``budget`` parameters."""
  dense = total - prunable
  if not dense < budget <= total:
    raise ValueError(
        f"A trained-parameter budget of {budget} is out of reach for a model "
        f"with {total} parameters ({dense} of them dense): choose "
        "config.sparse.budget_width below every sparse width (and large "
        "enough to exceed the dense biases).")
  return 1.0 - (budget - dense) / prunable


def sparsity_config(method: str, sparsity: float, snip_algorithm: str
                    ) -> dict[str, Any]:
  """A ``flatsparse.sparsity`` config with masks fixed at step 0."""
  if method == "random":
    return {"algorithm": "static_sparse", "sparsity": sparsity,
            "distribution": "uniform"}
  if method == "snip":
    return {"algorithm": snip_algorithm, "sparsity": sparsity,
            "schedule": "one_shot", "update_start_step": 0}
  raise ValueError(f"Unknown sparse method {method!r}; allowed: "
                   f"{', '.join(SPARSE_METHODS)}.")


def variants(study: Any) -> list[study_lib.Variant]:
  """Every (family, width, optimizer) of the study: name
  ``<family>/w<width>/<optimizer>``, tags ``family``, ``width``,
  ``optimizer``, ``sparsity`` and ``params_total``."""
  for name in study.optimizers:
    if name not in OPTIMIZERS:
      raise ValueError(f"Unknown optimizer {name!r} in config.optimizers; "
                       f"allowed: {', '.join(OPTIMIZERS)}.")
  loader, sample = loop.make_loader(  # classes, shape
      config_schema.drop_unset("dataset", study.base.dataset), 1)
  classes = loader.num_classes
  cells = [("dense", int(w), 0.0) for w in study.widths]
  sparse = study.get("sparse")
  if sparse:
    budget = param_counts(model_config(study, sparse.budget_width), sample,
                          classes)[0]
    for method in sparse.methods:
      if method not in SPARSE_METHODS:
        raise ValueError(f"Unknown sparse method {method!r}; allowed: "
                         f"{', '.join(SPARSE_METHODS)}.")
      for w in sparse.widths:
        total, prunable = param_counts(model_config(study, w), sample,
                                       classes)
        cells.append((method, int(w),
                      matching_sparsity(total, prunable, budget)))
  out = []
  for family, width, sparsity in cells:
    model = model_config(study, width)
    total, _ = param_counts(model, sample, classes)
    for opt in study.optimizers:
      out.append(study_lib.Variant(
          f"{family}/w{width}/{opt}",
          {"model": model,
           "flatness": ({"name": "sam", "rho": float(study.rho)}
                        if opt == "sam" else None),
           "sparsity": (None if family == "dense" else sparsity_config(
               family, sparsity, sparse.get("snip_algorithm", "saliency")))},
          {"family": family, "width": width, "optimizer": opt,
           "sparsity": sparsity, "params_total": total}))
  return out


def plan(study: Any) -> list[study_lib.Run]:
  """Every run of the study (each variant at every seed), in order."""
  return study_lib.plan(study.base, variants(study), study.seeds)


def measure(sharp: Any) -> Callable[[study_lib.Run, str, Any],
                                   dict[str, Any]]:
  """The study's run function (:func:`flatsparse.study.run_or_load`):
  trains (or resumes) one run and measures its sharpness (restricted to the
  sparsity wrapper's masks for sparse runs)."""

  def run_one(run: study_lib.Run, directory: str, stale: Any
              ) -> dict[str, Any]:
    del stale
    start = time.time()
    metrics, state = loop.train_and_evaluate(run.config, directory,
                                             return_state=True)
    train_s = time.time() - start
    cfg = loop.validate_config(run.config)  # sections without unset keys
    loader, _ = loop.make_loader(cfg["dataset"], cfg["batch_size"])
    model = builders.build_model(cfg["model"], loader.num_classes)
    batch = next(loader.eval_batches(sharp.batch_size, split="train"))
    state = jax.device_get(state)
    masks = (None if cfg["sparsity"] is None
             else sparsity_lib.get_masks(state.opt_state, state.params))
    measured = sharpness(
        model, state, batch, jax.random.PRNGKey(run.seed), masks=masks,
        num_probes=sharp.num_probes, iters=sharp.iters,
        moments=tuple(sharp.moments), method=sharp.method,
        unroll=sharp.get("unroll", 1))
    tags = run.tags
    record = {k: tags[k] for k in ("family", "width", "optimizer", "seed",
                                   "sparsity", "params_total")}
    record.update({
        "test_accuracy": metrics["accuracy"], "test_loss": metrics["loss"],
        "params_trained": int(measured.pop("num_params")),
        "sharpness_batch_loss": measured.pop("loss"), **measured,
        "train_s": round(train_s, 2),
        "sharpness_s": round(time.time() - start - train_s, 2)})
    return record

  return run_one


# ---- summary, table, plots ------------------------------------------------


def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """One row per (family, width): SGD and SAM means +- std over seeds and the
  per-seed paired SAM-minus-SGD differences."""
  cells = collections.defaultdict(lambda: collections.defaultdict(dict))
  for r in records:
    cells[(r["family"], r["width"])][r["optimizer"]][r["seed"]] = r
  keys = ["test_accuracy", "top_eigenvalue", "trace"] + sorted(
      k for k in records[0] if k.startswith("moment_")) if records else []
  rows = []
  for (family, width), by_opt in sorted(
      cells.items(), key=lambda kv: (FAMILIES.index(kv[0][0]), kv[0][1])):
    first = next(iter(next(iter(by_opt.values())).values()))
    row = {"family": family, "width": width, "sparsity": first["sparsity"],
           "params_total": first["params_total"],
           "params_trained": first["params_trained"]}
    for opt, runs in by_opt.items():
      row[f"{opt}_seeds"] = len(runs)
      for key in keys:
        _flatten(row, f"{opt}_{key}", [r[key] for r in runs.values()])
    if "sgd" in by_opt and "sam" in by_opt:
      seeds = sorted(set(by_opt["sgd"]) & set(by_opt["sam"]))
      for key in ("test_accuracy", "top_eigenvalue"):
        _flatten(row, f"gap_{key}", [by_opt["sam"][s][key]
                                     - by_opt["sgd"][s][key] for s in seeds])
      row["gap_seeds"] = len(seeds)
    rows.append(row)
  return rows


def _flatten(row: dict[str, Any], name: str, values: Sequence[float]
             ) -> None:
  """``row[name + '_mean']`` and ``row[name + '_std']`` over seeds."""
  stats = study_lib.aggregate(values, ddof=DDOF)
  row[f"{name}_mean"], row[f"{name}_std"] = stats["mean"], stats["std"]


def _stats(row: dict[str, Any], name: str) -> dict[str, float] | None:
  """``{'mean', 'std'}`` of ``name`` in a row, or None if it has none."""
  if f"{name}_mean" not in row:
    return None
  return {"mean": row[f"{name}_mean"], "std": row[f"{name}_std"]}


def markdown(rows: Sequence[dict[str, Any]]) -> str:
  def cell(row, name, fmt):
    return study_lib.cell(_stats(row, name), fmt=fmt)

  return study_lib.markdown_table(
      ["family", "width", "sparsity", "trained params", "SGD acc (%)",
       "SAM acc (%)", "SAM - SGD (points)", "SGD lambda_max",
       "SAM lambda_max", "SGD trace", "SAM trace"],
      [[r["family"], r["width"], f"{r['sparsity']:.3f}",
        f"{r['params_trained']:,}",
        study_lib.cell(_stats(r, "sgd_test_accuracy"), scale=100),
        study_lib.cell(_stats(r, "sam_test_accuracy"), scale=100),
        study_lib.cell(_stats(r, "gap_test_accuracy"), scale=100,
                       signed=True),
        cell(r, "sgd_top_eigenvalue", ".3g"),
        cell(r, "sam_top_eigenvalue", ".3g"), cell(r, "sgd_trace", ".3g"),
        cell(r, "sam_trace", ".3g")] for r in rows])


def _series(rows: Sequence[dict[str, Any]], family: str, name: str
            ) -> tuple[list[int], list[int], list[dict[str, float]]] | None:
  """Trained parameters, widths and stats of ``name`` of a family's rows."""
  mine = [r for r in rows if r["family"] == family and _stats(r, name)]
  if not mine:
    return None
  return ([r["params_trained"] for r in mine], [r["width"] for r in mine],
          [_stats(r, name) for r in mine])


def plot_gap(rows: Sequence[dict[str, Any]], path: str) -> str:
  """SAM-minus-SGD accuracy gap: dense vs trained parameters; sparse (equal
  trained parameters) vs width."""
  fig, axes = study_lib.figure(2, (11, 4))
  dense = _series(rows, "dense", "gap_test_accuracy")
  if dense:
    study_lib.errorbar(axes[0], dense[0], dense[2], scale=100,
                       label="dense (width sweep)")
    study_lib.errorbar(axes[1], dense[1], dense[2], scale=100, color="gray",
                       alpha=0.5, label="dense")
  for family in SPARSE_METHODS:
    s = _series(rows, family, "gap_test_accuracy")
    if s:
      study_lib.errorbar(axes[1], s[1], s[2], scale=100, marker="s",
                         label=f"{family} sparse (equal params)")
  axes[0].set_xlabel("trained parameters")
  axes[1].set_xlabel("width")
  any_sparse = any(r["family"] != "dense" for r in rows)
  for ax, title in zip(axes, ("dense: gap vs parameters",
                              "sparse at init: gap vs width" if any_sparse
                              else "dense: gap vs width")):
    ax.set_xscale("log")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("SAM - SGD test accuracy (points)")
    ax.set_title(title)
  return study_lib.save_figure(fig, axes, path)


def plot_sharpness(rows: Sequence[dict[str, Any]], path: str) -> str:
  """Top Hessian eigenvalue of SGD and SAM minima vs parameters / width."""
  fig, axes = study_lib.figure(2, (11, 4))
  colors = {"dense": "C0", "random": "C1", "snip": "C2"}
  for opt, marker, style in (("sgd", "o", "-"), ("sam", "^", "--")):
    for family in FAMILIES:
      s = _series(rows, family, f"{opt}_top_eigenvalue")
      if s:
        dense = family == "dense"
        study_lib.errorbar(axes[0] if dense else axes[1],
                           s[0] if dense else s[1], s[2], marker=marker,
                           ls=style, color=colors[family],
                           label=f"{family} {opt.upper()}")
  axes[0].set_xlabel("trained parameters")
  axes[1].set_xlabel("width (equal trained parameters)")
  titles = ["dense", "sparse at init"]
  ylabels = ["top Hessian eigenvalue"] * 2
  if not any(r["family"] != "dense" for r in rows):
    # Dense-only study: the right panel shows how much flatter SAM's minima
    # are, SAM's lambda_max over SGD's (ratio of the seed means).
    dense = [r for r in rows if "sam_top_eigenvalue_mean" in r
             and "sgd_top_eigenvalue_mean" in r]
    axes[1].plot([r["params_trained"] for r in dense],
                 [r["sam_top_eigenvalue_mean"] / r["sgd_top_eigenvalue_mean"]
                  for r in dense], marker="o", color="C0")
    axes[1].set_xlabel("trained parameters")
    titles[1] = "dense: SAM lambda_max / SGD lambda_max"
    ylabels[1] = "ratio"
  for ax, title, ylabel in zip(axes, titles, ylabels):
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
  return study_lib.save_figure(fig, axes, path)


def write_report(records: Sequence[dict[str, Any]], workdir: str,
                 study: Any = None) -> dict[str, str]:
  """Writes results.json, report.md and the two plots; returns their paths."""
  rows = summarize(records)
  paths = {"results": os.path.join(workdir, "results.json"),
           "report": os.path.join(workdir, "report.md"),
           "gap_plot": os.path.join(workdir, "gap_vs_params.png"),
           "sharpness_plot": os.path.join(workdir, "sharpness_vs_params.png")}
  with open(paths["results"], "w") as f:
    json.dump({"config": None if study is None else json.loads(
        study.to_json_best_effort()), "summary": rows,
               "runs": [{k: v for k, v in r.items() if k != "run_config"}
                        for r in records]}, f, indent=1)
  with open(paths["report"], "w") as f:
    f.write(markdown(rows) + "\n")
  plot_gap(rows, paths["gap_plot"])
  plot_sharpness(rows, paths["sharpness_plot"])
  return paths


def run_study(study: Any, workdir: str) -> dict[str, str]:
  """Every run of :func:`plan` (trained or loaded), then the report files."""
  runs = plan(study)
  start = time.time()

  def show(i: int, run: study_lib.Run, record: dict[str, Any], _: float):
    tags = run.tags
    print(f"[{i + 1}/{len(runs)}] {tags['family']:6s} w={tags['width']:<5d} "
          f"{tags['optimizer']} seed {run.seed}: test accuracy "
          f"{100 * record['test_accuracy']:.2f}%, lambda_max "
          f"{record['top_eigenvalue']:.3g}, trained params "
          f"{record['params_trained']:,}  ({time.time() - start:.0f} s)",
          flush=True)

  records = study_lib.run_or_load(runs, workdir, measure(study.sharpness),
                                  cache_file=RECORD, config_key="run_config",
                                  on_record=show)
  return write_report(records, workdir, study)


def main(argv):
  del argv
  workdir = cli.workdir()
  cli.setup_logging(workdir)  # one line per run on the console
  start = time.time()
  paths = run_study(cli.config(), workdir)
  cli.print_outputs(paths, start)


if __name__ == "__main__":
  cli.define_flags("Study config.")
  cli.run(main)
