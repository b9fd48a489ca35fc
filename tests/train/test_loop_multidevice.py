"""8 simulated devices give the loss curve of 1 device (dense, pruned,
SAM+pruned, SAFE, SAM with per-device (m = 8) perturbations).

Run in its own process: XLA_FLAGS=--xla_force_host_platform_device_count=8.
Tolerance: train losses agree to rtol 1e-4 over 60 steps (the data-parallel
reduction sums in a different order); final masks are identical.
"""

import jax
import numpy as np
import pytest

from configs import digits_mlp
from flatsparse.train import loop
from flatsparse.train import metrics as metrics_lib

pytestmark = [pytest.mark.multidevice, pytest.mark.timeout(300, method="thread")]

if jax.device_count() < 8:
  pytest.skip("needs 8 devices: run with XLA_FLAGS=--xla_force_host_platform_"
              "device_count=8 in its own process", allow_module_level=True)


def _losses(workdir):
  return [r["train/loss"] for r in metrics_lib.read_metrics(workdir)
          if "train/loss" in r]


@pytest.mark.parametrize("variant", ["dense", "tiny", "sam_pruned", "safe",
                                     "sam_per_device"])
def test_eight_devices_match_one(tmp_path, variant):
  config = digits_mlp.get_config("tiny")
  config.log_every = 5
  if variant == "dense":
    config.sparsity = None
  if variant == "sam_pruned":
    config.flatness = {"name": "sam", "rho": 0.05}
  if variant == "sam_per_device":
    # m-sharpness with m = devices: the SAM-overparameterization paper's
    # per-device perturbations, now as sub-batches of the global batch.
    config.flatness = {"name": "sam", "rho": 0.05, "sub_batches": 8}
  if variant == "safe":
    # Its second gradient and projections must be the all-device ones.
    config.sparsity = None
    config.safe = {"name": "safe", "sparsity": 0.9, "lam": 1e-2, "rho": 0.05,
                   "dual_period": 8}
  results = {}
  for parallel in (False, True):
    config.data_parallel = parallel
    workdir = str(tmp_path / f"parallel_{parallel}")
    results[parallel] = loop.train_and_evaluate(config, workdir)
    results[f"losses_{parallel}"] = _losses(workdir)
    results[f"sparsity_{parallel}"] = metrics_lib.read_metrics(workdir)[-1]
  np.testing.assert_allclose(results["losses_True"], results["losses_False"],
                             rtol=1e-4)
  assert results[True]["accuracy"] == pytest.approx(results[False]["accuracy"],
                                                    abs=0.01)
  if variant != "dense":
    assert results["sparsity_True"]["sparsity/prunable"] == pytest.approx(0.9,
                                                                          abs=1e-3)
