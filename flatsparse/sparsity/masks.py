"""Exact-count masks without sorting, structured masks, and mask storage.

A mask keeps the ``k`` largest scores of a leaf. Instead of a full sort (what
JaxPruner's ``argsort`` top-k does, 25x a dense step on CPU), the k-th largest
score is found by bisection on its 32-bit pattern: after mapping float32 to an
order-preserving uint32 key, 32 counting passes fix the threshold bit by bit.
Ties at the threshold are broken by flat index (lower index kept first), so every
leaf hits its exact target count, and the result is deterministic.

Structures (which entries are pruned together):

* ``Unstructured()``: any entry.
* ``NM(n, m, axis)``: keep ``n`` of every ``m`` consecutive entries along ``axis``.
* ``Block(shape)``: blocks over the last ``len(shape)`` axes, scored by their sum.
* ``Channel(axis)``: whole slices along ``axis`` (default: the output axis, -1).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = [
    "ordered_key",
    "kth_largest_key",
    "topk_mask",
    "topk_masks_global",
    "num_to_keep",
    "Unstructured",
    "NM",
    "Block",
    "Channel",
    "Structure",
    "parse_structure",
    "MASK_STORAGES",
    "pack_mask",
    "unpack_mask",
]

_SIGN_BIT = np.uint32(0x80000000)


def ordered_key(scores: Array) -> Array:
  """Maps float scores to uint32 keys with the same order (``-0.0 < +0.0``).

  Positive floats order like their bit patterns; negative ones in reverse. So
  flipping all bits of negatives and only the sign bit of positives gives an
  unsigned integer key whose order is the float order. NaN maps above +inf.
  """
  bits = jax.lax.bitcast_convert_type(scores.astype(jnp.float32), jnp.uint32)
  negative = (bits >> 31).astype(bool)
  return jnp.where(negative, ~bits, bits | _SIGN_BIT)


def kth_largest_key(keys: Sequence[Array], k: Array | int) -> Array:
  """Largest key ``t`` with ``#{key >= t} >= k``, over several arrays at once.

  Bisection on the bit pattern: 32 counting passes, no sort. For ``k = 0`` it
  returns the maximum key (so nothing is strictly above it).
  """
  k = jnp.asarray(k, jnp.int32)

  def body(bit, threshold):
    candidate = threshold | (jnp.uint32(1) << (31 - bit).astype(jnp.uint32))
    count = sum(jnp.sum(key >= candidate, dtype=jnp.int32) for key in keys)
    return jnp.where(count >= k, candidate, threshold)

  return jax.lax.fori_loop(0, 32, body, jnp.uint32(0))


def _select_at_threshold(keys: Sequence[Array], k: Array) -> list[Array]:
  """Keeps keys above the threshold, plus the first ties in flat-index order."""
  threshold = kth_largest_key(keys, k)
  above = [key > threshold for key in keys]
  room = k - sum(jnp.sum(a, dtype=jnp.int32) for a in above)
  masks, offset = [], jnp.int32(0)
  for key, a in zip(keys, above):
    tie = (key == threshold).reshape(-1)
    rank = jnp.cumsum(tie, dtype=jnp.int32) + offset  # 1-based rank among ties
    keep_tie = tie & (rank <= room)
    masks.append(a | keep_tie.reshape(key.shape))
    offset = offset + jnp.sum(tie, dtype=jnp.int32)
  return masks


def topk_mask(scores: Array, k: Array | int) -> Array:
  """Boolean mask of the ``k`` largest entries of ``scores`` (exactly ``k``).

  Args:
    scores: any shape, any float dtype (compared in float32).
    k: number of entries to keep; may be traced.

  Returns:
    A bool array shaped like ``scores`` with exactly ``min(k, size)`` True.
  """
  return _select_at_threshold([ordered_key(scores)], jnp.asarray(k, jnp.int32))[0]


def topk_masks_global(scores: Sequence[Array], k: Array | int) -> list[Array]:
  """Masks keeping the ``k`` largest scores across several arrays jointly.

  Counting runs over each array in place: nothing is concatenated. Ties are
  broken by position in the sequence, then flat index.
  """
  keys = [ordered_key(s) for s in scores]
  return _select_at_threshold(keys, jnp.asarray(k, jnp.int32))


def num_to_keep(size: int, sparsity: Array | float) -> Array:
  """Entries to keep for a target sparsity: ``size - round(sparsity * size)``."""
  pruned = jnp.round(jnp.asarray(sparsity, jnp.float32) * size).astype(jnp.int32)
  return jnp.int32(size) - pruned


def _normalize_axis(axis: int, ndim: int, what: str) -> int:
  if not -ndim <= axis < ndim:
    raise ValueError(f"{what}: axis {axis} is out of range for a {ndim}-d leaf.")
  return axis % ndim


@dataclasses.dataclass(frozen=True)
class Unstructured:
  """Any entry may be pruned; exact count per leaf."""

  def check(self, shape: tuple[int, ...], path: str) -> None:
    del shape, path

  def fixed_sparsity(self) -> float | None:
    return None

  def mask(self, scores: Array, sparsity: Array | float) -> Array:
    return topk_mask(scores, num_to_keep(scores.size, sparsity))


@dataclasses.dataclass(frozen=True)
class NM:
  """N:M sparsity: keep ``n`` of every ``m`` consecutive entries along ``axis``.

  The final sparsity is ``1 - n/m`` whatever the distribution says; a gradual
  schedule prunes ``round(s_t * m)`` entries per group at sparsity ``s_t``.
  """

  n: int
  m: int
  axis: int = -2  # the input-feature axis of a Dense kernel (in, out).

  def __post_init__(self):
    if not (isinstance(self.n, int) and isinstance(self.m, int)
            and 0 < self.n <= self.m):
      raise ValueError(
          f"N:M needs integers 0 < n <= m, got n={self.n!r}, m={self.m!r}.")

  def check(self, shape: tuple[int, ...], path: str) -> None:
    axis = _normalize_axis(self.axis, len(shape), f"N:M on {path!r}")
    if shape[axis] % self.m:
      raise ValueError(
          f"N:M {self.n}:{self.m} on {path!r}: m={self.m} does not divide axis "
          f"{self.axis} of size {shape[axis]} (shape {shape}). Choose m among the "
          f"divisors of {shape[axis]} or exclude the leaf.")

  def fixed_sparsity(self) -> float | None:
    return 1.0 - self.n / self.m

  def mask(self, scores: Array, sparsity: Array | float) -> Array:
    axis = self.axis % scores.ndim
    moved = jnp.moveaxis(scores, axis, -1)
    groups = ordered_key(moved).reshape(*moved.shape[:-1], -1, self.m)
    # Rank inside each group: number of entries that beat it (ties: lower index).
    a, b = groups[..., :, None], groups[..., None, :]
    index = jnp.arange(self.m)
    beats = (b > a) | ((b == a) & (index[None, :] < index[:, None]))
    rank = jnp.sum(beats, axis=-1)
    keep = self.m - jnp.round(
        jnp.asarray(sparsity, jnp.float32) * self.m).astype(jnp.int32)
    mask = (rank < keep).reshape(moved.shape)
    return jnp.moveaxis(mask, -1, axis)


@dataclasses.dataclass(frozen=True)
class Block:
  """Blocks of ``shape`` over the trailing axes, scored by the sum of scores."""

  shape: tuple[int, ...] = (4, 4)

  def __post_init__(self):
    if not self.shape or any((not isinstance(b, int)) or b < 1
                             for b in self.shape):
      raise ValueError(f"Block shape must be positive ints, got {self.shape!r}.")

  def check(self, shape: tuple[int, ...], path: str) -> None:
    trailing = shape[len(shape) - len(self.shape):]
    if len(shape) < len(self.shape) or any(
        s % b for s, b in zip(trailing, self.shape)):
      raise ValueError(
          f"Block {self.shape} on {path!r}: does not tile the trailing axes of "
          f"shape {shape}. Each block side must divide its axis.")

  def fixed_sparsity(self) -> float | None:
    return None

  def mask(self, scores: Array, sparsity: Array | float) -> Array:
    lead = scores.shape[:scores.ndim - len(self.shape)]
    split = []
    for size, b in zip(scores.shape[len(lead):], self.shape):
      split += [size // b, b]
    tiled = scores.reshape(*lead, *split)
    block_axes = tuple(len(lead) + 2 * i + 1 for i in range(len(self.shape)))
    block_scores = jnp.sum(tiled.astype(jnp.float32), axis=block_axes,
                           keepdims=True)
    block_mask = topk_mask(block_scores,
                           num_to_keep(block_scores.size, sparsity))
    return jnp.broadcast_to(block_mask, tiled.shape).reshape(scores.shape)


@dataclasses.dataclass(frozen=True)
class Channel:
  """Whole channels along ``axis`` (default the output axis), scored by sum."""

  axis: int = -1

  def check(self, shape: tuple[int, ...], path: str) -> None:
    _normalize_axis(self.axis, len(shape), f"Channel on {path!r}")

  def fixed_sparsity(self) -> float | None:
    return None

  def mask(self, scores: Array, sparsity: Array | float) -> Array:
    axis = self.axis % scores.ndim
    others = tuple(i for i in range(scores.ndim) if i != axis)
    channel_scores = jnp.sum(scores.astype(jnp.float32), axis=others,
                             keepdims=True)
    keep = topk_mask(channel_scores,
                     num_to_keep(channel_scores.size, sparsity))
    return jnp.broadcast_to(keep, scores.shape)


Structure = Unstructured | NM | Block | Channel


def parse_structure(spec: str | Structure | None) -> Structure:
  """Parses ``'unstructured'``, ``'n:m'`` (e.g. ``'2:4'``), ``'block:4x4'``,
  ``'channel'`` or a structure object."""
  if spec is None or spec == "unstructured":
    return Unstructured()
  if isinstance(spec, (Unstructured, NM, Block, Channel)):
    return spec
  allowed = "'unstructured', 'N:M' (e.g. '2:4'), 'block:RxC', 'channel'"
  if isinstance(spec, str):
    parts = spec.lower().split(":")
    try:
      if parts[0] == "channel" and len(parts) == 1:
        return Channel()
      if parts[0] == "block" and len(parts) == 2:
        return Block(tuple(int(b) for b in parts[1].split("x")))
      if len(parts) == 2:
        return NM(int(parts[0]), int(parts[1]))
    except ValueError as e:
      raise ValueError(f"Bad structure {spec!r}: {e} Allowed: {allowed}.") from e
  raise ValueError(f"Unknown structure {spec!r}; allowed: {allowed}.")


MASK_STORAGES = ("uint8", "packed")


def pack_mask(mask: Array) -> Array:
  """Bit-packs a mask along its last axis (8 entries per uint8)."""
  return jnp.packbits(mask.astype(bool), axis=-1)


def unpack_mask(packed: Array, shape: tuple[int, ...]) -> Array:
  """Inverse of :func:`pack_mask` for a leaf of ``shape``; returns bool."""
  last = shape[-1] if shape else 1
  return jnp.unpackbits(packed, axis=-1, count=last).astype(bool).reshape(shape)


def packed_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  """Shape of :func:`pack_mask` output for a leaf of ``shape``."""
  return (*shape[:-1], math.ceil(shape[-1] / 8))
