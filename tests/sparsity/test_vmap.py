"""``vmap`` over seeds of a jitted train step that uses the sparsity wrapper.

With ``in_axes``/``out_axes`` from ``fs.sparsity.vmap_axes`` the wrapper's step
counter stays unbatched, so the schedule predicate is one scalar for all seeds
and ``lax.cond`` stays a real branch: new masks are computed on update steps
only. A naively batched counter (``in_axes=0`` everywhere) makes the predicate
batched, and ``vmap`` turns the ``cond`` into a ``select_n`` that computes both
branches, i.e. new masks on every step. Results are the same either way; only
the work differs, and these tests check it without timing anything.
"""

import jax
from jax.extend import core as jex_core
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flatsparse as fs

SIZES = (32, 64, 64, 8)
KERNEL_SHAPES = tuple(zip(SIZES[:-1], SIZES[1:]))
BATCH = 64
STEPS = 16
SEEDS = (0, 1, 2, 3)
SPARSITY = 0.75
# Update steps of Polynomial(update_freq=2, update_start_step=0,
# update_end_step=10).
UPDATE_STEPS = (0, 2, 4, 6, 8, 10)
LOSS_RTOL, LOSS_ATOL = 1e-5, 1e-6

pytestmark = pytest.mark.timeout(120)


# ---- model, data, optimizer --------------------------------------------------


def init_params(seed):
  key = jax.random.PRNGKey(seed)
  params = {}
  for i, (fan_in, fan_out) in enumerate(KERNEL_SHAPES):
    key, sub = jax.random.split(key)
    params[f"dense{i}"] = {
      "kernel": jax.random.normal(sub, (fan_in, fan_out)) / np.sqrt(fan_in),
      "bias": jnp.zeros((fan_out,)),
    }
  return params


def loss_fn(params, x, y):
  n = len(KERNEL_SHAPES)
  for i in range(n):
    layer = params[f"dense{i}"]
    x = x @ layer["kernel"] + layer["bias"]
    if i < n - 1:
      x = jax.nn.relu(x)
  return optax.softmax_cross_entropy_with_integer_labels(x, y).mean()


def make_data():
  kx, ky = jax.random.split(jax.random.PRNGKey(100))
  x = jax.random.normal(kx, (BATCH, SIZES[0]))
  y = jax.random.randint(ky, (BATCH,), 0, SIZES[-1])
  return x, y


def make_tx(importance="magnitude"):
  schedule = fs.sparsity.Polynomial(
    update_freq=2, update_start_step=0, update_end_step=10
  )
  return fs.sparsity.SparseUpdater(
    sparsity=SPARSITY,
    importance=importance,
    schedule=schedule,
  ).wrap(optax.adam(1e-2))


def make_step(tx):
  @jax.jit
  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


def batched_setup(tx, naive=False):
  """Stacked params of all seeds, their opt_state, and the vmapped step."""
  params = jax.vmap(init_params)(jnp.asarray(SEEDS))
  axes = fs.sparsity.vmap_axes(jax.eval_shape(tx.init, init_params(0)))
  opt_state = jax.vmap(tx.init, out_axes=axes)(params)
  step = make_step(tx)
  if naive:
    # A batched counter, as `in_axes=0` on the whole state would have it.
    opt_state = fs.sparsity.find_sparse_state(opt_state)._replace(
      count=jnp.zeros((len(SEEDS),), jnp.int32)
    )
    vstep = jax.vmap(step, in_axes=(0, 0, None, None))
  else:
    vstep = jax.vmap(step, in_axes=(0, axes, None, None), out_axes=(0, axes, 0))
  return params, opt_state, jax.jit(vstep)


def train_batched(tx, naive=False, on_step=None):
  params, opt_state, vstep = batched_setup(tx, naive)
  x, y = make_data()
  losses = []
  for t in range(STEPS):
    if on_step is not None:
      on_step(t)
    params, opt_state, loss = vstep(params, opt_state, x, y)
    jax.block_until_ready((params, opt_state, loss))
    jax.effects_barrier()
    losses.append(np.asarray(loss))
  return params, opt_state, np.stack(losses, axis=1)  # [seed, step]


def kernel_masks(opt_state, params):
  masks = fs.sparsity.get_masks(opt_state, params)
  return [
    np.asarray(masks[f"dense{i}"]["kernel"]) for i in range(len(KERNEL_SHAPES))
  ]


# ---- jaxpr inspection --------------------------------------------------------


def all_eqns(jaxpr):
  """Equations of a jaxpr and of every sub-jaxpr (jit, cond branches, loops)."""
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(sub, jex_core.ClosedJaxpr):
          yield from all_eqns(sub.jaxpr)
        elif isinstance(sub, jex_core.Jaxpr):
          yield from all_eqns(sub)


def mask_sized_selects(eqns):
  """``select_n`` eqns choosing between [seeds, *kernel] masks (bool or uint8).

  That is the signature of a ``cond`` with a batched predicate: vmap runs both
  branches (old masks, new masks) and selects per seed.
  """
  batched_kernels = {(len(SEEDS),) + s for s in KERNEL_SHAPES}
  return [
    e
    for e in eqns
    if e.primitive.name == "select_n"
    and all(
      v.aval.dtype in (jnp.bool_, jnp.uint8) and v.aval.shape in batched_kernels
      for v in e.invars[1:]
    )
  ]


def vmapped_jaxpr(naive):
  tx = make_tx()
  params, opt_state, vstep = batched_setup(tx, naive)
  x, y = make_data()
  return jax.make_jaxpr(vstep)(params, opt_state, x, y).jaxpr


# ---- tests -------------------------------------------------------------------


def test_vmapped_seeds_match_separate_runs():
  tx = make_tx()
  params, opt_state, losses = train_batched(tx)

  sparse_state = fs.sparsity.find_sparse_state(opt_state)
  assert sparse_state.count.shape == ()  # shared, not batched.
  assert int(sparse_state.count) == STEPS
  assert losses.shape == (len(SEEDS), STEPS)
  batched_masks = kernel_masks(opt_state, params)
  assert [m.shape for m in batched_masks] == [
    (len(SEEDS),) + s for s in KERNEL_SHAPES
  ]

  step, init = make_step(tx), jax.jit(tx.init)
  x, y = make_data()
  for b, seed in enumerate(SEEDS):
    p = init_params(seed)
    s = init(p)
    seed_losses = []
    for _ in range(STEPS):
      p, s, loss = step(p, s, x, y)
      seed_losses.append(float(loss))
    np.testing.assert_allclose(
      losses[b],
      seed_losses,
      rtol=LOSS_RTOL,
      atol=LOSS_ATOL,
      err_msg=f"seed {seed}",
    )
    for i, (mb, ms) in enumerate(zip(batched_masks, kernel_masks(s, p))):
      np.testing.assert_array_equal(mb[b], ms, err_msg=f"seed {seed} dense{i}")
      size = ms.size
      assert int(ms.sum()) == size - round(SPARSITY * size)
  # Different seeds really are different runs.
  assert not np.array_equal(batched_masks[0][0], batched_masks[0][1])
  assert not np.allclose(losses[0], losses[1])


def test_schedule_predicate_stays_a_real_cond_under_vmap():
  eqns = list(all_eqns(vmapped_jaxpr(naive=False)))
  conds = [e for e in eqns if e.primitive.name == "cond"]
  assert len(conds) == 1, [e.primitive.name for e in eqns]
  assert conds[0].invars[0].aval.shape == ()  # one predicate for all seeds.
  assert not mask_sized_selects(eqns)


def test_batched_counter_turns_cond_into_select():
  """The contrast: the inspection above fails when the counter is batched."""
  eqns = list(all_eqns(vmapped_jaxpr(naive=True)))
  assert not [e for e in eqns if e.primitive.name == "cond"]
  selects = mask_sized_selects(eqns)
  assert {e.invars[1].aval.shape[1:] for e in selects} == set(KERNEL_SHAPES)


def test_masks_are_computed_on_update_steps_only():
  """Timing-free: a score that logs when it runs, vmapped both ways."""
  current, fired = [None], []

  def logged_magnitude(weights, grads, key):
    del grads, key
    jax.debug.callback(lambda: fired.append(current[0]))
    return jnp.abs(weights)

  tx = make_tx(importance=logged_magnitude)
  on_step = lambda t: current.__setitem__(0, t)  # noqa: E731

  params, opt_state, losses = train_batched(tx, on_step=on_step)
  real_branch = sorted(set(fired))
  fired.clear()
  nparams, nstate, nlosses = train_batched(tx, naive=True, on_step=on_step)
  both_branches = sorted(set(fired))

  assert real_branch == list(UPDATE_STEPS)
  assert both_branches == list(range(STEPS))
  # Same results: the select only wastes work.
  np.testing.assert_allclose(nlosses, losses, rtol=LOSS_RTOL, atol=LOSS_ATOL)
  for m, n in zip(
    kernel_masks(opt_state, params), kernel_masks(nstate, nparams)
  ):
    np.testing.assert_array_equal(m, n)
  np.testing.assert_array_equal(
    np.asarray(fs.sparsity.find_sparse_state(nstate).count),
    np.full(len(SEEDS), STEPS),
  )
