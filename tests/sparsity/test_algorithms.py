"""Algorithms: RigL/SET drop-grow counts, global, static, AC/DC, random,
no-prune."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flatsparse as fs


def _run(pruner, params, grads_fn, steps, inner=None):
  """``steps`` jitted updates: the params, the state and the kernel's mask
  after each step."""
  tx = pruner.wrap(inner or optax.sgd(0.1))
  # Jitted init and step (the schedule is a lax.cond on the counter): two
  # compilations instead of an eager dispatch of every op at every step.
  state = jax.jit(tx.init)(params)
  params = fs.sparsity.apply_masks(params, fs.sparsity.get_masks(state, params))

  @jax.jit
  def step(t, state, params):
    updates, state = tx.update(grads_fn(t, params), state, params)
    params = optax.apply_updates(params, updates)
    return params, state, fs.sparsity.get_masks(state, params)["kernel"]

  history = []
  for t in range(steps):
    params, state, mask = step(jnp.int32(t), state, params)
    history.append(np.asarray(mask))
  return params, state, history


def test_rigl_hand_computed_drop_and_grow():
  # 1x8 leaf at 50%: active = largest 4 of |w| after the step.
  w = jnp.array([[8.0, 7.0, 6.0, 5.0, 0.0, 0.0, 0.0, 0.0]])
  pruner = fs.sparsity.rigl(sparsity=0.5, drop_fraction=0.5,
                            drop_fraction_end_step=10 ** 6,
                            schedule=fs.sparsity.Periodic(update_freq=1))
  tx = pruner.wrap(optax.sgd(0.0))
  state = jax.jit(tx.init)({"kernel": w})
  state = state._replace(masks={"kernel": jnp.array([[1, 1, 1, 1, 0, 0, 0, 0]],
                                               jnp.uint8)})
  grads = {"kernel": jnp.array([[0.0, 0.0, 0.0, 9.0, 1.0, 4.0, 3.0, 2.0]])}
  updates, state = jax.jit(tx.update)(grads, state, {"kernel": w})
  # drop 2 smallest active (6, 5); grow 2 largest |g| among the rest:
  # index 3 (just dropped, g=9, keeps its value) and index 5 (g=4, new: 0).
  np.testing.assert_array_equal(state.masks["kernel"],
                                [[1, 1, 0, 1, 0, 1, 0, 0]])
  new = optax.apply_updates({"kernel": w}, updates)["kernel"]
  np.testing.assert_array_equal(new, [[8.0, 7.0, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0]])


# set_sparse (slow) differs from rigl only in its growth score.
@pytest.mark.parametrize("factory", [
    fs.sparsity.rigl, pytest.param(fs.sparsity.set_sparse,
                                   marks=pytest.mark.slow)])
def test_dynamic_sparse_constant_sparsity_and_swap_counts(factory):
  shape = (20, 30)
  params = {"kernel": jax.random.normal(jax.random.PRNGKey(0), shape),
            "b": jnp.zeros(30)}
  schedule = fs.sparsity.Periodic(update_freq=2, update_start_step=1)
  pruner = factory(sparsity=0.8, drop_fraction=0.3, drop_fraction_end_step=20,
                   schedule=schedule)
  frac = jax.jit(fs.sparsity.cosine_drop_fraction(0.3, 20))
  is_update_step = jax.jit(schedule.is_update_step)
  grads_fn = lambda t, p: jax.tree.map(  # noqa: E731
      lambda x: jax.random.normal(jax.random.PRNGKey(t), x.shape), p)
  _, _, history = _run(pruner, params, grads_fn, 12)
  active = 600 - round(0.8 * 600)
  prev = history[0]
  for t, mask in enumerate(history):
    assert mask.sum() == active
    if t and bool(is_update_step(jnp.int32(t))):
      n_drop = round(float(frac(jnp.int32(t))) * active)
      dropped = (prev & ~mask).sum()
      assert dropped == (mask & ~prev).sum() <= n_drop
      assert (prev & mask).sum() >= active - n_drop
      if factory is fs.sparsity.set_sparse:
        assert dropped > 0
    elif t:
      np.testing.assert_array_equal(mask, prev)
    prev = mask


def test_dynamic_rejects_structures_and_bad_grow():
  with pytest.raises(ValueError, match="only unstructured"):
    fs.sparsity.rigl(sparsity=0.5, scope="2:4")
  with pytest.raises(ValueError, match="Unknown grow 'best'"):
    fs.sparsity.DynamicSparse(sparsity=0.5, grow="best")


def test_static_sparse_masks_never_change_and_match_instant_sparsify():
  params = {"kernel": jax.random.normal(jax.random.PRNGKey(0), (16, 16))}
  pruner = fs.sparsity.static_sparse(sparsity=0.75, seed=3)
  _, state, history = _run(pruner, params,
                           lambda t, p: jax.tree.map(jnp.ones_like, p), 5)
  for mask in history:
    np.testing.assert_array_equal(mask, history[0])
  assert history[0].sum() == 64
  _, masks = jax.jit(pruner.instant_sparsify)(params)
  np.testing.assert_array_equal(masks["kernel"], history[0])


def test_global_magnitude_hand_computed():
  params = {"a": {"kernel": jnp.array([[10.0, 9.0], [8.0, 7.0]])},
            "b": {"kernel": jnp.array([[1.0, 2.0], [3.0, 4.0]])}}
  sparse, masks = fs.sparsity.global_magnitude_pruning(
      sparsity=0.5, min_kept=0).instant_sparsify(params)
  np.testing.assert_array_equal(masks["a"]["kernel"], np.ones((2, 2), bool))
  np.testing.assert_array_equal(masks["b"]["kernel"], np.zeros((2, 2), bool))
  # Inside the wrapper, overrides keep their own per-leaf count.
  tx = fs.sparsity.global_magnitude_pruning(
      sparsity=0.5, overrides={"b/kernel": 0.5}).wrap(optax.sgd(0.0))
  _, state = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params),
                                jax.jit(tx.init)(params), params)
  assert int(state.masks["a"]["kernel"].sum()) == 2
  assert int(state.masks["b"]["kernel"].sum()) == 2
  np.testing.assert_array_equal(state.masks["b"]["kernel"], [[0, 0], [1, 1]])


def test_global_saliency_uses_gradients():
  params = {"a": {"kernel": jnp.ones((2, 2))},
            "b": {"kernel": jnp.ones((2, 2))}}
  grads = {"a": {"kernel": jnp.zeros((2, 2))},
           "b": {"kernel": jnp.full((2, 2), 5.0)}}
  _, masks = fs.sparsity.global_saliency_pruning(
      sparsity=0.5, min_kept=0).instant_sparsify(params, grads)
  assert not np.asarray(masks["a"]["kernel"]).any()
  assert np.asarray(masks["b"]["kernel"]).all()
  with pytest.raises(ValueError, match="distribution must be 'uniform'"):
    fs.sparsity.global_magnitude_pruning(sparsity=0.5, distribution="erk")


def test_acdc_phases_alternate():
  pruner = fs.sparsity.acdc(sparsity=0.5, warmup_steps=2, sparse_steps=2,
                            dense_steps=2, final_sparse_step=10)
  is_sparse_phase = jax.jit(pruner.is_sparse_phase)
  is_update_step = jax.jit(pruner.is_update_step)
  phases = [bool(is_sparse_phase(jnp.int32(t))) for t in range(14)]
  assert phases == [False, False, True, True, False, False, True, True,
                    False, False, True, True, True, True]
  updates = [t for t in range(14) if bool(is_update_step(jnp.int32(t)))]
  assert updates == [2, 4, 6, 8, 10]
  params = {"kernel": jax.random.normal(jax.random.PRNGKey(0), (8, 8))}
  _, _, history = _run(pruner, params,
                       lambda t, p: jax.tree.map(jnp.ones_like, p), 14)
  density = [int(m.sum()) for m in history]
  assert density == [64, 64, 32, 32, 64, 64, 32, 32, 64, 64, 32, 32, 32, 32]
  with pytest.raises(ValueError, match="final_sparse_step"):
    fs.sparsity.acdc(warmup_steps=10, final_sparse_step=5)


def test_random_gradual_masks_are_nested():
  params = {"kernel": jax.random.normal(jax.random.PRNGKey(0), (32, 32))}
  pruner = fs.sparsity.random_pruning(
      sparsity=0.9, schedule=fs.sparsity.Polynomial(
          update_freq=2, update_start_step=0, update_end_step=10))
  _, _, history = _run(pruner, params,
                       lambda t, p: jax.tree.map(jnp.ones_like, p), 12)
  for before, after in zip(history, history[1:]):
    assert not np.any(after & ~before)
  assert history[-1].sum() == 1024 - round(0.9 * 1024)


def test_no_pruning_equals_inner():
  params = {"kernel": jax.random.normal(jax.random.PRNGKey(0), (4, 4))}
  grads = {"kernel": jnp.ones((4, 4))}
  inner = optax.adam(0.1)
  tx = fs.sparsity.no_pruning().wrap(inner)
  u1, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  u2, _ = jax.jit(inner.update)(grads, inner.init(params), params)
  np.testing.assert_allclose(u1["kernel"], u2["kernel"], rtol=1e-6)


@pytest.mark.parametrize("structure", ["2:4", "block:2x4", "channel"])
def test_structured_pruning_inside_wrapper(structure):
  params = {"kernel": jax.random.normal(jax.random.PRNGKey(0), (8, 16))}
  _, state, history = _run(
      fs.sparsity.magnitude_pruning(sparsity=0.5, scope=structure), params,
      lambda t, p: jax.tree.map(jnp.ones_like, p), 2)
  mask = history[-1]
  assert mask.sum() == 64
  if structure == "2:4":
    assert np.all(mask.T.reshape(-1, 4).sum(-1) == 2)
  if structure == "channel":
    assert set(mask.sum(0)) == {0, 8}
