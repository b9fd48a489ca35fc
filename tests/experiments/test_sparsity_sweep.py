"""experiments/sparsity_sweep.py and the SAFE study configs, end to end."""

import json

import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds

from configs import safe_cifar10
from configs import safe_cifar100
from configs import safe_digits
from configs import safe_fashion_mnist
from configs import safe_label_noise_digits
from experiments import sparsity_sweep
from flatsparse import data
from flatsparse import study
from flatsparse.train import builders
from flatsparse.train import faults
from flatsparse.train import loop
from flatsparse.train import metrics as metrics_lib
from tests.data import fake_fashion_mnist


def _plan(module, config):
  return sparsity_sweep.plan(config, module.variants(config))


def _sweep(module, config, workdir):
  return sparsity_sweep.run_sweep(config, module.variants(config),
                                  str(workdir))


def _check_outputs(workdir, module, config, *, noise, min_accuracy=None):
  """results.json, report.md and the plots are there and consistent: each
  record is its run's final eval, the summary the records' mean and std,
  the report the summary."""
  runs = _plan(module, config)
  results = json.loads((workdir / "results.json").read_text())
  assert len(results["runs"]) == len(runs)
  for run, record in zip(runs, results["runs"]):
    tags = run.tags
    assert (record["method"], record["sparsity"], record["seed"],
            record["noise"]) == (tags["method"], tags["sparsity"], run.seed,
                                 tags["noise"])
    assert record["run_dir"] == run.path
    # The record is the run's last evaluation (of Proj(w_T) for SAFE & co.).
    rows = metrics_lib.read_metrics(str(workdir / run.path))
    last = rows[-1]
    assert last["step"] == config.base.steps
    assert record["accuracy"] == last["eval/accuracy"]
    assert record["loss"] == last["eval/loss"]
    assert np.isfinite(record["loss"])
    if min_accuracy is not None:
      assert record["accuracy"] > min_accuracy, record
    assert record["final_sparsity"] == pytest.approx(
        tags["sparsity"] or 0.0, abs=1e-3)
    assert record["final_sparsity"] == last["sparsity/prunable"]
    if tags["method"] in ("iht", "admm", "safe", "safe_plus"):  # w_T too
      assert record["unprojected_accuracy"] == last[
          "eval/unprojected_accuracy"]
      if tags["method"] != "iht":  # IHT's w_T may already be projected
        # w_T (pruned weights near, not at, zero) is not Proj(w_T).
        assert record["loss"] != last["eval/unprojected_loss"]
    else:
      assert record["unprojected_accuracy"] is None
      assert "eval/unprojected_accuracy" not in last
    for kind in ("active", "full"):
      sharp = record["sharpness"][kind]
      assert np.isfinite(sharp["top_eigenvalue"]) and np.isfinite(
          sharp["trace"])
    # Restricted to the nonzero weights, the Hessian has fewer dimensions.
    if tags["sparsity"]:
      assert (record["sharpness"]["active"]["num_params"]
              < record["sharpness"]["full"]["num_params"])
  groups = {(r["noise"], r["method"], r["sparsity"])
            for r in results["summary"]}
  assert groups == {(r.tags["noise"], r.tags["method"], r.tags["sparsity"])
                    for r in runs}
  report = (workdir / "report.md").read_text()
  for row in results["summary"]:
    mine = [r for r in results["runs"] if (r["noise"], r["method"],
                                           r["sparsity"]) == (
                                               row["noise"], row["method"],
                                               row["sparsity"])]
    assert row["seeds"] == [r["seed"] for r in mine] == list(config.seeds)
    for key in ("accuracy", "final_sparsity"):
      values = [r[key] for r in mine]
      assert row[key]["n"] == len(values)
      assert row[key]["mean"] == pytest.approx(np.mean(values), abs=1e-12)
      assert row[key]["std"] == pytest.approx(np.std(values), abs=1e-12)
    eig = [r["sharpness"]["active"]["top_eigenvalue"] for r in mine]
    assert row["top_eigenvalue_active"]["mean"] == pytest.approx(
        np.mean(eig), abs=1e-12)
    # Its line in the report's table of every group.
    noise_cell = "-" if row["noise"] is None else f"{100 * row['noise']:g}%"
    sparsity_cell = ("-" if row["sparsity"] is None
                     else f"{100 * row['sparsity']:g}%")
    accuracy = row["accuracy"]
    assert (f"| {noise_cell} | {row['method']} | {sparsity_cell} | "
            f"{len(mine)} | {100 * accuracy['mean']:.2f} ± "
            f"{100 * accuracy['std']:.2f} |") in report
  for name in config.methods:
    assert f"| {name} |" in report or f"| {name} (no pruning) |" in report
  assert (workdir / "accuracy_vs_sparsity.png").stat().st_size > 1000
  assert (workdir / "accuracy_vs_noise.png").exists() == noise
  return results


def test_tiny_digits_sweep_end_to_end_and_resume(tmp_path, monkeypatch):
  """Dense, a sparsity wrapper (GMP) and a projection method (SAFE): the
  three kinds of run of the sweep (each method's training is tested in
  tests/sparsity, tests/safe and tests/train)."""
  config = safe_digits.get_config("tiny")
  config.methods = {k: config.methods[k] for k in ("dense", "gmp", "safe")}
  config.order = ("dense", "gmp", "safe")
  _sweep(safe_digits, config, tmp_path)
  # 40 steps on digits: every method above chance (0.1).
  results = _check_outputs(tmp_path, safe_digits, config, noise=False,
                           min_accuracy=0.2)
  assert [r["run_dir"] for r in results["runs"]] == [
      "dense/seed_0", "gmp/sparsity_0.9/seed_0", "safe/sparsity_0.9/seed_0"]
  record = json.loads((tmp_path / "gmp/sparsity_0.9/seed_0/result.json"
                       ).read_text())
  assert record["config"]["sparsity"]["sparsity"] == 0.9

  def no_training(*args, **kwargs):
    raise AssertionError("a finished run was trained again")
  monkeypatch.setattr(loop, "train_and_evaluate", no_training)
  _sweep(safe_digits, config, tmp_path)
  again = json.loads((tmp_path / "results.json").read_text())
  assert again["summary"] == results["summary"]
  # A changed config of a finished run is an error, not a silent reuse.
  config.base.steps = 41
  with pytest.raises(ValueError, match="holds a run of a different config"):
    _sweep(safe_digits, config, tmp_path)


# ~20 s: the sweep runs in the fast suite; noise is unit-tested
@pytest.mark.slow
def test_tiny_label_noise_sweep(tmp_path):
  config = safe_label_noise_digits.get_config("tiny")
  _sweep(safe_label_noise_digits, config, tmp_path)
  results = _check_outputs(tmp_path, safe_label_noise_digits, config,
                           noise=True)
  assert {r["noise"] for r in results["runs"]} == {0.0, 0.5}
  assert (tmp_path / "noise_0.5" / "safe" / "sparsity_0.7" / "seed_0"
          / "result.json").exists()


def test_runs_get_their_sparsity_noise_and_seed():
  config = safe_label_noise_digits.get_config()
  runs = {r.path: r for r in _plan(safe_label_noise_digits, config)}
  safe = runs["noise_0.25/safe/sparsity_0.9/seed_2"].config
  assert safe.safe.sparsity == 0.9 and safe.seed == 2
  assert safe.dataset.label_noise == 0.25
  assert safe.dataset.noise_kind == "symmetric"
  gmp = runs["noise_0/gmp/sparsity_0.7/seed_0"].config
  assert gmp.sparsity.sparsity == 0.7 and gmp.dataset.label_noise == 0.0
  dense = runs["noise_0.5/dense/seed_1"].config
  assert dense.get("safe") is None and dense.get("sparsity") is None
  # 3 noise levels x (dense once + 4 pruning methods x 2 sparsities) x 3.
  assert len(runs) == 3 * (1 + 4 * 2) * 3
  assert list(runs)[:4] == ["noise_0/dense/seed_0", "noise_0/dense/seed_1",
                            "noise_0/dense/seed_2",
                            "noise_0/gmp/sparsity_0.7/seed_0"]
  # Without label noise, no noise folder and the dataset as given.
  plain = _plan(safe_digits, safe_digits.get_config())
  assert plain[0].path == "dense/seed_0" and plain[0].tags["noise"] is None
  assert plain[0].config.dataset.label_noise is None


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(epochs=3), "Unknown sweep keys"),
    (lambda c: c.update(sparsities=(0.9, 1.0)), "in \\[0, 1\\), got 1.0"),
    (lambda c: c.update(order=("dense",)), "must list every method once"),
    (lambda c: c.update(label_noise=(1.5,)), "label_noise level"),
    (lambda c: c.update(validation_fraction=1.0), "validation_fraction"),
    (lambda c: c.methods.safe.update(lr=1.0), "unknown top-level keys"),
    (lambda c: c.sharpness.update(steps=3), "Unknown sharpness options"),
])
def test_bad_sweeps_are_rejected_with_the_bad_value(change, message):
  config = safe_digits.get_config("tiny")
  change(config)
  with pytest.raises(ValueError, match=message):
    _plan(safe_digits, config)
  if "unknown top-level" not in message:  # the schema's own check
    with pytest.raises(ValueError, match=message):
      sparsity_sweep.validate_sweep(config)


def test_a_method_without_a_variant_is_an_error():
  config = safe_digits.get_config("tiny")
  variants = [v for v in safe_digits.variants(config)
              if v.tags["method"] != "admm"]
  with pytest.raises(ValueError, match=r"No variant runs the methods "
                     r"\['admm'\]"):
    sparsity_sweep.plan(config, variants)


def test_holdout_split_is_a_stratified_part_of_train():
  name = sparsity_sweep.holdout_dataset("digits", 0.25)
  full = data.load_dataset("digits", "train")
  train = data.load_dataset(name, "train")
  held = data.load_dataset(name, "test")
  assert len(train.labels) + len(held.labels) == len(full.labels)
  assert abs(len(held.labels) - 0.25 * len(full.labels)) <= 10
  rows = {r.tobytes() for r in full.images.reshape(len(full.labels), -1)}
  seen = [r.tobytes() for r in np.concatenate([
      train.images.reshape(len(train.labels), -1),
      held.images.reshape(len(held.labels), -1)])]
  assert set(seen) <= rows
  # Every class is held out in proportion.
  for c in range(10):
    n = np.sum(full.labels == c)
    assert np.sum(held.labels == c) == round(0.25 * n)


@pytest.mark.parametrize("module, variants", [
    (safe_digits, ("", "tiny", *safe_digits.TUNING_VARIANTS)),
    (safe_label_noise_digits, ("", "tiny")),
    (safe_cifar10, ("resnet20", "resnet32", "vgg19", "label_noise", "tiny")),
    (safe_cifar100, ("resnet32", "resnet20", "vgg19", "label_noise", "tiny")),
])
def test_every_config_builds_every_run(module, variants):
  """Schema, train config and optimizer of every run (nothing trains)."""
  for variant in variants:
    config = module.get_config(variant)
    runs = _plan(module, config)
    noises = len(config.get("label_noise") or ()) or 1
    pruned = [m for m in config.methods if m != "dense"]
    assert len(runs) == noises * len(config.seeds) * (
        ("dense" in config.methods) + len(pruned) * len(config.sparsities))
    for run in runs:
      tags = run.tags
      cfg = loop.validate_config(run.config)
      assert cfg["seed"] == run.seed
      assert cfg["dataset"].get("label_noise") == tags["noise"]
      # The run's sparsity reaches the one pruning section of its method.
      target = {"sparsity": cfg["sparsity"], "safe": cfg["safe"]}
      pruning = {k: dict(v) for k, v in target.items() if v}
      if tags["method"] == "dense":
        assert tags["sparsity"] is None and not pruning
      else:
        (section,) = pruning.values()
        assert section["sparsity"] == tags["sparsity"]
      assert bool(cfg["flatness"]) == tags["method"].startswith("sam")
      tx = builders.build_optimizer(cfg["optimizer"], cfg["steps"],
                                    cfg["sparsity"], cfg["flatness"],
                                    cfg["safe"])
      assert isinstance(tx, optax.GradientTransformation)


def test_cifar_recipes_follow_the_paper():
  for module in (safe_cifar10, safe_cifar100):
    config = module.get_config()
    opt = config.base.optimizer
    assert (opt.name, opt.learning_rate, opt.momentum, opt.weight_decay,
            opt.schedule) == ("sgd", 0.1, 0.9, 1e-4, "warmup_cosine")
    assert opt.warmup_steps == 5 * safe_cifar10.EPOCH
    safe = config.methods.safe.safe
    assert (safe.rho, safe.lam, safe.dual_period) == (0.1, 1e-3, 32)
  assert safe_cifar10.get_config("vgg19").base.model.name == "vgg19"
  assert safe_cifar100.get_config().base.model.name == "resnet32"
  assert safe_cifar100.get_config().base.dataset.name == "cifar100"
  with pytest.raises(ValueError, match="allowed: resnet20"):
    safe_cifar10.get_config("resnet18")


@pytest.mark.slow
@pytest.mark.parametrize("module", [safe_cifar10, safe_cifar100],
                         ids=["cifar10", "cifar100"])
def test_tiny_cifar_sweeps_on_mock_data(tmp_path, module):
  config = module.get_config("tiny")
  with tfds.testing.mock_data(num_examples=8,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    _sweep(module, config, tmp_path)
  _check_outputs(tmp_path, module, config, noise=False)


def test_sweep_configs_give_their_sweep_as_code():
  """Every sweep config module has ``variants(config)``; no string
  templates are left in the configs."""
  for module in (safe_digits, safe_label_noise_digits, safe_fashion_mnist,
                 safe_cifar10, safe_cifar100):
    for variant in module.VARIANTS:
      config = module.get_config(variant)
      assert "$" not in config.to_json_best_effort()
      assert all(isinstance(v, study.Variant)
                 for v in module.variants(config))


def test_summary_and_table_average_over_seeds():
  def record(method, sparsity, seed, accuracy, eig):
    sharp = {"top_eigenvalue": eig, "trace": 10 * eig}
    return {"noise": None, "method": method, "sparsity": sparsity,
            "seed": seed, "accuracy": accuracy, "unprojected_accuracy": None,
            "final_sparsity": sparsity or 0.0, "train_s": 1.0,
            "sharpness": {"active": sharp, "full": sharp}}
  records = [record("dense", None, 0, 0.97, 1.0),
             record("dense", None, 1, 0.95, 3.0),
             record("safe", 0.9, 0, 0.90, 0.5),
             record("safe", 0.9, 1, 0.80, 0.7)]
  summary = sparsity_sweep.summarize(records)
  safe = next(r for r in summary if r["method"] == "safe")
  assert safe["accuracy"]["mean"] == pytest.approx(0.85)
  assert safe["accuracy"]["std"] == pytest.approx(0.05)  # population std
  assert safe["trace_active"]["mean"] == pytest.approx(6.0)
  assert safe["seeds"] == [0, 1]
  table = sparsity_sweep.markdown(summary, [0.9, 0.99])
  assert "| safe | 85.00 ± 5.00 | - |" in table
  # The dense row fills every sparsity column.
  assert "| dense (no pruning) | 96.00 ± 1.00 | 96.00 ± 1.00 |" in table
  assert "| safe | 0.600 ± 0.100 | - |" in table  # top eigenvalue


def test_fashion_mnist_study_plans_every_method_clean_and_noisy():
  """Clean: dense once + 6 methods x 4 sparsities; noisy (20%, 50%): every
  method at 90% only; 3 seeds; each model's distribution in every pruning
  section."""
  for variant, model, distribution in (("", "mlp", "uniform"),
                                       ("lenet", "lenet5", "erk")):
    config = safe_fashion_mnist.get_config(variant)
    if variant == "lenet":  # clean only unless asked
      assert not config.label_noise
      config.label_noise = (0.2, 0.5)
    runs = _plan(safe_fashion_mnist, config)
    assert len(runs) == 3 * ((1 + 6 * 4) + 2 * (1 + 6))
    noisy = [r for r in runs if r.tags["noise"] is not None]
    assert {r.tags["noise"] for r in noisy} == {0.2, 0.5}
    assert {r.tags["sparsity"] for r in noisy} == {None, 0.9}
    assert {r.tags["method"] for r in noisy} == set(safe_digits.ORDER)
    for run in runs:
      cfg = loop.validate_config(run.config)
      assert cfg["model"]["name"] == model
      assert cfg["dataset"]["name"] == "fashion_mnist_debian"
      assert cfg["dataset"].get("label_noise") == run.tags["noise"]
      for section in ("sparsity", "safe"):
        if cfg[section]:
          assert cfg[section]["distribution"] == distribution
          assert cfg[section]["sparsity"] == run.tags["sparsity"]
    safe_plus = next(r for r in runs if r.tags["method"] == "safe_plus")
    assert safe_plus.config.safe.importance == "activation"
  # The long control: 4x the steps, GMP's schedule stretched with them.
  config = safe_fashion_mnist.get_config("long")
  runs = _plan(safe_fashion_mnist, config)
  assert len(runs) == 3 * 2 * (1 + 4)  # clean at 99%, 50% noise at 90%
  assert {r.config.steps for r in runs} == {4000}
  gmp = next(r.config for r in runs if r.tags["method"] == "gmp")
  assert gmp.sparsity.update_end_step == 4 * safe_fashion_mnist.TUNED[
      "mlp"]["gmp_end"]
  # The tuning grids: held-out data, no test split, no sharpness.
  for variant, sparsities in (("tune", {0.95, 0.99}),
                              ("lenet_tune", {0.95})):
    config = safe_fashion_mnist.get_config(variant)
    runs = _plan(safe_fashion_mnist, config)
    assert {r.tags["sparsity"] for r in runs} == sparsities
    assert len(runs) == 27 * len(sparsities)
    assert runs[0].config.dataset.name == "fashion_mnist_debian_holdout0.1"
    assert config.sharpness is None


def test_ranking_marks_gaps_beyond_the_seed_spread():
  def acc(mean, std, n=3):
    return {"mean": mean, "std": std, "n": n}
  summary = [
      {"noise": None, "method": "dense", "sparsity": None,
       "accuracy": acc(0.90, 0.01)},
      {"noise": None, "method": "gmp", "sparsity": 0.9,
       "accuracy": acc(0.80, 0.01)},
      {"noise": None, "method": "safe", "sparsity": 0.9,
       "accuracy": acc(0.85, 0.01)},
      {"noise": None, "method": "admm", "sparsity": 0.9,
       "accuracy": acc(0.79, 0.005)},
      {"noise": 0.5, "method": "safe", "sparsity": 0.9,
       "accuracy": acc(0.70, 0.0, n=1)},
      {"noise": 0.5, "method": "gmp", "sparsity": 0.9,
       "accuracy": acc(0.60, 0.0, n=1)},
  ]
  (noise, sparsity, rows), (_, _, noisy) = sparsity_sweep.ranking(summary)
  assert (noise, sparsity) == (None, 0.9)
  # 0.85 - 0.80 = 0.05 > 0.02: apart; 0.80 - 0.79 = 0.01 < 0.015: within.
  assert [(r["method"], r["separated"]) for r in rows] == [
      ("safe", True), ("gmp", False), ("admm", None)]
  assert rows[0]["gap"] == pytest.approx(0.05)
  assert [r["separated"] for r in noisy] == [None, None]  # one seed
  text = sparsity_sweep.ranking_markdown(summary)
  assert "| - | 90% | safe 85.00 > gmp 80.00 ≈ admm 79.00 |" in text
  assert "| 50% | 90% | safe 70.00 ? gmp 60.00 |" in text


def test_noise_plot_counts_clean_runs_as_noise_zero(tmp_path, monkeypatch):
  """Noise only at 90%: one noise panel, the clean run its noise-0 point;
  the sparsity and eigenvalue plots take the clean runs."""
  def record(method, sparsity, noise, accuracy):
    sharp = {"top_eigenvalue": 1.0, "trace": 2.0}
    return {"noise": noise, "method": method, "sparsity": sparsity,
            "seed": 0, "accuracy": accuracy, "unprojected_accuracy": None,
            "final_sparsity": sparsity or 0.0, "train_s": 1.0,
            "sharpness": {"active": sharp, "full": sharp}}
  records = [record("gmp", 0.9, None, 0.8), record("gmp", 0.99, None, 0.7),
             record("gmp", 0.9, 0.2, 0.6), record("gmp", 0.9, 0.5, 0.4)]
  calls = []
  real = study.errorbar
  def spy(ax, xs, stats, **kwargs):
    calls.append((list(xs), [None if s is None else s["mean"]
                             for s in stats]))
    return real(ax, xs, stats, **kwargs)
  monkeypatch.setattr(study, "errorbar", spy)
  sweep = safe_fashion_mnist.get_config("tiny")
  sweep.sparsities = (0.9, 0.99)
  paths = sparsity_sweep.write_outputs(sweep, records, str(tmp_path), 1.0)
  assert set(paths) == {"results", "report", "accuracy_vs_sparsity",
                        "eigenvalue_vs_sparsity", "accuracy_vs_noise"}
  # x of the sparsity plots: -log10(density), 1 at 90% and 2 at 99%.
  log_density = pytest.approx([1.0, 2.0])
  # The sparsity plot: the clean panel only (noise runs at 90% alone).
  accuracy_clean, eig, noise = calls
  assert accuracy_clean == (log_density, [0.8, 0.7])
  assert eig == (log_density, [1.0, 1.0])
  assert noise == ([0.0, 20.0, 50.0], [0.8, 0.6, 0.4])


def test_lenet_safe_with_erk_learns_written_fashion_mnist(tmp_path):
  """SAFE with ERK on LeNet-5 through the loop: Proj(w_T) is 90% sparse
  over the prunable leaves, every layer keeps weights, and the 10-class
  task is learnt (chance 0.1)."""
  config = safe_fashion_mnist.get_config("tiny")
  base = study.apply_overrides(config.base, {
      **config.methods["safe"].to_dict(), "safe.sparsity": 0.9,
      "dataset.data_dir": fake_fashion_mnist.write_learnable_idx(tmp_path),
      "steps": 40, "eval_every": 40, "checkpoint_every": 40})
  result, state = loop.train_and_evaluate(base, str(tmp_path / "run"),
                                          return_state=True)
  assert result["accuracy"] > 0.5
  kernels = {k: v for k, v in state.params.items()}
  kept = {k: int(np.count_nonzero(v["kernel"])) for k, v in kernels.items()}
  sizes = {k: v["kernel"].size for k, v in kernels.items()}
  assert sum(kept.values()) == pytest.approx(0.1 * sum(sizes.values()),
                                             abs=5)
  assert all(kept.values())
  # ERK: the small first convolution is denser than the big Dense layer.
  assert kept["conv_0"] / sizes["conv_0"] > kept["dense_0"] / sizes[
      "dense_0"]


@pytest.mark.slow  # ~40 s: the planning, plots and LeNet run above are fast
def test_tiny_fashion_mnist_sweep_on_written_idx_files(tmp_path):
  config = safe_fashion_mnist.get_config("tiny")
  config.base.dataset.data_dir = fake_fashion_mnist.write_learnable_idx(
      tmp_path)
  _sweep(safe_fashion_mnist, config, tmp_path / "study")
  results = _check_outputs(tmp_path / "study", safe_fashion_mnist, config,
                           noise=True)
  assert [r["run_dir"] for r in results["runs"]] == [
      "dense/seed_0", "gmp/sparsity_0.9/seed_0", "safe/sparsity_0.9/seed_0",
      "noise_0.5/dense/seed_0", "noise_0.5/gmp/sparsity_0.9/seed_0",
      "noise_0.5/safe/sparsity_0.9/seed_0"]
  assert (tmp_path / "study" / "eigenvalue_vs_sparsity.png").exists()


def test_a_diverged_run_is_recorded_and_counted(tmp_path, monkeypatch):
  """A NaN loss stops that run (the loop's guard), not the sweep: the
  record says where; the tables count it; its accuracy is left out."""
  config = safe_digits.get_config("tiny")
  config.methods = {k: config.methods[k] for k in ("dense", "safe")}
  config.order = ("dense", "safe")
  config.sharpness = None
  real = loop.train_and_evaluate

  def diverge_safe(run_config, workdir, **kwargs):
    if run_config.get("safe"):
      raise faults.NonFiniteLossError("NaN", step=7, stopped_at=9,
                                      last_checkpoint=None)
    return real(run_config, workdir, **kwargs)
  monkeypatch.setattr(loop, "train_and_evaluate", diverge_safe)
  _sweep(safe_digits, config, tmp_path)
  results = json.loads((tmp_path / "results.json").read_text())
  dense, safe = results["runs"]
  assert dense.get("diverged_at") is None and dense["accuracy"] > 0.1
  assert safe["diverged_at"] == 7 and safe["accuracy"] is None
  row = results["summary"][1]
  assert row["accuracy"] is None and sparsity_sweep.diverged(row) == 1
  report = (tmp_path / "report.md").read_text()
  assert "| safe | - (1 diverged) |" in report
  assert report.rstrip().endswith("| 1 |")  # the every-group table's column
