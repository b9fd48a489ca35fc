"""Sassha: hand-computed trajectories, the estimator, conformance, digits."""

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flatsparse as fs
from flatsparse.flatness import curvature
from flatsparse.train import builders
from tests.flatness import conformance_checks
from tests.flatness.nnx_check import assert_trains_nnx_linear

# The package re-exports functions of the same names as these modules.
sassha_lib = importlib.import_module("flatsparse.flatness.sassha")

sassha = sassha_lib.sassha

# Diagonal Hessians of two leaves; one negative entry exercises |d|. With a
# diagonal Hessian the Rademacher estimate z * (H z) = diag(H) is exact.
A = np.array([1.0, 4.0, -0.5, 2.5])
B = np.array([[3.0, 0.25], [1.5, 0.75]])
W0 = {"a": np.array([1.0, -1.0, 0.5, 2.0]), "b": np.array([[0.5, -2.0],
                                                              [1.0, 0.25]])}
H = {"a": A, "b": B}


def quadratic(p):
  return 0.5 * (jnp.sum(jnp.asarray(A, jnp.float32) * p["a"] ** 2)
                + jnp.sum(jnp.asarray(B, jnp.float32) * p["b"] ** 2))


def numpy_sassha(steps, *, lr, peak, rho, k, b1, b2, alpha, eps, wd, mode):
  """Steps 1-5 of the issue in float64, one leaf at a time."""
  w, m, d = conformance_checks.float64_start(W0, 2)
  last = refreshes = 0
  out = []
  for t in range(1, steps + 1):
    g = {n: H[n] * w[n] for n in w}
    norm = np.sqrt(sum(np.sum(x ** 2) for x in g.values()))
    sharp = {n: H[n] * (w[n] + rho * g[n] / (norm + 1e-12)) for n in w}
    if (t - 1) % k == 0:
      d = {n: b2 * d[n] + (1 - b2) * np.abs(H[n]) for n in w}
      last, refreshes = t, refreshes + 1
    m = {n: b1 * m[n] + (1 - b1) * sharp[n] for n in w}
    power = {"step": last, "current_step": t, "refresh": refreshes}[mode]
    lr_t = lr(t - 1) if callable(lr) else lr
    for n in w:
      precond = (d[n] / (1 - b2 ** power)) ** alpha + eps
      w[n] = (w[n] * (1 - lr_t * wd / peak)
              - lr_t / (1 - b1 ** t) * m[n] / precond)
    out.append({n: x.copy() for n, x in w.items()})
  return out


def run(tx, steps, params=None, value_fn=quadratic):
  """The params after each of ``steps`` jitted steps, and the last state."""
  params = params or {n: jnp.asarray(x, jnp.float32) for n, x in W0.items()}
  history, _, _ = conformance_checks.trajectory(tx, params, value_fn, steps)
  return [p for p, _ in history], history[-1][1]


assert_trajectory = functools.partial(conformance_checks.assert_trajectory,
                                      atol=1e-7)


@pytest.mark.parametrize("mode", sassha_lib.BIAS_CORRECTIONS)
def test_trajectory_refresh_and_reuse_steps(mode):
  # k = 3: 2k + 1 = 7 steps are refreshes (1, 4, 7) and reuses; a schedule
  # and weight decay relative to the peak learning rate.
  k, steps = 3, 7
  hp = dict(rho=0.3, k=k, b1=0.8, b2=0.75, alpha=0.5, eps=1e-3, wd=0.05)
  schedule = optax.linear_schedule(0.1, 0.02, 10)
  want = numpy_sassha(steps, lr=lambda c: 0.1 - 0.008 * c, peak=0.1,
                      mode=mode, **hp)
  tx = sassha(schedule, hp["rho"], k=k, b1=hp["b1"], b2=hp["b2"],
              alpha=hp["alpha"], eps=hp["eps"], weight_decay=hp["wd"],
              peak_learning_rate=0.1, bias_correction=mode)
  got, state = run(tx, steps)
  assert_trajectory(got, want, rtol=2e-5)
  assert int(state.count) == steps
  # The three corrections really differ on these steps.
  other = [m for m in sassha_lib.BIAS_CORRECTIONS if m != mode][0]
  alt = numpy_sassha(steps, lr=lambda c: 0.1 - 0.008 * c, peak=0.1,
                     mode=other, **hp)
  assert not np.allclose(alt[-1]["a"], want[-1]["a"], rtol=1e-3)


def test_trajectory_reference_defaults_and_power():
  # The reference defaults (k = 10, so 21 steps) with the CIFAR-10 recipe.
  want = numpy_sassha(21, lr=0.15, peak=0.15, rho=0.2, k=10, b1=0.9,
                      b2=0.999, alpha=0.5, eps=1e-4, wd=5e-4, mode="step")
  got, _ = run(sassha(0.15, 0.2, weight_decay=5e-4), 21)
  # float32 rounding of b2 = 0.999 (1 - b2 is off by 1e-5, relatively).
  assert_trajectory(got, want, rtol=1e-4, atol=2e-5)
  # alpha != 1/2 (a power, not a square root), constant lr, refresh counts.
  want = numpy_sassha(5, lr=0.05, peak=0.05, rho=0.1, k=2, b1=0.9, b2=0.5,
                      alpha=0.75, eps=1e-4, wd=0.0, mode="refresh")
  got, _ = run(sassha(0.05, 0.1, k=2, b2=0.5, alpha=0.75,
                      bias_correction="refresh"), 5)
  assert_trajectory(got, want, rtol=2e-5)


def _mlp(dtype=jnp.float32):
  params, x, y = conformance_checks.mlp_problem(
      jax.random.split(jax.random.PRNGKey(0), 4), (6, 8, 2), 16, dtype, 0.5)
  return params, functools.partial(conformance_checks.mlp_loss, x=x, y=y)


@pytest.mark.parametrize("num_probes,kind",
                         [(1, "rademacher"), (3, "gaussian")])
def test_gradient_and_hutchinson_in_one_pass(num_probes, kind):
  params, loss = _mlp()
  key = jax.random.PRNGKey(3)
  grads, hvp_fn = curvature.grad_and_hvp(loss, params)
  diag = curvature.hutchinson_diagonal_from_hvp(hvp_fn, params, key,
                                                num_probes=num_probes,
                                                kind=kind)
  want = curvature.hutchinson_diagonal(loss, params, key,
                                       num_probes=num_probes, kind=kind)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6), diag, want)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-7),
               grads, jax.grad(loss)(params))


def _primitives(jaxpr):
  """Names of every primitive in a jaxpr, nested jaxprs included."""
  names = []
  for eqn in jaxpr.eqns:
    names.append(eqn.primitive.name)
    for value in eqn.params.values():
      for sub in value if isinstance(value, (list, tuple)) else (value,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          names += _primitives(inner)
  return names


def test_only_the_hessian_product_is_inside_the_conditional():
  """g~ is taken at top level; the reuse branch does no work (XLA:CPU runs
  a gradient inside a lax.cond branch an order of magnitude slower)."""
  params, loss = _mlp()
  tx = sassha(0.1, 0.1, k=3)
  jaxpr = jax.make_jaxpr(
      lambda p, s: tx.update(jax.grad(loss)(p), s, p, value_fn=loss))(
          params, tx.init(params)).jaxpr
  conds = [e for e in jaxpr.eqns if e.primitive.name == "cond"]
  assert len(conds) == 1
  reuse, refresh = conds[0].params["branches"]  # index 0: predicate false
  assert "dot_general" not in _primitives(reuse.jaxpr)
  assert "dot_general" in _primitives(refresh.jaxpr)  # H z
  outside = [e.primitive.name for e in jaxpr.eqns]
  # Forward, backward (incoming gradient), forward + backward at w~.
  assert outside.count("dot_general") >= 8


def test_steps_on_a_network_use_the_perturbed_point_and_step_keys():
  """Two steps (refresh, reuse) rebuilt from curvature.hutchinson_diagonal."""
  params, loss = _mlp()
  lr, rho, b1, eps, seed = 0.05, 0.1, 0.9, 1e-4, 7
  tx = sassha(lr, rho, k=2, seed=seed)
  (p1, p2), _ = run(tx, 2, params=params, value_fn=loss)
  base = jax.random.PRNGKey(seed)
  w = params
  m = jax.tree.map(jnp.zeros_like, w)
  for t, got in ((1, p1), (2, p2)):
    g = jax.grad(loss)(w)
    norm = optax.tree.norm(g)
    tilde = jax.tree.map(lambda a, b, n=norm: a + rho * b / (n + 1e-12), w, g)
    if t == 1:  # refresh at the perturbed point with fold_in(key, 0)
      d = curvature.hutchinson_diagonal(loss, tilde,
                                        jax.random.fold_in(base, 0))
      dhat = jax.tree.map(jnp.abs, d)  # (1 - b2)|d| / (1 - b2^1)
    sharp = jax.grad(loss)(tilde)
    m = jax.tree.map(lambda a, b: b1 * a + (1 - b1) * b, m, sharp)
    w = jax.tree.map(
        lambda p, mo, dh, t=t: p - lr / (1 - b1**t) * mo / (jnp.sqrt(dh) + eps),
        w, m, dhat)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5,
                                                         atol=1e-6), got, w)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_conformance_jit_chain_inject_dtype(dtype):
  params, loss = _mlp(dtype)
  k = 2
  tx = optax.chain(
      optax.clip_by_global_norm(10.0),
      optax.inject_hyperparams(sassha, hyperparam_dtype=jnp.float32)(
          learning_rate=0.02, rho=0.05, k=k))
  # 2k + 11 steps: refresh and reuse steps.
  state = conformance_checks.assert_trains_in_one_program(
      tx, params, loss, 2 * k + 1 + 10)
  inner = state[1].inner_state
  assert all(x.dtype == jnp.float32
             for x in jax.tree.leaves((inner.m, inner.D)))
  assert int(inner.count) == 2 * k + 11


def test_inject_hyperparams_plain_factory_equals_direct():
  direct, _ = run(sassha(0.05, 0.1, k=3, weight_decay=0.01), 7)
  tx = optax.inject_hyperparams(sassha)(learning_rate=0.05, rho=0.1, k=3,
                                        weight_decay=0.01)
  injected, state = run(tx, 7)
  # Injected, alpha is an array: a power instead of jnp.sqrt (1e-5 apart).
  assert_trajectory(injected, [jax.tree.map(np.asarray, p) for p in direct],
                    rtol=1e-4, atol=1e-6)
  # The injected learning rate is the one used: zero freezes the params.
  state.hyperparams["learning_rate"] = jnp.zeros([])
  state.hyperparams["weight_decay"] = jnp.zeros([])
  p = injected[-1]
  updates, _ = tx.update(jax.grad(quadratic)(p), state, p, value_fn=quadratic)
  assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(updates))


def test_scale_by_sassha_chained_with_decay_and_lr_equals_sassha():
  # optax's form: direction, decoupled decay (wd / lr_0), learning rate.
  schedule = optax.linear_schedule(0.1, 0.02, 10)
  alias, _ = run(sassha(schedule, 0.3, k=3, weight_decay=0.05,
                        peak_learning_rate=0.1), 5)
  tx = optax.chain(sassha_lib.scale_by_sassha(0.3, k=3),
                   optax.add_decayed_weights(0.05 / 0.1),
                   optax.scale_by_learning_rate(schedule))
  chained, state = run(tx, 5)
  assert_trajectory(chained, [jax.tree.map(np.asarray, p) for p in alias],
                    rtol=1e-6, atol=1e-7)
  assert isinstance(state[0], sassha_lib.SasshaState)
  assert fs.flatness.scale_by_sassha is sassha_lib.scale_by_sassha


def test_flax_nnx_optimizer():
  assert_trains_nnx_linear(sassha(0.02, 0.05, k=2))


def test_sparse_perturbation_inside_a_pruning_wrapper():
  params = {"kernel": jnp.array([[1.0, 0.5], [0.25, 2.0]]), "b": jnp.ones(2)}
  seen = []

  def spy(p):
    jax.debug.callback(lambda w: seen.append(np.asarray(w)), p["kernel"])
    return jnp.sum(p["kernel"] ** 2) + jnp.sum(p["b"] ** 2)

  tx = fs.sparsity.static_sparse(sparsity=0.5).wrap(sassha(0.01, 1.0, k=1))
  state = tx.init(params)
  masks = fs.sparsity.get_masks(state, params)
  params = fs.sparsity.apply_masks(params, masks)
  tx.update(jax.grad(spy)(params), state, params, value_fn=spy)
  assert np.all(seen[-1][~np.asarray(masks["kernel"])] == 0)


def test_errors():
  p = {"w": jnp.ones(2)}
  with pytest.raises(ValueError, match="needs params and the extra argument"):
    tx = sassha(0.1)
    tx.update(p, tx.init(p), p)
  with pytest.raises(ValueError, match="pass peak_learning_rate"):
    sassha(optax.cosine_decay_schedule(0.1, 10), weight_decay=1e-4)
  sassha(optax.cosine_decay_schedule(0.1, 10))  # no decay: no peak needed


@pytest.mark.parametrize("kwargs, match", [
    (dict(bias_correction="steps"), "Unknown bias_correction 'steps'"),
    (dict(k=0), "k must be an int >= 1, got 0"),
    (dict(num_probes=0), "num_probes must be a static int"),
    (dict(rho=-0.5), "rho must be >= 0"),
    (dict(b2=1.0), r"b2 must be in \[0, 1\)"),
    (dict(probe="sphere"), "Unknown probe"),
])
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    sassha(0.1, **kwargs)


def test_registered_for_configs():
  tx = builders.build_optimizer(
      {"name": "sassha", "learning_rate": 0.15, "schedule": "cosine",
       "rho": 0.2, "weight_decay": 5e-4, "peak_learning_rate": 0.15}, 100)
  out, _ = run(tx, 2)
  assert np.all(np.isfinite(out[-1]["a"]))
  assert fs.flatness.sassha is sassha


# --- end to end: digits MLP, Adam vs SAM vs Sassha ----------------------------

STEPS, BATCH, SEEDS = 1000, 128, (0, 1, 2)


def _schedule(peak, steps=STEPS):
  return optax.warmup_cosine_decay_schedule(0.0, peak, 100, steps)


def _digits_accuracy(tx, seed, steps=STEPS):
  from flatsparse.data import load_digits  # noqa: PLC0415 (sklearn import)
  from flatsparse.models import MLP  # noqa: PLC0415
  from flatsparse.train.state import create_train_state  # noqa: PLC0415
  from flatsparse.train.step import make_eval_step  # noqa: PLC0415
  from flatsparse.train.step import make_train_step  # noqa: PLC0415
  train, test = load_digits("train"), load_digits("test")
  model = MLP(hidden=(256, 256), num_classes=10)
  state = create_train_state(model, tx, train.images[:1], seed)
  step = jax.jit(make_train_step(model, tx))
  rng = np.random.default_rng(seed)
  n = len(train.labels)
  order = np.concatenate([rng.permutation(n)
                          for _ in range(steps * BATCH // n + 1)])
  for s in range(steps):
    idx = order[s * BATCH:(s + 1) * BATCH]
    state, _ = step(state, {"image": train.images[idx],
                            "label": train.labels[idx]})
  sums = make_eval_step(model)(state, {"image": test.images,
                                       "label": test.labels})
  return float(sums["correct"] / sums["count"])


def test_sassha_learns_digits_in_a_short_run():
  """One seed, 300 steps: the fast stand-in of the three-seed check below."""
  tx = sassha(_schedule(0.03, 300), 0.2, weight_decay=5e-4,
              peak_learning_rate=0.03)
  assert _digits_accuracy(tx, 0, steps=300) > 0.93


@pytest.mark.slow
def test_digits_sam_and_sassha_within_one_point_of_adam():
  # Same steps, batch, seeds and schedule shape (100 warm-up steps, cosine);
  # each optimizer at its own peak learning rate.
  runs = {
      "adam": lambda: optax.adam(_schedule(3e-3)),
      "sam": lambda: optax.chain(fs.sam(0.05), optax.adam(_schedule(3e-3))),
      "sassha": lambda: sassha(_schedule(0.03), 0.2, weight_decay=5e-4,
                               peak_learning_rate=0.03),
  }
  acc = {name: float(np.mean([_digits_accuracy(make(), s) for s in SEEDS]))
         for name, make in runs.items()}
  print("digits test accuracy (mean of seeds 0-2):", acc)
  assert acc["adam"] > 0.95
  assert acc["sam"] >= acc["adam"] - 0.01
  assert acc["sassha"] >= acc["adam"] - 0.01
