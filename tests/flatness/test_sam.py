"""SAM/ASAM: closed form on a quadratic, sparse perturbation, conformance."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.flatness.nnx_check import assert_trains_nnx_linear

import flatsparse as fs

A = np.diag([1.0, 4.0, 9.0]).astype(np.float32)


def quadratic(w):
  return 0.5 * w["w"] @ jnp.asarray(A) @ w["w"]


def test_sam_gradient_closed_form_on_a_quadratic():
  w = {"w": jnp.array([1.0, -1.0, 0.5])}
  g = A @ np.asarray(w["w"])
  rho = 0.1
  e = rho * g / np.linalg.norm(g)
  want = A @ (np.asarray(w["w"]) + e)
  tx = fs.sam(rho)
  got, state = tx.update({"w": jnp.asarray(g)}, tx.init(w), w,
                         value_fn=quadratic)
  np.testing.assert_allclose(got["w"], want, rtol=1e-6)
  assert int(state.count) == 1


def test_asam_closed_form():
  w = {"w": jnp.array([1.0, -2.0, 0.5])}
  g = A @ np.asarray(w["w"])
  t = np.abs(np.asarray(w["w"])) + 0.01
  e = 0.5 * t * t * g / np.linalg.norm(t * g)
  tx = fs.sam(0.5, adaptive=True)
  got, _ = tx.update({"w": jnp.asarray(g)}, tx.init(w), w, value_fn=quadratic)
  np.testing.assert_allclose(got["w"], A @ (np.asarray(w["w"]) + e), rtol=1e-5)


def test_rho_zero_is_plain_gradient_and_errors():
  w = {"w": jnp.array([1.0, 2.0, 3.0])}
  g = {"w": jnp.asarray(A @ np.asarray(w["w"]))}
  tx = fs.sam(0.0)
  got, _ = tx.update(g, tx.init(w), w, value_fn=quadratic)
  np.testing.assert_allclose(got["w"], g["w"], rtol=1e-6)
  with pytest.raises(ValueError, match="needs params and the extra argument"):
    tx.update(g, tx.init(w), w)
  with pytest.raises(ValueError, match="rho must be >= 0, got -1"):
    fs.sam(-1)


def test_sparse_sam_perturbs_only_active_weights():
  params = {"w": jnp.array([[1.0, 0.0], [0.0, 2.0]]), "b": jnp.ones(2)}
  grads = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
  masks = {"w": jnp.array([[True, False], [False, True]]), "b": None}
  e = fs.flatness.perturbation(grads, params, 1.0, masks=masks)
  np.testing.assert_array_equal(np.asarray(e["w"]) == 0, ~np.asarray(masks["w"]))
  np.testing.assert_allclose(optax.tree.norm(e), 1.0, rtol=1e-6)
  # Inside a pruning wrapper the masks arrive as an extra argument.
  seen = []

  def spy(p):
    jax.debug.callback(lambda w: seen.append(np.asarray(w)), p["w"])
    return jnp.sum(p["w"] ** 2) + jnp.sum(p["b"])

  tx = fs.sparsity.static_sparse(sparsity=0.5).wrap(
      optax.chain(fs.sam(1.0), optax.sgd(0.1)))
  state = tx.init(params)
  m = fs.sparsity.get_masks(state, params)
  params = fs.sparsity.apply_masks(params, m)
  tx.update(grads, state, params, value_fn=spy)
  perturbed = seen[-1]
  assert np.all(perturbed[~np.asarray(m["w"])] == 0)


def _loss(p, x, y):
  h = jax.nn.relu(x @ p["l1"]["kernel"] + p["l1"]["bias"])
  return jnp.mean((h @ p["l2"]["kernel"] - y) ** 2)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_conformance_jit_chain_inject_dtype(dtype):
  k = jax.random.split(jax.random.PRNGKey(0), 4)
  params = {"l1": {"kernel": jax.random.normal(k[0], (8, 16), dtype) * 0.3,
                   "bias": jnp.zeros(16, dtype)},
            "l2": {"kernel": jax.random.normal(k[1], (16, 2), dtype) * 0.3}}
  x = jax.random.normal(k[2], (32, 8), dtype)
  y = jax.random.normal(k[3], (32, 2), dtype)
  tx = optax.chain(
      optax.inject_hyperparams(lambda rho: fs.sam(rho))(rho=0.05),
      optax.adam(1e-2))
  traces = []

  @jax.jit
  def step(params, state):
    traces.append(1)
    value_fn = lambda p: _loss(p, x, y)  # noqa: E731
    loss, grads = jax.value_and_grad(value_fn)(params)
    updates, state = tx.update(grads, state, params, value_fn=value_fn)
    return optax.apply_updates(params, updates), state, loss

  state = tx.init(params)
  losses = []
  for _ in range(30):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  assert len(traces) == 1
  assert losses[-1] < losses[0]
  assert all(p.dtype == dtype for p in jax.tree.leaves(params))


def test_flax_nnx_optimizer():
  assert_trains_nnx_linear(optax.chain(fs.sam(0.05), optax.sgd(0.1)))
