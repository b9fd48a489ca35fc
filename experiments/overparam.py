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
the trained weights of sparse models): top Hessian eigenvalue, trace and
moments ``tr(H^k) / d``. Runs go to ``workdir/<family>/w<width>/<opt>/
seed_<s>`` (a finished run is only re-evaluated; its record is cached in
``record.json``); the study writes ``results.json``, ``report.md`` and two
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
from collections.abc import Sequence
import json
import math
import os
import time
from typing import Any

from absl import flags
import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import ml_collections
from ml_collections import config_flags
import numpy as np

from experiments import cli
from flatsparse.sparsity import distributions
from flatsparse.train import builders
from flatsparse.train import config_schema
from flatsparse.train import loop
from flatsparse.train.sharpness import sharpness

_CONFIG = None
_WORKDIR = None


def define_flags() -> None:
  """Defines the flags; called only when run as a program, so the
  experiment modules can be imported together (tests, other mains)."""
  global _CONFIG, _WORKDIR
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Study config.")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs are written.",
                                 required=True)
  cli.define_flags()

OPTIMIZERS = ("sgd", "sam")
SPARSE_METHODS = ("random", "snip")
FAMILIES = ("dense",) + SPARSE_METHODS
RECORD = "record.json"


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
            "dist_type": "uniform"}
  if method == "snip":
    return {"algorithm": snip_algorithm, "sparsity": sparsity,
            "schedule": "one_shot", "update_start_step": 0}
  raise ValueError(f"Unknown sparse method {method!r}; allowed: "
                   f"{', '.join(SPARSE_METHODS)}.")


def plan(study: Any) -> list[dict[str, Any]]:
  """Every run of the study: ``{family, width, optimizer, seed, sparsity,
  params_total, config}``."""
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
  runs = []
  for family, width, sparsity in cells:
    model = model_config(study, width)
    total, _ = param_counts(model, sample, classes)
    for opt in study.optimizers:
      for seed in study.seeds:
        config = ml_collections.ConfigDict(study.base.to_dict())
        config.model = model
        config.seed = int(seed)
        config.flatness = ({"name": "sam", "rho": float(study.rho)}
                           if opt == "sam" else None)
        config.sparsity = (None if family == "dense" else sparsity_config(
            family, sparsity, sparse.get("snip_algorithm", "saliency")))
        runs.append({"family": family, "width": width, "optimizer": opt,
                     "seed": int(seed), "sparsity": sparsity,
                     "params_total": total, "config": config})
  return runs


def run_dir(workdir: str, run: dict[str, Any]) -> str:
  return os.path.join(workdir, run["family"], f"w{run['width']}",
                      run["optimizer"], f"seed_{run['seed']}")


def run_one(run: dict[str, Any], directory: str, sharp: Any
            ) -> dict[str, Any]:
  """Trains (or resumes) one run and measures its sharpness; cached."""
  config = run["config"]
  resolved = json.loads(config.to_json_best_effort(sort_keys=True))
  path = os.path.join(directory, RECORD)
  if os.path.exists(path):
    with open(path) as f:
      record = json.load(f)
    if record.get("run_config") != resolved:
      raise ValueError(
          f"{directory} holds a run of a different config; use a new "
          "--workdir when you change the study's config.")
    return record
  start = time.time()
  metrics, state = loop.train_and_evaluate(config, directory,
                                           return_state=True)
  train_s = time.time() - start
  cfg = loop.validate_config(config)  # sections without unset keys
  loader, _ = loop.make_loader(cfg["dataset"], cfg["batch_size"])
  model = builders.build_model(cfg["model"], loader.num_classes)
  batch = next(loader.eval_batches(sharp.batch_size, split="train"))
  measured = sharpness(
      model, jax.device_get(state), batch, jax.random.PRNGKey(run["seed"]),
      num_probes=sharp.num_probes, iters=sharp.iters,
      moments=tuple(sharp.moments), method=sharp.method,
      unroll=sharp.get("unroll", 1))
  record = {k: v for k, v in run.items() if k != "config"}
  record.update({
      "test_accuracy": metrics["accuracy"], "test_loss": metrics["loss"],
      "params_trained": int(measured.pop("num_params")),
      "sharpness_batch_loss": measured.pop("loss"), **measured,
      "train_s": round(train_s, 2),
      "sharpness_s": round(time.time() - start - train_s, 2),
      "run_config": resolved})
  with open(path, "w") as f:
    json.dump(record, f, indent=1)
  return record


# ---- summary, table, plots ------------------------------------------------


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
  v = np.asarray(values, np.float64)
  return float(np.mean(v)), float(np.std(v))


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
        row[f"{opt}_{key}_mean"], row[f"{opt}_{key}_std"] = _mean_std(
            [r[key] for r in runs.values()])
    if "sgd" in by_opt and "sam" in by_opt:
      seeds = sorted(set(by_opt["sgd"]) & set(by_opt["sam"]))
      for key in ("test_accuracy", "top_eigenvalue"):
        diffs = [by_opt["sam"][s][key] - by_opt["sgd"][s][key] for s in seeds]
        row[f"gap_{key}_mean"], row[f"gap_{key}_std"] = _mean_std(diffs)
      row["gap_seeds"] = len(seeds)
    rows.append(row)
  return rows


def markdown(rows: Sequence[dict[str, Any]]) -> str:
  has_gap = any("gap_test_accuracy_mean" in r for r in rows)
  head = ("| family | width | sparsity | trained params | SGD acc (%) | "
          "SAM acc (%) | SAM - SGD (points) | SGD lambda_max | "
          "SAM lambda_max | SGD trace | SAM trace |")
  lines = [head, "|" + "---|" * 11]

  def cell(row, opt, key, scale=1.0, fmt=".2f"):
    if f"{opt}_{key}_mean" not in row:
      return "-"
    return (f"{scale * row[f'{opt}_{key}_mean']:{fmt}} ± "
            f"{scale * row[f'{opt}_{key}_std']:{fmt}}")

  for r in rows:
    gap = (f"{100 * r['gap_test_accuracy_mean']:+.2f} ± "
           f"{100 * r['gap_test_accuracy_std']:.2f}"
           if has_gap and "gap_test_accuracy_mean" in r else "-")
    lines.append(
        f"| {r['family']} | {r['width']} | {r['sparsity']:.3f} | "
        f"{r['params_trained']:,} | {cell(r, 'sgd', 'test_accuracy', 100)} | "
        f"{cell(r, 'sam', 'test_accuracy', 100)} | {gap} | "
        f"{cell(r, 'sgd', 'top_eigenvalue', fmt='.3g')} | "
        f"{cell(r, 'sam', 'top_eigenvalue', fmt='.3g')} | "
        f"{cell(r, 'sgd', 'trace', fmt='.3g')} | "
        f"{cell(r, 'sam', 'trace', fmt='.3g')} |")
  return "\n".join(lines)


def _series(rows, family, key):
  pts = [(r["params_trained"], r["width"], r[f"{key}_mean"], r[f"{key}_std"])
         for r in rows if r["family"] == family and f"{key}_mean" in r]
  return [np.asarray(x) for x in zip(*pts)] if pts else None


def _save(fig: Any, axes: Sequence[Any], path: str) -> str:
  """Grid and legends on every panel; writes the PNG and closes the figure."""
  for ax in axes:
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def plot_gap(rows: Sequence[dict[str, Any]], path: str) -> str:
  """SAM-minus-SGD accuracy gap: dense vs trained parameters; sparse (equal
  trained parameters) vs width."""
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  dense = _series(rows, "dense", "gap_test_accuracy")
  if dense:
    axes[0].errorbar(dense[0], 100 * dense[2], yerr=100 * dense[3],
                     marker="o", capsize=3, label="dense (width sweep)")
    axes[1].errorbar(dense[1], 100 * dense[2], yerr=100 * dense[3],
                     marker="o", capsize=3, color="gray", alpha=0.5,
                     label="dense")
  for family in SPARSE_METHODS:
    s = _series(rows, family, "gap_test_accuracy")
    if s:
      axes[1].errorbar(s[1], 100 * s[2], yerr=100 * s[3], marker="s",
                       capsize=3, label=f"{family} sparse (equal params)")
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
  return _save(fig, axes, path)


def plot_sharpness(rows: Sequence[dict[str, Any]], path: str) -> str:
  """Top Hessian eigenvalue of SGD and SAM minima vs parameters / width."""
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  colors = {"dense": "C0", "random": "C1", "snip": "C2"}
  for opt, marker, style in (("sgd", "o", "-"), ("sam", "^", "--")):
    for family in FAMILIES:
      s = _series(rows, family, f"{opt}_top_eigenvalue")
      if s:
        ax = axes[0] if family == "dense" else axes[1]
        ax.errorbar(s[0] if family == "dense" else s[1], s[2], yerr=s[3],
                    marker=marker, ls=style, capsize=3,
                    color=colors[family], label=f"{family} {opt.upper()}")
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
  return _save(fig, axes, path)


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
  """Every run of :func:`plan`, then the report files."""
  runs = plan(study)
  records = []
  start = time.time()
  for i, run in enumerate(runs):
    record = run_one(run, run_dir(workdir, run), study.sharpness)
    records.append(record)
    print(f"[{i + 1}/{len(runs)}] {run['family']:6s} w={run['width']:<5d} "
          f"{run['optimizer']} seed {run['seed']}: test accuracy "
          f"{100 * record['test_accuracy']:.2f}%, lambda_max "
          f"{record['top_eigenvalue']:.3g}, trained params "
          f"{record['params_trained']:,}  ({time.time() - start:.0f} s)",
          flush=True)
  return write_report(records, workdir, study)


def main(argv):
  del argv
  cli.setup_logging(_WORKDIR.value)  # one line per run on the console
  start = time.time()
  paths = run_study(_CONFIG.value, _WORKDIR.value)
  print()
  with open(paths["report"]) as f:
    print(f.read())
  for name, path in paths.items():
    print(f"{name}: {os.path.abspath(path)}")
  print(f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["config"])
  cli.run(main)
