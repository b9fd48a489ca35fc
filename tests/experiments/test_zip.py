"""The ZIP study end to end on digits with a toy text tower."""

import json
import os

from configs import zip_fashion_mnist
from experiments import zip as zip_experiment
from flatsparse.zeroth_order import vlm


def test_zip_study_counts_queries_and_reports(tmp_path):
  config = zip_fashion_mnist.get_config("tiny")
  text = vlm.toy_text_tower(vlm.DIGIT_CLASSES + ("a", "photo", "of"))
  result = zip_experiment.run_study(config, str(tmp_path), text=text)
  by_method = {r["method"]: r for r in result["runs"]}
  assert set(by_method) == {"zip", "cma_es"}
  zip_run = by_method["zip"]
  # Two-sided SPSA with q = 5: 10 queries a step, 20 steps in 200.
  assert zip_run["queries"] == 200 and zip_run["num_params"] == 4 * 4 + 4 + (
      62 * 4 + 62)
  assert [q for q, _ in zip_run["curve"]] == [0, 100, 200]
  assert by_method["cma_es"]["queries"] == 200
  assert "| zip |" in result["report"]
  assert os.path.exists(tmp_path / "accuracy.png")
  with open(tmp_path / "results.json") as f:
    assert json.load(f)["target"] == by_method["cma_es"]["final_accuracy"]
  # Cached: a second call trains nothing and gives the same records.
  again = zip_experiment.run_study(config, str(tmp_path), text=text)
  assert again["runs"] == result["runs"]
