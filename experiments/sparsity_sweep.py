r"""Accuracy and sharpness vs sparsity: methods x sparsities x seeds (x noise).

  python -m experiments.sparsity_sweep --config=configs/safe_digits.py \
      --workdir=workdirs/safe_digits

The sweep is the config module's ``variants(config)``: a list of
:class:`flatsparse.study.Variant` tagged ``noise``, ``method`` and
``sparsity`` (``configs/safe_digits.py`` crosses
``flatsparse.study.label_noise_axis`` with ``sparsity_axis``: dense once,
every pruning method at every target sparsity). The config itself has:

* ``base``: a train config (``experiments/train.py`` schema) without pruning.
* ``methods``: ``{name: {top-level key: replacement}}``; a pruning method's
  section (``sparsity`` or ``safe``) gets each target as its ``sparsity``.
* ``order`` (optional): the method names in the order they run and appear
  in the tables and plots (a ConfigDict iterates its keys sorted); default:
  sorted.
* ``sparsities``: target sparsities, e.g. ``(0.9, 0.95, 0.98, 0.99)``.
* ``seeds``: the seeds of every (method, sparsity).
* ``label_noise`` (optional): fractions of corrupted training labels (kind
  ``noise_kind``, default symmetric, with the fixed ``noise_seed``, default
  0, so every method and seed sees the same noisy labels); empty or absent:
  the dataset as given.
* ``noise_sparsities`` (optional): the sparsities the noisy runs are at,
  when the config's ``variants`` runs label noise at fewer sparsities than
  the clean sweep (``configs/safe_fashion_mnist.py``); the noise plot has
  one panel per sparsity with noisy runs, the clean runs at noise 0.
* ``sharpness`` (optional; ``None`` skips it): options of
  :func:`flatsparse.train.sharpness` (``num_probes``, ``iters``,
  ``moments``, ``method``, ``probe``, ``unroll``) plus ``examples`` (size of
  the fixed batch: the first examples of the training split, un-augmented,
  with the labels the run trained on) and ``seed`` (its PRNG key).
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
interrupted mid-way resumes from its checkpoint; changed sharpness options
re-measure it). Then ``workdir/results.json`` (every run and the mean/std
summary), ``workdir/report.md`` (the tables, and the methods ranked at
each sparsity with whether each gap exceeds the seed spread) and the plots
``accuracy_vs_sparsity.png``, ``eigenvalue_vs_sparsity.png`` (with
sharpness) and ``accuracy_vs_noise.png`` (with label noise) are written and
the tables printed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import json
import math
import os
import time
from typing import Any

import jax
import numpy as np

from experiments import cli
from flatsparse import data
from flatsparse import study
from flatsparse.train import builders
from flatsparse.train import faults
from flatsparse.train import loop
from flatsparse.train import metrics as metrics_lib
from flatsparse.train.sharpness import sharpness as hessian_sharpness

SHARPNESS_KEYS = ("num_probes", "iters", "moments", "method", "probe",
                  "unroll")
SHARPNESS_DEFAULTS = {"examples": 512, "seed": 0}
SWEEP_KEYS = ("base", "methods", "order", "sparsities", "seeds",
              "label_noise", "noise_kind", "noise_seed", "noise_sparsities",
              "sharpness", "validation_fraction")
# Population std over seeds (numpy's default): what every recorded table of
# this sweep used (benchmarks/results/studies/safe_*).
DDOF = 0


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
  order = _get(sweep, "order")
  names = sorted(sweep.methods)
  if order is not None and sorted(order) != names:
    raise ValueError(f"sweep.order must list every method once; got "
                     f"{list(order)} for methods {names}.")
  for s in (*sweep.sparsities, *_get(sweep, "noise_sparsities", ())):
    if not isinstance(s, (int, float)) or not 0.0 <= s < 1.0:
      raise ValueError(f"Every sparsity must be in [0, 1), got {s!r}.")
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


def plan(sweep: Any, variants: Sequence[study.Variant]) -> list[study.Run]:
  """Every run of the sweep, in the order they are trained.

  Args:
    sweep: the sweep config (module docstring); validated here.
    variants: the config module's ``variants(sweep)``.

  Returns:
    The runs: the variants in order, each at every seed.

  Raises:
    ValueError: naming the bad value, for a bad sweep or a method of
      ``sweep.methods`` that no variant runs.
  """
  validate_sweep(sweep)
  missing = sorted(set(sweep.methods) - {v.tags.get("method")
                                         for v in variants})
  if missing:
    raise ValueError(f"No variant runs the methods {missing}; the config's "
                     "variants(config) must tag each with its 'method'.")
  base = sweep.base
  fraction = _get(sweep, "validation_fraction")
  if fraction is not None:
    base = study.apply_overrides(base, {"dataset.name": holdout_dataset(
        base.dataset.name, float(fraction))})
  return study.plan(base, variants, sweep.seeds)


def nonzero_masks(params: Any) -> Any:
  """The nonzero pattern of the prunable (ndim > 1) leaves; None on the
  others: the active weights of every method (SAFE/ADMM/IHT's projected
  params carry no masks; GMP's masks are this pattern up to weights that
  are exactly zero)."""
  return jax.tree.map(lambda p: (p != 0) if p.ndim > 1 else None, params)


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
      "active": hessian_sharpness(model, state, batch, key,
                                  masks=nonzero_masks(state.params), **kwargs),
      "full": hessian_sharpness(model, state, batch, key, **kwargs),
  }


def _last(rows: Sequence[Mapping[str, Any]], key: str) -> float | None:
  values = [r[key] for r in rows if key in r]
  return float(values[-1]) if values else None


def train_and_measure(sweep: Any
                      ) -> Callable[[study.Run, str, dict[str, Any] | None],
                                    dict[str, Any]]:
  """The sweep's run function for :func:`flatsparse.study.run_or_load`.

  The record of a run: its tags, accuracy and loss of the final (for
  SAFE/ADMM/IHT: projected) model, ``unprojected_accuracy``,
  ``final_sparsity`` of the prunable leaves, ``sharpness`` (see
  :func:`measure_sharpness`) and timings. A cached record whose
  ``sharpness_options`` differ from the sweep's is measured again (the
  finished run is only re-evaluated; its ``train_s`` is kept).

  A run whose loss becomes NaN or inf (``faults.NonFiniteLossError``, e.g.
  a tuning grid's too-large penalty) is a result, not a crash of the
  sweep: its record has ``diverged_at`` (the first non-finite step),
  accuracy and loss None, no sharpness; the tables count it.
  """
  options = study.plain(_get(sweep, "sharpness"))

  def run_one(run: study.Run, run_dir: str, stale: dict[str, Any] | None
              ) -> dict[str, Any]:
    start = time.time()
    tags = run.tags
    record = {"method": tags["method"], "sparsity": tags["sparsity"],
              "seed": run.seed, "noise": tags["noise"]}
    try:
      result, state = loop.train_and_evaluate(run.config, run_dir,
                                              return_state=True)
    except faults.NonFiniteLossError as e:
      return {**record, "accuracy": None, "loss": None,
              "unprojected_accuracy": None, "final_sparsity": None,
              "diverged_at": e.step, "run_dir": run.path,
              "sharpness_options": options,
              "train_s": round(time.time() - start, 2)}
    seconds = time.time() - start
    rows = metrics_lib.read_metrics(run_dir)
    params = jax.device_get(state.params)
    record = {
        **record,
        "accuracy": result["accuracy"], "loss": result["loss"],
        "unprojected_accuracy": _last(rows, "eval/unprojected_accuracy"),
        "final_sparsity": metrics_lib.sparsity_scalars(params)[
            "sparsity/prunable"],
        "run_dir": run.path, "sharpness_options": options,
        "train_s": (stale.get("train_s") if stale is not None
                    else round(seconds, 2)),
    }
    if options is not None:
      start = time.time()
      record["sharpness"] = measure_sharpness(run.config, state, options)
      record["sharpness_s"] = round(time.time() - start, 2)
    return record

  return run_one


# ---- summary, table and plots ----------------------------------------------


def _sharpness_field(kind: str, key: str):
  return lambda r: r["sharpness"][kind][key] if "sharpness" in r else None


def summarize(records: Sequence[Mapping[str, Any]]
              ) -> list[dict[str, Any]]:
  """Mean and std over seeds per (noise, method, sparsity), in run order."""
  fields = {key: key for key in ("accuracy", "unprojected_accuracy",
                                 "final_sparsity", "train_s")}
  # Its sum is the number of diverged seeds (their accuracy is left out).
  fields["diverged"] = lambda r: float(r.get("diverged_at") is not None)
  for kind in ("active", "full"):
    for key in ("top_eigenvalue", "trace"):
      fields[f"{key}_{kind}"] = _sharpness_field(kind, key)
  return study.summarize(records, ("noise", "method", "sparsity"), fields,
                         ddof=DDOF)


def _pct(s: float) -> str:
  return f"{100 * s:g}%"


def diverged(row: Mapping[str, Any]) -> int:
  """The number of seeds of a summary row whose loss became non-finite."""
  stats = row.get("diverged")
  return 0 if stats is None else round(stats["mean"] * stats["n"])


def separated(a: Mapping[str, float], b: Mapping[str, float]
              ) -> bool | None:
  """Whether two ``{'mean', 'std', 'n'}`` accuracies differ by more than
  their seed spread: ``|mean_a - mean_b| > std_a + std_b`` (the mean ± std
  intervals do not overlap); None when either has fewer than two seeds (no
  spread). With 3 seeds a rough rule, not a test: a gap inside it is
  reported as within noise."""
  if a["n"] < 2 or b["n"] < 2:
    return None
  return abs(a["mean"] - b["mean"]) > a["std"] + b["std"]


def ranking(summary: Sequence[Mapping[str, Any]]
            ) -> list[tuple[Any, float, list[dict[str, Any]]]]:
  """The pruning methods at each (noise, sparsity), best mean accuracy
  first.

  Returns:
    ``[(noise, sparsity, rows)]`` in run order; each row ``{'method',
    'accuracy', 'gap', 'separated'}`` where ``gap`` is the mean accuracy
    minus the next method's and ``separated`` whether that gap exceeds the
    seed spread (:func:`separated`); None for the last.
  """
  out = []
  keys = dict.fromkeys((r["noise"], r["sparsity"]) for r in summary
                       if r["sparsity"] is not None)
  for noise, sparsity in keys:
    rows = sorted((r for r in summary if r["noise"] == noise
                   and r["sparsity"] == sparsity
                   and r["accuracy"] is not None),
                  key=lambda r: -r["accuracy"]["mean"])
    ranked = []
    for i, r in enumerate(rows):
      nxt = rows[i + 1]["accuracy"] if i + 1 < len(rows) else None
      ranked.append({
          "method": r["method"], "accuracy": r["accuracy"],
          "gap": None if nxt is None else r["accuracy"]["mean"] - nxt["mean"],
          "separated": None if nxt is None else separated(r["accuracy"],
                                                          nxt)})
    out.append((noise, sparsity, ranked))
  return out


def ranking_markdown(summary: Sequence[Mapping[str, Any]]) -> str:
  """One line per (noise, sparsity): the methods best first, ``>`` where
  the gap to the next exceeds the seed spread, ``≈`` where it does not,
  ``?`` where a method has one seed."""
  table = []
  for noise, sparsity, rows in ranking(summary):
    text = ""
    for row in rows:
      text += f"{row['method']} {100 * row['accuracy']['mean']:.2f}"
      if row["gap"] is not None:
        text += {True: " > ", False: " ≈ ", None: " ? "}[row["separated"]]
    table.append(["-" if noise is None else _pct(noise), _pct(sparsity),
                  text])
  return ("**Ranking by mean test accuracy (%)**: `>` the gap to the next "
          "exceeds the seed spread (|Δmean| > std₁ + std₂), `≈` within "
          "it, `?` one seed (no spread)\n\n"
          + study.markdown_table(["noise", "sparsity", "ranking"], table)
          + "\n")


def markdown(summary: Sequence[Mapping[str, Any]],
             sparsities: Sequence[float]) -> str:
  """Per noise level: accuracy, top eigenvalue and trace by method (rows)
  and sparsity (columns), mean ± std over seeds; then every group."""
  lines = []
  noises = list(dict.fromkeys(r["noise"] for r in summary))
  header = ["method", *(_pct(s) for s in sparsities)]
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
      table = []
      for method in methods:
        cells = []
        for s in sparsities:
          match = [r for r in rows if r["method"] == method
                   and (r["sparsity"] is None or r["sparsity"] == s)]
          text = (study.cell(match[0][key], scale=scale,
                             fmt=f".{digits}f") if match else "-")
          if match and key == "accuracy" and diverged(match[0]):
            text += f" ({diverged(match[0])} diverged)"
          cells.append(text)
        dense = all(r["sparsity"] is None for r in rows
                    if r["method"] == method)
        table.append([f"{method} (no pruning)" if dense else method, *cells])
      lines += [f"**{name}{title}**, mean ± std over seeds", "",
                study.markdown_table(header, table), ""]
  every = [[
      "-" if r["noise"] is None else _pct(r["noise"]), r["method"],
      "-" if r["sparsity"] is None else _pct(r["sparsity"]),
      len(r["seeds"]), study.cell(r["accuracy"], scale=100),
      study.cell(r["unprojected_accuracy"], scale=100),
      study.cell(r["final_sparsity"], fmt=".4f"),
      study.cell(r["top_eigenvalue_active"], fmt=".3f"),
      study.cell(r["trace_active"]),
      study.cell(r["top_eigenvalue_full"], fmt=".3f"),
      study.cell(r["trace_full"]), study.cell(r["train_s"], fmt=".1f"),
      diverged(r)] for r in summary]
  lines += [ranking_markdown(summary)]
  lines += ["**Every group**", "", study.markdown_table(
      ["noise", "method", "sparsity", "seeds", "accuracy (%)",
       "unprojected (%)", "final sparsity", "top eig. (active)",
       "trace (active)", "top eig. (all)", "trace (all)", "train s",
       "diverged"], every)]
  return "\n".join(lines) + "\n"


def _sparsity_panel(ax: Any, rows: Sequence[Mapping[str, Any]],
                    sparsities: Sequence[float], key: str, scale: float,
                    ylabel: str, title: str) -> None:
  """One panel: ``key`` vs sparsity per method (error bars: std over
  seeds; x: log of the density, so 90%, 99%, 99.9% are one step apart);
  methods that do not prune as a dashed line and band."""
  xs = [-math.log10(1.0 - s) for s in sparsities]
  for method in dict.fromkeys(r["method"] for r in rows):
    mine = [r for r in rows if r["method"] == method]
    if all(r["sparsity"] is None for r in mine):
      stats = mine[0][key]
      if stats is None:
        continue
      mean, std = scale * stats["mean"], scale * stats["std"]
      line = ax.axhline(mean, ls="--", color="k", label=method)
      ax.axhspan(mean - std, mean + std, color=line.get_color(), alpha=0.1)
      continue
    by_s = {r["sparsity"]: r[key] for r in mine}
    study.errorbar(ax, xs, [by_s.get(s) for s in sparsities], scale=scale,
                   ms=4, label=method)
  ax.set_xlabel("sparsity (log scale of the density)")
  ax.set_ylabel(ylabel)
  ax.set_xticks(xs, [_pct(s) for s in sparsities])
  ax.set_title(title)


def plot_sparsity(summary: Sequence[Mapping[str, Any]],
                  sparsities: Sequence[float], path: str) -> str:
  """Test accuracy vs sparsity per method, one panel per noise level that
  spans several sparsities (a level run at one sparsity only is a point:
  the noise plot shows it)."""
  noises = list(dict.fromkeys(r["noise"] for r in summary))
  spanning = [n for n in noises if len({
      r["sparsity"] for r in summary
      if r["noise"] == n and r["sparsity"] is not None}) > 1]
  noises = spanning or noises
  fig, axes = study.figure(len(noises), (6 * len(noises), 4.5))
  for ax, noise in zip(axes, noises):
    _sparsity_panel(
        ax, [r for r in summary if r["noise"] == noise], sparsities,
        "accuracy", 100.0, "test accuracy (%)",
        "accuracy vs sparsity" if noise is None
        else f"label noise {_pct(noise)}")
  return study.save_figure(fig, axes, path)


def plot_sharpness(summary: Sequence[Mapping[str, Any]],
                   sparsities: Sequence[float], path: str,
                   key: str = "top_eigenvalue_active") -> str:
  """The top Hessian eigenvalue on the active weights (``key``) vs
  sparsity per method, clean runs only."""
  fig, axes = study.figure(1, (6, 4.5))
  _sparsity_panel(axes[0], [r for r in summary if not r["noise"]],
                  sparsities, key, 1.0,
                  "top Hessian eigenvalue (active weights)",
                  "sharpness vs sparsity")
  return study.save_figure(fig, axes, path)


def plot_noise(summary: Sequence[Mapping[str, Any]],
               sparsities: Sequence[float], path: str) -> str:
  """Test accuracy vs label noise per method, one panel per sparsity with
  noisy runs; clean runs (noise None) count as noise 0."""
  def level(row: Mapping[str, Any]) -> float:
    return row["noise"] or 0.0

  noises = sorted(dict.fromkeys(level(r) for r in summary))
  noisy = {r["sparsity"] for r in summary if level(r) > 0}
  sparsities = [s for s in sparsities if s in noisy] or list(sparsities)
  fig, axes = study.figure(len(sparsities), (5 * len(sparsities), 4.5))
  xs = [100 * n for n in noises]
  for ax, s in zip(axes, sparsities):
    for method in dict.fromkeys(r["method"] for r in summary):
      by_noise = {level(r): r["accuracy"] for r in summary
                  if r["method"] == method
                  and (r["sparsity"] is None or r["sparsity"] == s)}
      study.errorbar(ax, xs, [by_noise.get(n) for n in noises], scale=100,
                     ms=4, label=method)
    ax.set_xlabel("symmetric label noise (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(xs)
    ax.set_title(f"sparsity {_pct(s)}")
  return study.save_figure(fig, axes, path)


def write_outputs(sweep: Any, records: Sequence[Mapping[str, Any]],
                  workdir: str, seconds: float) -> dict[str, str]:
  """``results.json``, ``report.md`` and the plots; returns their paths."""
  # The columns: every sparsity of a clean or a noisy run.
  sparsities = sorted({float(s) for s in (
      *sweep.sparsities, *_get(sweep, "noise_sparsities", ()))})
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
  if any(r["top_eigenvalue_active"] is not None for r in summary):
    paths["eigenvalue_vs_sparsity"] = plot_sharpness(
        summary, sparsities, os.path.join(workdir,
                                          "eigenvalue_vs_sparsity.png"))
  if any(r["noise"] is not None for r in records):
    paths["accuracy_vs_noise"] = plot_noise(
        summary, sparsities, os.path.join(workdir, "accuracy_vs_noise.png"))
  return paths


def run_sweep(sweep: Any, variants: Sequence[study.Variant], workdir: str
              ) -> dict[str, str]:
  """Trains every run of the sweep (finished runs are reused), writes the
  outputs.

  Args:
    sweep: the sweep config (module docstring).
    variants: the config module's ``variants(sweep)``.
    workdir: where the runs and the outputs go.

  Returns:
    ``{'results', 'report', 'accuracy_vs_sparsity'[,
    'eigenvalue_vs_sparsity'][, 'accuracy_vs_noise']}``: the paths of
    ``results.json``, ``report.md`` and the plots (the eigenvalue plot when
    sharpness is measured).
  """
  start = time.time()
  runs = plan(sweep, variants)
  options = study.plain(_get(sweep, "sharpness"))

  def show(i: int, run: study.Run, record: dict[str, Any], seconds: float):
    sharp = record.get("sharpness", {}).get("active")
    eig = f"  top eig {sharp['top_eigenvalue']:.3f}" if sharp else ""
    outcome = (f"diverged at step {record['diverged_at']}"
               if record.get("diverged_at") is not None
               else f"accuracy {100 * record['accuracy']:.2f}%")
    print(f"[{i + 1}/{len(runs)}] {run.path:45s} {outcome}{eig}  "
          f"({seconds:.1f} s)", flush=True)

  records = study.run_or_load(
      runs, workdir, train_and_measure(sweep),
      is_current=lambda r: r.get("sharpness_options") == options,
      on_record=show)
  return write_outputs(sweep, records, workdir, time.time() - start)


def main(argv):
  del argv
  workdir = cli.workdir()
  cli.setup_logging(workdir)
  start = time.time()
  sweep = cli.config()
  paths = run_sweep(sweep, cli.config_variants(sweep), workdir)
  cli.print_outputs(paths, start)


if __name__ == "__main__":
  cli.define_flags("Sweep config.")
  cli.run(main)
