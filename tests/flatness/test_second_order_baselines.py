"""AdaHessian and Sophia-H: hand-computed trajectories, optax parity,
spatial averaging, conformance."""

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import flatsparse as fs
from flatsparse.train import builders
from flatsparse.train import config_schema
from tests.flatness import conformance_checks
from tests.flatness.nnx_check import assert_trains_nnx_linear

# The package re-exports functions of the same names as these modules.
adahessian_lib = importlib.import_module("flatsparse.flatness.adahessian")
sophia_lib = importlib.import_module("flatsparse.flatness.sophia")

adahessian = adahessian_lib.adahessian
sophia_h = sophia_lib.sophia_h

# Diagonal Hessians (exact Hutchinson estimates): a vector with a negative
# and a tiny entry, and an HWIO conv kernel for spatial averaging.
H = {"a": np.array([1.0, 4.0, -0.5, 0.05]),
     "conv": np.linspace(0.2, 3.0, 2 * 3 * 2 * 2).reshape(2, 3, 2, 2)
             * np.where(np.arange(24).reshape(2, 3, 2, 2) % 5 == 0, -1, 1)}
W0 = {"a": np.array([1.0, -1.0, 0.5, 3.0]),
      "conv": np.linspace(-1.5, 2.0, 24).reshape(2, 3, 2, 2)}


def quadratic(p):
  return 0.5 * sum(jnp.sum(jnp.asarray(H[n], jnp.float32) * p[n] ** 2)
                   for n in H)


def run(tx, steps, value_fn=quadratic, extra_name="value_fn"):
  """The params after each of ``steps`` jitted steps from ``W0``, and the
  last state."""
  history, _, _ = conformance_checks.trajectory(
      tx, {n: jnp.asarray(x, jnp.float32) for n, x in W0.items()}, value_fn,
      steps, extra_name=extra_name)
  return [p for p, _ in history], history[-1][1]


assert_trajectory = conformance_checks.assert_trajectory


# --- AdaHessian ---------------------------------------------------------------


def numpy_adahessian(steps, *, lr, k, b1, b2, eps, wd, power, mode,
                     average=True):
  w, m, v = conformance_checks.float64_start(W0, 2)
  last = refreshes = 0
  out = []
  for t in range(1, steps + 1):
    g = {n: H[n] * w[n] for n in w}
    if (t - 1) % k == 0:
      for n in w:
        d = np.abs(H[n])
        if average and d.ndim == 4:
          d = np.broadcast_to(d.mean(axis=(0, 1), keepdims=True), d.shape)
        v[n] = b2 * v[n] + (1 - b2) * d ** 2
      last, refreshes = t, refreshes + 1
    n_c2 = {"step": last, "current_step": t, "refresh": refreshes}[mode]
    for n in w:
      m[n] = b1 * m[n] + (1 - b1) * g[n]
      precond = (v[n] / (1 - b2 ** n_c2)) ** (power / 2) + eps
      w[n] = w[n] * (1 - lr * wd) - lr / (1 - b1 ** t) * m[n] / precond
    out.append({n: x.copy() for n, x in w.items()})
  return out


def test_adahessian_paper_defaults_every_step():
  want = numpy_adahessian(5, lr=0.15, k=1, b1=0.9, b2=0.999, eps=1e-4,
                          wd=0.0, power=1.0, mode="step")
  got, state = run(adahessian(0.15), 5)
  assert_trajectory(got, want, rtol=1e-4, atol=2e-5)  # f32 b2 = 0.999
  assert int(state.count) == 5


@pytest.mark.parametrize("mode", ["step", "current_step", "refresh"])
def test_adahessian_lazy_trajectory_power_and_decay(mode):
  k = 2  # 2k + 1 = 5 steps: refreshes 1, 3, 5
  want = numpy_adahessian(2 * k + 1, lr=0.05, k=k, b1=0.8, b2=0.75, eps=1e-3,
                          wd=0.1, power=0.5, mode=mode)
  tx = adahessian(0.05, b1=0.8, b2=0.75, eps=1e-3, weight_decay=0.1,
                  hessian_power=0.5, k=k, bias_correction=mode)
  got, _ = run(tx, 2 * k + 1)
  assert_trajectory(got, want)


def test_spatial_averaging_of_conv_kernels():
  diag = {"conv": jnp.arange(24.0).reshape(2, 3, 2, 2), "v": jnp.arange(3.0)}
  avg = adahessian_lib.spatial_average(diag)
  np.testing.assert_array_equal(avg["v"], diag["v"])
  want = np.broadcast_to(np.arange(24.0).reshape(6, 4).mean(0), (6, 4))
  np.testing.assert_allclose(np.asarray(avg["conv"]).reshape(6, 4), want)
  # Without averaging the conv entries follow their own curvature.
  want = numpy_adahessian(3, lr=0.1, k=1, b1=0.9, b2=0.5, eps=1e-4, wd=0.0,
                          power=1.0, mode="step", average=False)
  got, _ = run(adahessian(0.1, b2=0.5, spatial_averaging=False), 3)
  assert_trajectory(got, want)
  averaged = numpy_adahessian(3, lr=0.1, k=1, b1=0.9, b2=0.5, eps=1e-4,
                              wd=0.0, power=1.0, mode="step")
  assert not np.allclose(averaged[-1]["conv"], want[-1]["conv"], rtol=1e-3)


# --- Sophia-H -----------------------------------------------------------------


def numpy_sophia(steps, *, lr, k, b1, b2, gamma, eps, wd, clip, lagged,
                 bias_correction):
  w, m, h = conformance_checks.float64_start(W0, 2)
  out, ratios = [], []
  for t in range(1, steps + 1):
    refreshed = dict(h)
    if (t - 1) % k == 0:
      refreshed = {n: b2 * h[n] + (1 - b2) * H[n] for n in w}
    used = h if lagged else refreshed
    h = refreshed
    for n in w:
      m[n] = b1 * m[n] + (1 - b1) * H[n] * w[n]
      mhat = m[n] / (1 - b1 ** t) if bias_correction else m[n]
      ratio = mhat / np.maximum(gamma * used[n], eps)
      ratios.append(ratio)
      w[n] = w[n] - lr * (np.clip(ratio, -clip, clip) + wd * w[n])
    out.append({n: x.copy() for n, x in w.items()})
  ratios = np.concatenate([r.ravel() for r in ratios])
  return out, ratios


@pytest.mark.parametrize("lagged", [False, True])
@pytest.mark.parametrize("bias_correction", [False, True])
def test_sophia_trajectory_refresh_and_reuse_steps(lagged, bias_correction):
  k = 3  # 2k + 1 = 7 steps: refreshes 1, 4, 7
  hp = dict(lr=0.05, k=k, b1=0.5, b2=0.5, gamma=2.0, eps=1e-12, wd=0.1,
            clip=1.0)
  want, ratios = numpy_sophia(2 * k + 1, lagged=lagged,
                              bias_correction=bias_correction, **hp)
  # Both clipped and unclipped entries occur.
  assert np.any(np.abs(ratios) < 0.9) and np.any(np.abs(ratios) > 1.1)
  tx = sophia_h(hp["lr"], k=k, b1=hp["b1"], b2=hp["b2"], gamma=hp["gamma"],
                eps=hp["eps"], weight_decay=hp["wd"], clip=hp["clip"],
                lagged_hessian=lagged, bias_correction=bias_correction)
  got, state = run(tx, 2 * k + 1)
  assert_trajectory(got, want)
  assert int(state.count) == 2 * k + 1


def test_sophia_defaults_trajectory():
  want, _ = numpy_sophia(21, lr=0.01, k=10, b1=0.965, b2=0.99, gamma=0.01,
                         eps=1e-12, wd=0.0, clip=1.0, lagged=False,
                         bias_correction=False)
  got, _ = run(sophia_h(0.01), 21)
  assert_trajectory(got, want, rtol=1e-4, atol=1e-5)


def test_sophia_equals_optax_contrib_when_configured_identically():
  # b1, b2, gamma chosen so that both clipped and unclipped entries occur
  # (with the defaults every early step is clipped: signSGD for both).
  k, steps = 3, 7
  hp = dict(b1=0.5, b2=0.5, gamma=2.0, eps=1e-8, weight_decay=1e-4)
  ours, _ = run(sophia_h(0.05, k=k, lagged_hessian=True,
                         bias_correction=True, **hp), steps)
  theirs, _ = run(optax.contrib.sophia(0.05, update_interval=k, **hp), steps,
                  extra_name="obj_fn")
  theirs = [jax.tree.map(np.asarray, p) for p in theirs]
  assert_trajectory(ours, theirs, rtol=1e-6, atol=1e-7)
  # Either paper choice alone (fresh Hessian; m without bias correction)
  # gives another trajectory.
  for options in (dict(lagged_hessian=True), dict(bias_correction=True)):
    paper, _ = run(sophia_h(0.05, k=k, **options, **hp), steps)
    assert not np.allclose(paper[-1]["a"], theirs[-1]["a"], rtol=1e-3)


# --- conformance: both --------------------------------------------------------

FACTORIES = {
    "adahessian": lambda **kw: adahessian(**kw),
    "adahessian_lazy": lambda **kw: adahessian(k=2, **kw),
    "sophia_h": lambda **kw: sophia_h(k=2, **kw),
}


def _mlp(dtype):
  """The MLP problem plus a conv kernel (spatial averaging) in the loss."""
  k = jax.random.split(jax.random.PRNGKey(0), 5)
  params, x, y = conformance_checks.mlp_problem(k, (8, 16, 2), 32, dtype, 0.3)
  params["conv"] = jax.random.normal(k[4], (3, 3, 1, 2), dtype) * 0.3

  def loss(p):
    return conformance_checks.mlp_loss(p, x, y) + jnp.sum(p["conv"] ** 2)

  return params, loss


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_conformance_jit_chain_inject_dtype(name, dtype):
  params, loss = _mlp(dtype)
  factory = FACTORIES[name]
  tx = optax.chain(
      optax.clip_by_global_norm(10.0),
      optax.inject_hyperparams(lambda learning_rate: factory(
          learning_rate=learning_rate))(learning_rate=0.01))
  # 15 steps: refresh and reuse steps of k = 2.
  state = conformance_checks.assert_trains_in_one_program(tx, params, loss, 15)
  inner = state[1].inner_state
  assert int(inner.count) == 15
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(inner.m))


SCALE_BY = {
    "scale_by_sassha": lambda: fs.flatness.scale_by_sassha,
    "scale_by_adahessian": lambda: functools.partial(
        adahessian_lib.scale_by_adahessian, hessian_ema="every_step"),
    "scale_by_sophia_h": lambda: functools.partial(
        sophia_lib.scale_by_sophia_h, eps_mode="add"),
}


@pytest.mark.parametrize("name", list(SCALE_BY))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_scale_by_conformance_jit_chain_inject_dtype(name, dtype):
  params, loss = _mlp(dtype)
  tx = optax.chain(
      optax.clip_by_global_norm(10.0),
      optax.inject_hyperparams(SCALE_BY[name](),
                               hyperparam_dtype=jnp.float32)(k=2),
      optax.scale_by_learning_rate(0.01))
  # 15 steps: refresh and reuse steps of k = 2.
  state = conformance_checks.assert_trains_in_one_program(tx, params, loss, 15)
  inner = state[1].inner_state
  assert int(inner.count) == 15
  moments = [x for x in jax.tree.leaves(inner)
             if jnp.issubdtype(x.dtype, jnp.floating)]
  assert len(moments) >= 8  # m and the curvature EMA of 4 leaves
  assert all(x.dtype == jnp.float32 for x in moments)


def test_scale_by_chained_with_decay_and_lr_equals_the_alias():
  hp = dict(b1=0.8, b2=0.75, eps=1e-3, hessian_power=0.5, k=2)
  alias, _ = run(adahessian(0.05, weight_decay=0.1, **hp), 5)
  chained, _ = run(optax.chain(adahessian_lib.scale_by_adahessian(**hp),
                               optax.add_decayed_weights(0.1),
                               optax.scale_by_learning_rate(0.05)), 5)
  assert_trajectory(chained, [jax.tree.map(np.asarray, p) for p in alias],
                    rtol=1e-6, atol=1e-7)
  # Sophia-H's update is exactly this chain (float32, constant lr).
  hp = dict(b1=0.5, b2=0.5, gamma=2.0, k=3)
  alias, _ = run(sophia_h(0.05, weight_decay=0.1, **hp), 7)
  chained, _ = run(optax.chain(sophia_lib.scale_by_sophia_h(**hp),
                               optax.add_decayed_weights(0.1),
                               optax.scale_by_learning_rate(0.05)), 7)
  for a, b in zip(alias, chained):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_new_options_are_checked_and_configurable():
  with pytest.raises(ValueError, match="Unknown hessian_ema 'lazy'"):
    adahessian(0.1, hessian_ema="lazy")
  with pytest.raises(ValueError, match="Unknown eps_mode 'max'"):
    sophia_h(0.1, eps_mode="max")
  assert "hessian_ema" in config_schema.section_schema(
      "optimizer", {"name": "adahessian"})
  assert "eps_mode" in config_schema.section_schema(
      "optimizer", {"name": "sophia_h"})
  tx = builders.build_optimizer({"name": "adahessian", "learning_rate": 0.05,
                                 "k": 2, "hessian_ema": "every_step",
                                 "bias_correction": "current_step"}, 10)
  _, state = run(tx, 3)
  assert state.estimate is not None


@pytest.mark.parametrize("factory", [adahessian, sophia_h])
def test_plain_inject_hyperparams_and_learning_rate(factory):
  tx = optax.inject_hyperparams(factory)(learning_rate=0.05)
  out, state = run(tx, 3)
  direct, _ = run(factory(0.05), 3)
  assert_trajectory(out, [jax.tree.map(np.asarray, p) for p in direct],
                    rtol=1e-4, atol=1e-6)
  state.hyperparams["learning_rate"] = jnp.zeros([])
  p = out[-1]
  updates, _ = tx.update(jax.grad(quadratic)(p), state, p, value_fn=quadratic)
  assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(updates))


@pytest.mark.parametrize("factory", [adahessian, sophia_h])
def test_flax_nnx_optimizer(factory):
  assert_trains_nnx_linear(factory(0.02, k=2))


def test_errors():
  p = {"w": jnp.ones(2)}
  for tx in (adahessian(0.1), sophia_h(0.1)):
    with pytest.raises(ValueError, match="needs params and the extra argument"):
      tx.update(p, tx.init(p), p)


@pytest.mark.parametrize("name, kwargs, match", [
    ("adahessian", dict(hessian_power=2.0),
     r"hessian_power must be in \(0, 1\]"),
    ("adahessian", dict(spatial_axes=(0, 7)), "spatial_axes must be axes"),
    ("adahessian", dict(bias_correction="none"), "Unknown bias_correction"),
    ("sophia_h", dict(gamma=0.0), "gamma must be > 0"),
    ("sophia_h", dict(num_probes=2.0), "num_probes must be a static int"),
    ("sophia_h", dict(k=0), "k must be an int >= 1"),
])
def test_bad_arguments(name, kwargs, match):
  factory = {"adahessian": adahessian, "sophia_h": sophia_h}[name]
  with pytest.raises(ValueError, match=match):
    factory(0.1, **kwargs)


@pytest.mark.parametrize("name", ["adahessian", "sophia_h"])
def test_registered_for_configs(name):
  tx = builders.build_optimizer({"name": name, "learning_rate": 0.05,
                                 "schedule": "cosine", "k": 2}, 10)
  out, _ = run(tx, 3)
  assert np.all(np.isfinite(out[-1]["a"]))
  assert getattr(fs.flatness, name) is {"adahessian": adahessian,
                                        "sophia_h": sophia_h}[name]
