"""The sparsity wrapper under SPMD ``jax.jit`` on a mesh of 8 simulated devices.

Run in its own process, with the flag set before jax is imported::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python -m pytest -q -m multidevice tests/sparsity/test_multidevice.py

Rules these tests follow (WORKSPACE.md, "Multi-device rules"): inputs
are placed with ``jax.device_put(x, sharding)`` before the first step, every
step's result is blocked on before the next is dispatched (on 2-core machines
the simulated devices' collectives deadlock otherwise: XLA's CPU rendezvous
aborts the whole process after 40 s), and every test has a hard timeout. The
``thread`` method is used because a hang sits inside XLA's C++ waiting code,
where the default SIGALRM method cannot interrupt it.
"""

import functools

import jax
import jax.numpy as jnp
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax
import pytest

import flatsparse as fs

pytestmark = [
  pytest.mark.multidevice,
  pytest.mark.timeout(240, method="thread"),
]

if jax.device_count() < 8:
  pytest.skip(
    "needs 8 devices: run with "
    "XLA_FLAGS=--xla_force_host_platform_device_count=8 in its own process",
    allow_module_level=True,
  )

SIZES = (32, 64, 64, 8)
BATCH = 64
STEPS = 16
SPARSITY = 0.75
MODEL = 4  # size of the 'model' axis of the 2x4 mesh.
# Sharded and single-device runs sum the gradient in different orders; the
# observed difference is ~2e-7, so these leave a wide margin while still
# catching any wrong reduction (which would be O(1e-2)).
LOSS_RTOL, LOSS_ATOL = 1e-5, 1e-6
PARAM_ATOL = 1e-5

STORAGES = ("uint8", "packed")
LAYOUTS = ("data", "data_model")


# ---- model, data, optimizer --------------------------------------------------


def init_params(key):
  params = {}
  for i, (fan_in, fan_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
    key, sub = jax.random.split(key)
    params[f"dense{i}"] = {
      "kernel": jax.random.normal(sub, (fan_in, fan_out)) / np.sqrt(fan_in),
      "bias": jnp.zeros((fan_out,)),
    }
  return params


def apply(params, x):
  n = len(SIZES) - 1
  for i in range(n):
    layer = params[f"dense{i}"]
    x = x @ layer["kernel"] + layer["bias"]
    if i < n - 1:
      x = jax.nn.relu(x)
  return x


def loss_fn(params, x, y):
  logits = apply(params, x)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_data():
  kx, ky = jax.random.split(jax.random.PRNGKey(1))
  x = jax.random.normal(kx, (BATCH, SIZES[0]))
  y = jax.random.randint(ky, (BATCH,), 0, SIZES[-1])
  return x, y


def make_tx(storage):
  return fs.sparsity.magnitude_pruning(
    sparsity=SPARSITY,
    mask_storage=storage,
    schedule=fs.sparsity.Polynomial(
      update_freq=2, update_start_step=0, update_end_step=10
    ),
  ).wrap(optax.adam(1e-2))


def make_step(tx):
  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return jax.jit(step)


# ---- meshes and placements ---------------------------------------------------


def make_mesh(layout):
  if layout == "data":
    return jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
  return jax.make_mesh(
    (8 // MODEL, MODEL),
    ("data", "model"),
    axis_types=(AxisType.Auto, AxisType.Auto),
  )


def param_spec(layout, leaf):
  """Kernels sharded along their output axis over 'model'; the rest
  replicated."""
  if layout == "data_model" and leaf.ndim == 2 and leaf.shape[-1] % MODEL == 0:
    return P(None, "model")
  return P()


def place(layout, params, x, y):
  mesh = make_mesh(layout)
  shardings = jax.tree.map(
    lambda p: NamedSharding(mesh, param_spec(layout, p)), params
  )
  data_sharding = NamedSharding(mesh, P("data"))
  return (
    jax.device_put(params, shardings),
    jax.device_put(x, data_sharding),
    jax.device_put(y, data_sharding),
  )


def train(tx, params, x, y, steps=STEPS):
  step = make_step(tx)
  opt_state = tx.init(params)
  losses = []
  for _ in range(steps):
    params, opt_state, loss = step(params, opt_state, x, y)
    jax.block_until_ready((params, opt_state, loss))  # see module docstring.
    losses.append(float(loss))
  return params, opt_state, np.asarray(losses), step


@functools.cache
def run(storage, layout=None):
  """``STEPS`` training steps; ``layout=None`` is the single-device baseline."""
  params, (x, y) = init_params(jax.random.PRNGKey(0)), make_data()
  if layout is not None:
    params, x, y = place(layout, params, x, y)
  tx = make_tx(storage)
  params, opt_state, losses, step = train(tx, params, x, y)
  hlo = (
    step.lower(params, opt_state, x, y).compile().as_text()
    if layout is not None
    else ""
  )
  return params, opt_state, losses, hlo


def _leaves_with_paths(tree):
  return [
    (jax.tree_util.keystr(path), leaf)
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  ]


# ---- a. sharded training == single-device training ---------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("storage", STORAGES)
def test_sharded_training_matches_single_device(storage, layout):
  ref_params, ref_state, ref_losses, _ = run(storage)
  params, opt_state, losses, hlo = run(storage, layout)

  # The run really was partitioned: the step holds cross-device collectives,
  # the batch is split over 'data' and (2x4 mesh) the kernels over 'model'.
  assert "all-reduce" in hlo
  assert len(params["dense1"]["kernel"].sharding.device_set) == 8
  if layout == "data_model":
    assert params["dense1"]["kernel"].sharding.spec == P(None, "model")
    assert params["dense1"]["kernel"].addressable_shards[0].data.shape == (
      SIZES[1],
      SIZES[2] // MODEL,
    )

  np.testing.assert_allclose(losses, ref_losses, rtol=LOSS_RTOL, atol=LOSS_ATOL)
  assert losses[-1] < losses[0]  # it trained.
  for (name, p), (_, q) in zip(
    _leaves_with_paths(params), _leaves_with_paths(ref_params)
  ):
    np.testing.assert_allclose(
      np.asarray(p), np.asarray(q), rtol=0, atol=PARAM_ATOL, err_msg=name
    )

  masks = fs.sparsity.get_masks(opt_state, params)
  ref_masks = fs.sparsity.get_masks(ref_state, ref_params)
  assert jax.tree.structure(
    masks, is_leaf=lambda m: m is None
  ) == jax.tree.structure(ref_masks, is_leaf=lambda m: m is None)
  mask_leaves = _leaves_with_paths(masks)
  assert [n for n, _ in mask_leaves] == [
    f"['dense{i}']['kernel']" for i in range(len(SIZES) - 1)
  ]
  for (name, m), (_, r) in zip(mask_leaves, _leaves_with_paths(ref_masks)):
    np.testing.assert_array_equal(np.asarray(m), np.asarray(r), err_msg=name)
  # Same step counter on both.
  assert int(fs.sparsity.find_sparse_state(opt_state).count) == STEPS


# ---- b. masks carry the sharding of their parameters -------------------------


def _stored_masks_and_params(opt_state, params):
  stored = fs.sparsity.find_sparse_state(opt_state).masks
  pairs = jax.tree.map(
    lambda m, p: None if m is None else (m, p),
    stored,
    params,
    is_leaf=lambda m: m is None,
  )
  return [
    (jax.tree_util.keystr(path), m, p)
    for path, (m, p) in jax.tree_util.tree_flatten_with_path(
      pairs, is_leaf=lambda x: isinstance(x, tuple)
    )[0]
  ]


def _one_step_on_mesh(storage):
  params, (x, y) = init_params(jax.random.PRNGKey(0)), make_data()
  params, x, y = place("data_model", params, x, y)
  tx = make_tx(storage)
  # No out_shardings and no sharding constraints: what XLA's propagation does.
  params, opt_state, _, _ = train(tx, params, x, y, steps=1)
  return params, opt_state


def test_uint8_masks_follow_param_sharding_after_a_step():
  params, opt_state = _one_step_on_mesh("uint8")
  triples = _stored_masks_and_params(opt_state, params)
  assert len(triples) == len(SIZES) - 1
  for name, mask, param in triples:
    assert mask.dtype == jnp.uint8 and mask.shape == param.shape, name
    assert param.sharding.spec == P(None, "model"), name
    assert mask.sharding.is_equivalent_to(param.sharding, mask.ndim), (
      name,
      mask.sharding,
      param.sharding,
    )
    assert mask.sharding.spec == param.sharding.spec, name
  # The adam moments follow the parameters as well.
  mu = opt_state.inner_state[0].mu
  for layer in params:
    assert mu[layer]["kernel"].sharding.is_equivalent_to(
      params[layer]["kernel"].sharding, 2
    ), layer


def test_packed_masks_follow_param_sharding_where_divisible():
  params, opt_state = _one_step_on_mesh("packed")
  triples = _stored_masks_and_params(opt_state, params)
  assert len(triples) == len(SIZES) - 1
  for name, mask, param in triples:
    assert mask.shape == param.shape[:-1] + (-(-param.shape[-1] // 8),), name
    assert len(mask.sharding.device_set) == 8, name
    if mask.shape[-1] % MODEL == 0:
      # Packing along the sharded axis keeps whole bytes per shard.
      assert mask.sharding.spec == param.sharding.spec, (name, mask.sharding)
    else:
      # dense2: 8 outputs pack into 1 byte, which cannot be split 4 ways.
      assert mask.sharding.is_fully_replicated, (name, mask.sharding)


def test_eager_init_masks_follow_param_sharding():
  params, _, _ = place(
    "data_model", init_params(jax.random.PRNGKey(0)), *make_data()
  )
  opt_state = make_tx("uint8").init(params)
  mu = opt_state.inner_state[0].mu["dense1"]["kernel"]
  assert mu.sharding.is_equivalent_to(params["dense1"]["kernel"].sharding, 2)
  for name, mask, param in _stored_masks_and_params(opt_state, params):
    assert mask.sharding.is_equivalent_to(param.sharding, mask.ndim), (
      name,
      mask.sharding,
    )


def test_user_pins_state_sharding_with_out_shardings():
  """The recipe for a sharded state from the start:
  ``jit(init, out_shardings)``.

  (Under ``jit`` the init outputs do not depend on the inputs' values, so
  nothing propagates to them: without ``out_shardings`` even optax's moments
  come back on one device.)
  """
  mesh = make_mesh("data_model")
  params, x, y = place(
    "data_model", init_params(jax.random.PRNGKey(0)), *make_data()
  )
  tx = make_tx("uint8")
  shapes = jax.eval_shape(tx.init, params)
  state_shardings = jax.tree.map(
    lambda s: NamedSharding(mesh, param_spec("data_model", s)), shapes
  )
  opt_state = jax.jit(tx.init, out_shardings=state_shardings)(params)
  jax.block_until_ready(opt_state)
  for name, mask, param in _stored_masks_and_params(opt_state, params):
    assert mask.sharding.is_equivalent_to(param.sharding, mask.ndim), name

  param_shardings = jax.tree.map(lambda p: p.sharding, params)
  step = jax.jit(
    make_step(tx), out_shardings=(param_shardings, state_shardings, None)
  )
  for _ in range(3):
    params, opt_state, loss = step(params, opt_state, x, y)
    jax.block_until_ready((params, opt_state, loss))
  for name, mask, param in _stored_masks_and_params(opt_state, params):
    assert mask.sharding.spec == param.sharding.spec == P(None, "model"), name
  assert np.isfinite(float(loss))


# ---- c. exact sparsity per leaf on the mesh ----------------------------------


@pytest.mark.parametrize("storage", STORAGES)
def test_exact_sparsity_per_leaf_on_mesh(storage):
  params, opt_state, _, _ = run(storage, "data_model")
  masks = fs.sparsity.get_masks(opt_state, params)
  summary = fs.sparsity.summarize_sparsity(params)
  for i, (fan_in, fan_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
    size = fan_in * fan_out
    keep = size - round(SPARSITY * size)  # the schedule ended at step 10.
    kernel = np.asarray(params[f"dense{i}"]["kernel"])
    mask = np.asarray(masks[f"dense{i}"]["kernel"])
    assert int(mask.sum()) == keep, i
    assert summary["leaves"][f"dense{i}/kernel"]["nnz"] == keep, i
    assert summary["leaves"][f"dense{i}/kernel"]["sparsity"] == pytest.approx(
      SPARSITY, abs=1e-12
    )
    assert np.all(kernel[~mask] == 0.0), i  # exact zeros where pruned,
    assert np.all(kernel[mask] != 0.0), i  # and the kept weights are live.
    assert masks[f"dense{i}"]["bias"] is None  # biases stay dense.
