"""Wanda: prune by weight magnitude times input norm, per output unit.

For a Flax kernel ``W`` of shape ``(in, out)`` (``y = x @ W``) and
calibration inputs ``X`` (tokens x ``in``), the score of weight ``(i, j)``
(input ``i``, output ``j``) is::

    S_ij = |W_ij| * ||X_i||_2,      ||X_i||_2^2 = sum_t x_ti^2

and each **output unit** (a column ``W[:, j]`` of the Flax kernel, a row of
the PyTorch weight ``W.T``) keeps its ``in - round(s * in)`` largest scores:
scope ``'row'``, Wanda's choice. Scope ``'layer'`` compares over the whole
matrix (the paper's ablation) and ``'N:M'`` keeps ``n`` of every ``m``
consecutive inputs of each output. No weight is updated:
``W' = W * mask``.

Differences from the reference code: exact counts (it prunes
``int(s * in)`` per output), ties keep the lower input index (its stable
sort prunes it), and N:M counts kept weights (``'1:4'`` keeps 1 of 4; its
``prune_n`` counts the pruned ones). Its norms are averaged over sequences,
a factor that does not change any comparison.

References:
  Sun, Liu, Bair & Kolter, "A Simple and Effective Pruning Approach for Large
  Language Models" (Wanda), ICLR 2024.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from flatsparse.oneshot import pattern as pattern_lib
from flatsparse.sparsity import masks

__all__ = ["wanda_scores", "wanda_prune"]

Array = jax.Array


def wanda_scores(kernel: Array, sq_norms: Array) -> Array:
  """``S_ij = |W_ij| * ||X_i||_2`` for an ``(in, out)`` kernel, in float32+.

  Args:
    kernel: the Flax kernel ``W``, ``(in, out)``.
    sq_norms: ``||X_i||^2`` per input feature, ``(in,)``
      (``LayerStatistics.sq_norms``).

  Returns:
    The scores, ``(in, out)``, in the kernel's dtype promoted to at least
    float32.

  Raises:
    ValueError: if ``sq_norms`` does not have one entry per input (row).
  """
  _check_norms(jnp.shape(kernel), jnp.shape(sq_norms))
  dtype = jnp.promote_types(jnp.result_type(kernel, sq_norms), jnp.float32)
  norms = jnp.sqrt(jnp.asarray(sq_norms, dtype))
  return jnp.abs(jnp.asarray(kernel, dtype)) * norms[:, None]


def wanda_prune(kernel: Array, sq_norms: Array,
                pattern: pattern_lib.Pattern) -> tuple[Array, Array]:
  """Prunes the lowest Wanda scores of an ``(in, out)`` kernel.

  Args:
    kernel: the Flax kernel ``W``, ``(in, out)``.
    sq_norms: ``||X_i||^2`` per input feature, ``(in,)``.
    pattern: ``parse_pattern(s, 'row')`` for Wanda (each output unit keeps
      its own count), ``'layer'`` for one count per matrix, or ``'N:M'``.

  Returns:
    ``(W * mask, mask)``: the pruned kernel in ``W``'s dtype and the bool
    mask (True where kept).

  Raises:
    ValueError: for a kernel the pattern does not fit or norms of the wrong
      length (checked before any work).
  """
  pattern.check(jnp.shape(kernel))
  _check_norms(jnp.shape(kernel), jnp.shape(sq_norms))
  return _wanda_prune(jnp.asarray(kernel), jnp.asarray(sq_norms),
                      pattern.sparsity, pattern.kind, pattern.structure)


# The sparsity is traced: a sweep over sparsities compiles once per shape.
@functools.partial(jax.jit, static_argnums=(3, 4))
def _wanda_prune(kernel: Array, sq_norms: Array, sparsity: Array, kind: str,
                 structure: masks.Structure) -> tuple[Array, Array]:
  scores = wanda_scores(kernel, sq_norms)
  mask = pattern_lib.Pattern(kind, sparsity, structure).mask(scores)
  return jnp.where(mask, kernel, jnp.zeros_like(kernel)), mask


def _check_norms(kernel_shape: tuple[int, ...],
                 norms_shape: tuple[int, ...]) -> None:
  if len(kernel_shape) != 2 or tuple(norms_shape) != kernel_shape[:1]:
    raise ValueError(
        f"sq_norms of shape {tuple(norms_shape)} do not fit a kernel of shape "
        f"{tuple(kernel_shape)}: one entry per input feature (the kernel's "
        f"first axis, ({kernel_shape[0] if kernel_shape else '?'},)) is "
        f"needed.")
