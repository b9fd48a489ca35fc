"""experiments/sparsity_sweep.py and the SAFE study configs, end to end."""

import json

import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds

from configs import safe_cifar10
from configs import safe_cifar100
from configs import safe_digits
from configs import safe_label_noise_digits
from experiments import sparsity_sweep
from flatsparse import data
from flatsparse.train import builders
from flatsparse.train import loop
from flatsparse.train import metrics as metrics_lib


def _check_outputs(workdir, config, *, noise, min_accuracy=None):
  """results.json, report.md and the plots are there and consistent: each
  record is its run's final eval, the summary the records' mean and std,
  the report the summary."""
  runs = sparsity_sweep.plan(config)
  results = json.loads((workdir / "results.json").read_text())
  assert len(results["runs"]) == len(runs)
  for run, record in zip(runs, results["runs"]):
    assert (record["method"], record["sparsity"], record["seed"],
            record["noise"]) == (run.method, run.sparsity, run.seed,
                                 run.noise)
    # The record is the run's last evaluation (of Proj(w_T) for SAFE & co.).
    rows = metrics_lib.read_metrics(str(workdir / run.path()))
    last = rows[-1]
    assert last["step"] == config.base.steps
    assert record["accuracy"] == last["eval/accuracy"]
    assert record["loss"] == last["eval/loss"]
    assert np.isfinite(record["loss"])
    if min_accuracy is not None:
      assert record["accuracy"] > min_accuracy, record
    assert record["final_sparsity"] == pytest.approx(run.sparsity or 0.0,
                                                     abs=1e-3)
    assert record["final_sparsity"] == last["sparsity/prunable"]
    if run.method in ("iht", "admm", "safe", "safe_plus"):  # w_T too
      assert record["unprojected_accuracy"] == last[
          "eval/unprojected_accuracy"]
      if run.method != "iht":  # IHT's w_T may already be projected
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
    if run.sparsity:
      assert (record["sharpness"]["active"]["num_params"]
              < record["sharpness"]["full"]["num_params"])
  groups = {(r["noise"], r["method"], r["sparsity"])
            for r in results["summary"]}
  assert groups == {(r.noise, r.method, r.sparsity) for r in runs}
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
  config = safe_digits.get_config("tiny")
  sparsity_sweep.run_sweep(config, str(tmp_path))
  # 40 steps on digits: every method above chance (0.1); ADMM, the lowest,
  # measures 0.33.
  results = _check_outputs(tmp_path, config, noise=False, min_accuracy=0.2)
  methods = {r["method"] for r in results["runs"]}
  assert methods == {"dense", "gmp", "iht", "admm", "sam_gmp", "safe",
                     "safe_plus"}

  def no_training(*args, **kwargs):
    raise AssertionError("a finished run was trained again")
  monkeypatch.setattr(loop, "train_and_evaluate", no_training)
  sparsity_sweep.run_sweep(config, str(tmp_path))
  again = json.loads((tmp_path / "results.json").read_text())
  assert again["summary"] == results["summary"]


# ~20 s: the sweep runs in the fast suite; noise is unit-tested
@pytest.mark.slow
def test_tiny_label_noise_sweep(tmp_path):
  config = safe_label_noise_digits.get_config("tiny")
  sparsity_sweep.run_sweep(config, str(tmp_path))
  results = _check_outputs(tmp_path, config, noise=True)
  assert {r["noise"] for r in results["runs"]} == {0.0, 0.5}
  assert (tmp_path / "noise_0.5" / "safe" / "sparsity_0.7" / "seed_0"
          / "result.json").exists()


def test_run_config_fills_sparsity_noise_and_seed():
  config = safe_label_noise_digits.get_config()
  safe = sparsity_sweep.run_config(
      config, sparsity_sweep.Run("safe", 0.9, 2, 0.25))
  assert safe.safe.sparsity == 0.9 and safe.seed == 2
  assert safe.dataset.label_noise == 0.25
  assert safe.dataset.noise_kind == "symmetric"
  gmp = sparsity_sweep.run_config(
      config, sparsity_sweep.Run("gmp", 0.7, 0, None))
  assert gmp.sparsity.sparsity == 0.7 and gmp.dataset.label_noise is None
  dense = sparsity_sweep.run_config(
      config, sparsity_sweep.Run("dense", None, 0, None))
  assert dense.get("safe") is None and dense.get("sparsity") is None
  runs = sparsity_sweep.plan(config)
  # 3 noise levels x (dense once + 4 pruning methods x 2 sparsities) x 3.
  assert len(runs) == 3 * (1 + 4 * 2) * 3
  assert [r.method for r in runs[:4]] == ["dense"] * 3 + ["gmp"]


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(epochs=3), "Unknown sweep keys"),
    (lambda c: c.update(sparsities=(0.9, 1.0)), "in \\[0, 1\\), got 1.0"),
    (lambda c: c.update(order=("dense",)), "must list every method"),
    (lambda c: c.update(label_noise=(1.5,)), "label_noise level"),
    (lambda c: c.update(validation_fraction=1.0), "validation_fraction"),
    (lambda c: c.methods.safe.update(lr=1.0), "unknown top-level keys"),
    (lambda c: c.sharpness.update(steps=3), "Unknown sharpness options"),
])
def test_bad_sweeps_are_rejected_with_the_bad_value(change, message):
  config = safe_digits.get_config("tiny")
  change(config)
  with pytest.raises(ValueError, match=message):
    sparsity_sweep.validate_sweep(config)


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


def test_changed_config_of_a_finished_run_is_an_error(tmp_path):
  config = safe_digits.get_config("tiny")
  config.methods = {"dense": {}}
  config.order = None
  config.sharpness = None
  sparsity_sweep.run_sweep(config, str(tmp_path))
  config.base.steps = 41
  with pytest.raises(ValueError, match="different config"):
    sparsity_sweep.run_sweep(config, str(tmp_path))


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
    sparsity_sweep.validate_sweep(config)
    runs = sparsity_sweep.plan(config)
    noises = len(config.get("label_noise") or ()) or 1
    pruned = [m for m in config.methods if m != "dense"]
    assert len(runs) == noises * len(config.seeds) * (
        ("dense" in config.methods) + len(pruned) * len(config.sparsities))
    for run in runs:
      cfg = loop.validate_config(sparsity_sweep.run_config(config, run))
      assert cfg["seed"] == run.seed
      assert cfg["dataset"].get("label_noise") == run.noise
      # The run's sparsity reaches the one pruning section of its method.
      target = {"sparsity": cfg["sparsity"], "safe": cfg["safe"]}
      pruning = {k: dict(v) for k, v in target.items() if v}
      if run.method == "dense":
        assert run.sparsity is None and not pruning
      else:
        (section,) = pruning.values()
        assert section["sparsity"] == run.sparsity
      assert bool(cfg["flatness"]) == run.method.startswith("sam")
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
    sparsity_sweep.run_sweep(config, str(tmp_path))
  _check_outputs(tmp_path, config, noise=False)


def test_sweep_placeholder_is_the_documented_one():
  assert safe_digits.S == safe_cifar10.S == sparsity_sweep.SPARSITY


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
