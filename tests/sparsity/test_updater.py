"""The wrapper: exact zeros, exact counts, one hand-computed step, STE,
resets."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flatsparse as fs
from flatsparse.sparsity import updater as updater_lib


def _params(seed=0):
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  return {"dense1": {"kernel": jax.random.normal(k1, (12, 16)) / 4,
                     "bias": jnp.zeros(16)},
          "dense2": {"kernel": jax.random.normal(k2, (16, 4)) / 4,
                     "bias": jnp.zeros(4)},
          "scale": 1 + 0.1 * jax.random.normal(k3, (4,))}


def _loss(params, x, y):
  h = jax.nn.relu(x @ params["dense1"]["kernel"] + params["dense1"]["bias"])
  out = ((h @ params["dense2"]["kernel"] + params["dense2"]["bias"])
         * params["scale"])
  return jnp.mean((out - y) ** 2)


def _data(seed=1):
  kx, ky = jax.random.split(jax.random.PRNGKey(seed))
  return jax.random.normal(kx, (32, 12)), jax.random.normal(ky, (32, 4))


def test_one_step_hand_computed():
  params = {"kernel": jnp.array([[1.0, -3.0], [2.0, 0.5]]),
            "b": jnp.array([1.0, 1.0])}
  grads = {"kernel": jnp.array([[1.0, 1.0], [1.0, 1.0]]),
           "b": jnp.array([1.0, 1.0])}
  tx = fs.sparsity.magnitude_pruning(sparsity=0.5).wrap(optax.sgd(0.1))
  updates, state = tx.update(grads, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  # Scores are the current |p| = [[1, 3], [2, 0.5]]: keep 3 and 2; kept weights
  # get exactly u = -0.1 g, pruned ones land on 0.
  np.testing.assert_allclose(new["kernel"], [[0.0, -3.1], [1.9, 0.0]],
                             rtol=1e-6)
  np.testing.assert_allclose(new["b"], [0.9, 0.9], rtol=1e-6)
  np.testing.assert_array_equal(state.masks["kernel"], [[0, 1], [1, 0]])
  assert state.masks["b"] is None
  assert int(state.count) == 1


@pytest.mark.parametrize("inner", [optax.sgd(0.01, momentum=0.9),
                                   optax.adam(1e-2)], ids=["sgdm", "adam"])
@pytest.mark.parametrize("storage", ["uint8", "packed"])
def test_exact_zeros_and_counts_for_200_steps(inner, storage):
  schedule = fs.sparsity.Polynomial(update_freq=10, update_start_step=0,
                                    update_end_step=100)
  pruner = fs.sparsity.magnitude_pruning(sparsity=0.8, distribution="erk",
                                         schedule=schedule,
                                         mask_storage=storage)
  tx = pruner.wrap(inner)
  params = _params()
  targets = pruner.layer_sparsities(params)
  state = tx.init(params)
  x, y = _data()

  @jax.jit
  def step(params, state):
    loss, grads = jax.value_and_grad(_loss)(params, x, y)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  losses = []
  for t in range(200):
    params, state, loss = step(params, state)
    losses.append(float(loss))
    masks = fs.sparsity.get_masks(state, params)
    for path in targets:
      leaf = params[path.split("/")[0]][path.split("/")[1]]
      mask = masks[path.split("/")[0]][path.split("/")[1]]
      # Masked weights are exactly zero, every step.
      assert not np.any(np.asarray(leaf)[~np.asarray(mask)])
      if t % 10 == 0 and t <= 100:  # after each mask update: exact count
        s_t = float(schedule.sparsity(jnp.int32(t), targets[path]))
        want = leaf.size - round(s_t * leaf.size)
        assert int(np.sum(np.asarray(mask))) == want, (t, path)
  summary = fs.sparsity.summarize_sparsity(params)
  assert summary["leaves"]["dense1/bias"]["prunable"] is False
  assert summary["prunable_nnz"] == sum(
      p.size - round(targets[k] * p.size) for k, p in
      fs.sparsity.distributions.prunable_leaves(params).items())
  assert losses[-1] < losses[0]


# ~19 s: pack/unpack and packed wrappers are unit-tested in the fast suite
@pytest.mark.slow
def test_packed_and_uint8_give_identical_runs():
  runs = []
  for storage in ("uint8", "packed"):
    tx = fs.sparsity.magnitude_pruning(
        sparsity=0.7, mask_storage=storage,
        schedule=fs.sparsity.Periodic(update_freq=3)).wrap(optax.adam(1e-2))
    params, state = _params(), None
    state = tx.init(params)
    x, y = _data()
    for _ in range(7):
      grads = jax.grad(_loss)(params, x, y)
      updates, state = tx.update(grads, state, params)
      params = optax.apply_updates(params, updates)
    runs.append(params)
  jax.tree.map(np.testing.assert_array_equal, *runs)


def test_packed_masks_use_an_eighth_of_the_memory():
  params = {"kernel": jnp.ones((64, 128))}
  for storage, nbytes in (("uint8", 64 * 128), ("packed", 64 * 16)):
    tx = fs.sparsity.magnitude_pruning(sparsity=0.5,
                                       mask_storage=storage).wrap(optax.sgd(1))
    assert tx.init(params).masks["kernel"].nbytes == nbytes


def test_ste_keeps_dense_weights_and_straight_through_gradient():
  pruner = fs.sparsity.magnitude_ste(sparsity=0.5)
  tx = pruner.wrap(optax.sgd(0.1))
  params = {"kernel": jnp.array([[1.0, -3.0], [2.0, 0.5]])}
  state = tx.init(params)
  grads = {"kernel": jnp.ones((2, 2))}
  updates, state = tx.update(grads, state, params)
  # Not masked:
  np.testing.assert_allclose(updates["kernel"], -0.1 * np.ones((2, 2)))
  new = optax.apply_updates(params, updates)
  forward = fs.sparsity.masked_params(new, state)
  np.testing.assert_allclose(forward["kernel"], [[0.0, -3.1], [1.9, 0.0]],
                             rtol=1e-6)
  g = jax.grad(
      lambda p: jnp.sum(
          fs.sparsity.masked_params(p, state)["kernel"] * 2.0))(new)
  # Straight through:
  np.testing.assert_allclose(g["kernel"], 2.0 * np.ones((2, 2)))


def test_instant_sparsify_and_table():
  params = _params()
  pruner = fs.sparsity.magnitude_pruning(sparsity=0.9)
  sparse, masks = pruner.instant_sparsify(params)
  summary = fs.sparsity.summarize_sparsity(sparse)
  for path in ("dense1/kernel", "dense2/kernel"):
    leaf = summary["leaves"][path]
    assert leaf["nnz"] == leaf["size"] - round(0.9 * leaf["size"])
  assert masks["dense1"]["bias"] is None
  table = fs.sparsity.format_sparsity_table(summary)
  assert "dense1/kernel" in table and "total" in table
  grads = jax.grad(_loss)(params, *_data())
  sal, _ = fs.sparsity.saliency_pruning(sparsity=0.5).instant_sparsify(
      params, grads)
  assert fs.sparsity.summarize_sparsity(sal)["leaves"]["dense2/kernel"][
      "nnz"] == 32
  with pytest.raises(ValueError, match="saliency score needs gradients"):
    fs.sparsity.saliency_pruning(sparsity=0.5).instant_sparsify(params)


@pytest.mark.parametrize("inner_name", ["sgdm", "adam", "inject", "lion",
                                        "chain"])
def test_moment_reset_for_grown_weights(inner_name):
  inner = {
      "sgdm": optax.sgd(0.1, momentum=0.9),
      "adam": optax.adam(0.1),
      "inject": optax.inject_hyperparams(optax.adam)(learning_rate=0.1),
      "lion": optax.lion(0.1),
      "chain": optax.chain(optax.clip_by_global_norm(10.0),
                           optax.scale_by_adam(), optax.scale(-0.1)),
  }[inner_name]
  params = {"kernel": jnp.arange(1.0, 17.0).reshape(4, 4), "b": jnp.ones(4)}
  pruner = fs.sparsity.rigl(sparsity=0.5, drop_fraction=0.5,
                            schedule=fs.sparsity.Periodic(update_freq=1,
                                                          update_start_step=1))
  tx = pruner.wrap(inner)
  state = tx.init(params)
  params = fs.sparsity.apply_masks(params, fs.sparsity.get_masks(state, params))
  grads = {"kernel": jnp.ones((4, 4)), "b": jnp.ones(4)}
  # Step 0 (no mask update) fills the moments everywhere.
  updates, state = tx.update(grads, state, params)
  params = optax.apply_updates(params, updates)
  old = np.asarray(fs.sparsity.get_masks(state, params)["kernel"])
  moments_before = [np.asarray(x) for x in jax.tree.leaves(state.inner_state)
                    if np.shape(x) == (4, 4)]
  assert moments_before and all(np.all(m != 0) for m in moments_before)
  # Step 1 updates masks: RigL grows where |g| is largest among inactive.
  grads = {"kernel": jnp.arange(16.0).reshape(4, 4), "b": jnp.ones(4)}
  updates, state = tx.update(grads, state, params)
  new = np.asarray(fs.sparsity.get_masks(state, params)["kernel"])
  grown = new & ~old
  assert new.sum() == 8 and grown.sum() == (old & ~new).sum() >= 1
  for m in (np.asarray(x) for x in jax.tree.leaves(state.inner_state)
            if np.shape(x) == (4, 4)):
    assert np.all(m[grown] == 0)
    assert np.all(m[new & old] != 0)
  # Grown weights start at zero.
  assert np.all(np.asarray(
      optax.apply_updates(params, updates)["kernel"])[grown] == 0)


def test_errors():
  tx = fs.sparsity.magnitude_pruning(sparsity=0.5).wrap(optax.sgd(0.1))
  state = tx.init({"kernel": jnp.ones((4, 4))})
  with pytest.raises(ValueError, match="needs params"):
    tx.update({"kernel": jnp.ones((4, 4))}, state)
  with pytest.raises(ValueError, match="m=4 does not divide axis -2 of size 6"):
    fs.sparsity.magnitude_pruning(scope="2:4").wrap(optax.sgd(1)).init(
        {"kernel": jnp.ones((6, 8))})
  with pytest.raises(ValueError, match="Unknown mask_storage 'bits'"):
    fs.sparsity.magnitude_pruning(sparsity=0.5, mask_storage="bits")
  with pytest.raises(ValueError,
                     match=r"sparsity must be in \[0, 1\), got 1.0"):
    fs.sparsity.magnitude_pruning(sparsity=1.0)
  with pytest.raises(ValueError, match="Unknown importance 'taylor'"):
    fs.sparsity.SparseUpdater(importance="taylor")
  with pytest.raises(ValueError, match="No SparseState"):
    fs.sparsity.get_masks(optax.sgd(1).init({"w": jnp.ones(2)}),
                          {"w": jnp.ones(2)})


def test_reset_where_grown_ignores_non_moment_leaves():
  params = {"w": jnp.ones((2, 2))}
  grown = {"w": jnp.array([[True, False], [False, False]])}
  state = optax.adam(1.0).init(params)
  state = jax.tree.map(lambda x: x + 1.0, state)
  out = updater_lib.reset_where_grown(state, grown, params)
  assert int(out[0].count) == 1
  np.testing.assert_array_equal(out[0].mu["w"], [[0, 1], [1, 1]])


def test_host_scheduled_mask_updates_equal_the_cond_path():
  schedule = fs.sparsity.Polynomial(update_freq=3, update_start_step=1,
                                    update_end_step=10)
  pruner = fs.sparsity.magnitude_pruning(sparsity=0.8, schedule=schedule)
  tx = pruner.wrap(optax.adam(1e-2))
  x, y = _data()

  def step(params, state, mask_update=None):
    grads = jax.grad(_loss)(params, x, y)
    updates, state = tx.update(grads, state, params, mask_update=mask_update)
    return optax.apply_updates(params, updates), state

  cond_step = jax.jit(step)
  host_step = jax.jit(step, static_argnames="mask_update")
  runs = []
  for host in (False, True):
    params = _params()
    state = tx.init(params)
    for t in range(14):
      if host:
        params, state = host_step(params, state,
                                  mask_update=bool(pruner.is_update_step(t)))
      else:
        params, state = cond_step(params, state)
    runs.append(params)
  jax.tree.map(np.testing.assert_array_equal, *runs)
  with pytest.raises(ValueError, match="mask_update must be a Python bool"):
    tx.update(jax.grad(_loss)(params, x, y), state, params,
              mask_update=jnp.asarray(True))
