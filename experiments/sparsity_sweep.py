r"""Accuracy and sharpness vs sparsity: methods x sparsities x seeds (x noise).

  python -m experiments.sparsity_sweep --config=configs/safe_digits.py \
      --workdir=workdirs/safe_digits

A sweep config has:

* ``base``: a train config (``experiments/train.py`` schema) without pruning.
* ``methods``: ``{name: {top-level key: replacement}}``. Anywhere in the
  replacements, the string ``'$sparsity'`` (``SPARSITY``) stands for the
  target sparsity of the run and is filled in from ``sparsities``, e.g.
  ``{'safe': {'name': 'safe', 'sparsity': '$sparsity', 'lam': 1e-2}}``. A
  method without the placeholder (dense training) does not depend on the
  sparsity: it runs once per seed and is drawn as a horizontal band.
* ``order`` (optional): the method names in the order they run and appear
  in the tables and plots (a ConfigDict iterates its keys sorted); default:
  sorted.
* ``sparsities``: target sparsities, e.g. ``(0.9, 0.95, 0.98, 0.99)``.
* ``seeds``: the seeds of every (method, sparsity).
* ``label_noise`` (optional): fractions of corrupted training labels (set as
  ``base.dataset.label_noise``, kind ``noise_kind``, default symmetric, with
  the fixed ``noise_seed``, default 0, so every method and seed sees the same
  noisy labels); empty or absent: the dataset as given.
* ``sharpness`` (optional; ``None`` skips it): options of
  :func:`flatsparse.train.sharpness` (``num_probes``, ``iters``,
  ``moments``, ``method``, ``probe``) plus ``examples`` (size of the fixed
  batch: the first examples of the training split, un-augmented, with the
  labels the run trained on) and ``seed`` (its PRNG key).
* ``validation_fraction`` (optional): hold out this stratified fraction of
  the training split and evaluate on it instead of the test split (for
  tuning hyperparameters without looking at the test set).

Each run trains with ``flatsparse.train.train_and_evaluate(...,
return_state=True)``; for SAFE/ADMM/IHT the reported accuracy is that of the
finalized ``Proj(w_T)`` (``eval/unprojected_accuracy``, the dense ``w_T``, is
kept too). The sharpness of the final sparse solution is measured twice on
the fixed batch: on the active (nonzero) weights and the dense leaves
(``H_S = M H M`` with ``M`` the nonzero pattern of the prunable leaves, the
same definition for every method) and on all parameters.

Runs go to ``workdir/[noise_<p>/]<method>/[sparsity_<s>/]seed_<k>``; each
finished run leaves ``result.json`` there and is not trained again (a run
interrupted mid-way resumes from its checkpoint). Then ``workdir/results.json``
(every run and the mean/std summary), ``workdir/report.md`` and the plots
``accuracy_vs_sparsity.png`` (and ``accuracy_vs_noise.png`` with label noise)
are written and the tables printed.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
import copy
import dataclasses
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
from flatsparse import data
from flatsparse import sparsity as sparsity_lib
from flatsparse.train import builders
from flatsparse.train import loop
from flatsparse.train import metrics as metrics_lib
from flatsparse.train.sharpness import sharpness as hessian_sharpness

_CONFIG = None
_WORKDIR = None


def define_flags() -> None:
  """Defines the flags; called only when run as a program, so the
  experiment modules can be imported together (tests, other mains)."""
  global _CONFIG, _WORKDIR
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Sweep config.")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs are written.",
                                 required=True)
  cli.define_flags()

SPARSITY = "$sparsity"
RESULT_FILE = "result.json"
SHARPNESS_KEYS = ("num_probes", "iters", "moments", "method", "probe",
                  "unroll")
SHARPNESS_DEFAULTS = {"examples": 512, "seed": 0}
SWEEP_KEYS = ("base", "methods", "order", "sparsities", "seeds",
              "label_noise", "noise_kind", "noise_seed", "sharpness",
              "validation_fraction")


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of the sweep."""

  method: str
  sparsity: float | None  # None: the method does not prune (dense)
  seed: int
  noise: float | None  # None: no label-noise study

  def path(self) -> str:
    parts = []
    if self.noise is not None:
      parts.append(f"noise_{self.noise:g}")
    parts.append(self.method)
    if self.sparsity is not None:
      parts.append(f"sparsity_{self.sparsity:g}")
    parts.append(f"seed_{self.seed}")
    return os.path.join(*parts)


def _plain(value: Any) -> Any:
  """``value`` as plain JSON types (ConfigDicts and tuples unpacked)."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  return json.loads(json.dumps(value))


def _uses_placeholder(value: Any) -> bool:
  if isinstance(value, Mapping):
    return any(_uses_placeholder(v) for v in value.values())
  if isinstance(value, (list, tuple)):
    return any(_uses_placeholder(v) for v in value)
  return value == SPARSITY


def _fill(value: Any, sparsity: float) -> Any:
  if isinstance(value, Mapping):
    return {k: _fill(v, sparsity) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return type(value)(_fill(v, sparsity) for v in value)
  return sparsity if value == SPARSITY else value


def _get(sweep: Any, key: str, default: Any = None) -> Any:
  return sweep[key] if key in sweep and sweep[key] is not None else default


def validate_sweep(sweep: Any) -> None:
  """Checks the sweep schema; raises ValueError naming the bad value."""
  unknown = sorted(set(sweep.keys()) - set(SWEEP_KEYS))
  if unknown:
    raise ValueError(f"Unknown sweep keys {unknown}; allowed: "
                     f"{list(SWEEP_KEYS)}.")
  for key in ("base", "methods", "sparsities", "seeds"):
    if key not in sweep or sweep[key] is None:
      raise ValueError(f"The sweep config needs {key!r} (keys: "
                       f"{list(SWEEP_KEYS)}).")
  if not sweep.methods:
    raise ValueError("sweep.methods is empty; give {name: overrides}.")
  allowed = set(loop.REQUIRED_KEYS) | set(loop.OPTIONAL_KEYS)
  for name, overrides in sweep.methods.items():
    bad = sorted(set(overrides) - allowed)
    if bad:
      raise ValueError(f"Method {name!r} overrides unknown top-level keys "
                       f"{bad}; allowed: {sorted(allowed)}.")
  order = _get(sweep, "order")
  names = sorted(sweep.methods)
  if order is not None and sorted(order) != names:
    raise ValueError(f"sweep.order must list every method once; got "
                     f"{list(order)} for methods {names}.")
  for s in sweep.sparsities:
    if not isinstance(s, (int, float)) or not 0.0 <= s < 1.0:
      raise ValueError(f"Every sparsity must be in [0, 1), got {s!r}.")
  if not sweep.sparsities and any(
      _uses_placeholder(_plain(m)) for m in sweep.methods.values()):
    raise ValueError("sweep.sparsities is empty but methods use "
                     f"{SPARSITY!r}.")
  if not sweep.seeds:
    raise ValueError("sweep.seeds is empty.")
  for p in _get(sweep, "label_noise", ()):
    if not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
      raise ValueError(f"Every label_noise level must be in [0, 1), got "
                       f"{p!r}.")
  fraction = _get(sweep, "validation_fraction")
  if fraction is not None and not 0.0 < fraction < 1.0:
    raise ValueError(f"validation_fraction must be in (0, 1) or None, got "
                     f"{fraction!r}.")
  options = _get(sweep, "sharpness")
  if options is not None:
    bad = sorted(set(options) - set(SHARPNESS_KEYS)
                 - set(SHARPNESS_DEFAULTS))
    if bad:
      raise ValueError(f"Unknown sharpness options {bad}; allowed: "
                       f"{sorted((*SHARPNESS_KEYS, *SHARPNESS_DEFAULTS))}.")


def plan(sweep: Any) -> list[Run]:
  """Every run of the sweep, in the order they are trained."""
  noises: Sequence[float | None] = tuple(
      float(p) for p in _get(sweep, "label_noise", ())) or (None,)
  runs = []
  for noise in noises:
    for name in _get(sweep, "order", sorted(sweep.methods.keys())):
      overrides = sweep.methods[name]
      sparse = _uses_placeholder(_plain(overrides))
      for s in (sweep.sparsities if sparse else (None,)):
        for seed in sweep.seeds:
          runs.append(Run(name, None if s is None else float(s), int(seed),
                          noise))
  return runs


def holdout_dataset(name: str, fraction: float, seed: int = 0) -> str:
  """Registers a dataset whose ``test`` split is held out of ``train``.

  Used to tune hyperparameters without looking at the test split.

  Args:
    name: a dataset of ``flatsparse.data.load_dataset``.
    fraction: the stratified fraction of each class held out.
    seed: seeds which examples are held out.

  Returns:
    The registered name, ``<name>_holdout<fraction>``: its ``train`` split
    is ``name``'s train split without the held-out examples, its ``test``
    split the held-out ones (label noise, if any, applies to ``train``
    only, as for any dataset).
  """
  key = f"{name}_holdout{fraction:g}"

  def load(split: str, data_dir: str | None, **kwargs: Any) -> data.Dataset:
    if split not in ("train", "test"):
      raise ValueError(f"split must be 'train' or 'test' (held out), got "
                       f"{split!r}.")
    full = data.load_dataset(name, "train", data_dir=data_dir, **kwargs)
    rng = np.random.default_rng(seed)
    held = []
    for c in range(full.num_classes):
      idx = rng.permutation(np.flatnonzero(full.labels == c))
      held.append(idx[:round(fraction * idx.size)])
    test = np.zeros(full.labels.shape, bool)
    test[np.concatenate(held)] = True
    keep = test if split == "test" else ~test
    return data.Dataset(full.images[keep], full.labels[keep],
                        full.num_classes)

  data.register_dataset(key, load, overwrite=True)
  return key


def run_config(sweep: Any, run: Run) -> ml_collections.ConfigDict:
  """The train config of one run: base, method overrides, seed, noise."""
  config = _plain(sweep.base)
  overrides = _plain(sweep.methods[run.method])
  if run.sparsity is not None:
    overrides = _fill(overrides, run.sparsity)
  config.update(copy.deepcopy(overrides))
  config["seed"] = run.seed
  fraction = _get(sweep, "validation_fraction")
  if fraction is not None:
    config["dataset"]["name"] = holdout_dataset(config["dataset"]["name"],
                                                float(fraction))
  if run.noise is not None:
    config["dataset"]["label_noise"] = run.noise
    config["dataset"]["noise_kind"] = _get(sweep, "noise_kind", "symmetric")
    config["dataset"]["noise_seed"] = _get(sweep, "noise_seed", 0)
  return ml_collections.ConfigDict(config)


def _support_state(state: Any) -> Any:
  """``state`` whose optimizer state is a sparsity state with the nonzero
  pattern of the prunable leaves as masks (what ``sharpness`` restricts to).

  The same definition for every method: SAFE/ADMM/IHT states carry no masks,
  GMP's masks are the nonzero pattern up to weights that are exactly zero.
  """
  params = state.params
  masks = jax.tree.map(
      lambda p: (p != 0).astype(jnp.uint8) if p.ndim > 1 else None, params)
  support = sparsity_lib.SparseState(inner_state=(), masks=masks,
                                     count=jnp.zeros([], jnp.int32),
                                     key=jax.random.PRNGKey(0))
  return state.replace(opt_state=support)


def measure_sharpness(config: Any, state: Any, options: Mapping[str, Any]
                      ) -> dict[str, dict[str, float]]:
  """Sharpness of a final state on the sweep's fixed training batch.

  Args:
    config: the run's train config (dataset, model, batch size).
    state: the final ``TrainState`` (for SAFE/ADMM/IHT the finalized one).
    options: the sweep's ``sharpness`` options.

  Returns:
    ``{'active': ..., 'full': ...}``, each the dict of
    :func:`flatsparse.train.sharpness`: the Hessian restricted to the
    nonzero prunable weights and the dense leaves, and the full Hessian.
  """
  opts = {**SHARPNESS_DEFAULTS, **options}
  # Host copies: committed and uncommitted device arrays would compile twice.
  state = jax.device_get(state)
  cfg = loop.validate_config(config)  # sections without unset keys
  loader, _ = loop.make_loader(cfg["dataset"], cfg["batch_size"])
  batch = next(iter(loader.eval_batches(int(opts["examples"]),
                                        split="train")))
  model = builders.build_model(cfg["model"], loader.num_classes)
  kwargs = {k: (tuple(v) if k == "moments" else v)
            for k, v in opts.items() if k in SHARPNESS_KEYS}
  key = jax.random.PRNGKey(int(opts["seed"]))
  return {
      "active": hessian_sharpness(model, _support_state(state), batch, key,
                                  **kwargs),
      "full": hessian_sharpness(model, state, batch, key, active_only=False,
                                **kwargs),
  }


def _last(rows: Sequence[Mapping[str, Any]], key: str) -> float | None:
  values = [r[key] for r in rows if key in r]
  return float(values[-1]) if values else None


def run_one(sweep: Any, run: Run, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) one run and measures it.

  Args:
    sweep: the sweep config.
    run: which run.
    workdir: the sweep's folder; the run writes to ``workdir/run.path()``.

  Returns:
    The run's record (also saved as ``result.json`` in its folder):
    accuracy and loss of the final (for SAFE/ADMM/IHT: projected) model,
    ``unprojected_accuracy``, ``final_sparsity`` of the prunable leaves,
    ``sharpness`` (see :func:`measure_sharpness`), timings and the config.

  Raises:
    ValueError: if the run's folder holds a finished run of another config.
  """
  run_dir = os.path.join(workdir, run.path())
  config = run_config(sweep, run)
  plain = _plain(config)
  options = _plain(_get(sweep, "sharpness"))
  path = os.path.join(run_dir, RESULT_FILE)
  if os.path.exists(path):
    with open(path) as f:
      record = json.load(f)
    if record["config"] != plain:
      raise ValueError(
          f"{run_dir} was trained with a different config than the sweep "
          f"now gives for {run}; use a new --workdir or delete that run.")
    if record["sharpness_options"] == options:
      return record
  start = time.time()
  result, state = loop.train_and_evaluate(config, run_dir, return_state=True)
  seconds = time.time() - start
  rows = metrics_lib.read_metrics(run_dir)
  params = jax.device_get(state.params)
  record = {
      "method": run.method, "sparsity": run.sparsity, "seed": run.seed,
      "noise": run.noise, "accuracy": result["accuracy"],
      "loss": result["loss"],
      "unprojected_accuracy": _last(rows, "eval/unprojected_accuracy"),
      "final_sparsity": metrics_lib.sparsity_scalars(params)[
          "sparsity/prunable"],
      "run_dir": run.path(), "config": plain, "sharpness_options": options,
  }
  if os.path.exists(path):  # only the sharpness options changed
    with open(path) as f:
      record["train_s"] = json.load(f).get("train_s")
  else:
    record["train_s"] = round(seconds, 2)
  if options is not None:
    start = time.time()
    record["sharpness"] = measure_sharpness(config, state, options)
    record["sharpness_s"] = round(time.time() - start, 2)
  with open(path + ".tmp", "w") as f:
    json.dump(record, f, indent=2)
  os.replace(path + ".tmp", path)
  return record


# ---- summary, table and plots ----------------------------------------------


def _stats(values: Iterable[float | None]) -> dict[str, float] | None:
  values = [v for v in values if v is not None]
  if not values:
    return None
  return {"mean": float(np.mean(values)), "std": float(np.std(values)),
          "n": len(values)}


def summarize(records: Sequence[Mapping[str, Any]]
              ) -> list[dict[str, Any]]:
  """Mean and std over seeds per (noise, method, sparsity), in run order."""
  groups: dict[tuple, list] = collections.defaultdict(list)
  for r in records:
    groups[(r["noise"], r["method"], r["sparsity"])].append(r)
  out = []
  for (noise, method, sparsity), rs in groups.items():
    row = {"noise": noise, "method": method, "sparsity": sparsity,
           "seeds": [r["seed"] for r in rs]}
    for key in ("accuracy", "unprojected_accuracy", "final_sparsity",
                "train_s"):
      row[key] = _stats(r.get(key) for r in rs)
    for kind in ("active", "full"):
      for key in ("top_eigenvalue", "trace"):
        row[f"{key}_{kind}"] = _stats(
            r["sharpness"][kind][key] for r in rs if "sharpness" in r)
    out.append(row)
  return out


def _cell(stats: Mapping[str, float] | None, scale: float = 1.0,
          digits: int = 2) -> str:
  if stats is None:
    return "-"
  return (f"{scale * stats['mean']:.{digits}f} ± "
          f"{scale * stats['std']:.{digits}f}")


def _pct(s: float) -> str:
  return f"{100 * s:g}%"


def markdown(summary: Sequence[Mapping[str, Any]],
             sparsities: Sequence[float]) -> str:
  """Per noise level: accuracy, top eigenvalue and trace by method (rows)
  and sparsity (columns), mean ± std over seeds; then every group."""
  lines = []
  noises = list(dict.fromkeys(r["noise"] for r in summary))
  header = "| method | " + " | ".join(_pct(s) for s in sparsities) + " |"
  rule = "|---|" + "---|" * len(sparsities)
  for noise in noises:
    rows = [r for r in summary if r["noise"] == noise]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    title = "" if noise is None else f", label noise {_pct(noise)}"
    for key, name, scale, digits in (
        ("accuracy", "Test accuracy (%)", 100.0, 2),
        ("top_eigenvalue_active", "Top Hessian eigenvalue (active weights)",
         1.0, 3),
        ("trace_active", "Hessian trace (active weights)", 1.0, 2)):
      if all(r[key] is None for r in rows):
        continue
      lines += [f"**{name}{title}**, mean ± std over seeds", "", header, rule]
      for method in methods:
        cells = []
        for s in sparsities:
          match = [r for r in rows if r["method"] == method
                   and (r["sparsity"] is None or r["sparsity"] == s)]
          cells.append(_cell(match[0][key], scale, digits) if match else "-")
        dense = all(r["sparsity"] is None for r in rows
                    if r["method"] == method)
        label = f"{method} (no pruning)" if dense else method
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
      lines.append("")
  lines += ["**Every group**", "",
            ("| noise | method | sparsity | seeds | accuracy (%) | unprojected"
             " (%) | final sparsity | top eig. (active) | trace (active) | "
             "top eig. (all) | trace (all) | train s |"),
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in summary:
    lines.append(
        f"| {'-' if r['noise'] is None else _pct(r['noise'])} | {r['method']}"
        f" | {'-' if r['sparsity'] is None else _pct(r['sparsity'])} | "
        f"{len(r['seeds'])} | {_cell(r['accuracy'], 100)} | "
        f"{_cell(r['unprojected_accuracy'], 100)} | "
        f"{_cell(r['final_sparsity'], 1, 4)} | "
        f"{_cell(r['top_eigenvalue_active'], 1, 3)} | "
        f"{_cell(r['trace_active'])} | "
        f"{_cell(r['top_eigenvalue_full'], 1, 3)} | "
        f"{_cell(r['trace_full'])} | {_cell(r['train_s'], 1, 1)} |")
  return "\n".join(lines) + "\n"


def _errorbar(ax: Any, xs: Sequence[float], stats: Sequence[Any],
              label: str) -> None:
  points = [(x, s) for x, s in zip(xs, stats) if s is not None]
  if not points:
    return
  ax.errorbar([p[0] for p in points], [100 * p[1]["mean"] for p in points],
              yerr=[100 * p[1]["std"] for p in points], marker="o", ms=4,
              capsize=3, label=label)


def plot_sparsity(summary: Sequence[Mapping[str, Any]],
                  sparsities: Sequence[float], path: str) -> str:
  """Test accuracy vs sparsity per method (error bars: std over seeds; x:
  log of the density), one panel per noise level; non-pruning methods as a
  band."""
  noises = list(dict.fromkeys(r["noise"] for r in summary))
  fig, axes = plt.subplots(1, len(noises), figsize=(6 * len(noises), 4.5),
                           squeeze=False)
  # Evenly spaced in log density: 90%, 99%, 99.9% one step apart.
  xs = [-math.log10(1.0 - s) for s in sparsities]
  for ax, noise in zip(axes[0], noises):
    rows = [r for r in summary if r["noise"] == noise]
    for method in dict.fromkeys(r["method"] for r in rows):
      mine = [r for r in rows if r["method"] == method]
      if all(r["sparsity"] is None for r in mine):
        acc = mine[0]["accuracy"]
        if acc is None:
          continue
        mean, std = 100 * acc["mean"], 100 * acc["std"]
        line = ax.axhline(mean, ls="--", color="k", label=method)
        ax.axhspan(mean - std, mean + std, color=line.get_color(), alpha=0.1)
        continue
      by_s = {r["sparsity"]: r["accuracy"] for r in mine}
      _errorbar(ax, xs, [by_s.get(s) for s in sparsities], method)
    ax.set_xlabel("sparsity (log scale of the density)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(xs, [_pct(s) for s in sparsities])
    ax.grid(alpha=0.3)
    ax.set_title("accuracy vs sparsity" if noise is None
                 else f"label noise {_pct(noise)}")
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def plot_noise(summary: Sequence[Mapping[str, Any]],
               sparsities: Sequence[float], path: str) -> str:
  """Test accuracy vs label noise per method, one panel per sparsity."""
  noises = sorted(n for n in dict.fromkeys(r["noise"] for r in summary)
                  if n is not None)
  fig, axes = plt.subplots(1, len(sparsities),
                           figsize=(5 * len(sparsities), 4.5), squeeze=False)
  xs = [100 * n for n in noises]
  for ax, s in zip(axes[0], sparsities):
    for method in dict.fromkeys(r["method"] for r in summary):
      by_noise = {r["noise"]: r["accuracy"] for r in summary
                  if r["method"] == method
                  and (r["sparsity"] is None or r["sparsity"] == s)}
      _errorbar(ax, xs, [by_noise.get(n) for n in noises], method)
    ax.set_xlabel("symmetric label noise (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    ax.set_title(f"sparsity {_pct(s)}")
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def write_outputs(sweep: Any, records: Sequence[Mapping[str, Any]],
                  workdir: str, seconds: float) -> dict[str, str]:
  """``results.json``, ``report.md`` and the plots; returns their paths."""
  sparsities = [float(s) for s in sweep.sparsities]
  summary = summarize(records)
  paths = {"results": os.path.join(workdir, "results.json"),
           "report": os.path.join(workdir, "report.md"),
           "accuracy_vs_sparsity": os.path.join(workdir,
                                                "accuracy_vs_sparsity.png")}
  with open(paths["results"], "w") as f:
    json.dump({"runs": [{k: v for k, v in r.items() if k != "config"}
                        for r in records],
               "summary": summary,
               # Resumed runs cost nothing now: both totals are kept.
               "invocation_seconds": round(seconds, 1),
               "run_seconds_total": round(sum(
                   (r.get("train_s") or 0.0) + r.get("sharpness_s", 0.0)
                   for r in records), 1)},
              f, indent=2)
  with open(paths["report"], "w") as f:
    f.write(markdown(summary, sparsities))
  plot_sparsity(summary, sparsities, paths["accuracy_vs_sparsity"])
  if any(r["noise"] is not None for r in records):
    paths["accuracy_vs_noise"] = plot_noise(
        summary, sparsities, os.path.join(workdir, "accuracy_vs_noise.png"))
  return paths


def run_sweep(sweep: Any, workdir: str) -> dict[str, str]:
  """Trains every run of the sweep (finished runs are reused), writes the
  outputs.

  Args:
    sweep: the sweep config (module docstring).
    workdir: where the runs and the outputs go.

  Returns:
    ``{'results', 'report', 'accuracy_vs_sparsity'[, 'accuracy_vs_noise']}``:
    the paths of ``results.json``, ``report.md`` and the plots.
  """
  validate_sweep(sweep)
  start = time.time()
  records = []
  runs = plan(sweep)
  for i, run in enumerate(runs):
    t = time.time()
    record = run_one(sweep, run, workdir)
    records.append(record)
    sharp = record.get("sharpness", {}).get("active")
    eig = f"  top eig {sharp['top_eigenvalue']:.3f}" if sharp else ""
    print(f"[{i + 1}/{len(runs)}] {run.path():45s} accuracy "
          f"{100 * record['accuracy']:.2f}%{eig}  ({time.time() - t:.1f} s)",
          flush=True)
  return write_outputs(sweep, records, workdir, time.time() - start)


def main(argv):
  del argv
  cli.setup_logging(_WORKDIR.value)
  start = time.time()
  paths = run_sweep(_CONFIG.value, _WORKDIR.value)
  print()
  with open(paths["report"]) as f:
    print(f.read())
  for name, path in paths.items():
    print(f"{name}: {os.path.abspath(path)}")
  print(f"Total: {time.time() - start:.0f} s")


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["config"])
  cli.run(main)
