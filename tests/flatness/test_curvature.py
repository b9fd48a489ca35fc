"""Curvature: HVP, Hutchinson, power iteration, Lanczos, SLQ, moments.

Every estimate is checked against the exact Hessian of a small function
(``d = 10`` parameters split over a nested pytree): a quadratic
``0.5 w^T A w`` (``H = A``) and a non-quadratic function whose Hessian comes
from ``jax.hessian``; eigenvalues against ``numpy.linalg.eigvalsh``.
Stochastic estimates use fixed keys and a tolerance of 5 standard deviations
of the estimator (from its known variance) unless the estimate is exact.
"""

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np
import pytest

import flatsparse as fs
from flatsparse.flatness import curvature as cv

D = 10
KEY = jax.random.key(0)


def symmetric(eigenvalues, seed=0):
  """``Q diag(eigenvalues) Q^T`` with a random rotation ``Q`` (float64)."""
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.normal(size=(len(eigenvalues),) * 2))
  return (q * np.asarray(eigenvalues, np.float64)) @ q.T


SPD = symmetric([10.0, 5.0, 4.0, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.25])
# Indefinite; the eigenvalue of largest magnitude is negative.
INDEFINITE = symmetric([-8.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5, -0.5, -1.0, -2.0],
                       seed=1)


def split(w):
  """A flat ``[10]`` vector as a nested pytree (ravel order = index order)."""
  return {"a": w[:4], "b": {"c": w[4:].reshape(3, 2)}}


def flat(params):
  return ravel_pytree(params)[0]


def quadratic(a):
  a = jnp.asarray(a, jnp.float32)
  return lambda p: 0.5 * flat(p) @ a @ flat(p)


def nonquadratic_flat(w):
  b = jnp.asarray(np.random.default_rng(3).normal(size=(D, D)), w.dtype)
  return (jnp.sum(jnp.log(jnp.cosh(b @ w))) + 0.25 * jnp.sum(w ** 4)
          - w[0] * w[1])


def nonquadratic(p):
  return nonquadratic_flat(flat(p))


W0 = np.random.default_rng(2).normal(size=D).astype(np.float32)
PARAMS = split(jnp.asarray(W0))
H_NONQUAD = np.asarray(jax.hessian(nonquadratic_flat)(jnp.asarray(W0)),
                       np.float64)


def offdiag_sq(h):
  return (h ** 2).sum(axis=1) - np.diag(h) ** 2


DIAG = np.arange(1, D + 1, dtype=np.float64) * np.array([1, -1] * 5)
F_DIAG = quadratic(np.diag(DIAG))  # Rademacher estimates are exact on it
F_SPD = quadratic(SPD)
F_INDEFINITE = quadratic(INDEFINITE)


def run(fn, value_fn, params=PARAMS, key=KEY, **kwargs):
  """``fn`` under ``jax.jit`` with static ``value_fn`` and keyword arguments.

  Jitted calls compile once per (function, value_fn, kwargs), faster than
  eager calls, which recompile every loop; the suite stays well under 40 s.
  """
  return jax.jit(fn, static_argnums=0, static_argnames=tuple(kwargs))(
      value_fn, params, key, **kwargs)


# --------------------------------------------------------------- hvp


@pytest.mark.parametrize("a", [SPD, INDEFINITE], ids=["spd", "indefinite"])
def test_hvp_is_exact_on_a_quadratic(a):
  v = np.random.default_rng(4).normal(size=D).astype(np.float32)
  got = cv.hvp(quadratic(a), PARAMS, split(jnp.asarray(v)))
  assert jax.tree.structure(got) == jax.tree.structure(PARAMS)
  np.testing.assert_allclose(flat(got), a @ v, rtol=1e-5, atol=1e-5)


def test_hvp_matches_jax_hessian_on_a_nonquadratic_function():
  v = np.random.default_rng(5).normal(size=D).astype(np.float32)
  got = cv.hvp(nonquadratic, PARAMS, split(jnp.asarray(v)))
  np.testing.assert_allclose(flat(got), H_NONQUAD @ v, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------- Hutchinson


def test_rademacher_is_exact_on_a_diagonal_hessian_with_one_probe():
  est = run(cv.hutchinson_diagonal, F_DIAG, num_probes=1)
  np.testing.assert_allclose(flat(est), DIAG, rtol=1e-6)
  np.testing.assert_allclose(run(cv.hutchinson_trace, F_DIAG, num_probes=1),
                             DIAG.sum(), atol=1e-5)
  moments = run(cv.hessian_moments, F_DIAG, max_order=4, num_probes=1)
  want = [np.sum(DIAG ** k) / D for k in range(1, 5)]
  np.testing.assert_allclose(moments, want, rtol=1e-6)


@pytest.mark.parametrize("kind", cv.PROBES)
@pytest.mark.parametrize("name", ["spd", "nonquadratic"])
def test_hutchinson_diagonal_and_trace_converge(kind, name):
  f, h = (F_SPD, SPD) if name == "spd" else (nonquadratic, H_NONQUAD)
  n = 4000
  # Per-probe variance of z_i (H z)_i: sum_{j!=i} H_ij^2 (Rademacher),
  # + 2 H_ii^2 (Gaussian); of z^T H z: 2 sum_{i!=j} H_ij^2 (Rademacher),
  # 2 |H|_F^2 (Gaussian). Tolerance: 5 standard deviations of the mean.
  var_diag = offdiag_sq(h) + (2 * np.diag(h) ** 2 if kind == "gaussian" else 0)
  var_trace = 2 * (offdiag_sq(h).sum() if kind == "rademacher"
                   else (h ** 2).sum())
  diag = run(cv.hutchinson_diagonal, f, num_probes=n, kind=kind)
  trace = run(cv.hutchinson_trace, f, num_probes=n, kind=kind)
  np.testing.assert_array_less(np.abs(flat(diag) - np.diag(h)),
                               5 * np.sqrt(var_diag / n) + 1e-4)
  assert abs(float(trace) - np.trace(h)) < 5 * np.sqrt(var_trace / n)
  # Same key, same probes: the trace is the diagonal's sum.
  np.testing.assert_allclose(trace, flat(diag).sum(), rtol=1e-4)


H_MOMENTS = symmetric([2.0, 1.5, 1.2, 1.0, 0.8, 0.5, 0.2, -0.3, -0.7, -1.0],
                      seed=6)
F_MOMENTS = quadratic(H_MOMENTS)


@pytest.mark.parametrize("kind", cv.PROBES)
def test_hessian_moments_converge(kind):
  n = 4000
  got = run(cv.hessian_moments, F_MOMENTS, max_order=5, num_probes=n,
            kind=kind)
  assert got.shape == (5,)
  for k in range(1, 6):
    m = np.linalg.matrix_power(H_MOMENTS, k)
    var = 2 * (offdiag_sq(m).sum() if kind == "rademacher" else (m ** 2).sum())
    want = np.trace(m) / D
    assert abs(float(got[k - 1]) - want) < 5 * np.sqrt(var / n) / D, (k, got)
  # m_1 with the same probes is the Hutchinson trace over d.
  trace = run(cv.hutchinson_trace, F_MOMENTS, num_probes=n, kind=kind)
  np.testing.assert_allclose(got[0], trace / D, rtol=1e-4)


# ------------------------------------------------------ power iteration


@pytest.mark.parametrize("name", ["spd", "indefinite"])
def test_top_eigenvalue_is_the_largest_magnitude_one(name):
  a, f = (SPD, F_SPD) if name == "spd" else (INDEFINITE, F_INDEFINITE)
  evals, evecs = np.linalg.eigh(a)
  i = np.argmax(np.abs(evals))
  lam, v = run(cv.top_eigenvalue, f, num_iters=100)
  np.testing.assert_allclose(lam, evals[i], rtol=1e-5)
  assert jax.tree.structure(v) == jax.tree.structure(PARAMS)
  np.testing.assert_allclose(np.linalg.norm(flat(v)), 1.0, rtol=1e-5)
  assert abs(np.dot(flat(v), evecs[:, i])) > 1 - 1e-4
  if name == "indefinite":
    assert lam < 0 and evals[i] == evals.min()


def test_top_eigenvalue_nonquadratic_and_early_stopping():
  evals = np.linalg.eigvalsh(H_NONQUAD)
  want = evals[np.argmax(np.abs(evals))]
  lam, _ = run(cv.top_eigenvalue, nonquadratic, num_iters=500, tol=1e-7)
  np.testing.assert_allclose(lam, want, rtol=1e-4)
  # A huge tolerance stops after one step: same as num_iters=1.
  one, v1 = run(cv.top_eigenvalue, nonquadratic, num_iters=1)
  early, ve = run(cv.top_eigenvalue, nonquadratic, num_iters=50, tol=1e9)
  np.testing.assert_allclose(early, one, rtol=1e-6)
  np.testing.assert_allclose(flat(ve), flat(v1), rtol=1e-6)


def linear(p):
  return jnp.sum(flat(p))  # zero Hessian


def test_top_eigenvalue_of_a_zero_hessian_is_zero():
  lam, v = run(cv.top_eigenvalue, linear)
  assert float(lam) == 0.0
  np.testing.assert_allclose(np.linalg.norm(flat(v)), 1.0, rtol=1e-5)


# ----------------------------------------------------------- Lanczos


@pytest.mark.parametrize("name", ["spd", "indefinite", "nonquadratic"])
def test_lanczos_with_d_steps_recovers_the_spectrum(name):
  a, f = {"spd": (SPD, F_SPD), "indefinite": (INDEFINITE, F_INDEFINITE),
          "nonquadratic": (H_NONQUAD, nonquadratic)}[name]
  want = np.linalg.eigvalsh(a)[::-1]
  alphas, betas = run(cv.lanczos, f, num_steps=D)
  assert alphas.shape == (D,) and betas.shape == (D - 1,)
  t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
  np.testing.assert_allclose(np.linalg.eigvalsh(t)[::-1], want, atol=1e-4)
  if name == "nonquadratic":  # (indefinite: test_eager_calls_and_closures...)
    top = run(cv.top_eigenvalues, f, k=5, num_steps=D)
    np.testing.assert_allclose(top, want[:5], atol=1e-4)


def test_lanczos_few_steps_gets_the_extreme_eigenvalue():
  want = np.linalg.eigvalsh(SPD)[-1]
  top = cv.top_eigenvalues(F_SPD, PARAMS, KEY, 1, 6)  # positional k, steps
  np.testing.assert_allclose(top, [want], rtol=1e-3)


def test_lanczos_restarts_on_an_invariant_krylov_space():
  # Three distinct eigenvalues: the Krylov space is invariant after 3 steps.
  evals = np.array([3.0] * 4 + [1.0] * 3 + [-2.0] * 3)
  alphas, betas = run(cv.lanczos, quadratic(symmetric(evals, seed=7)),
                      num_steps=30)
  assert alphas.shape == (D,) and betas.shape == (D - 1,)  # capped at d
  assert np.all(np.isfinite(alphas)) and np.all(np.isfinite(betas))
  t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
  np.testing.assert_allclose(np.linalg.eigvalsh(t), np.sort(evals), atol=1e-4)
  zero = run(cv.lanczos, linear, num_steps=4)
  np.testing.assert_array_equal(np.concatenate(zero), 0.0)


# ------------------------------------------------------- spectral density


def test_spectral_density_integrates_to_one_with_mass_at_the_eigenvalues():
  evals = np.linalg.eigvalsh(INDEFINITE)
  grid, density = run(cv.spectral_density, F_INDEFINITE, num_steps=D,
                      num_probes=200, sigma=0.05)
  assert grid.shape == density.shape == (1000,)
  assert np.all(np.asarray(density) >= 0)
  np.testing.assert_allclose(np.trapezoid(density, grid), 1.0, atol=1e-3)
  # All mass within 4 sigma of the true eigenvalues, about 1/d near each
  # (the weight of one eigenvalue for one probe is Beta(1/2, (d-1)/2):
  # std ~0.094, so ~0.0066 for 200 probes; 5 std = 0.033).
  near = np.abs(np.asarray(grid)[:, None] - evals[None, :]) < 0.2
  inside = np.where(near.any(axis=1), density, 0)
  np.testing.assert_allclose(np.trapezoid(inside, grid), 1.0, atol=1e-3)
  for i in range(D):
    mass = np.trapezoid(np.where(near[:, i], density, 0), grid)
    assert abs(mass - 1 / D) < 0.033, (i, mass)


def test_spectral_density_default_sigma_and_explicit_grid():
  grid, density = run(cv.spectral_density, nonquadratic, num_steps=8,
                      num_probes=3, num_points=4000)
  np.testing.assert_allclose(np.trapezoid(density, grid), 1.0, atol=1e-3)
  evals = np.linalg.eigvalsh(H_NONQUAD)
  assert grid[0] < evals[0] and grid[-1] > evals[-1]
  points = jnp.linspace(evals[0] - 1, evals[-1] + 1, 3000)
  g2, d2 = jax.jit(lambda p, k, g: cv.spectral_density(
      nonquadratic, p, k, num_steps=D, grid=g, sigma=0.1))(PARAMS, KEY, points)
  np.testing.assert_array_equal(g2, points)
  np.testing.assert_allclose(np.trapezoid(d2, g2), 1.0, atol=1e-3)


# ------------------------------------------------ jit, dtypes, errors


def test_eager_calls_and_closures_under_jit():
  # The other tests jit through `run`; eager calls work as well.
  np.testing.assert_allclose(
      flat(cv.hutchinson_diagonal(F_DIAG, PARAMS, KEY, num_probes=3,
                                  kind="rademacher")), DIAG, rtol=1e-6)
  np.testing.assert_allclose(
      cv.hutchinson_trace(F_DIAG, PARAMS, KEY, num_probes=2), DIAG.sum(),
      atol=1e-5)
  lam, _ = cv.top_eigenvalue(F_INDEFINITE, PARAMS, KEY, num_iters=100,
                             tol=1e-7)
  evals = np.linalg.eigvalsh(INDEFINITE)[::-1]
  np.testing.assert_allclose(lam, evals[-1], rtol=1e-5)
  # A closure over value_fn under jit, the usual way inside a train step.
  step = jax.jit(lambda p, k: (cv.top_eigenvalues(F_INDEFINITE, p, k, 2, D),
                               cv.hessian_moments(F_DIAG, p, k, max_order=3,
                                                  num_probes=2)))
  top, moments = step(PARAMS, KEY)
  np.testing.assert_allclose(top, evals[:2], atol=1e-4)
  np.testing.assert_allclose(moments,
                             [np.sum(DIAG ** k) / D for k in (1, 2, 3)],
                             rtol=1e-6)


def test_bfloat16_params_do_not_crash():
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), PARAMS)
  a = jnp.asarray(SPD, jnp.bfloat16)
  f = lambda p: 0.5 * flat(p) @ a @ flat(p)  # noqa: E731
  top = np.linalg.eigvalsh(SPD)[-1]

  @jax.jit
  def everything(params, key):  # one compilation for all of them
    return dict(
        top_eigenvalue=cv.top_eigenvalue(f, params, key, num_iters=30),
        top_eigenvalues=cv.top_eigenvalues(f, params, key, k=1, num_steps=D),
        trace=cv.hutchinson_trace(f, params, key, num_probes=4),
        moments=cv.hessian_moments(f, params, key, num_probes=4),
        density=cv.spectral_density(f, params, key, num_steps=5,
                                     num_points=50),
        diagonal=cv.hutchinson_diagonal(f, params, key, num_probes=2))

  out = everything(params, KEY)
  lam, v = out["top_eigenvalue"]
  assert jax.tree.leaves(v)[0].dtype == jnp.bfloat16
  assert jax.tree.leaves(out["diagonal"])[0].dtype == jnp.bfloat16
  np.testing.assert_allclose(lam, top, rtol=0.05)
  np.testing.assert_allclose(out["top_eigenvalues"], [top], rtol=0.05)
  for name in ["top_eigenvalues", "trace", "moments", "density"]:
    for x in jax.tree.leaves(out[name]):
      assert x.dtype == jnp.float32, name
      assert np.all(np.isfinite(x)), name
  assert lam.dtype == jnp.float32


@pytest.mark.parametrize("name, kwargs, match", [
    ("hutchinson_trace", dict(kind="sphere"),
     "Unknown probe 'sphere'; allowed: rademacher, gaussian"),
    ("hessian_moments", dict(kind="normal"), "Unknown probe 'normal'"),
    *[("hutchinson_trace", dict(num_probes=bad),
       "num_probes must be an int >= 1") for bad in [0, -1, 2.5, True, None]],
    *[(name, dict(num_probes=0), "num_probes must be an int >= 1, got 0")
      for name in ["hessian_moments", "spectral_density",
                   "hutchinson_diagonal"]],
    ("hessian_moments", dict(max_order=0),
     "max_order must be an int >= 1, got 0"),
    ("top_eigenvalue", dict(num_iters=0),
     "num_iters must be an int >= 1, got 0"),
    ("top_eigenvalue", dict(tol=-1.0), "tol must be >= 0, got -1"),
    ("lanczos", dict(num_steps=0), "num_steps must be an int >= 1, got 0"),
    ("top_eigenvalues", dict(k=11),
     r"k must be <= min\(num_steps, d\) = min\(30, 10\) = 10, got 11"),
    ("top_eigenvalues", dict(k=0), "k must be an int >= 1, got 0"),
    ("spectral_density", dict(sigma=0.0), "sigma must be > 0, got 0"),
    ("spectral_density", dict(num_points=1), "num_points must be an int >= 2"),
    ("spectral_density", dict(grid=jnp.zeros((2, 2))),
     r"grid must be a 1-D array of points, got shape \(2, 2\)"),
])
def test_bad_arguments_raise_value_errors(name, kwargs, match):
  with pytest.raises(ValueError, match=match):
    getattr(cv, name)(quadratic(SPD), PARAMS, KEY, **kwargs)


def test_public_names():
  for name in cv.__all__:
    assert getattr(fs.flatness, name) is getattr(cv, name)
    assert name in fs.flatness.__all__


# ~19 s at -O0: unroll is a compile-time option, checked in test-all
@pytest.mark.slow
def test_unrolled_loops_give_the_same_estimates():
  w = {"a": jnp.asarray([0.3, -1.2, 0.7]), "b": jnp.asarray([[0.5, 2.0]])}

  def f(p):
    return jnp.sum(p["a"] ** 4) + jnp.sum(jnp.sin(p["b"])) * jnp.sum(p["a"])

  key = jax.random.PRNGKey(3)
  for unroll in (2, True):
    np.testing.assert_allclose(
        fs.flatness.hutchinson_trace(f, w, key, num_probes=4, unroll=unroll),
        fs.flatness.hutchinson_trace(f, w, key, num_probes=4), rtol=1e-6)
    np.testing.assert_allclose(
        fs.flatness.hessian_moments(f, w, key, num_probes=3, unroll=unroll),
        fs.flatness.hessian_moments(f, w, key, num_probes=3), rtol=1e-6)
    np.testing.assert_allclose(
        fs.flatness.top_eigenvalue(f, w, key, num_iters=6, unroll=unroll)[0],
        fs.flatness.top_eigenvalue(f, w, key, num_iters=6)[0], rtol=1e-6)
    np.testing.assert_allclose(
        fs.flatness.top_eigenvalues(f, w, key, k=2, num_steps=4,
                                    unroll=unroll),
        fs.flatness.top_eigenvalues(f, w, key, k=2, num_steps=4), rtol=1e-5)
    diag = fs.flatness.hutchinson_diagonal(f, w, key, num_probes=2,
                                           unroll=unroll)
    ref = fs.flatness.hutchinson_diagonal(f, w, key, num_probes=2)
    for x, y in zip(jax.tree.leaves(diag), jax.tree.leaves(ref)):
      np.testing.assert_allclose(x, y, rtol=1e-6)
