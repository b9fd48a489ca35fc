"""Models and optimizers added by registration train through the loop."""

import flax.linen as nn
import jax.numpy as jnp
import optax
import pytest

from configs import digits_mlp
from flatsparse.train import builders
from flatsparse.train import loop


class Linear(nn.Module):
  """Softmax regression with an optional input scale (a config key)."""

  num_classes: int
  scale: float = 1.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    x = x.reshape(x.shape[0], -1) * self.scale
    return nn.Dense(self.num_classes)(x)


def sign_sgd(learning_rate, momentum: float = 0.0):
  """SGD on the sign of the (momentum) gradient."""
  return optax.chain(optax.trace(momentum), optax.scale_by_sign(),
                     optax.scale_by_learning_rate(learning_rate))


@pytest.fixture
def registered():
  builders.register_model("linear_test", Linear)
  builders.register_optimizer("sign_sgd_test", sign_sgd)
  yield
  del builders.MODELS["linear_test"], builders.OPTIMIZERS["sign_sgd_test"]


def test_registered_model_and_optimizer_train_with_pruning(tmp_path,
                                                           registered):
  config = digits_mlp.get_config("tiny")
  config.model = {"name": "linear_test", "scale": 0.5}
  config.optimizer = {"name": "sign_sgd_test", "learning_rate": 1e-2,
                      "momentum": 0.9}
  config.sparsity.sparsity = 0.5
  result, state = loop.train_and_evaluate(config, str(tmp_path),
                                          return_state=True)
  assert result["accuracy"] > 0.8  # chance is 0.1
  kernel = state.params["Dense_0"]["kernel"]
  assert float(jnp.mean(kernel == 0)) == pytest.approx(0.5, abs=0.01)


def test_duplicate_and_bad_registrations_are_errors(registered):
  with pytest.raises(ValueError, match="Model 'linear_test' is already "
                     "registered; pass overwrite=True"):
    builders.register_model("linear_test", Linear)
  builders.register_model("linear_test", Linear, overwrite=True)
  with pytest.raises(ValueError, match="Optimizer 'sgd' is already"):
    builders.register_optimizer("sgd", sign_sgd)
  with pytest.raises(TypeError, match="must be callable, got 3"):
    builders.register_model("three", 3)
  config = {"name": "linear_test", "scael": 2.0}
  with pytest.raises(ValueError, match="Bad arguments for model 'linear_test'"):
    builders.build_model(config, 10)


def test_list_sizes_from_json_or_flags_become_tuples():
  # Flax modules are hashed as jit's static arguments: a list attribute
  # (a config read back from config.json) would fail deep inside a trace.
  model = builders.build_model(
      {"name": "lenet5", "channels": [2, 3], "hidden": [4]}, num_classes=3)
  assert model.channels == (2, 3) and model.hidden == (4,)
  assert hash(model) == hash(builders.build_model(
      {"name": "lenet5", "channels": (2, 3), "hidden": (4,)}, num_classes=3))
