"""Zeroth-order estimators: unbiasedness, variance, queries, budget,
conformance; ZIP's reparameterization and clipping."""

import dataclasses

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg

from flatsparse import zeroth_order as zo

A = jnp.asarray(np.diag([1.0, 2.0, 3.0, 0.5]) + 0.1)
B = jnp.asarray([0.3, -0.2, 0.1, 0.4])


def quadratic(params):
  x = jnp.concatenate([params["w"].reshape(-1), params["b"]])
  return 0.5 * x @ A @ x + B @ x


PARAMS = {"w": jnp.asarray([[1.0, -1.0], [0.5, 2.0]])[:1], "b":
          jnp.asarray([0.5, -0.5])}
TRUE = np.asarray(A @ jnp.asarray([1.0, -1.0, 0.5, -0.5]) + B)


def _estimates(tx, steps):
  """Estimates of ``steps`` consecutive steps at fixed params (one scan)."""
  @jax.jit
  def run(state):
    def body(state, _):
      g, state = tx.update(PARAMS, state, PARAMS, value_fn=quadratic)
      return state, jnp.concatenate([g["w"].reshape(-1), g["b"]])
    return jax.lax.scan(body, state, None, length=steps)

  state, estimates = run(tx.init(PARAMS))
  return np.asarray(estimates), state


@pytest.mark.parametrize("estimator", zo.ESTIMATORS)
@pytest.mark.parametrize("two_sided", [True, False])
def test_unbiased_on_a_quadratic(estimator, two_sided):
  tx = zo.zeroth_order_gradient(estimator, 1, 0.01, two_sided=two_sided,
                                seed=1)
  estimates, state = _estimates(tx, 4000)
  mean, sem = estimates.mean(0), estimates.std(0) / np.sqrt(4000)
  assert np.all(np.abs(mean - TRUE) < 5 * sem + 1e-3), (mean, TRUE)
  assert int(state.queries) == 4000 * (2 if two_sided else 2)


def test_variance_shrinks_with_more_directions():
  errors = {}
  for q in (1, 8):
    tx = zo.zeroth_order_gradient("gaussian", q, 0.01, seed=2)
    estimates, _ = _estimates(tx, 1000)
    errors[q] = np.mean(np.sum((estimates - TRUE) ** 2, 1))
  assert errors[8] == pytest.approx(errors[1] / 8, rel=0.3)


def test_queries_exact_under_jit_and_vmap_and_reuse_center():
  for two_sided, reuse, per_step in ((True, True, 6), (False, True, 4),
                                     (False, False, 6)):
    tx = zo.zeroth_order_gradient("spsa", 3, two_sided=two_sided,
                                  reuse_center=reuse)
    assert zo.queries_per_step(3, two_sided, reuse) == per_step
    _, state = _estimates(tx, 5)
    assert int(state.queries) == 5 * per_step

  def one_run(seed):
    tx = zo.zeroth_order_gradient("spsa", 2, seed=seed)
    state = tx.init(PARAMS)
    for _ in range(3):
      _, state = tx.update(PARAMS, state, PARAMS, value_fn=quadratic)
    return state.queries

  np.testing.assert_array_equal(jax.jit(jax.vmap(one_run))(jnp.arange(4)),
                                [12] * 4)
  chained = optax.chain(zo.zeroth_order_gradient("sphere", 2),
                        optax.adam(1e-2))
  state = chained.init(PARAMS)
  _, state = chained.update(PARAMS, state, PARAMS, value_fn=quadratic)
  assert int(zo.queries_used(state)) == 4


def test_budget_stops_queries_and_updates():
  calls = []

  def counted(params):
    value = quadratic(params)
    # Under vmap the callback sees the lanes at once: count them.
    jax.debug.callback(lambda v: calls.append(np.size(v)), value)
    return value

  tx = zo.zeroth_order_gradient("spsa", 2, budget=10)  # 4 per step
  state = tx.init(PARAMS)
  step = jax.jit(lambda s: tx.update(PARAMS, s, PARAMS, value_fn=counted))
  outs = []
  for _ in range(4):
    g, state = step(state)
    outs.append(g)
  jax.effects_barrier()
  assert int(state.queries) == 8 and int(state.count) == 4
  assert sum(calls) == 8  # the last two steps queried nothing
  for g in outs[2:]:
    assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(g))
  assert float(jnp.abs(outs[0]["b"]).max()) > 0


def test_conformance_jit_chain_inject_pytrees_dtypes():
  tx = optax.chain(zo.zeroth_order_gradient("spsa", 2, zo.zip_smoothing()),
                   optax.sgd(zo.zip_learning_rate()))
  mixed = {"w": PARAMS["w"].astype(jnp.bfloat16), "b": PARAMS["b"]}
  state = tx.init(mixed)
  step = jax.jit(lambda p, s: tx.update(p, s, p, value_fn=quadratic))
  for _ in range(2):
    updates, state = step(mixed, state)
    mixed = optax.apply_updates(mixed, updates)
  assert step._cache_size() == 1
  assert mixed["w"].dtype == jnp.bfloat16 and mixed["b"].dtype == jnp.float32
  injected = optax.inject_hyperparams(zo.zeroth_order_gradient)(
      estimator="gaussian", smoothing=0.05)
  state = injected.init(PARAMS)
  g, state = jax.jit(lambda s: injected.update(
      PARAMS, s, PARAMS, value_fn=quadratic))(state)
  assert float(state.hyperparams["smoothing"]) == pytest.approx(0.05)
  # An nnx state is a pytree like any other.
  model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
  nnx_params = nnx.state(model, nnx.Param)

  def nnx_loss(p):
    return sum(jnp.sum(x ** 2) for x in jax.tree.leaves(p))

  tx = zo.zeroth_order_gradient("gaussian", 4)
  g, _ = tx.update(nnx_params, tx.init(nnx_params), nnx_params,
                   value_fn=nnx_loss)
  assert jax.tree.structure(g) == jax.tree.structure(nnx_params)


def test_bad_input_names_the_value():
  with pytest.raises(ValueError, match="num_directions must be an int >= 1, "
                     "got 0"):
    zo.zeroth_order_gradient("spsa", 0)
  with pytest.raises(ValueError, match="budget must be an int >= 0, got -1"):
    zo.zeroth_order_gradient("spsa", budget=-1)
  with pytest.raises(ValueError, match="smoothing must be > 0, got 0.0"):
    zo.zeroth_order_gradient("spsa", smoothing=0.0)
  with pytest.raises(ValueError, match="Unknown estimator 'adam'"):
    zo.zeroth_order_gradient("adam")
  tx = zo.zeroth_order_gradient("spsa")
  with pytest.raises(ValueError, match="value_fn"):
    tx.update(PARAMS, tx.init(PARAMS), PARAMS)


def test_zip_parameter_count_shapes_and_start():
  prompt = zo.ZipPrompt(num_tokens=8, width=384, rank=5, intrinsic_dim=62)
  params = prompt.init()
  assert zo.num_numbers(params) == 417
  assert {k: v.shape for k, v in params.items()} == {
      "u": (8, 5), "s": (5,), "v": (62, 5), "shared": (62,)}
  assert zo.num_numbers(zo.ZipPrompt(low_rank=False).init()) == 8 * 62 + 62
  assert zo.num_numbers(zo.ZipPrompt(feature_sharing=False).init()) == 355
  base = jnp.ones((8, 384))
  out = prompt(params, prompt.projection_matrices(), base)
  np.testing.assert_array_equal(out, base)  # U = 0, shared = 0
  # The reference code's start: U = 0, s = 1, V ~ N(0, 1).
  np.testing.assert_array_equal(params["u"], 0.0)
  np.testing.assert_array_equal(params["s"], 1.0)
  assert 0.8 < float(jnp.std(params["v"])) < 1.2
  params = {**params, "u": jnp.ones((8, 5)), "shared": jnp.ones(62)}
  z = (params["u"] * params["s"]) @ params["v"].T + 1.0
  a = prompt.projection_matrices()
  np.testing.assert_allclose(prompt(params, a), np.einsum("td,tdw->tw", z, a),
                             rtol=1e-5, atol=1e-5)
  shared = zo.ZipPrompt(projection="shared")
  assert shared.projection_matrices().shape == (1, 62, 384)
  with pytest.raises(ValueError, match="base must be \\(8, 384\\)"):
    prompt(params, a, jnp.ones((8, 10)))
  with pytest.raises(ValueError, match="rank 9 is above"):
    zo.ZipPrompt(rank=9)


def test_walsh_hadamard_and_the_fastfood_projection():
  # Jitted: eagerly, every butterfly's ops compile one by one.
  x = np.random.default_rng(0).normal(size=8)
  np.testing.assert_allclose(jax.jit(zo.walsh_hadamard)(jnp.asarray(x)),
                             scipy.linalg.hadamard(8) @ x, rtol=1e-5,
                             atol=1e-5)
  with pytest.raises(ValueError, match="length 6 is not a power of two"):
    zo.walsh_hadamard(jnp.ones(6))
  prompt = zo.ZipPrompt(num_tokens=3, width=40, rank=2, intrinsic_dim=10,
                        projection="fastfood")
  maps = prompt.projection_matrices()
  assert maps["signs"].shape == (3, 64)  # 2^ceil(log2 40)
  # A linear map per token: the same as its matrix (built from the basis),
  # and norm-preserving on average (the reference's normalization).
  params = {"z": jnp.asarray(np.random.default_rng(1).normal(size=(3, 10)),
                             jnp.float32), "shared": jnp.zeros(10)}
  prompt = dataclasses.replace(prompt, low_rank=False)
  out = jax.jit(prompt)(params, maps)
  basis = jax.jit(jax.vmap(
      lambda e: prompt({"z": jnp.broadcast_to(e, (3, 10)),
                        "shared": jnp.zeros(10)}, maps)))(
                            jnp.eye(10))  # (10, 3, 40)
  np.testing.assert_allclose(out, jnp.einsum("td,dtw->tw", params["z"],
                                             basis), rtol=1e-4, atol=1e-5)
  norms = jnp.sum(basis ** 2, axis=-1)  # ||A_t e_i||^2
  assert 0.8 < float(jnp.mean(norms)) < 1.2


def test_intrinsic_clip_at_sqrt_n():
  clip = zo.intrinsic_clip()
  tree = {"a": jnp.full((4, 2), 3.0), "b": jnp.full((8,), 3.0)}  # N = 16
  out, _ = clip.update(tree, clip.init(tree))
  assert float(optax.tree.norm(out)) == pytest.approx(4.0)
  small = jax.tree.map(lambda x: x / 10, tree)  # norm 1.2 < 4
  out, _ = clip.update(small, clip.init(small))
  np.testing.assert_allclose(out["a"], small["a"])
