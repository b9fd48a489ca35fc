"""SAFE, ADMM, IHT and the projection in float64 against numpy float64 runs.

x64 is enabled inside each test only (``jax.enable_x64``), so the rest of the
suite keeps JAX's float32 default.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flatsparse as fs
from flatsparse.safe import Projection
from tests.flatness import conformance_checks

# f(w, b) = 0.5 sum(a w^2) - sum(c w) + 0.5 |b - 1|^2, one 2x3 kernel + bias.
A = np.array([[1.0, 2.0, 0.5], [3.0, 1.5, 0.7]])
C = np.array([[0.9, -0.2, 0.4], [0.1, 1.1, -0.6]])
W0 = np.array([[0.5, -1.0, 0.3], [0.05, 0.8, -0.4]])
BIAS0 = np.array([0.2, -0.3, 0.7])
TOL = dict(rtol=1e-12, atol=1e-12)


def _value_fn(params):
  w, b = params["kernel"], params["bias"]
  return 0.5 * jnp.sum(A * w ** 2) - jnp.sum(C * w) + 0.5 * jnp.sum(
      (b - 1.0) ** 2)


def _grads_np(w, b):
  return A * w - C, b - 1.0


def _proj_np(v, keep):
  """Keeps the ``keep`` largest |v| (lower index first on ties)."""
  order = np.argsort(-np.abs(v).ravel(), kind="stable")
  out = np.zeros(v.size)
  out[order[:keep]] = v.ravel()[order[:keep]]
  return out.reshape(v.shape)


def _safe_np(steps, lr, lam, rho, period, total):
  """SAFE (ADMM when rho = 0 and total is None) in numpy float64."""
  w, b = W0.copy(), BIAS0.copy()
  z, u = _proj_np(w, 3), np.zeros_like(w)
  history = []
  for t in range(steps):
    gw, gb = _grads_np(w, b)
    if rho:
      norm = np.sqrt(np.sum(gw ** 2) + np.sum(gb ** 2))
      gw, gb = _grads_np(w + rho * gw / (norm + 1e-12),
                         b + rho * gb / (norm + 1e-12))
    lam_t = lam if total is None else (
        lam * 0.5 * (1 - np.cos(np.pi * min(t / total, 1.0))))
    w = w - lr * (gw + lam_t * (w - z + u))
    b = b - lr * gb
    if (t + 1) % period == 0:
      z = _proj_np(w + u, 3)
      u = w + u - z
    history.append((w, b, z, u))
  return history


def _run(tx, steps):
  """``(params, state)`` after each step."""
  params = {"kernel": jnp.asarray(W0), "bias": jnp.asarray(BIAS0)}
  return conformance_checks.trajectory(tx, params, _value_fn, steps)[0]


@pytest.mark.parametrize("method", ["safe", "admm"])
def test_safe_and_admm_match_numpy_float64(method):
  # 12 steps, 4 dual steps; the cosine ramp reaches lam at step 8 and holds.
  with jax.enable_x64(True):
    proj = Projection(sparsity=0.5, is_prunable=lambda p, x: p == "kernel")
    if method == "safe":
      tx = fs.safe.safe(optax.sgd(0.1), proj, lam=2.0, rho=0.3,
                        dual_period=3, total_steps=8)
      expected = _safe_np(12, lr=0.1, lam=2.0, rho=0.3, period=3, total=8)
    else:
      tx = fs.safe.admm(optax.sgd(0.1), proj, lam=2.0, dual_period=3)
      expected = _safe_np(12, lr=0.1, lam=2.0, rho=0.0, period=3, total=None)
    history = _run(tx, 12)
    for (params, state), (w, b, z, u) in zip(history, expected):
      inner = fs.safe.find_state(state)
      assert params["kernel"].dtype == inner.u["kernel"].dtype == jnp.float64
      np.testing.assert_allclose(params["kernel"], w, **TOL)
      np.testing.assert_allclose(params["bias"], b, **TOL)
      np.testing.assert_allclose(inner.z["kernel"], z, **TOL)
      np.testing.assert_allclose(inner.u["kernel"], u, **TOL)


def test_iht_matches_numpy_float64():
  with jax.enable_x64(True):
    proj = Projection(sparsity=0.5, is_prunable=lambda p, x: p == "kernel")
    tx = fs.safe.iht(optax.sgd(0.1), proj, period=2, start_step=1)
    history = _run(tx, 6)
  w, b = W0.copy(), BIAS0.copy()
  for t, (params, _) in enumerate(history):
    gw, gb = _grads_np(w, b)
    w, b = w - 0.1 * gw, b - 0.1 * gb
    if t >= 1 and t % 2 == 0:  # (t + 1 - start_step) % period == 0
      w = _proj_np(w, 3)
    assert params["kernel"].dtype == jnp.float64
    np.testing.assert_allclose(params["kernel"], w, **TOL)
    np.testing.assert_allclose(params["bias"], b, **TOL)
  assert int(np.sum(np.asarray(history[-2][0]["kernel"]) == 0)) == 3


def test_projection_scores_and_importance_in_float64():
  rng = np.random.default_rng(0)
  v = rng.normal(size=(4, 5))
  p = rng.uniform(0.1, 4.0, size=(4, 5))
  with jax.enable_x64(True):
    tree = {"kernel": jnp.asarray(v), "b": jnp.asarray(v[0])}
    proj = Projection(sparsity=0.6, importance="custom")
    stored = proj.normalize_importance({"kernel": p, "b": None}, tree)
    scores = proj.scores(tree, stored)
    projected, masks = proj.project(tree, stored)
    init = proj.init_importance(tree)
  expected = np.sqrt(p) * np.abs(v)
  assert (scores["kernel"].dtype == stored["kernel"].dtype
          == init["kernel"].dtype)
  assert scores["kernel"].dtype == jnp.float64
  np.testing.assert_allclose(scores["kernel"], expected, **TOL)
  keep = np.zeros(20, bool)
  keep[np.argsort(-expected.ravel(), kind="stable")[:8]] = True
  np.testing.assert_array_equal(masks["kernel"], keep.reshape(4, 5))
  assert projected["kernel"].dtype == jnp.float64
  np.testing.assert_array_equal(projected["kernel"],
                                np.where(keep.reshape(4, 5), v, 0.0))
  np.testing.assert_array_equal(projected["b"], v[0])


def test_gradient_importance_ema_in_float64():
  with jax.enable_x64(True):
    proj = Projection(sparsity=0.5, importance="gradient")
    tx = fs.safe.safe(optax.sgd(0.0), proj, lam=0.0, rho=0.0,
                      dual_period=100, penalty_schedule="constant",
                      importance_ema=0.9)
    params = {"kernel": jnp.asarray(W0), "bias": jnp.asarray(BIAS0)}
    state = tx.init(params)
    update = jax.jit(lambda g, s: tx.update(g, s, params))
    _, state = update({"kernel": jnp.asarray(C), "bias": jnp.zeros(3)}, state)
    _, state = update({"kernel": jnp.asarray(A), "bias": jnp.zeros(3)}, state)
  stored = state.importance["kernel"]
  assert stored.dtype == jnp.float64
  np.testing.assert_allclose(stored, 0.81 + 0.09 * C ** 2 + 0.1 * A ** 2,
                             **TOL)
