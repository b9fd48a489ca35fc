"""The flagship study and the foundation's end-to-end pruning check."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs import flagship_digits
from experiments import study
from flatsparse.train import loop
from flatsparse.train import metrics as metrics_lib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_gradual_pruning_to_90_learns_in_a_short_run(tmp_path):
  """One seed, 500 steps (GMP ends at 330): both learn, GMP close to dense.

  The fast stand-in of the three-seed check below (``make test-all``).
  """
  config = flagship_digits.get_config()
  config.base.steps = config.base.eval_every = 500
  config.variants.gmp.sparsity.update_end_step = 330
  accuracy = {name: loop.train_and_evaluate(
      study.variant_config(config, name, 0), str(tmp_path / name))["accuracy"]
              for name in ("dense", "gmp")}
  assert accuracy["dense"] > 0.93, accuracy
  assert accuracy["gmp"] >= accuracy["dense"] - 0.03, accuracy


@pytest.mark.slow
def test_gradual_pruning_to_90_within_two_points_of_dense(tmp_path):
  """MLP on digits, 3 seeds: GMP to 90% vs dense (the foundation issue)."""
  config = flagship_digits.get_config()
  assert tuple(config.seeds) == (0, 1, 2)
  accuracy = {}
  for name in ("dense", "gmp"):
    accuracy[name] = np.mean([
        loop.train_and_evaluate(study.variant_config(config, name, seed),
                                str(tmp_path / name / f"seed_{seed}"))[
                                    "accuracy"] for seed in config.seeds])
  assert accuracy["dense"] > 0.95, accuracy  # it learned something real
  assert accuracy["gmp"] >= accuracy["dense"] - 0.02, accuracy


def test_tiny_study_from_the_command_line(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "experiments.study",
       "--config=configs/flagship_digits.py:tiny", f"--workdir={tmp_path}"],
      capture_output=True, text=True, timeout=600, check=True, cwd=ROOT)
  config = flagship_digits.get_config("tiny")
  for name in ("dense", "gmp", "rigl", "sam_gmp", "dense_sgd", "safe_sgd"):
    # The row is the run's final evaluation and its sparsity the target of
    # the variant's pruning section (0 for the dense ones).
    rows = metrics_lib.read_metrics(str(tmp_path / name / "seed_0"))
    accuracy = rows[-1]["eval/accuracy"]
    sparsity = rows[-1]["sparsity/prunable"]
    run = study.variant_config(config, name, 0)
    pruning = run.get("sparsity") or run.get("safe")
    target = pruning.sparsity if pruning else 0.0
    assert sparsity == pytest.approx(target, abs=1e-3), name
    assert (f"| {name} | 1 | {100 * accuracy:.2f} ± 0.00 | {sparsity:.3f} |"
            in out.stdout)
    assert f"{name:10s} seed 0: test accuracy {100 * accuracy:.2f}%" in (
        out.stdout)
  assert "Plot: " in out.stdout
  assert (tmp_path / "report" / "curves.png").stat().st_size > 1000
