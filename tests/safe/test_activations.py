"""input_feature_norms equals hand-computed ||X_j||^2 per Dense/Conv kernel."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import flatsparse as fs


class ConvNet(nn.Module):

  @nn.compact
  def __call__(self, x, train=False):
    h = nn.Conv(3, (3, 3), padding="VALID", name="conv")(x)
    h = nn.BatchNorm(use_running_average=not train, name="bn")(h)
    h = nn.relu(h).reshape(x.shape[0], -1)
    return nn.Dense(2, name="head")(h)


def test_norms_match_manual_computation():
  x = jax.random.normal(jax.random.PRNGKey(0), (5, 6, 6, 2))
  model = ConvNet()
  variables = model.init(jax.random.PRNGKey(1), x)
  norms = fs.safe.input_feature_norms(model, variables, x)
  np.testing.assert_allclose(norms["conv"]["kernel"],
                             np.sum(np.square(x), axis=(0, 1, 2)), rtol=1e-5)
  conv_out = nn.Conv(3, (3, 3), padding="VALID").apply(
      {"params": variables["params"]["conv"]}, x)
  bn = variables["batch_stats"]["bn"]
  scale, bias = variables["params"]["bn"]["scale"], variables["params"]["bn"][
      "bias"]
  h = (conv_out - bn["mean"]) / jnp.sqrt(bn["var"] + 1e-5) * scale + bias
  h = nn.relu(h).reshape(5, -1)
  np.testing.assert_allclose(norms["head"]["kernel"],
                             np.sum(np.square(h), axis=0), rtol=1e-4)
  assert norms["conv"]["bias"] is None and norms["bn"]["scale"] is None
  # They feed SAFE+ directly: shapes fit the stored importance.
  proj = fs.safe.Projection(sparsity=0.5, importance="activation")
  stored = proj.normalize_importance(norms, variables["params"])
  assert stored["conv"]["kernel"].shape == (1, 1, 2, 1)
  assert stored["head"]["kernel"].shape == (48, 1)
