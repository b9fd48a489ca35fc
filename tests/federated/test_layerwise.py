"""layerwise: one transformation per layer, SAM and pruning per layer, and
the conformance checks (jit once, chain, inject_hyperparams, nnx, dtypes)."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flatsparse as fs
from flatsparse import federated as fl
from flatsparse.federated import objectives
from flatsparse.models import FFMLP
from tests.flatness import conformance_checks


def _ff_problem(dtype=jnp.float32):
  model = FFMLP((6, 5), num_labels=3, threshold=1.0)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8)))["params"]
  params = jax.tree_util.tree_map(lambda a: a.astype(dtype), params)
  x = jax.random.uniform(jax.random.PRNGKey(1), (16, 8))
  y = jnp.arange(16, dtype=jnp.int32) % 3
  loss = objectives.forward_forward_loss(model)
  value_fn = lambda p: loss(p, x, y, jnp.ones(16), jax.random.PRNGKey(2))  # noqa: E731
  return params, value_fn


def test_sam_per_layer_by_hand():
  params, value_fn = _ff_problem()
  rho = 0.3
  grad_fn = jax.jit(jax.grad(value_fn))
  grads = grad_fn(params)
  tx = fl.layerwise(fs.sam(rho))
  out, _ = jax.jit(lambda g, s, p: tx.update(g, s, p, value_fn=value_fn))(
      grads, tx.init(params), params)
  for name in ("layer_0", "layer_1"):
    g = grads[name]
    norm = jnp.sqrt(sum(jnp.sum(v ** 2) for v in jax.tree.leaves(g)))
    moved = {**params, name: jax.tree.map(
        lambda p, v, norm=norm: p + rho * v / norm, params[name], g)}
    by_hand = grad_fn(moved)[name]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5,
                                                         atol=1e-7),
                 out[name], by_hand)
  # SAM over the whole tree uses one norm: not the same update.
  whole = fs.sam(rho)
  joint, _ = jax.jit(lambda g, s, p: whole.update(g, s, p,
                                                  value_fn=value_fn))(
      grads, whole.init(params), params)
  assert not np.allclose(joint["layer_0"]["kernel"], out["layer_0"]["kernel"])


def test_pruning_per_layer_keeps_each_layers_own_fraction():
  params = {"layer_0": {"kernel": jnp.arange(1.0, 17.0).reshape(4, 4)},
            "layer_1": {"kernel": 100 + jnp.arange(1.0, 17.0).reshape(4, 4)}}
  grads = jax.tree.map(jnp.zeros_like, params)

  def make():
    return fs.sparsity.global_magnitude_pruning(sparsity=0.5).wrap(
        optax.sgd(0.0))

  per_layer = fl.layerwise(make())
  updates, _ = per_layer.update(grads, per_layer.init(params), params)
  pruned = optax.apply_updates(params, updates)
  for name in params:
    assert int(jnp.sum(pruned[name]["kernel"] == 0)) == 8, name
  # One global budget over both layers prunes the small layer down to the
  # one weight min_kept leaves.
  whole = make()
  updates, _ = whole.update(grads, whole.init(params), params)
  assert int(jnp.sum(optax.apply_updates(params, updates)["layer_0"][
      "kernel"] == 0)) == 15


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_jit_once_in_a_chain_under_inject_hyperparams_and_dtypes(dtype):
  params, value_fn = _ff_problem(dtype)
  tx = optax.inject_hyperparams(
      lambda learning_rate: optax.chain(
          fl.layerwise(fs.sam(0.05)), optax.sgd(learning_rate)))(
              learning_rate=0.05)
  # One trace, a falling loss, the params' dtypes kept (30 steps).
  conformance_checks.assert_trains_in_one_program(
      tx, params, value_fn, 30, same_dtypes=False)


def test_flax_nnx_state_and_a_transform_per_layer():
  class TwoLayers(nnx.Module):

    def __init__(self, rngs):
      self.layer_0 = nnx.Linear(4, 3, rngs=rngs)
      self.layer_1 = nnx.Linear(3, 2, rngs=rngs)

    def __call__(self, x):
      return self.layer_1(jax.nn.relu(self.layer_0(x)))

  model = TwoLayers(nnx.Rngs(0))
  rates = {"layer_0": 0.1, "layer_1": 0.0}
  tx = fl.layerwise(lambda name: optax.chain(fs.sam(0.05),
                                             optax.sgd(rates[name])))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x, y = jnp.ones((8, 4)), jnp.zeros((8, 2))
  frozen = np.asarray(model.layer_1.kernel[...])

  @nnx.jit
  def train_step(model, optimizer):
    graphdef, _ = nnx.split(model)

    def value_fn(params):
      return jnp.mean((nnx.merge(graphdef, params)(x) - y) ** 2)

    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(
        model)
    optimizer.update(model, grads, value_fn=value_fn)
    return loss

  losses = [float(train_step(model, optimizer)) for _ in range(10)]
  assert losses[-1] < losses[0]
  np.testing.assert_array_equal(model.layer_1.kernel[...], frozen)


def test_bad_layer_paths_and_transforms_are_named():
  params = {"params": {"a": {"kernel": jnp.ones((2, 2))}}}
  with pytest.raises(ValueError, match=r"path=\('nope',\)"):
    fl.layerwise(optax.sgd(0.1), path=("nope",)).init(params)
  with pytest.raises(TypeError, match="layer 'a' must be an optax"):
    fl.layerwise(lambda name: "sgd", path=("params",)).init(params)
  tx = fl.layerwise(fs.sam(0.1), path=("params",))
  state = tx.init(params)
  with pytest.raises(ValueError, match="value_fn needs params"):
    tx.update(params, state, None, value_fn=lambda p: 0.0)
