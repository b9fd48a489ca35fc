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


def _steps(tx, trees, n=3, **extra):
  """``n`` steps of ``tx`` on each tree of ``trees`` separately (each with
  its own state) in one jitted program; returns the trees, the states, the
  last updates and the number of traces."""
  traces = []

  @jax.jit
  def step(trees, states, grads):
    traces.append(1)
    out = []
    for params, state, g in zip(trees, states, grads):
      updates, state = tx.update(g, state, params, **extra)
      out.append((optax.apply_updates(params, updates), state, updates))
    return tuple(zip(*out))

  # A jitted init: an eager one commits only the masks to a device, and
  # that mix makes the second step compile again (same trace).
  states = jax.jit(lambda trees: tuple(tx.init(p) for p in trees))(trees)
  for t in range(n):
    trees, states, updates = step(trees, states,
                                  tuple(_grads(p, t) for p in trees))
  return trees, states, updates, len(traces)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_jit_once_dtypes_and_exact_sparsity(name):
  # A float32 and a bfloat16 tree, each on its own (own state, own masks),
  # step in one program: one compilation covers both dtypes.
  dtypes = (jnp.float32, jnp.bfloat16)
  trees, states, updates, traces = _steps(
      ALGORITHMS[name]().wrap(optax.adam(1e-2)),
      tuple(_tree("dict", dtype) for dtype in dtypes), n=4)
  assert traces == 1, "retraced on a later step"
  for dtype, params, state, upd in zip(dtypes, trees, states, updates):
    for leaf, u in zip(jax.tree.leaves(params), jax.tree.leaves(upd)):
      assert leaf.dtype == dtype and u.dtype == dtype
    sparse_state = fs.sparsity.find_sparse_state(state)
    assert (sparse_state.count.dtype == jnp.int32
            and int(sparse_state.count) == 4)
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
  tx = pruner.wrap(optax.sgd(0.1, 0.9))

  def three_steps(params):
    state = tx.init(params)
    for t in range(3):
      updates, state = tx.update(_grads(params, t), state, params)
      params = optax.apply_updates(params, updates)
    return params, fs.sparsity.get_masks(state, params)

  # The tree handling is all at trace time: traced (shapes out), not
  # compiled. The dict tree runs for real in the test above.
  new, masks = jax.eval_shape(three_steps, params)
  assert jax.tree.structure(new) == jax.tree.structure(params)
  n_masked = len(jax.tree.leaves(masks))
  assert n_masked == sum(x.ndim > 1 for x in jax.tree.leaves(params))


@pytest.mark.parametrize("name", ["magnitude", "rigl", "static_sparse"])
def test_composes_in_chains_with_extra_args(name):
  params = _tree("dict")
  value_fn = lambda p: sum(jnp.sum(x ** 2) for x in jax.tree.leaves(p))  # noqa
  inner = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
  outer = optax.chain(ALGORITHMS[name]().wrap(inner))
  (new,), (state,), _, traces = _steps(outer, (params,), n=3,
                                      value_fn=value_fn)
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
    update = jax.jit(tx.update)
    updates, state = update(_grads(params), state, params)
    results.append(optax.apply_updates(params, updates))
  jax.tree.map(np.testing.assert_allclose, *results)
  # Changing the injected learning rate changes the step; no retrace needed
  # (the same compiled update of ``outside``).
  state = outside.init(params)
  state.hyperparams["learning_rate"] = jnp.zeros_like(
      state.hyperparams["learning_rate"])
  updates, _ = update(_grads(params), state, params)
  np.testing.assert_allclose(updates["outer"]["inner"]["bias"], 0.0)


def test_injected_sparsity():
  params = _tree("dict")
  tx = optax.inject_hyperparams(
      lambda sparsity: fs.sparsity.magnitude_pruning(sparsity=sparsity).wrap(
          optax.sgd(0.1)))(sparsity=0.25)
  state = jax.jit(tx.init)(params)  # placed like update's outputs
  update = jax.jit(tx.update)
  _, state = update(_grads(params), state, params)
  masks = fs.sparsity.get_masks(state, params)
  assert int(np.sum(np.asarray(masks["w2"]["kernel"]))) == 48
  # New values of the same types: the compiled update runs again.
  state.hyperparams["sparsity"] = jnp.full_like(
      state.hyperparams["sparsity"], 0.75)
  state = state._replace(inner_state=state.inner_state._replace(
      count=jnp.zeros_like(state.inner_state.count)))  # OneShot fires again
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
  @nnx.jit  # an eager init commits only the masks: a second compilation
  def create():
    model = _NnxMLP(nnx.Rngs(0))
    return model, nnx.Optimizer(
        model, ALGORITHMS[name]().wrap(optax.adam(1e-2)), wrt=nnx.Param)

  model, optimizer = create()
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
