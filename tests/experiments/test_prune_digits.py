"""End to end: gradual pruning to 90% on digits stays within 2 points of dense."""

import pathlib
import subprocess
import sys

import numpy as np

from configs import prune_digits as config_lib
from experiments import prune_digits


def test_pruned_mlp_within_two_points_of_dense_over_three_seeds():
  config = config_lib.get_config()
  assert config.seeds == 3 and config.sparsity.sparsity == 0.9
  results = prune_digits.run(config)
  dense, pruned = np.mean(results["dense"]), np.mean(results["pruned"])
  assert dense > 0.9, results  # it learned something real
  assert pruned >= dense - 0.02, results
  assert results["summary"]["prunable_sparsity"] == 0.9


def test_tiny_variant_runs_from_the_command_line():
  out = subprocess.run(
      [sys.executable, "-m", "experiments.prune_digits",
       "--config=configs/prune_digits.py:tiny", "--config.hidden=(32,32)"],
      capture_output=True, text=True, timeout=300, check=True,
      cwd=pathlib.Path(__file__).resolve().parents[2])
  assert "pruned  test accuracy" in out.stdout
  assert "prunable" in out.stdout
