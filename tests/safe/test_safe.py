"""SAFE/ADMM against a hand-written numpy run, and its properties."""

import functools

from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
import optax
import pytest

import flatsparse as fs
from flatsparse.safe import Projection
from flatsparse.train import config_schema
from tests.flatness import conformance_checks

# f(w) = 0.5 * sum(a * w^2) - sum(b * w) on one 2x3 "kernel" + a bias.
A = np.array([[1.0, 2.0, 0.5], [3.0, 1.5, 0.7]], np.float32)
B = np.array([[0.9, -0.2, 0.4], [0.1, 1.1, -0.6]], np.float32)
W0 = np.array([[0.5, -1.0, 0.3], [0.05, 0.8, -0.4]], np.float32)


def _value_fn(params):
  w, bias = params["kernel"], params["bias"]
  return (0.5 * jnp.sum(A * w ** 2) - jnp.sum(B * w)
          + 0.5 * jnp.sum((bias - 1.0) ** 2))


def _grad_np(w):
  return A * w - B


def _proj_np(v, keep):
  order = np.argsort(-np.abs(v).ravel(), kind="stable")
  out = np.zeros(v.size, v.dtype)
  out[order[:keep]] = v.ravel()[order[:keep]]
  return out.reshape(v.shape)


def _reference(steps, lr, lam, rho, period, total, after_total="hold"):
  """The module docstring's equations, step by step, in float64 numpy."""
  w = W0.astype(np.float64)
  z, u = _proj_np(w, 3), np.zeros_like(w)
  history = []
  for t in range(steps):
    g = _grad_np(w)
    if rho:
      e = rho * g / (np.linalg.norm(g) + 1e-12)  # bias gradient is 0 at 1.0
      g = _grad_np(w + e)
    progress = t / total if after_total == "continue" else min(t / total, 1)
    lam_t = lam * 0.5 * (1 - np.cos(np.pi * progress))
    w = w - lr * (g + lam_t * (w - z + u))
    if (t + 1) % period == 0:
      z = _proj_np(w + u, 3)
      u = u + w - z
    history.append((w.copy(), z.copy(), u.copy()))
  return history


def _run(tx, steps, params=None):
  """``(params, SAFE state)`` after each step, and the number of traces."""
  params = params or {"kernel": jnp.asarray(W0), "bias": jnp.ones(3)}
  history, _, traces = conformance_checks.trajectory(tx, params, _value_fn,
                                                     steps)
  return [(p, fs.safe.find_state(s)) for p, s in history], traces


@pytest.mark.parametrize("rho, after_total", [
    (0.0, "hold"), (0.3, "hold"), (0.3, "continue")])
def test_three_dual_periods_match_the_hand_computed_run(rho, after_total):
  # Steps 6 to 8 are past total_steps: lambda held, or its cosine falling.
  kwargs = dict(lr=0.1, lam=2.0, rho=rho, period=3, total=6,
                after_total=after_total)
  expected = _reference(9, **kwargs)
  proj = Projection(sparsity=0.5, is_prunable=lambda p, x: p == "kernel")
  tx = fs.safe.safe(optax.sgd(0.1), proj, lam=2.0, rho=rho, dual_period=3,
                    total_steps=6, penalty_after_total=after_total)
  history, traces = _run(tx, 9)
  for (params, state), (w, z, u) in zip(history, expected):
    np.testing.assert_allclose(params["kernel"], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.z["kernel"], z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.u["kernel"], u, rtol=1e-5, atol=1e-6)
    assert state.z["bias"] is None and state.u["bias"] is None
  assert traces == 1  # dual and primal steps: one program


def test_admm_is_safe_without_sam_and_constant_penalty():
  proj = Projection(sparsity=0.5)
  a, _ = _run(fs.safe.admm(optax.sgd(0.1), proj, lam=0.5, dual_period=2), 6)
  b, _ = _run(fs.safe.safe(optax.sgd(0.1), proj, lam=0.5, rho=0.0,
                           dual_period=2, penalty_schedule="constant"), 6)
  np.testing.assert_array_equal(a[-1][0]["kernel"], b[-1][0]["kernel"])


def test_penalty_schedules():
  count = jnp.asarray(25)
  assert float(fs.safe.penalty(2.0, count, "cosine", 100)) == pytest.approx(
      2.0 * 0.5 * (1 - np.cos(np.pi / 4)))
  assert float(fs.safe.penalty(2.0, count, "linear", 100)) == pytest.approx(
      0.5)
  assert float(fs.safe.penalty(2.0, count, "constant", None)) == 2.0
  assert float(fs.safe.penalty(2.0, jnp.asarray(300), "cosine", 100)) == 2.0


@pytest.mark.parametrize("schedule, held, continued", [
    ("cosine", 2.0, 1.0),  # lam (1 - cos(1.5 pi)) / 2: falling back
    ("linear", 2.0, 3.0),  # lam * 1.5: still growing
    ("constant", 2.0, 2.0),
])
def test_penalty_after_total_steps(schedule, held, continued):
  count = jnp.asarray(150)
  assert float(fs.safe.penalty(2.0, count, schedule, 100)) == held
  assert float(fs.safe.penalty(2.0, count, schedule, 100,
                               after_total="continue")) == pytest.approx(
                                   continued, abs=1e-6)


def test_large_penalty_makes_the_iterate_sparse_and_biases_train():
  proj = Projection(sparsity=0.5)
  tx = fs.safe.safe(optax.sgd(0.05), proj, lam=5.0, rho=0.05, dual_period=4,
                    penalty_schedule="constant")
  history, _ = _run(tx, 200)
  params, state = history[-1]
  pruned = ~np.asarray(fs.safe.Projection(sparsity=0.5).masks(
      params)["kernel"])
  assert np.max(np.abs(np.asarray(params["kernel"])[pruned])) < 1e-3
  # The bias is not penalized: started at 0 it trains to its optimum, 1.0.
  moved, _ = _run(tx, 200, {"kernel": jnp.asarray(W0), "bias": jnp.zeros(3)})
  np.testing.assert_allclose(moved[-1][0]["bias"], 1.0, atol=1e-3)
  final = fs.safe.finalize(params, state, proj)
  assert int(np.sum(np.asarray(final["kernel"]) == 0)) == 3
  np.testing.assert_array_equal(final["bias"], params["bias"])


def test_safe_plus_projects_with_the_activation_norms():
  # Activations favour the second input row strongly: it must survive.
  acts = {"kernel": jnp.asarray([1e-4, 100.0]), "bias": None}
  proj = Projection(sparsity=0.5, importance="activation")
  tx = fs.safe.safe(optax.sgd(0.0), proj, lam=0.0, rho=0.0, dual_period=1,
                    penalty_schedule="constant")
  params = {"kernel": jnp.asarray(W0), "bias": jnp.ones(3)}
  state = tx.init(params)
  grads = jax.grad(_value_fn)(params)
  _, state = tx.update(grads, state, params, activations=acts)
  z = np.asarray(state.z["kernel"])
  np.testing.assert_array_equal(z[0], 0)
  np.testing.assert_array_equal(z[1], W0[1])
  # The same through activations_fn, called on projection steps only.
  state = tx.init(params)
  calls = []

  def activations_fn(p):
    calls.append(1)
    return acts
  _, state = tx.update(grads, state, params, activations_fn=activations_fn)
  np.testing.assert_array_equal(np.asarray(state.z["kernel"]), z)
  with pytest.raises(ValueError, match="needs the extra argument activations"):
    tx.update(grads, tx.init(params), params)


def _frozen_safe(importance, **kwargs):
  """SAFE whose iterate never moves (lr 0, no penalty, no SAM): only the
  stored importance and the projection change."""
  proj = Projection(sparsity=0.5, importance=importance)
  return fs.safe.safe(optax.sgd(0.0), proj, lam=0.0, rho=0.0,
                      penalty_schedule="constant", **kwargs)


def test_gradient_importance_is_an_ema_of_squared_gradients():
  # Decay 0.9 is asymmetric: swapped EMA weights give 0.1 * old + 0.9 * new.
  tx = _frozen_safe("gradient", dual_period=100, importance_ema=0.9)
  params = {"kernel": jnp.asarray(W0), "bias": jnp.ones(3)}
  g1 = {"kernel": jnp.asarray(B), "bias": jnp.zeros(3)}
  g2 = {"kernel": jnp.asarray(A), "bias": jnp.zeros(3)}
  state = tx.init(params)
  np.testing.assert_array_equal(state.importance["kernel"], np.ones((2, 3)))
  update = jax.jit(lambda g, state: tx.update(g, state, params))
  _, state = update(g1, state)
  np.testing.assert_allclose(state.importance["kernel"],
                             0.9 + 0.1 * B ** 2, rtol=1e-6)
  _, state = update(g2, state)
  np.testing.assert_allclose(state.importance["kernel"],
                             0.81 + 0.09 * B ** 2 + 0.1 * A ** 2, rtol=1e-6)
  assert state.importance["bias"] is None


# f(w) = 0.5 * sum(H * w^2): diag H = H, with a negative curvature entry.
H_DIAG = np.array([[4.0, -9.0], [1.0, 0.25]], np.float32)
W_H = np.array([[1.0, 1.0], [2.5, 3.0]], np.float32)


def _quadratic(params):
  return 0.5 * jnp.sum(H_DIAG * params["kernel"] ** 2) + jnp.sum(
      params["bias"] ** 2)


@pytest.mark.parametrize("decay", [0.0, 0.9])
def test_hessian_importance_is_the_absolute_curvature(decay):
  # Hutchinson is exact on a diagonal Hessian (z_i^2 H_ii = H_ii), so the
  # stored importance is |H| (EMA'd from the initial ones), whatever probe.
  tx = _frozen_safe("hessian", dual_period=1, importance_ema=decay)
  params = {"kernel": jnp.asarray(W_H), "bias": jnp.ones(2)}
  state = tx.init(params)
  _, state = jax.jit(functools.partial(tx.update, value_fn=_quadratic))(
      jax.grad(_quadratic)(params), state, params)
  stored = decay * 1.0 + (1 - decay) * np.abs(H_DIAG)
  np.testing.assert_allclose(state.importance["kernel"], stored, rtol=1e-6)
  # Scores sqrt(|H|) |w| = [[2, 3], [2.5, 1.5]]: keep (0, 1) and (1, 0).
  # Without the absolute value the -9 entry would score 0 and be pruned.
  scores = np.sqrt(stored) * np.abs(W_H)
  keep = scores >= np.sort(scores.ravel())[-2]
  if decay == 0.0:
    np.testing.assert_array_equal(keep, [[False, True], [True, False]])
  np.testing.assert_array_equal(np.asarray(state.z["kernel"]),
                                np.where(keep, W_H, 0))


def test_custom_importance_through_safe():
  # P favours the three smallest entries of W0, which magnitude would prune.
  p1 = np.array([[0.0, 0.0, 100.0], [1e4, 0.0, 100.0]], np.float32)
  p2 = np.array([[1.0, 0.0, 3.0], [2.0, 0.0, 7.0]], np.float32)
  tx = _frozen_safe("custom", dual_period=2, importance_ema=0.9)
  params = {"kernel": jnp.asarray(W0), "bias": jnp.ones(3)}
  state = tx.init(params)
  g = jax.grad(_value_fn)(params)
  update = jax.jit(lambda state, p: tx.update(g, state, params, importance={
      "kernel": p, "bias": None}))
  _, state = update(state, p1)
  np.testing.assert_allclose(state.importance["kernel"], 0.9 + 0.1 * p1,
                             rtol=1e-6)
  # Any shape with the kernel's number of entries is accepted.
  _, state = update(state, p2.ravel())
  stored = 0.81 + 0.09 * p1 + 0.1 * p2
  np.testing.assert_allclose(state.importance["kernel"], stored, rtol=1e-6)
  # The dual step (count 2) projected W0 with the stored importance.
  scores = np.sqrt(stored) * np.abs(W0)
  keep = scores >= np.sort(scores.ravel())[-3]
  np.testing.assert_array_equal(keep, [[False, False, True],
                                       [True, False, True]])
  np.testing.assert_array_equal(np.asarray(state.z["kernel"]),
                                np.where(keep, W0, 0))
  magnitude = np.abs(W0) >= np.sort(np.abs(W0).ravel())[-3]
  assert (keep != magnitude).any()
  with pytest.raises(ValueError, match="needs the extra argument importance"):
    tx.update(g, tx.init(params), params)


@pytest.mark.parametrize("kwargs, msg", [
    (dict(penalty_schedule="step"), "Unknown penalty_schedule 'step'; "
     "allowed: 'cosine', 'linear', 'constant'"),
    (dict(penalty_after_total="drop", total_steps=5),
     "Unknown penalty_after_total 'drop'; allowed: 'hold', 'continue'"),
    (dict(penalty_schedule="cosine"), "needs total_steps"),
    (dict(dual_period=0, total_steps=5), "dual_period must be an int >= 1, "
     "got 0"),
    (dict(lam=-1.0, total_steps=5), "lam must be >= 0"),
    (dict(rho=-0.1, total_steps=5), "rho must be >= 0"),
    (dict(importance_ema=1.0, total_steps=5), r"importance_ema must be in"),
])
def test_bad_arguments(kwargs, msg):
  with pytest.raises(ValueError, match=msg):
    fs.safe.safe(optax.sgd(0.1), Projection(sparsity=0.5), **kwargs)


def test_sam_needs_value_fn():
  tx = fs.safe.safe(optax.sgd(0.1), Projection(sparsity=0.5), rho=0.1,
                    total_steps=10)
  params = {"kernel": jnp.asarray(W0), "bias": jnp.ones(3)}
  with pytest.raises(ValueError, match="needs the extra argument value_fn"):
    tx.update(params, tx.init(params), params)


def test_finalize_finds_the_state_in_a_chain_and_complains_otherwise():
  proj = Projection(sparsity=0.5)
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   fs.safe.admm(optax.sgd(0.1), proj))
  params = {"kernel": jnp.asarray(W0), "bias": jnp.ones(3)}
  state = tx.init(params)
  final = fs.safe.finalize(params, state, proj)
  assert int(np.sum(np.asarray(final["kernel"]) != 0)) == 3
  with pytest.raises(ValueError, match="found 0"):
    fs.safe.finalize(params, optax.sgd(0.1).init(params), proj)


def test_config_factory():
  base = optax.sgd(0.1)
  tx = fs.safe.create_from_config({"name": "safe_plus", "sparsity": 0.8},
                                  base, 100)
  assert isinstance(tx, optax.GradientTransformationExtraArgs)
  proj = fs.safe.projection_from_config({"name": "safe_plus",
                                         "sparsity": 0.8})
  assert proj.importance == "activation"
  with pytest.raises(ValueError, match="Unknown SAFE-family method 'gmp'; "
                     "allowed: 'safe', 'safe_plus', 'admm', 'iht'"):
    fs.safe.create_from_config({"name": "gmp"}, base, 100)
  with pytest.raises(ValueError, match=r"Unknown keys \['rho'\] for 'admm'"):
    fs.safe.create_from_config({"name": "admm", "sparsity": 0.5, "rho": 0.1},
                               base, 100)


def test_rounding_and_penalty_after_total_from_the_command_line():
  def parse(*overrides):
    argv = ["prog", "--config=configs/safe_digits.py:tiny", *overrides]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values,
                                    lock_config=True, sys_argv=argv)
    values(argv)
    safe = config_schema.drop_unset("safe", values.config.methods.safe.safe)
    return dict(safe, sparsity=0.9)  # the sweep's placeholder filled in

  default = parse()
  assert fs.safe.projection_from_config(default).rounding == "round"
  official = parse("--config.methods.safe.safe.rounding=floor",
                   "--config.methods.safe.safe.penalty_after_total=continue")
  assert fs.safe.projection_from_config(official).rounding == "floor"
  assert official["penalty_after_total"] == "continue"
  fs.safe.create_from_config(official, optax.sgd(0.1), 100)
  with pytest.raises(ValueError, match="Unknown rounding 'ceil'; allowed: "
                     "'round', 'floor'"):
    fs.safe.create_from_config(
        parse("--config.methods.safe.safe.rounding=ceil"), optax.sgd(0.1),
        100)
