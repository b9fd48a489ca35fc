r"""Concept-bottleneck studies: intervention curves and noisy concepts.

  python -m experiments.cbm --config=configs/cbm_study.py:intervention \
      --workdir=workdirs/cbm_intervention
  python -m experiments.cbm --config=configs/cbm_study.py:noise \
      --workdir=workdirs/cbm_noise

Each run trains a CBM with the generic loop (``configs/cbm_synthetic.py``
plus the study's overrides), then on the test split:

* **intervention**: task error after ``0..k`` corrected concepts for every
  criterion (``flatsparse.cbm``), individual concepts and groups
  (``group_size`` consecutive concepts; CUB's attribute groups), each
  example's own budget and a
  budget shared over the test set; soft corrections are the 5th / 95th
  percentiles of the training split's logits (``percentiles_of``).
* **noise**: task and concept accuracy, per-concept accuracy, the curves of
  ``noise_criteria``; against the clean run of the same optimizer and seed,
  the susceptible concepts (accuracy drop above the mean drop) and the share
  of the task-accuracy loss that correcting them recovers.

Records are cached per run (``<workdir>/<variant>/seed_<s>/result.json``);
the study writes ``results.json``, ``report.md`` and a PNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import inspect
import os
import time
from typing import Any, NamedTuple

import numpy as np

from experiments import cli
from flatsparse import cbm
from flatsparse import data
from flatsparse import study
from flatsparse.cbm import analysis
from flatsparse.data import concepts as concept_data
from flatsparse.data import cub
from flatsparse.train import builders
from flatsparse.train import loop

__all__ = ["run_study", "split_of", "concept_groups"]


def split_of(dataset: Mapping[str, Any], split: str) -> data.Dataset:
  """A clean split of the train config's concept dataset (no noise)."""
  cfg = {k: v for k, v in dict(dataset).items() if v is not None}
  name = cfg.pop("name")
  loader = {"cbm_synthetic": concept_data.load_concept_synthetic,
            "cub": cub.load_cub}[name]
  keep = set(inspect.signature(loader).parameters) - {"split"}
  return data.load_dataset(name, split,
                           **{k: v for k, v in cfg.items() if k in keep})


def concept_groups(dataset: Mapping[str, Any], k: int,
                   group_size: int) -> list[list[int]]:
  """CUB's attribute groups (``has_bill_shape``, ...) or ``group_size``
  consecutive concepts."""
  if dataset["name"] == "cub":
    keys = ("min_class_count", "concept_indices")
    names = cub.cub_concept_names(dataset.get("data_dir"), **{
        key: dataset[key] for key in keys if dataset.get(key) is not None})
    return cub.cub_concept_groups(names)
  return concept_data.concept_groups(k, group_size).tolist()


class _Trained(NamedTuple):
  """A trained run and its test-split predictions."""

  metrics: dict[str, float]
  seconds: float
  model: Any
  params: Any
  logits: np.ndarray  # concept logits (N, k)
  concepts: np.ndarray
  classes: np.ndarray
  low: Any  # corrections to 0 / 1 (replacement_values)
  high: Any


def _train_and_predict(run, run_dir, config) -> _Trained:
  """Trains (or restores) the run, predicts the test split's concepts and
  derives the corrections; the training split is predicted only when the
  soft bottleneck takes its percentiles from it."""
  start = time.time()
  metrics, state = loop.train_and_evaluate(run.config, run_dir,
                                           return_state=True)
  seconds = time.time() - start
  test = split_of(run.config["dataset"], "test")
  model = builders.build_model(run.config["model"], test.num_classes)

  def predict(ds):
    classes, concepts = concept_data.split_concept_labels(ds.labels)
    logits, _ = cbm.predict_concepts(model, {"params": state.params},
                                     ds.images)
    return logits, concepts, classes

  logits, concepts, classes = predict(test)
  source = None
  if model.bottleneck == "soft":
    source = (predict(split_of(run.config["dataset"], "train"))[0]
              if config.percentiles_of == "train" else logits)
  low, high = cbm.replacement_values(model.bottleneck, source)
  return _Trained(metrics, seconds, model, state.params, logits, concepts,
                  classes, np.asarray(low), np.asarray(high))


def _intervention_record(run, run_dir, config):
  t = _train_and_predict(run, run_dir, config)
  k = t.concepts.shape[1]
  groups = concept_groups(run.config["dataset"], k, config.group_size)
  curves = {}
  for level, level_groups in (("individual", None), ("group", groups)):
    for budget in cbm.BUDGETS:
      for criterion in config.criteria:
        curves[f"{level}/{budget}/{criterion}"] = cbm.intervention_curve(
            t.model, t.params, t.logits, t.concepts, t.classes,
            criterion=criterion, low=t.low, high=t.high,
            groups=level_groups, budget=budget, seed=run.seed).tolist()
  return {**run.tags, **t.metrics, "train_s": round(t.seconds, 1),
          "curves": curves}


def _noise_record(run, run_dir, config, workdir):
  t = _train_and_predict(run, run_dir, config)
  per_concept = cbm.per_concept_accuracy(t.logits, t.concepts)
  curves = {c: cbm.intervention_curve(
      t.model, t.params, t.logits, t.concepts, t.classes, criterion=c,
      low=t.low, high=t.high, max_steps=config.gain_steps,
      seed=run.seed).tolist() for c in config.noise_criteria}
  record = {**run.tags, **t.metrics, "train_s": round(t.seconds, 1),
            "per_concept_accuracy": per_concept.tolist(), "curves": curves}
  clean = study.load_record(os.path.join(
      workdir, f"noise_0/{run.tags['optimizer']}", f"seed_{run.seed}",
      study.RESULT_FILE))
  if run.tags["noise"] and clean is not None:
    flags = cbm.susceptibility(clean["per_concept_accuracy"], per_concept)
    total_drop = float(np.sum(flags.drop))
    explained = analysis.explained_fraction(
        t.model, t.params, t.logits, t.concepts, t.classes, flags.flagged,
        clean_accuracy=clean["accuracy"], low=t.low, high=t.high)
    record["susceptibility"] = {
        "flagged": int(flags.flagged.sum()),
        "mean_drop": flags.mean_drop,
        "flagged_share_of_drop": (float(flags.drop[flags.flagged].sum())
                                  / total_drop if total_drop else None),
        **explained}
  return record


def _modes(records) -> list[str]:
  """The records' modes, in order of first appearance."""
  return list(dict.fromkeys(r["mode"] for r in records))


def _gain(curve: Sequence[float], steps: int) -> float:
  return curve[0] - curve[steps]


def _intervention_report(config, records) -> list[str]:
  lines = []
  for level in ("individual", "group"):
    for budget in cbm.BUDGETS:
      steps = [s for s in config.report_steps
               if level == "individual" or s <= 50]
      rows = []
      for mode in _modes(records):
        mine = [r for r in records if r["mode"] == mode]
        for criterion in config.criteria:
          key = f"{level}/{budget}/{criterion}"
          cells = [study.cell(study.aggregate(
              [r["curves"][key][s] for r in mine], ddof=0), scale=100,
                              fmt=".1f") for s in steps]
          rows.append([mode, criterion.upper()] + cells)
      lines += [f"### Task error (%) after n corrections: {level} level, "
                f"{budget} budget", "", study.markdown_table(
                    ["mode", "criterion"] + [f"n={s}" for s in steps], rows),
                ""]
  return lines


def _noise_report(config, records) -> list[str]:
  rows, sus_rows = [], []
  steps = config.gain_steps
  for level in config.noise_levels:
    for opt in ("adam", "sam"):
      mine = [r for r in records if r["noise"] == level
              and r["optimizer"] == opt]

      def stat(fn, scale=100.0, fmt=".1f", values=mine):
        return study.cell(study.aggregate([fn(r) for r in values], ddof=0),
                          scale=scale, fmt=fmt)

      rows.append([f"{level:.0%}", opt, stat(lambda r: r["accuracy"]),
                   stat(lambda r: r["concept_accuracy"], fmt=".2f"),
                   *[stat(lambda r, c=c: _gain(r["curves"][c], steps))
                     for c in config.noise_criteria]])
      noisy = [r for r in mine if "susceptibility" in r]
      if noisy:
        sus_rows.append([
            f"{level:.0%}", opt,
            stat(lambda r: r["susceptibility"]["flagged"], 1, ".1f", noisy),
            stat(lambda r: r["susceptibility"]["flagged_share_of_drop"],
                 100, ".0f", noisy),
            stat(lambda r: r["susceptibility"]["explained"], 100, ".0f",
                 noisy),
            stat(lambda r: r["susceptibility"]["random_explained"], 100,
                 ".0f", noisy)])
  k = len(records[0]["per_concept_accuracy"])
  return [
      f"### Accuracy and intervention gain (mean ± std over seeds "
      f"{list(config.seeds)}; gain = task error before minus after "
      f"{steps} corrections, points)", "",
      study.markdown_table(
          ["concept noise", "optimizer", "task acc. (%)", "concept acc. (%)"]
          + [f"gain {c.upper()}" for c in config.noise_criteria], rows), "",
      f"### Susceptible concepts (of {k}; drop above the mean drop vs the "
      f"clean run of the same optimizer and seed; recovered: (accuracy "
      f"with those concepts of every test example corrected - noisy) / "
      f"(clean - noisy))", "",
      study.markdown_table(
          ["concept noise", "optimizer", "flagged", "share of the summed "
           "drop (%)", "task-accuracy loss recovered by correcting them (%)",
           "... by correcting as many random concepts (%)"],
          sus_rows), ""]


def _plot(config, records, path):
  if config.study == "intervention":
    modes = _modes(records)
    fig, axes = study.figure(len(modes), (4.5 * len(modes), 4))
    for ax, mode in zip(axes, modes):
      mine = [r for r in records if r["mode"] == mode]
      for criterion in config.criteria:
        curves = np.array([r["curves"][f"individual/example/{criterion}"]
                           for r in mine]) * 100
        ax.plot(np.arange(curves.shape[1]), curves.mean(0),
                label=criterion.upper())
      ax.set_xlabel("corrected concepts per example")
      ax.set_ylabel("task error (%)")
      ax.set_title(mode)
  else:
    fig, axes = study.figure(2, (9.0, 4.0))
    for opt, marker in (("adam", "o"), ("sam", "s")):
      for ax, field in zip(axes, ("accuracy", "concept_accuracy")):
        means = [np.mean([r[field] for r in records if r["noise"] == lv
                          and r["optimizer"] == opt]) * 100
                 for lv in config.noise_levels]
        ax.plot(np.array(config.noise_levels) * 100, means, marker=marker,
                label=opt)
        ax.set_xlabel("concept noise (%)")
        ax.set_ylabel(f"test {field.replace('_', ' ')} (%)")
  return study.save_figure(fig, axes, path)


def run_study(config: Any, workdir: str,
              variants: Sequence[study.Variant]) -> dict[str, Any]:
  """Every variant x seed of ``config`` (``variants``: the config module's
  sweep); returns the records and the report."""
  runs = study.plan(config.base, variants, config.seeds)
  if config.study == "noise":
    # Clean runs first: each noisy run compares with its clean twin.
    runs = sorted(runs, key=lambda r: r.variant.tags["noise"] > 0)

  def fn(run, run_dir, stale):
    del stale
    if config.study == "intervention":
      return _intervention_record(run, run_dir, config)
    return _noise_record(run, run_dir, config, workdir)

  def progress(i, run, record, seconds):
    print(f"{i + 1}/{len(runs)} {run.path}: accuracy "
          f"{record['accuracy']:.4f} ({seconds:.0f} s)", flush=True)

  records = study.run_or_load(runs, workdir, fn=fn, on_record=progress)
  report = (_intervention_report if config.study == "intervention"
            else _noise_report)(config, records)
  plot = _plot(config, records, os.path.join(workdir, f"{config.study}.png"))
  report = [f"# Concept bottleneck study: {config.study}", ""] + report + [
      f"![{config.study}]({os.path.basename(plot)})"]
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write("\n".join(report) + "\n")
  results = {"runs": records}
  study.save_record(os.path.join(workdir, "results.json"), results)
  return {**results, "report": "\n".join(report)}


def _run_configured(config: Any, workdir: str) -> dict[str, Any]:
  return run_study(config, workdir, cli.config_variants(config))


if __name__ == "__main__":
  cli.define_flags("Concept-bottleneck study config.", workdir="Where it "
                   "writes.")
  cli.run(cli.report_main(_run_configured))
