"""SAFE through the trainer: Proj(w_T) at the end, BatchNorm re-estimated,
resume at the end gives the same result, biases train, config errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import digits_mlp
from flatsparse.train import builders
from flatsparse.train import loop
from flatsparse.train import methods
from flatsparse.train import metrics as metrics_lib
from flatsparse.train import state as state_lib
from flatsparse.train import tasks


def _config(name="safe"):
  config = digits_mlp.get_config("tiny")
  config.sparsity = None
  config.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=0.05, momentum=0.9))
  config.safe = ml_collections.ConfigDict(dict(
      name=name, sparsity=0.8, lam=0.05, rho=0.05, dual_period=10))
  if name == "iht":
    del config.safe.lam, config.safe.dual_period
  return config


@pytest.mark.parametrize("name", ["safe", "safe_plus", "iht"])
def test_safe_family_trains_and_ends_exactly_sparse(tmp_path, name):
  result, state = loop.train_and_evaluate(_config(name), str(tmp_path),
                                          return_state=True)
  assert result["accuracy"] > 0.5
  last = metrics_lib.read_metrics(str(tmp_path))[-1]
  assert last["sparsity/prunable"] == pytest.approx(0.8, abs=1e-3)
  assert "eval/unprojected_accuracy" in last
  kernels = [k for k in jax.tree.leaves(state.params) if k.ndim > 1]
  assert all(np.mean(np.asarray(k) == 0) == pytest.approx(0.8, abs=2e-3)
             for k in kernels)
  biases = [b for b in jax.tree.leaves(state.params) if b.ndim == 1]
  assert all(np.any(np.asarray(b) != 0) for b in biases), "biases froze"
  again = loop.train_and_evaluate(_config(name), str(tmp_path))
  assert again["accuracy"] == pytest.approx(result["accuracy"])


class BNNet(nn.Module):

  @nn.compact
  def __call__(self, x, train=False):
    h = nn.Dense(16)(x.reshape(x.shape[0], -1))
    h = nn.BatchNorm(use_running_average=not train)(h)
    return nn.Dense(10)(nn.relu(h))


def test_finalize_projects_and_recalibrates_batch_norm():
  config = _config()
  loader, sample = loop.make_loader(config.dataset, 32)
  model = BNNet()
  method = builders.build_method(config.optimizer, 10,
                                 {"safe": config.safe.to_dict()})
  state = state_lib.create_train_state(model, method.tx, jnp.asarray(sample),
                                       0)
  context = methods.FinalizeContext(
      model=model, task=tasks.Classification(),
      train_batches=lambda size: loader.eval_batches(size, split="train"))
  final = method.finalize(state, context)
  kernel = final.params["Dense_0"]["kernel"]
  assert float(jnp.mean(kernel == 0)) == pytest.approx(0.8, abs=1e-3)
  # Statistics are those of the pruned network on the (1,437 < 2,048)
  # training examples.
  batch = next(loader.eval_batches(2048, split="train"))
  images = jnp.asarray(batch["image"][batch["mask"] > 0])
  h = images.reshape(len(images), -1) @ kernel + final.params["Dense_0"][
      "bias"]
  np.testing.assert_allclose(final.batch_stats["BatchNorm_0"]["mean"],
                             h.mean(0), rtol=1e-3, atol=1e-4)
  config.safe.bn_recalibration_examples = 0
  method = builders.build_method(config.optimizer, 10,
                                 {"safe": config.safe.to_dict()})
  kept = method.finalize(state, context)
  np.testing.assert_array_equal(kept.batch_stats["BatchNorm_0"]["mean"],
                                state.batch_stats["BatchNorm_0"]["mean"])


def test_safe_excludes_sparsity_and_flatness(tmp_path):
  config = _config()
  config.flatness = {"name": "sam", "rho": 0.05}
  with pytest.raises(ValueError, match="config.safe excludes"):
    loop.train_and_evaluate(config, str(tmp_path))
