"""SparseGPT: one-shot pruning of one matrix with second-order compensation.

For a Flax kernel ``W`` of shape ``(in, out)`` (``y = x @ W``) and the
Hessian ``H = 2 X^T X / n`` of the layer's squared error
(``flatsparse.oneshot.statistics.hessian``), SparseGPT removes weights and
updates the remaining ones of every output unit ``j`` (a column ``W[:, j]``)
to keep ``X W[:, j]`` close, processing the **input features** in order. An
input feature is a **row** ``W[i]`` of the Flax kernel (a column of the
PyTorch weight ``W.T``, which the paper and its code index). In order:

1. Dead inputs (``H_ii = 0``: never active) get ``H_ii = 1`` and their
   weights are zeroed.
2. Dampening: ``H <- H + lambda * mean(diag H) * I``.
3. ``U``: the upper Cholesky factor of ``H^-1`` (``H^-1 = U^T U``).
4. For each block of ``block_size`` input rows ``B``:

   * unstructured (``'layer'``): the mask of the block is chosen jointly over
     all its rows and outputs, keeping the largest ``w_ij^2 / U_ii^2``
     (exactly ``round(s * |B| * out)`` pruned per block);
   * then row by row, ``i`` in ``B``::

       N:M only, when i % m == 0: keep the n largest w^2 / U^2 of rows
           i..i+m-1 of every output (on the weights updated so far)
       q_i   = w_i * mask_i
       err_i = (w_i - q_i) / U_ii
       w_k  <- w_k - U_ik * err_i           for the later rows k of B
       W[i]  = q_i

   * then every later row at once (the lazy batched update)::

       W[later] <- W[later] - U[B, later]^T @ Err_B

The row loop runs as a ``lax.fori_loop`` over groups of rows (``m`` rows for
N:M), each group updating only its own rows step by step and the rest of
the block by one rank-``g`` product: the same arithmetic as the reference's
one-row updates, summed in a different order. Blocks are one ``lax.scan``
(one compilation per shape; a last, shorter block is padded with inputs of
``U_ii = 1`` and zero weight that no count includes). ``U`` comes from one
Cholesky factorization of the reversed ``H`` and one triangular inverse
(``P chol(P H P)^-1 P``, ``P`` the reversal): the factor the reference
gets from a Cholesky factorization, an inverse and a second factorization,
at less than half their cost.

Arithmetic is in the kernel's (and Hessian's) dtype promoted to at least
float32 (float64 stays float64; the reference runs float32 only), products
at ``HIGHEST`` precision; the result has the kernel's dtype. The result is
invariant to the scale of ``H`` (the dampening is relative): dividing by the
number of tokens or of sequences gives the same weights.

``ties``: ``'exact'`` prunes exactly ``round(s * size)`` weights of each
block (ties broken by flat index in the block, lower kept);
``'reference'`` reproduces the reference code's rule ``score <= t`` with
``t`` the ``(int(s * size) + 1)``-th smallest score, which prunes
``int(s * size) + 1`` weights (one more than ``round(s * size)`` unless the
fraction of ``s * size`` is at least 1/2, e.g. whenever ``s * size`` is an
integer; 1 per block even at ``s = 0``) plus every tie of ``t``. N:M masks
have exact counts either way. N counts the kept weights: ``'1:4'`` keeps 1
of 4 (the reference's ``prunen`` counts the pruned ones).

The returned mask is the selection (True where kept); a dead input's
weights are zero even where the mask keeps them (only when a block has more
dead weights than its pruning budget).

References:
  Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately
  Pruned in One-Shot", ICML 2023 (Algorithm 1).
  Hassibi & Stork, "Second order derivatives for network pruning: Optimal
  Brain Surgeon", NeurIPS 1992.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from flatsparse import validation
from flatsparse.oneshot import pattern as pattern_lib
from flatsparse.sparsity import masks

__all__ = ["TIES", "sparsegpt_prune", "inverse_cholesky_upper"]

Array = jax.Array
TIES = ("exact", "reference")
_HIGHEST = jax.lax.Precision.HIGHEST


def sparsegpt_prune(kernel: Array, hessian: Array,
                    pattern: pattern_lib.Pattern, *, block_size: int = 128,
                    dampening: float = 0.01,
                    ties: str = "exact") -> tuple[Array, Array]:
  """Prunes an ``(in, out)`` kernel with SparseGPT's compensation.

  Args:
    kernel: the Flax kernel ``W``, ``(in, out)``.
    hessian: ``H``, ``(in, in)``, e.g. ``statistics.hessian(stats)``.
    pattern: ``'layer'`` (unstructured, joint per block) or ``'N:M'`` (along
      the input axis), from ``flatsparse.oneshot.pattern.parse_pattern``.
    block_size: input rows per block (the lazy-update width; a multiple of
      ``m`` for N:M).
    dampening: ``lambda`` of ``H + lambda * mean(diag H) * I``, >= 0.
    ties: ``'exact'`` counts or the reference's ``'reference'`` threshold
      (unstructured only; see the module docstring).

  Returns:
    ``(W', mask)``: the pruned and updated kernel in ``W``'s dtype (exact
    zeros where pruned) and the bool mask (True where kept).

  Raises:
    ValueError: before any work, for a kernel the pattern does not fit, an
      unsupported scope, a Hessian whose size is not the kernel's input
      width, a block size that is not a multiple of ``m``, a negative
      dampening or unknown ``ties``.
  """
  shape = tuple(jnp.shape(kernel))
  pattern.check(shape)
  pattern.require(("layer", "N:M"), "sparsegpt_prune")
  h_shape = tuple(jnp.shape(hessian))
  if h_shape != (shape[0], shape[0]):
    raise ValueError(
        f"hessian of shape {h_shape} does not fit a kernel of shape {shape}: "
        f"it must be ({shape[0]}, {shape[0]}), one row per input feature "
        f"(the kernel's first axis).")
  block_size = validation.check_count("block_size", block_size)
  if pattern.kind == "N:M" and block_size % pattern.m:
    raise ValueError(
        f"block_size {block_size} must be a multiple of m={pattern.m} for "
        f"N:M {pattern.n}:{pattern.m} (groups must not straddle blocks).")
  validation.check("dampening", dampening,
                   lambda v: v >= 0 and math.isfinite(v), "finite and >= 0")
  validation.check_choice("ties", ties, TIES)
  kernel, hessian = jnp.asarray(kernel), jnp.asarray(hessian)
  dtype = functools.reduce(jnp.promote_types,
                           (kernel.dtype, hessian.dtype, jnp.float32))
  block = min(block_size, shape[0])
  counts = _block_counts(pattern, shape[0], shape[1], block, ties)
  # Casts outside the compiled solver: one program per working dtype.
  pruned, mask = _sparsegpt(kernel.astype(dtype), hessian.astype(dtype),
                            dampening, counts, ties == "reference",
                            pattern.structure, block)
  return pruned.astype(kernel.dtype), mask


def inverse_cholesky_upper(h: Array) -> Array:
  """The upper Cholesky factor ``U`` of ``h^-1`` (``h^-1 = U^T U``).

  With ``P`` the index reversal, ``P h P = L L^T`` gives ``h^-1 = (P L^-1
  P)^T (P L^-1 P)`` and ``P L^-1 P`` is upper triangular with a positive
  diagonal: the factor, from one Cholesky factorization and one triangular
  inverse, without forming ``h^-1``.

  Args:
    h: a symmetric positive definite matrix (its upper triangle is read).

  Returns:
    ``U`` (NaN where ``h`` is not positive definite).
  """
  # Reads one triangle: h is symmetric (a Gram matrix plus a diagonal).
  lower = jax.lax.linalg.cholesky(h[::-1, ::-1], symmetrize_input=False)
  eye = jnp.eye(h.shape[0], dtype=lower.dtype)
  inverse = jax.scipy.linalg.solve_triangular(lower, eye, lower=True)
  return jnp.triu(inverse[::-1, ::-1])


def _block_counts(pattern: pattern_lib.Pattern, rows: int, out: int,
                  block: int, ties: str) -> np.ndarray:
  """Entries kept per (padded) block for the joint top-k.

  Padding entries score +inf and are always kept. For ``'reference'`` the
  top-k leaves out the ``int(s * size) + 1`` smallest scores, the largest
  of which is the reference's threshold.
  """
  counts = []
  for start in range(0, rows, block):
    real = min(block, rows - start) * out
    if pattern.kind == "N:M":
      pruned = 0  # unused: N:M masks are chosen group by group
    elif ties == "exact":
      pruned = pattern.num_pruned(real)
    else:
      pruned = min(int(real * pattern.sparsity) + 1, real)
    counts.append(block * out - pruned)
  return np.asarray(counts, np.int32)


# Counts (hence the sparsity), the tie rule and the dampening are traced:
# one compilation per shape, dtype, structure and block size.
@functools.partial(jax.jit, static_argnums=(5, 6))
def _sparsegpt(w: Array, h: Array, dampening: Array | float, counts: Array,
               reference_ties: Array | bool, structure: masks.Structure,
               block: int) -> tuple[Array, Array]:
  rows, out = w.shape
  dtype = w.dtype
  n_m = isinstance(structure, masks.NM)
  diag = jnp.diagonal(h)
  dead = diag == 0
  w = jnp.where(dead[:, None], jnp.zeros_like(w), w)
  diag = jnp.where(dead, jnp.ones_like(diag), diag)
  damp = jnp.asarray(dampening, dtype) * jnp.mean(diag)
  h = h + jnp.diag(jnp.where(dead, 1.0, 0.0).astype(dtype) + damp)
  u = inverse_cholesky_upper(h)

  num_blocks = -(-rows // block)
  padded = num_blocks * block
  pad = padded - rows
  # Padding inputs: zero weights, U = I there (no coupling to real inputs).
  w = jnp.pad(w, ((0, pad), (0, 0)))
  u = jnp.pad(u, ((0, pad), (0, pad)))
  u = u + jnp.diag(jnp.arange(padded) >= rows).astype(dtype)
  group = structure.m if n_m else math.gcd(block, 8)

  def prune_block(w, xs):
    index, count = xs
    start = index * block
    w1 = jax.lax.dynamic_slice_in_dim(w, start, block, 0)
    u_rows = jax.lax.dynamic_slice_in_dim(u, start, block, 0)
    u1 = jax.lax.dynamic_slice_in_dim(u_rows, start, block, 1)
    inv_d2 = 1.0 / jnp.square(jnp.diagonal(u1))
    if n_m:
      keep1 = jnp.zeros(w1.shape, bool)
    else:
      real = (start + jnp.arange(block)) < rows
      scores = jnp.where(real[:, None], jnp.square(w1) * inv_d2[:, None],
                         jnp.inf)
      keep1 = masks.topk_mask(scores, count)
      # The reference prunes every score <= the largest one not kept.
      threshold = jnp.max(jnp.where(keep1, -jnp.inf, scores))
      keep1 = jnp.where(reference_ties, scores > threshold, keep1)

    def prune_group(g, carry):
      w1, q1, err1, keep1 = carry
      first = g * group
      wg = jax.lax.dynamic_slice_in_dim(w1, first, group, 0)
      ug_rows = jax.lax.dynamic_slice_in_dim(u1, first, group, 0)
      ug = jax.lax.dynamic_slice_in_dim(ug_rows, first, group, 1)
      if n_m:
        inv = jax.lax.dynamic_slice_in_dim(inv_d2, first, group)
        keep_g = structure.mask(jnp.square(wg) * inv[:, None],
                                structure.fixed_sparsity())
      else:
        keep_g = jax.lax.dynamic_slice_in_dim(keep1, first, group, 0)
      qs, errs = [], []
      for t in range(group):  # one input row at a time, within the group
        row = wg[t]
        q = jnp.where(keep_g[t], row, jnp.zeros_like(row))
        err = (row - q) / ug[t, t]
        # U is upper triangular: rows before t get U_tk = 0.
        wg = wg - ug[t][:, None] * err[None, :]
        qs.append(q)
        errs.append(err)
      err_g = jnp.stack(errs)
      # The group's errors reach the later rows of the block at once (its
      # own rows are final in q1, so their update is harmless).
      w1 = w1 - jnp.matmul(ug_rows.T, err_g, precision=_HIGHEST)
      q1 = jax.lax.dynamic_update_slice_in_dim(q1, jnp.stack(qs), first, 0)
      err1 = jax.lax.dynamic_update_slice_in_dim(err1, err_g, first, 0)
      keep1 = jax.lax.dynamic_update_slice_in_dim(keep1, keep_g, first, 0)
      return w1, q1, err1, keep1

    zeros = jnp.zeros_like(w1)
    _, q1, err1, keep1 = jax.lax.fori_loop(
        0, block // group, prune_group, (w1, zeros, zeros, keep1))
    # Lazy update of every later input (U_ik = 0 for the earlier ones).
    w = w - jnp.matmul(u_rows.T, err1, precision=_HIGHEST)
    return w, (q1, keep1)

  _, (q, keep) = jax.lax.scan(
      prune_block, w, (jnp.arange(num_blocks), counts))
  return q.reshape(padded, out)[:rows], keep.reshape(padded, out)[:rows]
