"""The SAM-overparameterization study: tiny variants end to end."""

import json
import math
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import overparam_cifar10
from configs import overparam_digits
from configs import overparam_fashion_mnist
from experiments import overparam
from flatsparse.train import loop
from tests.data import fake_fashion_mnist


def _mlp_params(width, depth=2, inputs=64, classes=10):
  sizes = [inputs] + [width] * depth + [classes]
  return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def test_sparse_runs_match_the_dense_budget():
  study = overparam_digits.get_config()
  runs = overparam.plan(study)
  families = {r.tags["family"] for r in runs}
  assert families == {"dense", "random", "snip"}
  assert len(runs) == 2 * 3 * (len(study.widths) + 2 * len(
      study.sparse.widths))
  assert runs[0].path == "dense/w8/sgd/seed_0"
  budget = _mlp_params(study.sparse.budget_width)
  for run in runs:
    tags = run.tags
    assert tags["params_total"] == _mlp_params(tags["width"])
    assert run.config.model.hidden == [tags["width"]] * 2
    if tags["family"] == "dense":
      assert tags["sparsity"] == 0 and run.config.sparsity is None
      continue
    total = _mlp_params(tags["width"])
    dense = 2 * tags["width"] + 10  # biases stay dense
    kept = dense + (1 - tags["sparsity"]) * (total - dense)
    assert kept == pytest.approx(budget, rel=1e-9)
    assert run.config.sparsity.sparsity == tags["sparsity"]
  snip = next(r for r in runs if r.tags["family"] == "snip").config.sparsity
  assert (snip.algorithm, snip.schedule, snip.update_start_step) == (
      "saliency", "one_shot", 0)  # SNIP: |w * g| of the first batch
  sam = next(r for r in runs if r.tags["optimizer"] == "sam").config.flatness
  assert sam.to_dict() == {"name": "sam", "rho": 0.05}
  assert overparam.matching_sparsity(1000, 950, 100) == pytest.approx(
      1 - 50 / 950)
  for budget in (40, 1001):  # below the dense biases, above the model
    with pytest.raises(ValueError, match=f"budget of {budget} is out of"):
      overparam.matching_sparsity(1000, 950, budget)


@pytest.mark.parametrize("variant", ["", "label_noise", "resnet", "tiny"])
def test_every_digits_variant_plans(variant):
  study = overparam_digits.get_config(variant)
  runs = overparam.plan(study)
  dense = [r.tags for r in runs if r.tags["family"] == "dense"]
  assert len(dense) == 2 * len(study.seeds) * len(study.widths)
  counts = sorted({(r["width"], r["params_total"]) for r in dense})
  assert [w for w, _ in counts] == sorted(study.widths)
  assert all(a[1] < b[1] for a, b in zip(counts, counts[1:]))
  if variant == "resnet":  # CIFAR ResNet-18 at stem width w
    assert {r.config.model.name for r in runs} == {"resnet18"}
    assert dict(counts)[32] == 2_797_034


# Slow: the idx reader and the digits study stay in the fast suite.
@pytest.mark.slow
def test_tiny_fashion_mnist_study_on_written_idx_files(tmp_path):
  # CI lacks the Debian package: the same loader reads files written here.
  study = overparam_fashion_mnist.get_config("tiny")
  study.base.dataset.data_dir = fake_fashion_mnist.write_learnable_idx(
      tmp_path)
  study.base.steps = study.base.eval_every = study.base.checkpoint_every = 40
  overparam.run_study(study, str(tmp_path / "study"))
  runs = json.loads((tmp_path / "study" / "results.json").read_text())["runs"]
  assert {(r["width"], r["optimizer"]) for r in runs} == {
      (8, "sgd"), (8, "sam")}
  for run in runs:
    assert run["params_total"] == _mlp_params(8, inputs=784)
    assert run["test_accuracy"] > 0.3  # chance is 0.1
    assert math.isfinite(run["top_eigenvalue"])
  with pytest.raises(ValueError, match="Unknown variant 'huge'"):
    overparam_fashion_mnist.get_config("huge")


def test_tiny_digits_study_end_to_end(tmp_path, monkeypatch):
  """The main without its command line (experiments/cli.py and the study
  main run end to end in test_study.py)."""
  study = overparam_digits.get_config("tiny")
  # One sparse family keeps it short: SNIP (its saliency pruning at step 0
  # is this study's own path; random static masks are the sparsity
  # wrappers', tested in tests/sparsity and tests/test_rng.py).
  study.sparse.methods = ("snip",)
  overparam.run_study(study, str(tmp_path))
  results = json.loads((tmp_path / "results.json").read_text())
  runs = results["runs"]
  # Every run of the plan: (dense widths + snip widths) x optimizers x seeds.
  assert len(runs) == len(study.seeds) * len(study.optimizers) * (
      len(study.widths) + len(study.sparse.widths)) == 4
  budget = _mlp_params(study.sparse.budget_width)
  for run in runs:
    for key in ("test_accuracy", "top_eigenvalue", "trace", "moment_1",
                "moment_2", "sharpness_batch_loss"):
      assert math.isfinite(run[key]), (key, run)
    assert 0 <= run["test_accuracy"] <= 1
    # moment_1 = trace / d on the trained parameters (same probes).
    assert run["moment_1"] * run["params_trained"] == pytest.approx(
        run["trace"], rel=1e-4)
    if run["family"] != "dense":  # equal trained-parameter counts
      assert abs(run["params_trained"] - budget) <= 3, run
  rows = results["summary"]
  assert {(r["family"], r["width"]) for r in rows} == {
      (r["family"], r["width"]) for r in runs}
  for row in rows:
    want = (row["sam_test_accuracy_mean"] - row["sgd_test_accuracy_mean"])
    assert row["gap_test_accuracy_mean"] == pytest.approx(want, abs=1e-12)
  report = (tmp_path / "report.md").read_text()
  for row in rows:
    assert f"| {row['family']} | {row['width']} |" in report
  record = json.loads((tmp_path / "snip/w16/sam/seed_0/record.json"
                       ).read_text())
  assert record["run_config"]["flatness"] == {"name": "sam", "rho": 0.05}
  for name in ("gap_vs_params.png", "sharpness_vs_params.png"):
    assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / name).stat().st_size > 5000
  # A second call only reads the cached records (no training); a changed
  # config in the same workdir is an error, not a silent reuse.

  def no_training(*args, **kwargs):
    raise AssertionError("a finished run was trained again")
  monkeypatch.setattr(loop, "train_and_evaluate", no_training)
  for plot in ("plot_gap", "plot_sharpness"):  # drawn and checked above
    monkeypatch.setattr(overparam, plot, lambda rows, path: path)
  again = overparam.run_study(study, str(tmp_path))
  assert json.loads(pathlib.Path(again["results"]).read_text())["runs"] == runs
  study.rho = 0.5
  with pytest.raises(ValueError, match="holds a run of a different config"):
    overparam.run_study(study, str(tmp_path))


def test_cifar10_widths_span_the_papers_parameter_range():
  """ResNet-18 widths 4..128: about 0.04M to 45M parameters (Shin et al.)."""
  study = overparam_cifar10.get_config()
  with tfds.testing.mock_data(num_examples=8,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    runs = overparam.plan(study)
  dense = {r.tags["width"]: r.tags["params_total"] for r in runs
           if r.tags["family"] == "dense"}
  assert dense[64] == 11_173_962  # the standard CIFAR ResNet-18
  assert 0.03e6 < dense[4] < 0.05e6 and 40e6 < dense[128] < 50e6
  assert {r.tags["family"] for r in runs} == {"dense", "random", "snip"}
  assert len(runs) == 2 * 3 * (6 + 2 * 3)


@pytest.mark.slow  # ResNet-18 compiles: 36 s on 2 idle CPU cores
def test_tiny_cifar10_on_mock_data(tmp_path):
  study = overparam_cifar10.get_config("tiny")
  with tfds.testing.mock_data(num_examples=8,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    paths = overparam.run_study(study, str(tmp_path))
  results = json.loads(pathlib.Path(paths["results"]).read_text())
  assert [(r["optimizer"], r["width"]) for r in results["runs"]] == [
      ("sgd", 2), ("sam", 2)]
  for run in results["runs"]:
    assert np.isfinite([run["top_eigenvalue"], run["trace"],
                        run["test_loss"]]).all()
  assert pathlib.Path(paths["gap_plot"]).stat().st_size > 5000
