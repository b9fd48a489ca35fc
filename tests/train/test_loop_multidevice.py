"""8 simulated devices give the run of 1 device (dense, pruned, SAM+pruned,
SAFE, SAM with per-device (m = 8) perturbations).

Run in its own process: XLA_FLAGS=--xla_force_host_platform_device_count=8.
The data-parallel run really is one: every batch is split over the 8 devices
and the state is replicated on all of them. Tolerance: train losses agree to
rtol 1e-4 over 60 steps (the data-parallel reduction sums in a different
order), final parameters to a few 1e-5; final masks are identical.
"""

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from configs import digits_mlp
import flatsparse as fs
from flatsparse.train import loop
from flatsparse.train import metrics as metrics_lib

pytestmark = [pytest.mark.multidevice,
              pytest.mark.timeout(300, method="thread")]

if jax.device_count() < 8:
  pytest.skip("needs 8 devices: run with XLA_FLAGS=--xla_force_host_platform_"
              "device_count=8 in its own process", allow_module_level=True)


def _losses(workdir):
  return [r["train/loss"] for r in metrics_lib.read_metrics(workdir)
          if "train/loss" in r]


def _spread_over_all_devices(x, spec):
  """``x`` is a NamedSharding over the 8 devices with partition ``spec``."""
  sharding = x.sharding
  return (isinstance(sharding, NamedSharding)
          and len(sharding.device_set) == jax.device_count() == 8
          and sharding.spec == spec)


def _run(config, workdir, monkeypatch):
  """Trains; returns metrics, final state and the batches' shardings."""
  placed = []
  place = loop.place_batch

  def spy(batch, mesh, global_batch_size=None):
    out = place(batch, mesh, global_batch_size)
    placed.append(out)
    return out
  monkeypatch.setattr(loop, "place_batch", spy)
  result, state = loop.train_and_evaluate(config, workdir, return_state=True)
  monkeypatch.setattr(loop, "place_batch", place)
  return result, state, placed


# Slow: dense and tiny are sam_pruned without SAM (and without pruning);
# safe's 8-device step is the optimizer's (single-device SAFE tests stay fast).
@pytest.mark.parametrize("variant", [
    pytest.param("dense", marks=pytest.mark.slow),
    pytest.param("tiny", marks=pytest.mark.slow), "sam_pruned",
    pytest.param("safe", marks=pytest.mark.slow), "sam_per_device"])
def test_eight_devices_match_one(tmp_path, monkeypatch, variant):
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
  runs = {}
  for parallel in (False, True):
    config.data_parallel = parallel
    workdir = str(tmp_path / f"parallel_{parallel}")
    runs[parallel] = _run(config, workdir, monkeypatch)
    runs[f"losses_{parallel}"] = _losses(workdir)
    runs[f"sparsity_{parallel}"] = metrics_lib.read_metrics(workdir)[-1]
  (one, one_state, one_batches), (eight, state, batches) = (runs[False],
                                                            runs[True])
  # Data parallelism is on: train and eval batches are split over the 8
  # devices, and the state (params and optimizer state) is replicated there.
  assert len(batches) > config.steps  # every train batch, then eval batches
  for batch in batches:
    for x in batch.values():
      assert _spread_over_all_devices(x, P("data")), x.sharding
  for x in jax.tree.leaves((state.params, state.opt_state)):
    assert _spread_over_all_devices(x, P()), x.sharding
  # The 1-device run stays on one device (the comparison is not vacuous).
  for x in one_batches[0].values():
    assert len(x.sharding.device_set) == 1
  np.testing.assert_allclose(runs["losses_True"], runs["losses_False"],
                             rtol=1e-4)
  assert eight["accuracy"] == pytest.approx(one["accuracy"], abs=0.01)
  # Same final model: masks identical, parameters equal up to the reduction
  # order.
  params, one_params = jax.device_get((state.params, one_state.params))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=5e-5),
               params, one_params)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a != 0, b != 0),
               params, one_params)
  if variant in ("tiny", "sam_pruned", "sam_per_device"):
    masks = [fs.sparsity.get_masks(s.opt_state, s.params)
             for s in (state, one_state)]
    assert any(m is not None for m in jax.tree.leaves(
        masks[0], is_leaf=lambda x: x is None))
    jax.tree.map(np.testing.assert_array_equal,
                 *jax.device_get(masks))
  if variant != "dense":
    assert runs["sparsity_True"]["sparsity/prunable"] == pytest.approx(
        0.9, abs=1e-3)
    assert runs["sparsity_False"]["sparsity/prunable"] == pytest.approx(
        0.9, abs=1e-3)
