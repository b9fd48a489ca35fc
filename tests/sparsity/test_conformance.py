"""Conformance of every algorithm: jit without retracing, chains, injected
hyperparameters, arbitrary pytrees (flax linen and nnx), dtypes kept."""

import dataclasses
from typing import NamedTuple

import flax
from flax import nnx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flatsparse as fs

EVERY_STEP = fs.sparsity.Periodic(update_freq=1)
ALGORITHMS = {
    "no_prune": lambda: fs.sparsity.no_pruning(),
    "magnitude": lambda: fs.sparsity.magnitude_pruning(sparsity=0.5,
                                                       schedule=EVERY_STEP),
    "random": lambda: fs.sparsity.random_pruning(sparsity=0.5),
    "saliency": lambda: fs.sparsity.saliency_pruning(sparsity=0.5),
    "global_magnitude": lambda: fs.sparsity.global_magnitude_pruning(
        sparsity=0.5),
    "global_saliency": lambda: fs.sparsity.global_saliency_pruning(
        sparsity=0.5),
    "magnitude_ste": lambda: fs.sparsity.magnitude_ste(sparsity=0.5),
    "random_ste": lambda: fs.sparsity.random_ste(sparsity=0.5),
    "static_sparse": lambda: fs.sparsity.static_sparse(sparsity=0.5),
    "set": lambda: fs.sparsity.set_sparse(sparsity=0.5, schedule=EVERY_STEP),
    "rigl": lambda: fs.sparsity.rigl(sparsity=0.5, schedule=EVERY_STEP),
    "acdc": lambda: fs.sparsity.acdc(sparsity=0.5, warmup_steps=1,
                                     sparse_steps=1, dense_steps=1,
                                     final_sparse_step=4),
    "nm_2_4": lambda: fs.sparsity.magnitude_pruning(scope="2:4"),
    "packed": lambda: fs.sparsity.magnitude_pruning(sparsity=0.5,
                                                    mask_storage="packed"),
}


def test_table_covers_the_registry():
  assert set(fs.sparsity.ALGORITHMS) <= set(ALGORITHMS)


class Custom(NamedTuple):
  kernel: jax.Array
  bias: jax.Array


def _tree(kind, dtype=jnp.float32):
  k = jax.random.normal(jax.random.PRNGKey(0), (8, 8)).astype(dtype)
  b = jnp.zeros(8, dtype)
  if kind == "dict":
    return {"outer": {"inner": {"kernel": k, "bias": b}},
            "w2": {"kernel": k * 2}}
  if kind == "frozen":
    return flax.core.freeze({"layer": {"kernel": k, "bias": b}})
  if kind == "list":
    return [k, b, [k * 3]]
  if kind == "custom":
    return Custom(k, b)
  if kind == "linen":
    return nn.Dense(8, dtype=dtype, param_dtype=dtype).init(
        jax.random.PRNGKey(0), jnp.ones((1, 8), dtype))
  raise ValueError(kind)


def _grads(params, seed=1):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return treedef.unflatten([jax.random.normal(k, x.shape).astype(x.dtype)
                            for k, x in zip(keys, leaves)])


def _assert_zero_where_masked(masks, params):
  def check(m, p):
    if m is not None:
      assert not np.any(np.asarray(p, np.float32)[~np.asarray(m)])
  jax.tree.map(check, masks, params, is_leaf=lambda x: x is None)


def _steps(tx, params, n=3, **extra):
  traces = []

  @jax.jit
  def step(params, state, grads):
    traces.append(1)
    updates, state = tx.update(grads, state, params, **extra)
    return optax.apply_updates(params, updates), state, updates

  state = tx.init(params)
  for t in range(n):
    params, state, updates = step(params, state, _grads(params, t))
  return params, state, updates, len(traces)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16],
                         ids=["f32", "bf16"])
def test_jit_once_dtypes_and_exact_sparsity(name, dtype):
  pruner = ALGORITHMS[name]()
  params = _tree("dict", dtype)
  params, state, updates, traces = _steps(pruner.wrap(optax.adam(1e-2)),
                                          params, n=4)
  assert traces == 1, "retraced on a later step"
  for leaf, upd in zip(jax.tree.leaves(params), jax.tree.leaves(updates)):
    assert leaf.dtype == dtype and upd.dtype == dtype
  sparse_state = fs.sparsity.find_sparse_state(state)
  assert sparse_state.count.dtype == jnp.int32 and int(sparse_state.count) == 4
  masks = fs.sparsity.get_masks(state, params)
  forward = fs.sparsity.masked_params(params, state)
  _assert_zero_where_masked(masks, forward)
  if name not in ("no_prune",) and "ste" not in name and name != "acdc":
    for m in jax.tree.leaves(masks):
      assert int(np.sum(np.asarray(m))) == m.size // 2 or name.startswith(
          "global")


@pytest.mark.parametrize("kind", ["dict", "frozen", "list", "custom", "linen"])
@pytest.mark.parametrize("name", ["magnitude", "rigl", "global_saliency",
                                  "acdc"])
def test_any_pytree(kind, name):
  params = _tree(kind)
  pruner = ALGORITHMS[name]()
  if kind == "list":  # no names: select the leaves by shape
    pruner = dataclasses.replace(
        pruner, is_prunable=fs.sparsity.spec.is_floating_matrix)
  new, state, _, _ = _steps(pruner.wrap(optax.sgd(0.1, 0.9)), params, n=3)
  assert jax.tree.structure(new) == jax.tree.structure(params)
  masks = fs.sparsity.get_masks(state, new)
  n_masked = len(jax.tree.leaves(masks))
  assert n_masked == sum(x.ndim > 1 for x in jax.tree.leaves(params))


@pytest.mark.parametrize("name", ["magnitude", "rigl", "static_sparse"])
def test_composes_in_chains_with_extra_args(name):
  params = _tree("dict")
  value_fn = lambda p: sum(jnp.sum(x ** 2) for x in jax.tree.leaves(p))  # noqa
  inner = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
  outer = optax.chain(ALGORITHMS[name]().wrap(inner))
  new, state, _, traces = _steps(outer, params, n=3, value_fn=value_fn)
  assert traces == 1
  _assert_zero_where_masked(fs.sparsity.get_masks(state, new), new)


def test_inject_hyperparams_inside_and_outside():
  params = _tree("dict")
  pruner = fs.sparsity.magnitude_pruning(sparsity=0.5)
  inside = pruner.wrap(optax.inject_hyperparams(optax.sgd)(learning_rate=0.1))
  outside = optax.inject_hyperparams(
      lambda learning_rate: pruner.wrap(optax.sgd(learning_rate)))(
          learning_rate=0.1)
  results = []
  for tx in (inside, outside):
    state = tx.init(params)
    updates, state = jax.jit(tx.update)(_grads(params), state, params)
    results.append(optax.apply_updates(params, updates))
  jax.tree.map(np.testing.assert_allclose, *results)
  # Changing the injected learning rate changes the step; no retrace needed.
  state = outside.init(params)
  state.hyperparams["learning_rate"] = jnp.asarray(0.0)
  updates, _ = outside.update(_grads(params), state, params)
  np.testing.assert_allclose(updates["outer"]["inner"]["bias"], 0.0)


def test_injected_sparsity():
  params = _tree("dict")
  tx = optax.inject_hyperparams(
      lambda sparsity: fs.sparsity.magnitude_pruning(sparsity=sparsity).wrap(
          optax.sgd(0.1)))(sparsity=0.25)
  state = tx.init(params)
  update = jax.jit(tx.update)
  _, state = update(_grads(params), state, params)
  masks = fs.sparsity.get_masks(state, params)
  assert int(np.sum(np.asarray(masks["w2"]["kernel"]))) == 48
  state.hyperparams["sparsity"] = jnp.asarray(0.75)
  state = state._replace(inner_state=state.inner_state._replace(
      count=jnp.zeros([], jnp.int32)))  # OneShot fires at step 0 again
  _, state = update(_grads(params), state, params)
  assert int(np.sum(np.asarray(
      fs.sparsity.get_masks(state, params)["w2"]["kernel"]))) == 16


class _NnxMLP(nnx.Module):

  def __init__(self, rngs):
    self.l1 = nnx.Linear(8, 16, rngs=rngs)
    self.l2 = nnx.Linear(16, 4, rngs=rngs)

  def __call__(self, x):
    return self.l2(jax.nn.relu(self.l1(x)))


@pytest.mark.parametrize("name", ["magnitude", "rigl", "global_magnitude",
                                  "packed"])
def test_flax_nnx_optimizer(name):
  model = _NnxMLP(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, ALGORITHMS[name]().wrap(optax.adam(1e-2)),
                            wrt=nnx.Param)
  x = jax.random.normal(jax.random.PRNGKey(1), (16, 8))
  y = jax.random.normal(jax.random.PRNGKey(2), (16, 4))

  @nnx.jit
  def train_step(model, optimizer):
    loss, grads = nnx.value_and_grad(
        lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(train_step(model, optimizer)) for _ in range(5)]
  assert losses[-1] < losses[0]
  state = nnx.as_pure(optimizer.opt_state)
  params = nnx.as_pure(nnx.state(model, nnx.Param))
  masks = fs.sparsity.get_masks(state, params)
  _assert_zero_where_masked(masks, params)
  kept = [int(np.sum(np.asarray(m))) for m in jax.tree.leaves(masks)]
  if name == "global_magnitude":
    assert sum(kept) == (8 * 16 + 16 * 4) // 2
  else:
    assert kept == [8 * 16 // 2, 16 * 4 // 2]
  assert np.all(np.asarray(model.l1.bias[...]) != 0)  # dense leaves train
