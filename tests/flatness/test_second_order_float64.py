"""Sassha, AdaHessian and Sophia-H in float64 against NumPy float64 runs.

The loss is ``f(w) = w^T A w / 2 + sum(c * w^4) / 4`` on a 7-entry pytree
(a non-diagonal, point-dependent Hessian ``A + diag(3 c w^2)`` with one
negative diagonal entry), so the Hutchinson estimates are noisy and depend
on where they are taken. The NumPy runs draw the transforms' Rademacher
probes (``fold_in(key, t - 1)``, split per probe, split per leaf) with
``jax.random`` and do all arithmetic in NumPy float64; the transforms must
agree to 1e-12, which float32 bias corrections (``1 - 0.999^t`` off by 1e-5
relatively) would not.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

# The package re-exports functions of the same names as these modules.
adahessian_lib = importlib.import_module("flatsparse.flatness.adahessian")
sassha_lib = importlib.import_module("flatsparse.flatness.sassha")
sophia_lib = importlib.import_module("flatsparse.flatness.sophia")

SHAPES = {"a": (3,), "b": (2, 2)}  # leaves in this (sorted) order
_rng = np.random.default_rng(0)
_M = _rng.normal(size=(7, 7))
A = (_M + _M.T) / 4 + np.diag([2.0, 1.0, -1.5, 3.0, 1.5, 0.25, 1.0])
C = np.array([0.5, 1.0, 0.0, 0.0, 0.3, 2.0, 0.1])
W0 = np.array([1.0, -0.5, 0.25, 2.0, -1.5, 0.75, -1.0])
SEED = 3
RTOL, ATOL = 1e-12, 1e-14


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


def grad(w):
  return A @ w + C * w ** 3


def hvp(w, z):
  return A @ z + 3 * C * w ** 2 * z


def hutchinson(w, t, num_probes):
  """mean_i z_i * (H(w) z_i) with the transform's probes of step t."""
  key = jax.random.fold_in(jax.random.PRNGKey(SEED), t - 1)
  total = np.zeros(7)
  for probe_key in jax.random.split(key, num_probes):
    leaf_keys = jax.random.split(probe_key, len(SHAPES))
    z = np.concatenate([
        np.asarray(jax.random.rademacher(k, shape, jnp.float64)).ravel()
        for k, shape in zip(leaf_keys, SHAPES.values())])
    total = total + z * hvp(w, z)
  return total / num_probes


def to_tree(w):
  return {"a": jnp.asarray(w[:3]), "b": jnp.asarray(w[3:].reshape(2, 2))}


def to_vector(tree):
  return np.concatenate([np.asarray(tree["a"]), np.asarray(tree["b"]).ravel()])


def loss(p):
  w = jnp.concatenate([p["a"], p["b"].ravel()])
  return 0.5 * w @ jnp.asarray(A) @ w + 0.25 * jnp.sum(jnp.asarray(C) * w ** 4)


def run(tx, steps):
  params = to_tree(W0)
  assert params["a"].dtype == jnp.float64
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    updates, state = tx.update(jax.grad(loss)(params), state, params,
                               value_fn=loss)
    return optax.apply_updates(params, updates), state

  out = []
  for _ in range(steps):
    params, state = step(params, state)
    out.append(to_vector(params))
  return np.stack(out)


def power(t, k, last, refreshes, mode):
  return {"step": last, "current_step": t, "refresh": refreshes}[mode]


# --- Sassha -------------------------------------------------------------------


def numpy_sassha(steps, *, lr, rho, k, b1, b2, eps, wd, mode, num_probes):
  """Constant lr = lr_0: the decoupled decay factor is 1 - wd."""
  w, m, d = W0.copy(), np.zeros(7), np.zeros(7)
  last = refreshes = 0
  out = []
  for t in range(1, steps + 1):
    g = grad(w)
    tilde = w + rho * g / (np.sqrt(np.sum(g ** 2)) + 1e-12)
    if (t - 1) % k == 0:
      d = b2 * d + (1 - b2) * np.abs(hutchinson(tilde, t, num_probes))
      last, refreshes = t, refreshes + 1
    m = b1 * m + (1 - b1) * grad(tilde)
    c2 = 1 - b2 ** power(t, k, last, refreshes, mode)
    w = w - lr / (1 - b1 ** t) * m / (np.sqrt(d / c2) + eps) - wd * w
    out.append(w)
  return np.stack(out)


@pytest.mark.parametrize("mode,num_probes", [("step", 1), ("current_step", 2)])
def test_sassha_float64(mode, num_probes):
  hp = dict(lr=0.05, rho=0.1, k=2, b1=0.9, b2=0.999, eps=1e-4, wd=1e-3)
  want = numpy_sassha(5, mode=mode, num_probes=num_probes, **hp)
  tx = sassha_lib.sassha(hp["lr"], hp["rho"], k=hp["k"], b1=hp["b1"],
                         b2=hp["b2"], eps=hp["eps"], weight_decay=hp["wd"],
                         bias_correction=mode, num_probes=num_probes,
                         seed=SEED)
  np.testing.assert_allclose(run(tx, 5), want, rtol=RTOL, atol=ATOL)


# --- AdaHessian ---------------------------------------------------------------


def numpy_adahessian(steps, *, lr, k, b1, b2, eps, wd, hessian_ema, mode):
  """The reference loop: the estimate |d| is kept between refreshes; with
  'every_step' it enters the EMA on every step, else on refreshes only."""
  w, m, v, hess = W0.copy(), np.zeros(7), np.zeros(7), np.zeros(7)
  last = refreshes = 0
  out = []
  for t in range(1, steps + 1):
    g = grad(w)
    refresh = (t - 1) % k == 0
    if refresh:
      hess = np.abs(hutchinson(w, t, 1))
      last, refreshes = t, refreshes + 1
    if refresh or hessian_ema == "every_step":
      v = b2 * v + (1 - b2) * hess * hess
    m = b1 * m + (1 - b1) * g
    c2 = 1 - b2 ** power(t, k, last, refreshes, mode)
    w = w * (1 - lr * wd)
    w = w - lr / (1 - b1 ** t) * m / (np.sqrt(v / c2) + eps)
    out.append(w)
  return np.stack(out)


@pytest.mark.parametrize("hessian_ema,mode", [("refresh", "step"),
                                              ("every_step", "current_step")])
def test_adahessian_float64(hessian_ema, mode):
  hp = dict(lr=0.05, k=3, b1=0.9, b2=0.999, eps=1e-4, wd=1e-3)
  want = numpy_adahessian(5, hessian_ema=hessian_ema, mode=mode, **hp)
  tx = adahessian_lib.adahessian(
      hp["lr"], k=hp["k"], b1=hp["b1"], b2=hp["b2"], eps=hp["eps"],
      weight_decay=hp["wd"], hessian_ema=hessian_ema, bias_correction=mode,
      seed=SEED)
  np.testing.assert_allclose(run(tx, 5), want, rtol=RTOL, atol=ATOL)
  # The cadences differ on reuse steps (with the same bias correction).
  other = {"refresh": "every_step", "every_step": "refresh"}[hessian_ema]
  alt = numpy_adahessian(5, hessian_ema=other, mode=mode, **hp)
  assert not np.allclose(alt[-1], want[-1], rtol=1e-6)


# --- Sophia-H -----------------------------------------------------------------


def numpy_sophia(steps, *, lr, k, b1, b2, gamma, eps, wd, clip, eps_mode):
  """bias_correction=True; h refreshed before the step (not lagged)."""
  w, m, h = W0.copy(), np.zeros(7), np.zeros(7)
  out, ratios = [], []
  for t in range(1, steps + 1):
    g = grad(w)
    m = b1 * m + (1 - b1) * g
    if (t - 1) % k == 0:
      h = b2 * h + (1 - b2) * hutchinson(w, t, 1)
    if eps_mode == "floor":
      denom = np.maximum(gamma * h, eps)
    else:
      denom = gamma * np.maximum(h, 0) + eps
    ratio = m / (1 - b1 ** t) / denom
    ratios.append(ratio)
    w = w - lr * (np.clip(ratio, -clip, clip) + wd * w)
    out.append(w)
  return np.stack(out), np.concatenate(ratios)


@pytest.mark.parametrize("eps_mode", sophia_lib.EPS_MODES)
def test_sophia_h_float64(eps_mode):
  # eps comparable to gamma * h, so that both placements matter; H[2, 2] < 0
  # (max(h, 0) in 'add'); b1 = 0.9 is inexact in float32.
  hp = dict(lr=0.05, k=2, b1=0.9, b2=0.5, gamma=2.0, eps=0.2, wd=1e-3,
            clip=1.0)
  want, ratios = numpy_sophia(5, eps_mode=eps_mode, **hp)
  assert np.any(np.abs(ratios) < 0.9) and np.any(np.abs(ratios) > 1.1)
  tx = sophia_lib.sophia_h(
      hp["lr"], k=hp["k"], b1=hp["b1"], b2=hp["b2"], gamma=hp["gamma"],
      eps=hp["eps"], weight_decay=hp["wd"], clip=hp["clip"],
      bias_correction=True, eps_mode=eps_mode, seed=SEED)
  np.testing.assert_allclose(run(tx, 5), want, rtol=RTOL, atol=ATOL)
  other = {"floor": "add", "add": "floor"}[eps_mode]
  alt, _ = numpy_sophia(5, eps_mode=other, **hp)
  assert not np.allclose(alt[-1], want[-1], rtol=1e-6)
