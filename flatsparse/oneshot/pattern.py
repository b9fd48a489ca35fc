"""Which weights of one matrix compete for the kept budget (one-shot pruning).

A one-shot solver prunes one Flax kernel ``W`` of shape ``(in, out)`` (``y =
x @ W``) at a time. Its :class:`Pattern` says which entries are compared:

* ``'layer'``: unstructured, the whole matrix (SparseGPT: each block of input
  rows, see ``flatsparse.oneshot.sparsegpt``); exactly ``round(s * size)``
  entries are pruned.
* ``'row'``: unstructured, each output unit (a **column** ``W[:, j]`` of the
  Flax kernel: all the inputs of one output, Wanda's comparison group, a row
  of the PyTorch weight); each loses exactly ``round(s * in)`` entries.
* ``'N:M'``: in every group of ``M`` consecutive input features of one output
  unit (along the input axis, -2), ``N`` entries are **kept**.

**N counts the kept weights** (the convention of ``masks.NM`` and of the
whole library): ``'1:4'`` keeps 1 of every 4 (75% sparsity), ``'2:4'`` keeps
2 (50%). The SparseGPT and Wanda reference code count ``prunen`` as the
pruned ones; the two agree only where ``N = M/2`` (``2:4``, ``4:8``).

The pattern is parsed once, on the host, by :func:`parse_pattern` (built on
``flatsparse.sparsity.spec.parse_scope``), and :meth:`Pattern.check` checks
a kernel's shape before any work. Patterns are hashable (a static argument
of ``jax.jit``); the solvers trace the sparsity, so one compilation per
kernel shape serves every sparsity.

References:
  Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately
  Pruned in One-Shot", ICML 2023.
  Sun, Liu, Bair & Kolter, "A Simple and Effective Pruning Approach for Large
  Language Models" (Wanda), ICLR 2024.
"""

from __future__ import annotations

from collections.abc import Iterable
import math
from typing import Any, NamedTuple

import jax
import numpy as np

from flatsparse.sparsity import masks
from flatsparse.sparsity import spec

__all__ = ["SCOPES", "Pattern", "parse_pattern"]

Array = jax.Array
# The scopes a one-shot solver may support (spec.SCOPES names).
SCOPES = ("layer", "row", "N:M")


class Pattern(NamedTuple):
  """A parsed pruning pattern of one ``(in, out)`` kernel.

  Attributes:
    kind: ``'layer'``, ``'row'`` or ``'N:M'``.
    sparsity: the fraction of entries pruned, in ``[0, 1)`` (``1 - n/m`` for
      N:M).
    structure: ``masks.Unstructured()`` or ``masks.NM(n, m, axis=-2)`` (``n``
      kept of every ``m`` inputs).
  """

  kind: str
  sparsity: float
  structure: masks.Structure

  @property
  def n(self) -> int | None:
    """Entries kept per N:M group (None for unstructured patterns)."""
    return self.structure.n if self.kind == "N:M" else None

  @property
  def m(self) -> int | None:
    """The N:M group size along the input axis (None for unstructured)."""
    return self.structure.m if self.kind == "N:M" else None

  def check(self, kernel_shape: tuple[int, ...],
            path: str = "kernel") -> None:
    """Raises unless a kernel of ``kernel_shape`` can take this pattern.

    Args:
      kernel_shape: the shape of the Flax kernel, ``(in, out)``.
      path: the kernel's path, for the message.

    Raises:
      ValueError: for a kernel that is not 2-d or has an empty axis, or an
        N:M pattern whose ``m`` does not divide the input width.
    """
    shape = tuple(kernel_shape)
    if len(shape) != 2 or min(shape) < 1:
      raise ValueError(
          f"{path!r}: one-shot solvers prune 2-d (in, out) kernels, got "
          f"shape {shape}; reshape a DenseGeneral kernel to "
          f"(in_features, -1) first.")
    self.structure.check(shape, path)

  def num_pruned(self, size: int) -> int:
    """``round(s * size)``: entries an unstructured budget of ``size`` prunes.

    The rule of ``masks.num_to_keep`` (float32 product, round half to
    even), on the host.
    """
    product = np.float32(self.sparsity) * np.float32(size)
    return int(np.round(product))

  def mask(self, scores: Array) -> Array:
    """Keeps the largest of an ``(in, out)`` array of scores, exactly.

    ``'layer'``: ``size - round(s * size)`` of the whole array; ``'row'``:
    ``in - round(s * in)`` of every column (output unit); ``'N:M'``: ``n`` of
    every ``m`` consecutive inputs of every output. Ties keep the lower
    index (flat index; the input index within a column or group).
    Jit-able, also with a traced :attr:`sparsity` (the solvers trace it: one
    compilation per shape serves every sparsity).

    Args:
      scores: ``(in, out)``, larger is more important.

    Returns:
      The bool mask, True where kept.
    """
    if self.kind == "N:M":
      return self.structure.mask(scores, self.structure.fixed_sparsity())
    if self.kind == "row":
      keep = masks.num_to_keep(scores.shape[0], self.sparsity)
      # topk_mask_rows compares within rows: an output unit is a column.
      return masks.topk_mask_rows(scores.T, keep).T
    return masks.topk_mask(scores, masks.num_to_keep(scores.size,
                                                     self.sparsity))

  def require(self, kinds: Iterable[str], owner: str) -> None:
    """Raises unless this pattern's kind is one of ``kinds``."""
    kinds = tuple(kinds)
    if self.kind not in kinds:
      raise ValueError(
          f"scope {self.kind!r} is not supported by {owner}; allowed: "
          f"{spec.describe(kinds)}.")


def parse_pattern(sparsity: Any = None, scope: Any = "layer", *,
                  supported: Iterable[str] = SCOPES,
                  owner: str = "one-shot pruning") -> Pattern:
  """Parses and checks a sparsity and a scope, before any work.

  Args:
    sparsity: the fraction pruned, a Python number in ``[0, 1)``; required
      for ``'layer'`` and ``'row'``; for N:M None or ``1 - n/m``.
    scope: ``'layer'``, ``'row'``, an ``'N:M'`` string (``'2:4'``: keep 2 of
      every 4 inputs) or a ``masks.NM`` (its axis must be the input axis).
    supported: the scopes the caller implements (a subset of ``SCOPES``).
    owner: who asks, for the error message.

  Returns:
    The :class:`Pattern`.

  Raises:
    ValueError: naming the bad value and the allowed ones: an unknown or
      unsupported scope, a sparsity outside ``[0, 1)`` or missing, an N:M
      pattern with a different sparsity or on another axis.
  """
  parsed = spec.parse_scope(scope, supported, owner=owner, nm_axis=-2)
  if parsed.kind == "N:M":
    structure = parsed.structure
    if structure.axis not in (-2, 0):
      raise ValueError(
          f"N:M scope {scope!r} must run along the input axis (-2 of an "
          f"(in, out) kernel), got axis {structure.axis}.")
    structure = masks.NM(structure.n, structure.m, axis=-2)
    implied = 1.0 - structure.n / structure.m
    if sparsity is not None and not (
        _is_number(sparsity) and math.isclose(float(sparsity), implied,
                                              abs_tol=1e-9)):
      raise ValueError(
          f"sparsity {sparsity!r} contradicts scope {scope!r} (keeps "
          f"{structure.n} of every {structure.m}: sparsity {implied:g}); "
          f"pass sparsity=None or {implied:g}.")
    return Pattern("N:M", implied, structure)
  if sparsity is None:
    raise ValueError(
        f"scope {parsed.kind!r} needs a sparsity in [0, 1), got None.")
  if not _is_number(sparsity) or not 0.0 <= float(sparsity) < 1.0:
    raise ValueError(
        f"sparsity must be a number in [0, 1), got {sparsity!r}.")
  return Pattern(parsed.kind, float(sparsity), parsed.structure)


def _is_number(value: Any) -> bool:
  try:
    float(value)
  except (TypeError, ValueError):
    return False
  return not isinstance(value, bool)
