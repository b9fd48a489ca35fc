"""BatchNorm re-estimation equals the mean of hand-computed batch statistics."""

import flax.linen as nn
import jax
import numpy as np

from flatsparse.train import batch_norm


class Net(nn.Module):

  @nn.compact
  def __call__(self, x, train=False):
    h = nn.Dense(4, name="dense")(x)
    h = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                     name="bn")(h)
    return nn.BatchNorm(use_running_average=not train, momentum=0.99,
                        name="bn2")(nn.relu(h) * 2.0 + 1.0)


def test_recalibrated_stats_are_the_mean_of_batch_stats():
  model = Net()
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  batches = [jax.random.normal(k, (8, 3)) * (i + 1) + i
             for i, k in enumerate(keys[:3])]
  variables = model.init(keys[3], batches[0])
  params = variables["params"]
  new = batch_norm.recalibrate_batch_stats(model, params,
                                           variables["batch_stats"], batches)
  means, vars_, means2, vars2 = [], [], [], []
  for x in batches:
    h = np.asarray(nn.Dense(4).apply({"params": params["dense"]}, x))
    mu, var = h.mean(0), h.var(0)
    means.append(mu)
    vars_.append(var)
    s = params["bn"]
    h2 = (h - mu) / np.sqrt(var + 1e-5) * np.asarray(s["scale"]) + np.asarray(
        s["bias"])
    h2 = np.maximum(h2, 0) * 2 + 1
    means2.append(h2.mean(0))
    vars2.append(h2.var(0))
  np.testing.assert_allclose(new["bn"]["mean"], np.mean(means, 0), rtol=1e-4,
                             atol=1e-5)
  np.testing.assert_allclose(new["bn"]["var"], np.mean(vars_, 0), rtol=1e-4)
  np.testing.assert_allclose(new["bn2"]["mean"], np.mean(means2, 0),
                             rtol=1e-3)
  np.testing.assert_allclose(new["bn2"]["var"], np.mean(vars2, 0), rtol=1e-3)


def test_models_without_batch_norm_pass_through():
  assert batch_norm.recalibrate_batch_stats(None, {}, {}, []) == {}
