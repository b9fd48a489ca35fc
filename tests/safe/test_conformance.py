"""SAFE, ADMM, IHT conformance: jit once, chains, injected hyperparameters,
flax linen and nnx pytrees, bf16/f32 kept."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest

import flatsparse as fs
from flatsparse.safe import Projection
from tests.flatness.nnx_check import assert_trains_nnx_linear

PROJ = Projection(sparsity=0.5)
METHODS = {
    "safe": lambda: optax.inject_hyperparams(
        fs.safe.safe, static_args=("base", "projection", "dual_period",
                                   "penalty_schedule", "total_steps"))(
            base=optax.adam(1e-2), projection=PROJ, lam=1e-2, rho=0.05,
            dual_period=4, total_steps=30),
    "safe_plus_hessian": lambda: fs.safe.safe(
        optax.adam(1e-2), Projection(sparsity=0.5, importance="hessian"),
        lam=1e-2, rho=0.05, dual_period=4, total_steps=30),
    "admm": lambda: fs.safe.admm(optax.adam(1e-2), PROJ, lam=1e-2,
                                 dual_period=4),
    "iht": lambda: fs.safe.iht(optax.adam(1e-2), PROJ, period=4),
}


class Net(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.Dense(2)(nn.relu(nn.Dense(16)(x)))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_jit_once_chain_dtype_and_learning(name, dtype):
  k = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(k[0], (64, 8), dtype)
  y = jax.random.normal(k[1], (64, 2), dtype)
  net = Net()
  params = jax.tree.map(lambda p: p.astype(dtype),
                        net.init(k[2], x)["params"])
  tx = optax.chain(optax.clip_by_global_norm(10.0), METHODS[name]())
  traces = []

  def value_fn(p):
    return jnp.mean((net.apply({"params": p}, x) - y) ** 2)

  @jax.jit
  def step(params, state):
    traces.append(1)
    loss, grads = jax.value_and_grad(value_fn)(params)
    updates, state = tx.update(grads, state, params, value_fn=value_fn)
    return optax.apply_updates(params, updates), state, loss

  state = tx.init(params)
  losses = []
  for _ in range(30):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  assert len(traces) == 1, "recompiled across primal and projection steps"
  assert losses[-1] < losses[0]
  assert all(p.dtype == dtype for p in jax.tree.leaves(params))
  final = fs.safe.finalize(params, state, PROJ)
  for layer in ("Dense_0", "Dense_1"):
    kernel = final[layer]["kernel"]
    assert int(jnp.sum(kernel == 0)) == kernel.size // 2
    assert kernel.dtype == dtype


def test_injected_hyperparameters_can_change_between_steps():
  tx = METHODS["safe"]()
  params = {"kernel": jnp.ones((2, 2))}
  state = tx.init(params)
  state.hyperparams["lam"] = jnp.asarray(0.5)
  value_fn = lambda p: jnp.sum(p["kernel"] ** 2)  # noqa: E731
  _, state = tx.update(jax.grad(value_fn)(params), state, params,
                       value_fn=value_fn)
  assert float(state.hyperparams["lam"]) == 0.5


@pytest.mark.parametrize("name", ["safe", "iht"])
def test_flax_nnx_optimizer(name):
  assert_trains_nnx_linear(METHODS[name]())
