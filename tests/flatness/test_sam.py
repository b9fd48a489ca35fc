"""SAM/ASAM: closed form on a quadratic, sparse perturbation, conformance."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flatsparse as fs
from tests.flatness import conformance_checks
from tests.flatness.nnx_check import assert_trains_nnx_linear

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
  params = {"kernel": jnp.array([[1.0, 0.0], [0.0, 2.0]]), "b": jnp.ones(2)}
  grads = {"kernel": jnp.ones((2, 2)), "b": jnp.ones(2)}
  masks = {"kernel": jnp.array([[True, False], [False, True]]), "b": None}
  e = fs.flatness.perturbation(grads, params, 1.0, masks=masks)
  np.testing.assert_array_equal(np.asarray(e["kernel"]) == 0,
                                ~np.asarray(masks["kernel"]))
  np.testing.assert_allclose(optax.tree.norm(e), 1.0, rtol=1e-6)
  # Inside a pruning wrapper the masks arrive as an extra argument.
  seen = []

  def spy(p):
    jax.debug.callback(lambda w: seen.append(np.asarray(w)), p["kernel"])
    return jnp.sum(p["kernel"] ** 2) + jnp.sum(p["b"])

  tx = fs.sparsity.static_sparse(sparsity=0.5).wrap(
      optax.chain(fs.sam(1.0), optax.sgd(0.1)))
  state = tx.init(params)
  m = fs.sparsity.get_masks(state, params)
  params = fs.sparsity.apply_masks(params, m)
  tx.update(grads, state, params, value_fn=spy)
  perturbed = seen[-1]
  assert np.all(perturbed[~np.asarray(m["kernel"])] == 0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_conformance_jit_chain_inject_dtype(dtype):
  params, x, y = conformance_checks.mlp_problem(
      jax.random.split(jax.random.PRNGKey(0), 4), (8, 16, 2), 32, dtype, 0.3)
  tx = optax.chain(
      optax.inject_hyperparams(lambda rho: fs.sam(rho))(rho=0.05),
      optax.adam(1e-2))
  conformance_checks.assert_trains_in_one_program(
      tx, params,
      functools.partial(conformance_checks.mlp_loss, x=x, y=y,
                        activation=jax.nn.relu), 30)


def test_flax_nnx_optimizer():
  assert_trains_nnx_linear(optax.chain(fs.sam(0.05), optax.sgd(0.1)))


# ---- m-sharpness (sub_batches) ----------------------------------------------

CENTERS = np.array([[0.5, -1.0, 2.0], [-0.3, 0.8, 0.1], [1.5, 0.2, -0.7]],
                   np.float32)


def sub_quadratic(w, i):
  """``f_i(w) = 0.5 (w - c_i)^T A (w - c_i)``: the loss of sub-batch ``i``."""
  d = w["w"] - jnp.asarray(CENTERS)[i]
  return 0.5 * d @ jnp.asarray(A) @ d


def _sam_by_hand(w, centers, rho, adaptive=False, eta=0.01):
  out = []
  for c in centers:
    g = A @ (w - c)
    if adaptive:
      t = np.abs(w) + eta
      e = rho * t * t * g / np.linalg.norm(t * g)
    else:
      e = rho * g / np.linalg.norm(g)
    out.append(A @ (w + e - c))
  return np.mean(out, axis=0)


@pytest.mark.parametrize("adaptive", [False, True])
def test_m_sharpness_is_the_mean_of_per_sub_batch_sam_gradients(adaptive):
  w = {"w": jnp.array([1.0, -1.0, 0.5])}
  rho = 0.3
  tx = fs.sam(rho, adaptive=adaptive, sub_batches=3)
  traces = []

  @jax.jit
  def update(w, state):
    traces.append(1)
    full = lambda p: sum(sub_quadratic(p, i) for i in range(3)) / 3  # noqa
    return tx.update(jax.grad(full)(w), state, w,
                     sub_batch_value_fn=sub_quadratic)

  state = tx.init(w)
  got, state = update(w, state)
  got, state = update(w, state)
  want = _sam_by_hand(np.asarray(w["w"]), CENTERS, rho, adaptive)
  np.testing.assert_allclose(got["w"], want, rtol=1e-5)
  # One perturbation from the mean gradient (plain SAM) is different here.
  plain = _sam_by_hand(np.asarray(w["w"]), [CENTERS.mean(0)], rho, adaptive)
  assert np.abs(want - plain).max() > 1e-2
  assert len(traces) == 1 and int(state.count) == 2


def test_m_sharpness_on_identical_sub_batches_is_plain_sam():
  w = {"w": jnp.array([1.0, -1.0, 0.5])}
  g = {"w": jnp.asarray(A @ np.asarray(w["w"]))}
  plain, _ = fs.sam(0.2).update(g, fs.sam(0.2).init(w), w, value_fn=quadratic)
  tx = fs.sam(0.2, sub_batches=4)
  got, _ = tx.update(g, tx.init(w), w,
                     sub_batch_value_fn=lambda p, i: quadratic(p))
  np.testing.assert_allclose(got["w"], plain["w"], rtol=1e-6)
  # sub_batches=1 (the default) ignores sub_batch_value_fn.
  one, _ = fs.sam(0.2, sub_batches=1).update(
      g, fs.sam(0.2).init(w), w, value_fn=quadratic,
      sub_batch_value_fn=sub_quadratic)
  np.testing.assert_array_equal(one["w"], plain["w"])


def test_m_sharpness_errors():
  w = {"w": jnp.array([1.0, 2.0, 3.0])}
  g = {"w": jnp.ones(3)}
  tx = fs.sam(0.1, sub_batches=2)
  with pytest.raises(ValueError, match="needs params and the extra argument "
                     "sub_batch_value_fn"):
    tx.update(g, tx.init(w), w, value_fn=quadratic)
  for bad in (0, 1.5, True, "2"):
    with pytest.raises(ValueError, match="sub_batches must be a static int"):
      fs.sam(0.1, sub_batches=bad)

  def over_three(p, i):
    return sub_quadratic(p, i)
  over_three.sub_batches = 3
  with pytest.raises(ValueError, match=r"sam\(sub_batches=2\) got a "
                     "sub_batch_value_fn over 3 sub-batches"):
    tx.update(g, tx.init(w), w, sub_batch_value_fn=over_three)


def test_train_step_sub_batches_equals_per_half_sam_by_hand():
  """make_train_step(sub_batches=2) with a linear softmax model."""
  from flatsparse import models
  from flatsparse.train import state as state_lib
  from flatsparse.train import step as step_lib
  model = models.MLP(hidden=(), num_classes=4)
  kx, ky = jax.random.split(jax.random.PRNGKey(3))
  batch = {"image": jax.random.normal(kx, (12, 5)),
           "label": jax.random.randint(ky, (12,), 0, 4)}
  rho = 0.5
  tx = optax.chain(fs.sam(rho, sub_batches=2), optax.sgd(1.0))
  state = state_lib.create_train_state(model, tx, batch["image"][:1], 0)
  new, _ = jax.jit(step_lib.make_train_step(model, tx, sub_batches=2))(
      state, batch)

  def loss(p, x, y):  # the model by hand: logits = x W + b
    logits = x @ p["head"]["kernel"] + p["head"]["bias"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  sharp = []
  for half in (slice(0, 6), slice(6, 12)):
    x, y = batch["image"][half], batch["label"][half]
    g = jax.grad(loss)(state.params, x, y)
    scale = rho / np.sqrt(sum(np.sum(np.square(v))
                              for v in jax.tree.leaves(g)))
    moved = jax.tree.map(lambda p, gi, s=scale: p + s * gi, state.params, g)
    sharp.append(jax.grad(loss)(moved, x, y))
  want = jax.tree.map(lambda p, a, b: p - (a + b) / 2, state.params, *sharp)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6),
               new.params, want)
  with pytest.raises(ValueError, match="Batch size 12 is not divisible by "
                     "sub_batches=5"):
    jax.jit(step_lib.make_train_step(model, tx, sub_batches=5))(state, batch)
  with pytest.raises(ValueError, match="sub_batches must be an int >= 1"):
    step_lib.make_train_step(model, tx, sub_batches=0)


def test_batchnorm_docstring_example_runs():
  """The module docstring's BatchNorm example is executed (it cannot rot)."""
  import doctest
  import importlib
  module = importlib.import_module("flatsparse.flatness.sam")
  result = doctest.testmod(module, raise_on_error=False, verbose=False)
  assert result.attempted >= 10, result
  assert result.failed == 0, result
