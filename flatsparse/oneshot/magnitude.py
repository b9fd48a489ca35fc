"""One-shot magnitude pruning of one matrix: keep the largest ``|W_ij|``.

The baseline of the one-shot solvers: no calibration data, no weight
update. ``mask = Pattern.mask(|W|)`` with exact counts (``round(s * size)``
pruned per matrix for ``'layer'``, per output unit for ``'row'``; ``n`` kept
of every ``m`` inputs for ``'N:M'``), and ``W' = W * mask``.

The reference code prunes ``int(s * size)`` entries and every tie of the
threshold (``|W| <= t``), and its N:M groups count the pruned entries; here
counts are exact and ``N`` is the number kept (``flatsparse.oneshot.
pattern``).

References:
  Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning
  for model compression", 2017 (magnitude pruning).
  Sun, Liu, Bair & Kolter, "A Simple and Effective Pruning Approach for Large
  Language Models" (Wanda), ICLR 2024 (the magnitude baseline of LLMs).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from flatsparse.oneshot import pattern as pattern_lib
from flatsparse.sparsity import masks

__all__ = ["magnitude_prune"]

Array = jax.Array


def magnitude_prune(kernel: Array,
                    pattern: pattern_lib.Pattern) -> tuple[Array, Array]:
  """Prunes the smallest-magnitude weights of an ``(in, out)`` kernel.

  Args:
    kernel: the Flax kernel ``W``, ``(in, out)``.
    pattern: from ``flatsparse.oneshot.pattern.parse_pattern``.

  Returns:
    ``(W * mask, mask)``: the pruned kernel in ``W``'s dtype and the bool
    mask (True where kept).

  Raises:
    ValueError: for a kernel the pattern does not fit (checked before any
      work).
  """
  pattern.check(jnp.shape(kernel))
  return _magnitude_prune(jnp.asarray(kernel), pattern.sparsity, pattern.kind,
                          pattern.structure)


# The sparsity is traced: a sweep over sparsities compiles once per shape.
@functools.partial(jax.jit, static_argnums=(2, 3))
def _magnitude_prune(kernel: Array, sparsity: Array, kind: str,
                     structure: masks.Structure
                     ) -> tuple[Array, Array]:
  mask = pattern_lib.Pattern(kind, sparsity, structure).mask(jnp.abs(kernel))
  return jnp.where(mask, kernel, jnp.zeros_like(kernel)), mask
