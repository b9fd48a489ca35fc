"""Curvature tools: pure, jit-able functions of ``value_fn``, params and a key.

``H`` is the Hessian of ``value_fn`` at ``params`` (``d`` entries in all, any
pytree). No function materialises ``H``; each only multiplies by it.

* :func:`hvp`: Hessian-vector product ``H v`` by forward-over-reverse
  (``jax.jvp`` of ``jax.grad``): one extra pass, no Hessian materialised.
* :func:`hutchinson_diagonal`: ``diag(H) ~ mean_i z_i * (H z_i)`` with
  Rademacher (``z_i = +-1``) or Gaussian probes; unbiased for either.
  :func:`hutchinson_diagonal_from_hvp` is the same estimate for a given
  ``v -> H v`` (same probes, same arithmetic), e.g. the tangent half of
  :func:`grad_and_hvp`, which also returns the gradient of the same pass.
* :func:`hutchinson_trace`: ``tr(H) ~ mean_i z_i^T H z_i`` (same probes as
  :func:`hutchinson_diagonal` for the same key, so it is the diagonal's sum).
* :func:`hessian_moments`: ``tr(H^k) / d ~ mean_i z_i^T H^k z_i / d`` for
  ``k = 1..max_order``, with ``ceil(max_order / 2)`` products per probe
  (``z^T H^(2j) z = |H^j z|^2``, ``z^T H^(2j+1) z = (H^j z)^T H^(j+1) z``).
* :func:`top_eigenvalue`: power iteration ``v <- H v / |H v|`` on the pytree,
  eigenvalue by the Rayleigh quotient ``v^T H v``: the eigenvalue of
  **largest magnitude**, with its sign.
* :func:`lanczos`: ``m`` steps of Lanczos with full reorthogonalisation,
  ``H V_m ~ V_m T_m``, returning the tridiagonal ``T_m``; its eigenvalues
  (Ritz values) give :func:`top_eigenvalues` (algebraically largest) and,
  with the squared first components of its eigenvectors as weights, the
  stochastic Lanczos quadrature estimate :func:`spectral_density`
  ``phi(t) ~ mean_probes sum_j tau_j N(t; theta_j, sigma^2)``.

Precision: products with ``H`` run in the params' dtype (bf16 params give
bf16 products); dot products, norms, the Lanczos basis and every returned
scalar are accumulated in at least float32.

References:
  Pearlmutter, "Fast Exact Multiplication by the Hessian", Neural Comp. 1994.
  Hutchinson, "A stochastic estimator of the trace of the influence matrix",
  1990; Bekas, Kokiopoulou & Saad, "An estimator for the diagonal of a
  matrix", 2007.
  Lanczos, "An iteration method for the solution of the eigenvalue problem of
  linear differential and integral operators", 1950; Golub & Van Loan,
  "Matrix Computations", 4th ed., sec. 10.1 (power method, Lanczos).
  Ubaru, Chen & Saad, "Fast estimation of tr(f(A)) via stochastic Lanczos
  quadrature", SIMAX 2017; Ghorbani, Krishnan & Xiao, "An Investigation into
  Neural Net Optimization via Hessian Eigenvalue Density", ICML 2019;
  Yao et al., "PyHessian: Neural Networks Through the Lens of the Hessian",
  2020.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
import math
import numbers
from typing import Any

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp

from flatsparse.flatness.sam import checked_value_fn

__all__ = [
    "hvp", "grad_and_hvp", "probes", "hutchinson_diagonal",
    "hutchinson_diagonal_from_hvp", "PROBES", "hutchinson_trace",
    "hessian_moments", "top_eigenvalue", "lanczos", "top_eigenvalues",
    "spectral_density",
]

PROBES = ("rademacher", "gaussian")
ValueFn = Callable[[Any], jax.Array]


def hvp(value_fn: ValueFn, params: Any, vector: Any) -> Any:
  """``H(params) @ vector`` for the Hessian of ``value_fn`` (same pytree)."""
  grad_fn = jax.grad(checked_value_fn(value_fn))  # (loss, aux): clear error
  return jax.jvp(grad_fn, (params,), (vector,))[1]


def probes(key: jax.Array, like: Any, kind: str = "rademacher") -> Any:
  """A random probe pytree shaped like ``like`` (entries +-1, or N(0, 1))."""
  if kind not in PROBES:
    raise ValueError(f"Unknown probe {kind!r}; allowed: {', '.join(PROBES)}.")
  leaves, treedef = jax.tree.flatten(like)
  keys = jax.random.split(key, max(len(leaves), 1))
  if kind == "rademacher":
    draw = lambda k, x: jax.random.rademacher(k, x.shape, x.dtype)  # noqa
  else:
    draw = lambda k, x: jax.random.normal(k, x.shape, x.dtype)  # noqa
  return treedef.unflatten([draw(k, x) for k, x in zip(keys, leaves)])


def grad_and_hvp(value_fn: ValueFn, params: Any
                 ) -> tuple[Any, Callable[[Any], Any]]:
  """``(grad f(params), v -> H(params) v)`` from one ``jax.linearize``.

  The gradient is computed now (the primal half of forward-over-reverse);
  the returned linear function holds only the tangent half, so a caller can
  run it inside a ``lax.cond`` branch while the gradient stays outside. The
  residuals of the pass stay live until the function is last called.

  Args:
    value_fn: ``params -> scalar loss``.
    params: where the gradient and the Hessian are taken.

  Returns:
    ``(grads, hvp_fn)``: a pytree like ``params`` and ``v -> H v``.
  """
  return jax.linearize(jax.grad(checked_value_fn(value_fn)), params)


def _hutchinson(hvp_fn: Callable[[Any], Any], like: Any, key: jax.Array,
                num_probes: int, kind: str, unroll: int | bool,
                loop: bool) -> Any:
  """``mean_i z_i * hvp_fn(z_i)``; ``loop=False``: one probe without a loop."""
  if not isinstance(num_probes, int) or num_probes < 1:
    raise ValueError(f"num_probes must be an int >= 1, got {num_probes!r}.")
  if kind not in PROBES:
    raise ValueError(f"Unknown probe {kind!r}; allowed: {', '.join(PROBES)}.")
  keys = jax.random.split(key, num_probes)

  def one(k):
    z = probes(k, like, kind)
    return jax.tree.map(jnp.multiply, z, hvp_fn(z))

  if num_probes == 1 and not loop:
    return one(keys[0])

  def body(total, k):
    return jax.tree.map(jnp.add, total, one(k)), None

  zeros = jax.tree.map(jnp.zeros_like, like)
  total, _ = jax.lax.scan(body, zeros, keys, unroll=unroll)
  return jax.tree.map(lambda t: t / num_probes, total)


def hutchinson_diagonal_from_hvp(hvp_fn: Callable[[Any], Any], like: Any,
                                 key: jax.Array, *, num_probes: int = 1,
                                 kind: str = "rademacher",
                                 unroll: int | bool = 1) -> Any:
  """:func:`hutchinson_diagonal` for a given ``v -> H v``.

  ``mean_i z_i * hvp_fn(z_i)`` with the probes of :func:`hutchinson_diagonal`
  for the same ``key`` (:func:`probes` of each key of
  ``jax.random.split(key, num_probes)``) and the same arithmetic. One probe
  runs without a loop (XLA:CPU runs convolutions inside loop bodies slower
  than at top level); more are summed in a ``lax.scan`` and divided by
  ``num_probes``. :func:`hutchinson_diagonal` runs one probe in a
  ``lax.scan`` too, so for one probe the two agree to float rounding, not
  necessarily bit for bit (XLA fuses a loop body differently).

  Args:
    hvp_fn: ``v -> H v`` for pytrees shaped like ``like``, e.g. the second
      output of :func:`grad_and_hvp`.
    like: a pytree with the shapes and dtypes of the probes (the params).
    key: PRNG key for the probes.
    num_probes: number of probes averaged, a static int >= 1.
    kind: ``'rademacher'`` or ``'gaussian'``.
    unroll: loop iterations unrolled into one body (``True``: all).

  Returns:
    A pytree like ``like``.
  """
  return _hutchinson(hvp_fn, like, key, num_probes, kind, unroll, loop=False)


def hutchinson_diagonal(value_fn: ValueFn, params: Any, key: jax.Array, *,
                        num_probes: int = 1, kind: str = "rademacher",
                        unroll: int | bool = 1) -> Any:
  """Unbiased estimate of ``diag(H)``: ``mean_i z_i * (H z_i)``.

  The estimate of :func:`hutchinson_diagonal_from_hvp` with ``v ->
  hvp(value_fn, params, v)``, every probe count in a ``lax.scan``.

  Args:
    value_fn: ``params -> scalar loss``.
    params: where the Hessian is taken.
    key: PRNG key for the probes.
    num_probes: number of probes averaged, >= 1 (a ``lax.scan``).
    kind: ``'rademacher'`` or ``'gaussian'``.
    unroll: loop iterations unrolled into one body (``True``: all). XLA:CPU
      runs convolutions inside loop bodies ~8x slower than at top level, so
      unroll on CPU for conv nets (compile time grows with it).

  Returns:
    A pytree like ``params``.
  """
  return _hutchinson(functools.partial(hvp, value_fn, params), params, key,
                     num_probes, kind, unroll, loop=True)


# ----------------------------------------------------------------- helpers


def _check_count(name: str, value: Any, minimum: int = 1) -> None:
  """A static Python int >= ``minimum`` (shapes and loop lengths use it)."""
  if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
      or value < minimum):
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")


def _check_kind(kind: str) -> None:
  if kind not in PROBES:
    raise ValueError(f"Unknown probe {kind!r}; allowed: {', '.join(PROBES)}.")


def _check_positive(name: str, value: Any, *, strict: bool) -> None:
  """Checks a float when it is concrete (it may be traced under jit)."""
  try:
    v = float(value)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return
  if not (v > 0 if strict else v >= 0):  # also rejects nan
    raise ValueError(
        f"{name} must be {'>' if strict else '>='} 0, got {value!r}.")


def _acc_dtype(tree: Any) -> Any:
  """Accumulation dtype: the params' float dtype promoted to >= float32."""
  return jnp.result_type(jnp.float32,
                         *(jnp.result_type(x) for x in jax.tree.leaves(tree)))


def _size(tree: Any) -> int:
  """Static number of entries ``d`` of a pytree."""
  return sum(math.prod(jnp.shape(x)) for x in jax.tree.leaves(tree))


def _vdot(a: Any, b: Any, dtype: Any) -> jax.Array:
  """``sum_leaves <a, b>`` accumulated in ``dtype``."""
  parts = [jnp.sum(x.astype(dtype) * y.astype(dtype))
           for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
  return sum(parts, jnp.zeros([], dtype))


def _tridiagonal(alphas: jax.Array, betas: jax.Array) -> jax.Array:
  """Dense symmetric ``T``: diagonal ``alphas``, off-diagonals ``betas``."""
  t = jnp.diag(alphas)
  if betas.shape[0]:
    t = t + jnp.diag(betas, 1) + jnp.diag(betas, -1)
  return t


# -------------------------------------------------------------- estimators


def hutchinson_trace(value_fn: ValueFn, params: Any, key: jax.Array, *,
                     num_probes: int = 10, kind: str = "rademacher",
                     unroll: int | bool = 1) -> jax.Array:
  """Unbiased estimate of ``tr(H) ~ (1/n) sum_i z_i^T H z_i``.

  ``E[z z^T] = I`` for both probe kinds, so ``E[z^T H z] = tr(H)``. The
  variance of one probe is ``2 sum_{i != j} H_ij^2`` (Rademacher: exact on a
  diagonal ``H`` with one probe) or ``2 |H|_F^2`` (Gaussian). With the same
  key the probes are those of :func:`hutchinson_diagonal`, so the trace is
  the sum of that diagonal.

  Args:
    value_fn: ``params -> scalar loss``.
    params: where the Hessian is taken (any pytree).
    key: PRNG key for the probes.
    num_probes: number ``n`` of probes averaged, an int >= 1 (a
      ``lax.scan``: one Hessian-vector product each).
    kind: ``'rademacher'`` or ``'gaussian'``.
    unroll: loop iterations unrolled into one body (``True``: all). XLA:CPU
      runs convolutions inside loop bodies ~8x slower than at top level, so
      unroll on CPU for conv nets (compile time grows with it).

  Returns:
    A scalar (float32, or the params' dtype if wider).

  References:
    Hutchinson, "A stochastic estimator of the trace of the influence matrix
    for Laplacian smoothing splines", 1990.
  """
  _check_count("num_probes", num_probes)
  _check_kind(kind)
  acc = _acc_dtype(params)

  def one(total, k):
    z = probes(k, params, kind)
    return total + _vdot(z, hvp(value_fn, params, z), acc), None

  total, _ = jax.lax.scan(one, jnp.zeros([], acc),
                          jax.random.split(key, num_probes), unroll=unroll)
  return total / num_probes


def hessian_moments(value_fn: ValueFn, params: Any, key: jax.Array, *,
                    max_order: int = 4, num_probes: int = 10,
                    kind: str = "rademacher",
                    unroll: int | bool = 1) -> jax.Array:
  """Normalised moments ``m_k = tr(H^k) / d`` for ``k = 1..max_order``.

  Hutchinson on powers of ``H``, ``m_k ~ (1/(n d)) sum_i z_i^T H^k z_i``,
  with ``u_j = H^j z`` and ``z^T H^k z = u_j^T u_(k-j)``, ``j = floor(k/2)``:
  ``ceil(max_order / 2)`` Hessian-vector products per probe. ``m_1`` is the
  mean eigenvalue, ``m_2`` the mean squared eigenvalue (``|H|_F^2 / d``);
  with the same key and kind, ``m_1 = hutchinson_trace / d``.

  Args:
    value_fn: ``params -> scalar loss``.
    params: where the Hessian is taken (any pytree, ``d`` entries in all).
    key: PRNG key for the probes.
    max_order: highest power ``K``, an int >= 1 (the products are unrolled,
      so keep it small).
    num_probes: number ``n`` of probes, an int >= 1 (a ``lax.scan``).
    kind: ``'rademacher'`` or ``'gaussian'``.
    unroll: loop iterations unrolled into one body (``True``: all). XLA:CPU
      runs convolutions inside loop bodies ~8x slower than at top level, so
      unroll on CPU for conv nets (compile time grows with it).

  Returns:
    A ``[max_order]`` array ``[m_1, ..., m_K]`` (float32 or wider).

  References:
    Hutchinson, 1990 (above); Ubaru, Chen & Saad, SIMAX 2017.
  """
  _check_count("max_order", max_order)
  _check_count("num_probes", num_probes)
  _check_kind(kind)
  acc = _acc_dtype(params)
  half = (max_order + 1) // 2

  def one(total, k):
    us = [probes(k, params, kind)]
    for _ in range(half):
      us.append(hvp(value_fn, params, us[-1]))
    moments = [_vdot(us[order // 2], us[order - order // 2], acc)
               for order in range(1, max_order + 1)]
    return total + jnp.stack(moments), None

  total, _ = jax.lax.scan(one, jnp.zeros([max_order], acc),
                          jax.random.split(key, num_probes), unroll=unroll)
  return total / (num_probes * max(_size(params), 1))


# ---------------------------------------------------------- eigenvalues


def top_eigenvalue(value_fn: ValueFn, params: Any, key: jax.Array, *,
                   num_iters: int = 20, tol: float | None = None,
                   unroll: int | bool = 1) -> tuple[jax.Array, Any]:
  """Largest-magnitude eigenvalue of ``H`` and its eigenvector (power method).

  From a random Gaussian ``v_0`` (unit global norm)::

      v_(t+1) = H v_t / |H v_t|,      lambda_t = v_t^T H v_t

  The iteration converges to the eigenvalue of **largest magnitude** (with its
  sign: a saddle whose most negative eigenvalue dominates gives a negative
  result), the eigenvalue error shrinking like
  ``(|lambda_2| / |lambda_1|)^(2t)``.
  It does not converge when ``lambda`` and ``-lambda`` are both largest; use
  :func:`top_eigenvalues` (Lanczos) for the algebraically largest ones. The
  returned pair is consistent: ``eigenvalue = v^T H v`` for the returned ``v``.

  Args:
    value_fn: ``params -> scalar loss``.
    params: where the Hessian is taken (any pytree).
    key: PRNG key for ``v_0``.
    num_iters: power steps, an int >= 1 (``num_iters + 1`` Hessian-vector
      products; a ``lax.fori_loop``), or the most steps when ``tol`` is set.
    tol: if given (>= 0), stop early (a ``lax.while_loop``) once
      ``|lambda_t - lambda_(t-1)| <= tol * |lambda_t|``.
    unroll: loop iterations unrolled into one body (``True``: all). XLA:CPU
      runs convolutions inside loop bodies ~8x slower than at top level, so
      unroll on CPU for conv nets (compile time grows with it).
      Ignored with ``tol`` (a while loop cannot unroll).

  Returns:
    ``(eigenvalue, eigenvector)``: a scalar (float32 or wider) and a pytree
    like ``params`` of unit global norm.

  References:
    Golub & Van Loan, "Matrix Computations", 4th ed., sec. 8.2.1 (power
    method); Yao et al., "PyHessian", 2020.
  """
  _check_count("num_iters", num_iters)
  if tol is not None:
    _check_positive("tol", tol, strict=False)
  acc = _acc_dtype(params)

  def normalize(w):
    norm = jnp.sqrt(_vdot(w, w, acc))
    safe = jnp.where(norm > 0, norm, 1)
    return jax.tree.map(lambda x: (x.astype(acc) / safe).astype(x.dtype),
                        w), norm

  def step(v, hv):
    new, norm = normalize(hv)
    # H v = 0: v is an eigenvector (eigenvalue 0); keep it.
    v = jax.tree.map(lambda a, b: jnp.where(norm > 0, a, b), new, v)
    hv = hvp(value_fn, params, v)
    return v, hv, _vdot(v, hv, acc)

  v, _ = normalize(probes(key, params, "gaussian"))
  hv = hvp(value_fn, params, v)
  lam = _vdot(v, hv, acc)
  if tol is None:
    v, _, lam = jax.lax.fori_loop(0, num_iters, lambda _, c: step(*c[:2]),
                                  (v, hv, lam), unroll=unroll)
    return lam, v

  def cond(carry):
    i, _, _, lam, prev = carry
    return (i < num_iters) & (jnp.abs(lam - prev) > tol * jnp.abs(lam))

  def body(carry):
    i, v, hv, lam, _ = carry
    v, hv, new = step(v, hv)
    return i + 1, v, hv, new, lam

  _, v, _, lam, _ = jax.lax.while_loop(
      cond, body, (jnp.zeros([], jnp.int32), v, hv, lam,
                   jnp.full([], jnp.inf, acc)))
  return lam, v


def lanczos(value_fn: ValueFn, params: Any, key: jax.Array, *,
            num_steps: int = 30,
            unroll: int | bool = 1) -> tuple[jax.Array, jax.Array]:
  """Lanczos tridiagonalisation of ``H`` with full reorthogonalisation.

  From a random unit ``v_1`` (Gaussian direction), for ``j = 1..m``::

      w       = H v_j - V_j V_j^T H v_j          (Gram-Schmidt, done twice)
      alpha_j = v_j^T H v_j,   beta_j = |w|,   v_(j+1) = w / beta_j

  so that ``V_m^T H V_m = T_m = tridiag(beta, alpha, beta)``. The extreme
  eigenvalues of ``T_m`` (Ritz values) converge fast to those of ``H``; with
  ``m = d`` all of them are exact up to rounding. If the Krylov space becomes
  invariant (``beta_j ~ 0``, e.g. ``H`` with few distinct eigenvalues) the
  iteration restarts from a random vector orthogonal to ``V_j`` with
  ``beta_j = 0``: ``T_m`` splits into blocks whose Ritz values are still
  eigenvalues of ``H`` and whose first eigenvector components are zero.

  Memory: the basis ``V`` is a flat ``[m, d]`` array (``jax.flatten_util``)
  in float32 (or the params' dtype if wider): ``4 m d`` bytes, e.g. 1.2 GB
  for ``d = 10^7`` parameters and 30 steps. Fine for the models of our
  studies; the cost is ``m`` Hessian-vector products plus ``8 m^2 d`` flops
  of reorthogonalisation (four reads of the basis per step: memory-bound on
  CPU, e.g. ~0.5 s for ``d = 5 10^5``, ``m = 30`` on 2 cores).

  Args:
    value_fn: ``params -> scalar loss``.
    params: where the Hessian is taken (any pytree, ``d`` entries in all).
    key: PRNG key for ``v_1`` (and any restart).
    num_steps: Lanczos steps ``m``, an int >= 1, capped at ``d``.
    unroll: loop iterations unrolled into one body (``True``: all). XLA:CPU
      runs convolutions inside loop bodies ~8x slower than at top level, so
      unroll on CPU for conv nets (compile time grows with it).

  Returns:
    ``(alphas, betas)``: ``[m]`` diagonal and ``[m - 1]`` off-diagonal of
    ``T_m`` (float32 or wider), ``m = min(num_steps, d)``.

  References:
    Lanczos, 1950; Golub & Van Loan, "Matrix Computations", 4th ed.,
    sec. 10.1; Ghorbani, Krishnan & Xiao, ICML 2019.
  """
  _check_count("num_steps", num_steps)
  flat, unravel = ravel_pytree(params)
  d = flat.shape[0]
  if d == 0:
    raise ValueError("lanczos needs params with at least one entry, got none.")
  m = min(num_steps, d)
  acc = _acc_dtype(params)
  eps = jnp.finfo(acc).eps

  def matvec(u):
    hv = hvp(value_fn, params, unravel(u.astype(flat.dtype)))
    return jnp.concatenate([x.astype(acc).ravel() for x in jax.tree.leaves(hv)])

  hi = jax.lax.Precision.HIGHEST  # no TF32 / bf16 passes for f32 on GPU/TPU

  def orthogonalize(w, basis):
    for _ in range(2):  # "twice is enough" (Kahan / Parlett)
      w = w - jnp.dot(jnp.dot(basis, w, precision=hi), basis, precision=hi)
    return w

  def unit(w):
    norm = jnp.linalg.norm(w)
    return w / jnp.where(norm > 0, norm, 1)

  key, restart_key = jax.random.split(key)

  def body(j, carry):
    basis, v, alphas, betas, scale = carry
    basis = jax.lax.dynamic_update_index_in_dim(basis, v, j, 0)
    hv = matvec(v)
    alpha = jnp.dot(v, hv, precision=hi)
    w = orthogonalize(hv, basis)
    beta = jnp.linalg.norm(w)
    scale = jnp.maximum(scale, jnp.abs(alpha) + beta)  # ~ |H| seen so far
    broke = beta <= eps * scale
    v = jax.lax.cond(
        broke,
        lambda: unit(orthogonalize(jax.random.normal(
            jax.random.fold_in(restart_key, j), (d,), acc), basis)),
        lambda: w / jnp.where(broke, 1, beta))
    beta = jnp.where(broke, 0, beta)
    return (basis, v, jax.lax.dynamic_update_index_in_dim(alphas, alpha, j, 0),
            jax.lax.dynamic_update_index_in_dim(betas, beta, j, 0), scale)

  init = (jnp.zeros((m, d), acc), unit(jax.random.normal(key, (d,), acc)),
          jnp.zeros([m], acc), jnp.zeros([m], acc), jnp.zeros([], acc))
  _, _, alphas, betas, _ = jax.lax.fori_loop(0, m, body, init, unroll=unroll)
  return alphas, betas[:m - 1]


def top_eigenvalues(value_fn: ValueFn, params: Any, key: jax.Array,
                    k: int = 5, num_steps: int = 30,
                    unroll: int | bool = 1) -> jax.Array:
  """The ``k`` algebraically largest eigenvalues of ``H``, by Lanczos.

  The ``k`` largest Ritz values ``theta_1 >= ... >= theta_k`` of the
  tridiagonal ``T_m`` of :func:`lanczos` (``jnp.linalg.eigh`` of the small
  ``[m, m]`` matrix). Ritz values interlace the spectrum, so ``theta_i <=
  lambda_i`` and the top ones converge first; ``m`` a few times ``k`` is
  usually enough, ``m = d`` is exact. Unlike :func:`top_eigenvalue` the
  order is by value, not magnitude (a large negative eigenvalue is last).

  Args:
    value_fn: ``params -> scalar loss``.
    params: where the Hessian is taken (any pytree, ``d`` entries in all).
    key: PRNG key for the Lanczos start vector.
    k: how many, an int with ``1 <= k <= min(num_steps, d)``.
    num_steps: Lanczos steps ``m``, an int >= 1, capped at ``d``.
    unroll: loop iterations unrolled into one body (``True``: all). XLA:CPU
      runs convolutions inside loop bodies ~8x slower than at top level, so
      unroll on CPU for conv nets (compile time grows with it).

  Returns:
    A ``[k]`` array in descending order (float32 or wider).

  References:
    Golub & Van Loan, "Matrix Computations", 4th ed., sec. 10.1;
    Yao et al., "PyHessian", 2020.
  """
  _check_count("k", k)
  _check_count("num_steps", num_steps)
  m = min(num_steps, _size(params))
  if k > m:
    raise ValueError(
        f"k must be <= min(num_steps, d) = min({num_steps}, "
        f"{_size(params)}) = {m}, got {k!r}.")
  alphas, betas = lanczos(value_fn, params, key, num_steps=num_steps,
                          unroll=unroll)
  return jnp.linalg.eigh(_tridiagonal(alphas, betas))[0][::-1][:k]


def spectral_density(value_fn: ValueFn, params: Any, key: jax.Array, *,
                     num_steps: int = 30, num_probes: int = 1,
                     grid: Any = None, num_points: int = 1000,
                     sigma: float | None = None
                     ) -> tuple[jax.Array, jax.Array]:
  """Eigenvalue density of ``H`` by stochastic Lanczos quadrature (SLQ).

  For each probe, :func:`lanczos` from a random unit vector ``v`` gives
  ``T_m = U diag(theta) U^T``; the Gauss quadrature with nodes ``theta_j``
  (Ritz values) and weights ``tau_j = U_1j^2`` (sum 1) approximates
  ``v^T f(H) v``, whose expectation is ``(1/d) sum_i f(lambda_i)``. With a
  Gaussian kernel ``f = N(t; ., sigma^2)``::

      phi(t) = (1/n) sum_probes sum_j tau_j exp(-(t - theta_j)^2 / (2 sigma^2))
                                            / (sigma sqrt(2 pi))

  ``phi`` integrates to 1 (over a grid that covers ``theta +- 5 sigma``,
  spaced finer than ``sigma``); mass near ``lambda`` estimates the fraction of
  eigenvalues near it.

  Args:
    value_fn: ``params -> scalar loss``.
    params: where the Hessian is taken (any pytree, ``d`` entries in all).
    key: PRNG key for the probes.
    num_steps: Lanczos steps ``m`` per probe, an int >= 1, capped at ``d``.
    num_probes: independent probes ``n`` averaged, an int >= 1 (run one
      after the other with ``lax.map``, so memory stays ``4 m d`` bytes).
    grid: 1-D points ``t`` where ``phi`` is evaluated; default
      ``num_points`` evenly spaced over ``[min theta - 5 sigma,
      max theta + 5 sigma]``.
    num_points: size of the default grid, an int >= 2.
    sigma: kernel width, > 0; default 1% of the width of the Ritz spectrum
      ``max theta - min theta`` (of ``max |theta|`` if that is 0, else 0.01).
      Pass it (and ``grid``) explicitly to resolve a narrow bulk next to
      large outliers.

  Returns:
    ``(grid, density)``: two 1-D arrays of the same length (float32 or
    wider).

  References:
    Ghorbani, Krishnan & Xiao, "An Investigation into Neural Net
    Optimization via Hessian Eigenvalue Density", ICML 2019; Ubaru, Chen &
    Saad, SIMAX 2017; Lin, Saad & Yang, "Approximating spectral densities of
    large matrices", SIAM Review 2016.
  """
  _check_count("num_steps", num_steps)
  _check_count("num_probes", num_probes)
  _check_count("num_points", num_points, minimum=2)
  if sigma is not None:
    _check_positive("sigma", sigma, strict=True)
  if grid is not None and jnp.ndim(grid) != 1:
    raise ValueError(
        f"grid must be a 1-D array of points, got shape {jnp.shape(grid)}.")
  acc = _acc_dtype(params)

  def one(k):
    alphas, betas = lanczos(value_fn, params, k, num_steps=num_steps)
    theta, u = jnp.linalg.eigh(_tridiagonal(alphas, betas))
    return theta, u[0] ** 2

  nodes, weights = jax.lax.map(one, jax.random.split(key, num_probes))
  lo, hi = jnp.min(nodes), jnp.max(nodes)
  if sigma is None:
    width = hi - lo
    width = jnp.where(width > 0, width, jnp.maximum(jnp.abs(lo), jnp.abs(hi)))
    sig = 0.01 * jnp.where(width > 0, width, 1)
  else:
    sig = jnp.asarray(sigma, acc)
  if grid is None:
    grid = jnp.linspace(lo - 5 * sig, hi + 5 * sig, num_points, dtype=acc)
  else:
    grid = jnp.asarray(grid, acc)
  z = (grid[:, None] - nodes.reshape(-1)[None, :]) / sig
  kernel = jnp.exp(-0.5 * z * z) / (sig * math.sqrt(2 * math.pi))
  density = jnp.dot(kernel, weights.reshape(-1),
                    precision=jax.lax.Precision.HIGHEST) / num_probes
  return grid, density
