"""Guards against silent misuse of the sparsity wrappers (issue 10, part 4)."""

import math
import re
import warnings

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import flatsparse as fs
from flatsparse.sparsity import distributions


def _params():
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  return {"dense1": {"kernel": jax.random.normal(k1, (6, 8)),
                     "bias": jnp.zeros(8)},
          "dense2": {"kernel": jax.random.normal(k2, (8, 3)),
                     "bias": jnp.zeros(3)}}


def _run(tx, params, steps=3):
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)

  @jax.jit
  def step(params, state):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for _ in range(steps):
    params, state = step(params, state)
  return params, state


# ---- the wrapper must be outermost: check_sparse ---------------------------

def test_check_sparse_names_leaves_counts_and_the_fix_when_not_outermost():
  pruner = fs.sparsity.magnitude_pruning(sparsity=0.5)
  tx = optax.chain(pruner.wrap(optax.adamw(1e-1)), optax.scale(0.5))
  params, state = _run(tx, _params())
  with pytest.raises(ValueError) as err:
    fs.sparsity.check_sparse(params, state)
  message = str(err.value)
  # 24 of 48 and 12 of 24 weights pruned; after scale(0.5) all are p/2 != 0.
  assert "24 of the 24 pruned weights of dense1/kernel" in message
  assert "12 of the 12 pruned weights of dense2/kernel" in message
  assert ("the sparsity wrapper must be the outermost transformation: "
          "wrap(chain(...)), not chain(wrap(...), ...)") in message.lower()
  with pytest.warns(UserWarning, match="outermost"):
    bad = fs.sparsity.check_sparse(params, state, action="warn")
  assert bad == {"dense1/kernel": (24, 24), "dense2/kernel": (12, 12)}


@pytest.mark.parametrize("factory,storage", [
    (fs.sparsity.magnitude_pruning, "packed"),
    (fs.sparsity.static_sparse, "uint8"),
    pytest.param(fs.sparsity.set_sparse, "uint8", marks=pytest.mark.slow)])
def test_check_sparse_passes_when_outermost(factory, storage):
  kwargs = dict(sparsity=0.5, mask_storage=storage)
  if factory is fs.sparsity.set_sparse:
    kwargs["schedule"] = fs.sparsity.Periodic(update_freq=1)
  tx = factory(**kwargs).wrap(
      optax.chain(optax.adamw(1e-1), optax.scale(0.5)))
  params, state = _run(tx, _params())
  assert fs.sparsity.check_sparse(params, state) == {}
  # SET regrows at zero, so at least half are zero.
  assert fs.sparsity.summarize_sparsity(params)["prunable_sparsity"] >= 0.5


def test_check_sparse_skips_ste_and_the_state_before_the_first_update():
  params = _params()
  static = fs.sparsity.static_sparse(sparsity=0.5).wrap(optax.sgd(0.1))
  # init draws sparse masks; the first update applies them.
  assert fs.sparsity.check_sparse(params, static.init(params)) == {}
  ste = fs.sparsity.magnitude_ste(sparsity=0.5)
  dense, state = _run(ste.wrap(optax.sgd(0.1)), params)
  assert fs.sparsity.check_sparse(dense, state, updater=ste) == {}
  with pytest.raises(ValueError, match="STE wrappers keep dense weights"):
    fs.sparsity.check_sparse(dense, state)
  with pytest.raises(ValueError, match="action must be 'raise' or 'warn'"):
    fs.sparsity.check_sparse(dense, state, action="ignore")


def test_train_loop_checks_sparsity_at_eval(tmp_path, monkeypatch):
  from configs import digits_mlp
  from flatsparse.train import builders
  from flatsparse.train import loop
  build = builders.build_method

  def not_outermost(*args, **kwargs):
    method = build(*args, **kwargs)
    return method._replace(tx=optax.chain(method.tx, optax.scale(0.5)))
  monkeypatch.setattr(builders, "build_method", not_outermost)
  config = digits_mlp.get_config("tiny")
  config.model.hidden = (8,)
  config.sparsity = ml_collections.ConfigDict(dict(
      algorithm="magnitude", sparsity=0.5, schedule="one_shot",
      update_start_step=0))
  # One step, evaluated (and checked) before its checkpoint would be saved.
  config.steps = config.eval_every = config.log_every = 1
  config.checkpoint_every = 1000
  with pytest.raises(ValueError, match=r"must be the outermost transformation"):
    loop.train_and_evaluate(config, str(tmp_path))


# ---- nothing to prune must not pass silently --------------------------------

@pytest.mark.parametrize("factory", [
    fs.sparsity.magnitude_pruning, fs.sparsity.rigl, fs.sparsity.static_sparse,
    fs.sparsity.global_magnitude_pruning, fs.sparsity.acdc])
@pytest.mark.parametrize("value", [None, "0.5", float("nan"), [0.5, 0.5]])
def test_sparsity_must_be_a_number(factory, value):
  with pytest.raises(ValueError, match=r"sparsity must be .*in \[0, 1\), got "
                     + re.escape(repr(value))):
    factory(sparsity=value)


def test_no_prunable_leaf_is_an_error_naming_paths_and_predicate():
  params = {"dense": {"bias": jnp.zeros(3)}, "scale": jnp.ones(3)}
  pruner = fs.sparsity.magnitude_pruning(sparsity=0.5)
  with pytest.raises(ValueError) as err:
    pruner.wrap(optax.sgd(0.1)).init(params)
  message = str(err.value)
  assert "dense/bias float32[3]" in message and "scale float32[3]" in message
  assert "default_is_prunable" in message and "no prunable leaf" in message
  with pytest.raises(ValueError, match="no prunable leaf"):
    pruner.instant_sparsify(params)
  custom = fs.sparsity.rigl(sparsity=0.5, is_prunable=lambda p, x: "conv" in p)
  with pytest.raises(ValueError, match=r"is_prunable=.*<lambda>"):
    custom.wrap(optax.sgd(0.1)).init(_params())
  # A dense baseline (sparsity 0) has nothing to prune by design.
  state = fs.sparsity.no_pruning().wrap(optax.sgd(0.1)).init(params)
  assert jax.tree.leaves(state.masks) == []


def test_summary_without_prunable_leaves_is_zero_with_a_warning():
  params = {"bias": jnp.ones(3), "scale": jnp.zeros(2)}
  with pytest.warns(UserWarning, match="selects none of the 2 leaves"):
    summary = fs.sparsity.summarize_sparsity(params)
  assert summary["prunable_sparsity"] == 0.0
  assert summary["sparsity"] == pytest.approx(0.4)
  with pytest.warns(UserWarning):
    assert fs.sparsity.summarize_sparsity({})["sparsity"] == 0.0
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # a model with kernels does not warn
    fs.sparsity.summarize_sparsity(_params())


# ---- bad values name themselves ---------------------------------------------

@pytest.mark.parametrize("factory", [fs.sparsity.rigl, fs.sparsity.set_sparse])
@pytest.mark.parametrize("value", [1.5, -0.1, float("nan"), "0.3", True])
def test_drop_fraction_is_named(factory, value):
  with pytest.raises(ValueError) as err:
    factory(sparsity=0.5, drop_fraction=value)
  assert str(err.value).startswith("drop_fraction must be a number in [0, 1]")
  assert repr(value) in str(err.value)
  assert "initial_fraction" not in str(err.value)
  with pytest.raises(ValueError, match="drop_fraction_end_step must be an int"):
    factory(sparsity=0.5, drop_fraction_end_step=0)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.int8, jnp.bool_])
def test_integer_and_bool_kernels_are_not_prunable(dtype):
  assert not distributions.default_is_prunable("kernel",
                                               jnp.ones((3, 4), dtype))
  assert distributions.default_is_prunable("kernel",
                                           jnp.ones((3, 4), jnp.bfloat16))
  assert not distributions.default_is_prunable(
      "kernel", jax.ShapeDtypeStruct((3, 4), dtype))
  params = {"kernel": jnp.arange(1.0, 13.0).reshape(3, 4),
            "table": jnp.arange(12).reshape(3, 4).astype(dtype)}
  tx = fs.sparsity.magnitude_pruning(sparsity=0.5).wrap(optax.sgd(0.0))
  state = tx.init(params)
  assert state.masks["table"] is None and state.masks["kernel"] is not None
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), state, params)
  new = optax.apply_updates(params, updates)
  np.testing.assert_array_equal(new["table"], params["table"])  # untouched
  assert int(jnp.sum(new["kernel"] == 0)) == 6
  everything = fs.sparsity.magnitude_pruning(
      sparsity=0.5, is_prunable=lambda p, x: True)
  with pytest.raises(ValueError, match=r"Leaf 'table' has dtype "
                     f"{jnp.dtype(dtype)}.*only floating-point leaves"):
    everything.wrap(optax.sgd(0.1)).init(params)


@pytest.mark.parametrize("schedule,key,value", [
    ("periodic", "initial_sparsity", 0.5),
    ("one_shot", "update_freq", 10),
    ("one_shot", "initial_sparsity", 0.2),
    ("no_update", "update_start_step", 5),
])
def test_schedule_keys_the_schedule_does_not_read_are_named(schedule, key,
                                                            value):
  config = dict(algorithm="magnitude", sparsity=0.9, schedule=schedule,
                **{key: value})
  with pytest.raises(ValueError, match=f"Schedule '{schedule}' does not use "
                     f"{key}={value!r}; the keys it uses: "):
    fs.sparsity.create_updater_from_config(config)
  config[key] = None  # None reads as unset
  fs.sparsity.create_updater_from_config(config)


def test_periodic_schedule_still_takes_its_own_keys():
  updater = fs.sparsity.create_updater_from_config(dict(
      algorithm="rigl", sparsity=0.9, schedule="periodic", update_freq=10,
      update_start_step=5, update_end_step=50))
  assert updater.schedule == fs.sparsity.Periodic(10, 5, 50)


# ---- optax.MultiSteps: which counter the schedule follows -------------------

@pytest.mark.parametrize("outside", [True, False],
                         ids=["MultiSteps(wrap)", "wrap(MultiSteps)"])
def test_multisteps_counter(outside):
  """Pins the updater docstring: MultiSteps(wrap(inner), k) ticks the wrapper
  once per k mini-steps; wrap(MultiSteps(inner, k)) on every mini-step."""
  k, target = 3, 2
  pruner = fs.sparsity.magnitude_pruning(
      sparsity=0.5, schedule=fs.sparsity.OneShot(target))
  if outside:
    tx = optax.MultiSteps(pruner.wrap(optax.adam(1e-2)), k)
  else:
    tx = pruner.wrap(optax.MultiSteps(optax.adam(1e-2), k))
  params = {"kernel": jnp.arange(1.0, 13.0).reshape(3, 4)}
  state = tx.init(params)
  counts, pruned_from = [], None

  @jax.jit
  def step(params, state):
    updates, state = tx.update({"kernel": jnp.ones((3, 4))}, state, params)
    return optax.apply_updates(params, updates), state

  for mini_step in range(3 * k):
    params, state = step(params, state)
    counts.append(int(fs.sparsity.find_sparse_state(state).count))
    if pruned_from is None and int(jnp.sum(params["kernel"] == 0)) == 6:
      pruned_from = mini_step
    assert fs.sparsity.check_sparse(params, state) == {}
  if outside:  # wrapper step t = mini-steps (t+1)k - 1 .. (t+1)k-1
    assert counts == [0, 0, 1, 1, 1, 2, 2, 2, 3]
    assert pruned_from == (target + 1) * k - 1
  else:
    assert counts == list(range(1, 3 * k + 1))
    assert pruned_from == target
  assert math.isclose(
      fs.sparsity.summarize_sparsity(params)["prunable_sparsity"], 0.5)
