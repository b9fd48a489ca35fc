"""The MaskedKD study end to end on digits: a teacher trained by the loop,
students distilled from its checkpoint, the costs and the report."""

import json
import os

import pytest

from configs import maskedkd_fashion_mnist
from experiments import maskedkd


@pytest.mark.slow  # 100 s; tests/distill/test_training.py is the fast one
def test_maskedkd_study_learns_and_reports(tmp_path):
  config = maskedkd_fashion_mnist.get_config("tiny")
  config.timing_repeats = 1
  result = maskedkd.run_study(config, str(tmp_path))
  assert result["teacher"]["accuracy"] > 0.8  # 359 digits test images
  by_name = {r["student"]: r for r in result["runs"]}
  assert set(by_name) == {"no_kd", "maskedkd_0.5"}
  assert by_name["no_kd"]["accuracy"] > 0.5
  # Learns from a half-masked teacher (its own accuracy on what it sees is
  # recorded; 8x8 digits lose much of their ink at r = 0.5).
  assert by_name["maskedkd_0.5"]["accuracy"] > 0.3
  assert 0.2 < by_name["maskedkd_0.5"]["teacher_accuracy_on_kept"] <= 1.0
  assert "teacher_accuracy_on_kept" not in by_name["no_kd"]
  costs = result["costs"]
  assert costs["teacher_gflops_per_image"]["r0.5"] < (
      costs["teacher_gflops_per_image"]["full"])
  assert "| maskedkd_0.5 | 0.5 (student) |" in result["report"]
  assert os.path.exists(tmp_path / "accuracy.png")
  with open(tmp_path / "results.json") as f:
    assert json.load(f)["runs"] == result["runs"]
  # The students restored their teacher from its run's checkpoint.
  assert os.path.isdir(tmp_path / "teacher" / "seed_0" / "checkpoints")
