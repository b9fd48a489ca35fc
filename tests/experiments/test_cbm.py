"""The concept-bottleneck studies end to end on the tiny data."""

import json
import os

import pytest

from configs import cbm_study
from experiments import cbm as cbm_experiment


def test_intervention_study(tmp_path):
  config = cbm_study.get_config("tiny")
  workdir = str(tmp_path / "intervention")
  result = cbm_experiment.run_study(config, workdir,
                                    cbm_study.variants(config))
  (record,) = result["runs"]
  curves = record["curves"]
  assert len(curves) == 2 * 2  # levels x budgets (one criterion)
  assert len(curves["individual/example/ucp"]) == 50 + 1
  assert len(curves["group/batch/ucp"]) == 25 + 1
  assert curves["individual/example/ucp"][10] < curves[
      "individual/example/ucp"][0]
  assert "| sequential | UCP |" in result["report"]
  assert os.path.exists(os.path.join(workdir, "intervention.png"))
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["runs"][0]["mode"] == "sequential"


@pytest.mark.slow
def test_noise_study(tmp_path):
  config = cbm_study.get_config("tiny")
  config.study = "noise"
  workdir = str(tmp_path / "noise")
  result = cbm_experiment.run_study(config, workdir,
                                    cbm_study.variants(config))
  assert [(r["noise"], r["optimizer"]) for r in result["runs"]] == [
      (0.0, "adam"), (0.0, "sam"), (0.2, "adam"), (0.2, "sam")]
  noisy = result["runs"][2]
  assert noisy["concept_accuracy"] < result["runs"][0]["concept_accuracy"]
  sus = noisy["susceptibility"]
  assert 0 < sus["flagged"] < 50
  assert sus["noisy_accuracy"] == noisy["accuracy"] or abs(
      sus["noisy_accuracy"] - noisy["accuracy"]) < 1e-6
  assert "### Susceptible concepts" in result["report"]
