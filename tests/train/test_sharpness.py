"""Sharpness of a train state against the exact Hessian of tiny models."""

import functools
import importlib

import flax.linen as nn
import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flatsparse as fs
from flatsparse import models
from flatsparse import train
from flatsparse.train import state as state_lib

# The package re-exports the function under the module's name.
sharpness_lib = importlib.import_module("flatsparse.train.sharpness")


def _batch(n=24, dim=4, classes=3, seed=0):
  kx, ky = jax.random.split(jax.random.PRNGKey(seed))
  return {"image": jax.random.normal(kx, (n, dim)),
          "label": jax.random.randint(ky, (n,), 0, classes)}


@functools.partial(jax.jit, static_argnames="model")
def _loss_hessian(params, variables, batch, *, model):
  """Hessian of the eval-mode loss in ravelled params (compiled once per
  model and shapes)."""
  flat, unravel = ravel_pytree(params)

  def loss(v):
    logits = model.apply({"params": unravel(v), **variables},
                         batch["image"], train=False)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, batch["label"]).mean()

  return jax.hessian(loss)(flat)


def _exact_hessian(model, state, batch, masks=None):
  """Dense Hessian of the eval-mode loss on ravelled params (numpy f64)."""
  variables = {"batch_stats": state.batch_stats} if state.batch_stats else {}
  h = np.asarray(_loss_hessian(state.params, variables, batch, model=model),
                 np.float64)
  if masks is not None:  # keep rows/cols of active entries and dense leaves
    keep = ravel_pytree(jax.tree.map(
        lambda m, p: jnp.ones(p.shape, bool) if m is None else m,
        masks, state.params, is_leaf=lambda x: x is None))[0]
    keep = np.asarray(keep, bool)
    h = h[np.ix_(keep, keep)]
  return h


def _hutchinson_bound(b, num_probes, sigmas=5.0):
  """``sigmas`` standard deviations of the Rademacher estimate of tr(B)."""
  off = b - np.diag(np.diag(b))
  return sigmas * np.sqrt(2 * np.sum(off ** 2) / num_probes)


@functools.partial(jax.jit, static_argnames="model")
def _descend(params, batch, steps, *, model):
  """``steps`` of plain gradient descent (step size 0.5), one compilation
  per model (``steps`` is traced)."""

  def loss(p):
    logits = model.apply({"params": p}, batch["image"])
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, batch["label"]).mean()

  def step(_, p):
    return jax.tree.map(lambda w, g: w - 0.5 * g, p, jax.grad(loss)(p))

  return jax.lax.fori_loop(0, steps, step, params)


def _mlp_state(tx=None, steps=30):
  """A tiny MLP after ``steps`` of plain gradient descent, applied by hand
  (no train step to compile)."""
  model = models.MLP(hidden=(3,), num_classes=3)
  batch = _batch()
  # Jitted (tx is static): one compilation instead of an eager sparse init.
  state = jax.jit(state_lib.create_train_state, static_argnums=(0, 1, 3))(
      model, tx or optax.identity(), batch["image"][:1], 0)
  params = _descend(state.params, batch, steps, model=model)
  if tx is not None:  # a sparsity wrapper: keep pruned weights at zero
    masks = fs.sparsity.get_masks(state.opt_state, params)
    params = fs.sparsity.apply_masks(params, masks)
  return model, state.replace(params=params), batch


def test_top_eigenvalue_trace_and_moments_match_the_exact_hessian():
  model, state, batch = _mlp_state()
  h = _exact_hessian(model, state, batch)
  eig = np.linalg.eigvalsh(h)
  d = h.shape[0]
  assert d == 27
  n = 400
  key = jax.random.PRNGKey(1)
  # Lanczos with iters = d is exact up to rounding.
  got = train.sharpness(model, state, batch, key, method="lanczos",
                           iters=d, num_probes=n, moments=(1, 2, 3))
  np.testing.assert_allclose(got["top_eigenvalue"], eig[-1], rtol=1e-4)
  np.testing.assert_allclose(got["trace"], np.trace(h),
                             atol=_hutchinson_bound(h, n))
  for k in (1, 2, 3):
    hk = np.linalg.matrix_power(h, k)
    np.testing.assert_allclose(got[f"moment_{k}"], np.trace(hk) / d,
                               atol=_hutchinson_bound(hk, n) / d)
  np.testing.assert_allclose(got["moment_1"] * d, got["trace"], rtol=1e-5)
  assert got["num_params"] == d
  # The trace is not trivially right: it is far from e.g. the top eigenvalue.
  assert abs(np.trace(h) - eig[-1]) > 3 * _hutchinson_bound(h, n)
  # Power iteration converges to the largest-magnitude eigenvalue.
  assert eig[-1] > abs(eig[0])
  power = train.sharpness(model, state, batch, key, method="power",
                             iters=300, num_probes=1, moments=())
  np.testing.assert_allclose(power["top_eigenvalue"], eig[-1], rtol=1e-3)
  assert set(power) == {"top_eigenvalue", "trace", "num_params", "loss"}


def test_batchnorm_model_uses_running_statistics():
  class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      x = nn.Dense(3)(x)
      x = nn.BatchNorm(use_running_average=not train)(x)
      return nn.Dense(3)(jnp.tanh(x))

  model = Net()
  batch = _batch()
  state = state_lib.create_train_state(model, optax.sgd(0.1),
                                       batch["image"][:1], 0)
  # Running statistics far from the batch's own: eval != train mode.
  state = state.replace(batch_stats={"BatchNorm_0": {
      "mean": jnp.array([0.5, -1.0, 0.2]), "var": jnp.array([4.0, 0.3, 1.5])}})
  h = _exact_hessian(model, state, batch)
  top = np.linalg.eigvalsh(h)[-1]
  got = train.sharpness(model, state, batch, jax.random.PRNGKey(0),
                           method="lanczos", iters=h.shape[0], num_probes=2)
  np.testing.assert_allclose(got["top_eigenvalue"], top, rtol=1e-4)
  # Train-mode statistics would give a different Hessian.
  flat, unravel = ravel_pytree(state.params)

  def train_loss(v):
    logits, _ = model.apply({"params": unravel(v),
                             "batch_stats": state.batch_stats},
                            batch["image"], train=True,
                            mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, batch["label"]).mean()

  train_top = np.linalg.eigvalsh(np.asarray(
      jax.jit(jax.hessian(train_loss))(flat)))[-1]
  assert abs(train_top - top) > 1e-2 * top


def test_sparse_state_restricts_to_active_weights_and_masked_examples():
  tx = fs.sparsity.static_sparse(sparsity=0.5).wrap(optax.identity())
  model, state, batch = _mlp_state(tx)
  masks = fs.sparsity.get_masks(state.opt_state, state.params)
  # Descent moved every weight; _mlp_state put the pruned ones back at zero.
  for layer in ("dense_0", "head"):
    m = np.asarray(masks[layer]["kernel"])
    p = np.asarray(state.params[layer]["kernel"])
    assert np.all(p[~m] == 0) and np.all(p[m] != 0)
  h = _exact_hessian(model, state, batch, masks)
  d_active = h.shape[0]
  assert d_active == 27 - 6 - 4  # half of the 12 + 9 kernel entries pruned
  got = train.sharpness(model, state, batch, jax.random.PRNGKey(0),
                        masks=masks, method="lanczos", iters=27,
                        num_probes=300, moments=(2,))
  np.testing.assert_allclose(got["top_eigenvalue"],
                             np.linalg.eigvalsh(h)[-1], rtol=1e-4)
  assert got["num_params"] == d_active
  h2 = h @ h
  np.testing.assert_allclose(got["moment_2"], np.trace(h2) / d_active,
                             atol=_hutchinson_bound(h2, 300) / d_active)
  # Restricting matters here: the full Hessian's top eigenvalue differs.
  full = _exact_hessian(model, state, batch)
  assert abs(np.linalg.eigvalsh(full)[-1] - got["top_eigenvalue"]) > 1e-3
  # Without masks, the sparse state's full Hessian: nothing is looked up in
  # the optimizer state. (The options of the first test's Lanczos call: one
  # compilation for both when they share a process.)
  dense = train.sharpness(model, state, batch, jax.random.PRNGKey(0),
                          method="lanczos", iters=27, num_probes=400,
                          moments=(1, 2, 3))
  assert dense["num_params"] == 27
  np.testing.assert_allclose(dense["top_eigenvalue"],
                             np.linalg.eigvalsh(full)[-1], rtol=1e-4)


def test_eval_loss_leaves_out_masked_examples():
  model, state, batch = _mlp_state(steps=0)
  images = jnp.concatenate([batch["image"], jnp.full((5, 4), jnp.nan)])
  labels = jnp.concatenate([batch["label"], batch["label"][:5]])
  weights = jnp.concatenate([jnp.ones(24), jnp.zeros(5)])
  padded = jax.jit(sharpness_lib.eval_loss, static_argnums=0)(
      model, state.params, {}, images, labels, weights)
  plain = jax.jit(lambda p: optax.softmax_cross_entropy_with_integer_labels(
      model.apply({"params": p}, batch["image"]), batch["label"]).mean())(
          state.params)
  np.testing.assert_allclose(padded, plain, rtol=1e-6)


def test_compiled_once_per_model_and_errors():
  model, state, batch = _mlp_state(steps=1)
  before = sharpness_lib.measure._cache_size()
  for seed in range(3):
    train.sharpness(model, state, batch, jax.random.PRNGKey(seed),
                       iters=3, num_probes=2, moments=(1, 3))
  assert sharpness_lib.measure._cache_size() == before + 1
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="Unknown method 'eig'; allowed: "
                     "power, lanczos"):
    train.sharpness(model, state, batch, key, method="eig")
  with pytest.raises(ValueError, match="every entry of moments must be an "
                     "int >= 1, got 0"):
    train.sharpness(model, state, batch, key, moments=(0, 2))
  with pytest.raises(ValueError, match="iters must be an int >= 1"):
    train.sharpness(model, state, batch, key, iters=0)
  with pytest.raises(ValueError, match="Unknown probe"):
    train.sharpness(model, state, batch, key, probe="sobol")
  with pytest.raises(ValueError, match="batch needs 'image' and 'label'"):
    train.sharpness(model, state, {"x": batch["image"]}, key)


class _Linear(nn.Module):

  @nn.compact
  def __call__(self, x, train=False):
    del train
    return nn.Dense(3)(x)


def test_nonzero_masks_of_projected_params_restrict_the_hessian():
  """SAFE-like solutions: the active set is the nonzero pattern, given by
  the caller (the state's optimizer is not consulted)."""
  model = _Linear()
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 6))
  y = jnp.arange(16) % 3
  params = jax.jit(model.init)(jax.random.PRNGKey(1), x)["params"]
  proj = fs.safe.Projection(sparsity=0.5)
  tx = fs.safe.admm(optax.sgd(0.1), proj)
  init = jax.jit(tx.init)  # one compilation for both calls
  params = fs.safe.finalize(params, init(params), proj)
  state = state_lib.TrainState(step=jnp.int32(0), params=params,
                               batch_stats={}, opt_state=init(params),
                               rng=jax.random.PRNGKey(0))
  masks = jax.tree.map(lambda p: (p != 0) if p.ndim > 1 else None, params)
  batch = {"image": x, "label": y}
  out = train.sharpness(model, state, batch, jax.random.PRNGKey(2),
                        masks=masks)
  dense = params["Dense_0"]
  assert out["num_params"] == dense["kernel"].size // 2 + dense["bias"].size


def test_masks_must_match_the_params():
  model, state, batch = _mlp_state(steps=0)
  key = jax.random.PRNGKey(0)
  masks = jax.tree.map(lambda p: (p != 0) if p.ndim > 1 else None,
                       state.params)
  with pytest.raises(ValueError, match="structure of the params"):
    train.sharpness(model, state, batch, key, masks=masks["head"])
  masks["head"]["kernel"] = masks["head"]["kernel"][:2]
  with pytest.raises(ValueError, match=r"mask of \['head'\]\['kernel'\] "
                     r"has shape \(2, 3\); its parameter has \(3, 3\)"):
    train.sharpness(model, state, batch, key, masks=masks)
