"""ZIP's prompt reparameterization and intrinsic-dimensional clipping.

**Low rank with feature sharing.** ``T`` prompt tokens live in an intrinsic
space of width ``d`` as::

  Z = U diag(s) V^T + 1 v_shared^T        (T x d)

with ``U`` (T x r), ``s`` (r), ``V`` (d x r) and ``v_shared`` (d) trained,
and each token mapped to the model's token width ``D`` by a fixed random
projection: ``prompt_t = base_t + Z_t A_t`` with ``A_t`` (d x D) entries
``N(0, scale^2 / d)`` (``projection='per_token'``, dense) or one ``A`` for
every token (``'shared'``, Black-Box Tuning's; ``T`` times less memory), or
a structured map per token (``'fastfood'``, what ZIP's reference code uses:
``A_t z = scale * H G Pi H B [z; 0] / (||g|| sqrt(D))``, first ``D`` of
``L = 2^ceil(log2 max(d, D))`` entries, ``H`` the Walsh-Hadamard transform,
``B`` random signs, ``Pi`` a permutation, ``G = diag(g)`` Gaussian: norm
preserving in expectation, ``O(L log L)`` time and ``O(L)`` memory per token,
for wide models). ZIP's reference: ``T = 8``, ``r = 5``,
``d = 62``: ``8*5 + 5 + 62*5 + 62 = 417`` trained numbers. Ablations:
``low_rank=False`` trains ``Z`` itself (``T * d``), ``feature_sharing=False``
drops ``v_shared``.

Initialization (ZIP's reference code; the paper does not state one):
``U = 0``, ``s = 1``, ``V ~ N(0, 1)`` and ``v_shared = 0``, so the prompt
starts at ``base`` and the first steps move ``U`` along the columns of a
unit-variance ``V`` (norm ``~sqrt(d)``): the estimate's first directions are
``T * r`` well-scaled ones, not ``r`` directions through ``s``. (A start at
``s = 0`` with random ``U``, ``V`` lets only ``s`` and ``v_shared`` act at
first; measured: ZIP last of four methods at 5,000 queries, BENCHMARKS.md.)

**Intrinsic-dimensional clipping** (:func:`intrinsic_clip`): the estimate's
global norm is clipped at ``sqrt(N)``, ``N`` the number of trained numbers
(static, from the shapes); ``optax.clip_by_global_norm(t)`` is the fixed-
threshold clip of the baselines and the threshold sweep.

References:
  Park et al., "ZIP: An efficient zeroth-order prompt tuning for black-box
  vision-language models", ICLR 2025; Sun et al., "Black-box tuning for
  language-model-as-a-service", ICML 2022.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flatsparse import validation

__all__ = ["ZipPrompt", "PROJECTIONS", "intrinsic_clip", "num_numbers",
           "walsh_hadamard"]

PROJECTIONS = ("per_token", "shared", "fastfood")


def num_numbers(tree: Any) -> int:
  """How many numbers a pytree holds (static)."""
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


@dataclasses.dataclass(frozen=True)
class ZipPrompt:
  """The reparameterized prompt (module docstring).

  Attributes:
    num_tokens: ``T``.
    width: ``D``, the model's token width.
    rank: ``r``.
    intrinsic_dim: ``d``.
    low_rank: train ``U diag(s) V^T`` (else ``Z`` itself).
    feature_sharing: add ``1 v_shared^T``.
    projection: ``'per_token'``, ``'shared'`` or ``'fastfood'``.
    scale: the dense projections' entries are ``N(0, scale^2 / d)``; the
      fastfood map multiplies by ``scale``.
    seed: the projection's (fixed) seed.
  """

  num_tokens: int = 8
  width: int = 384
  rank: int = 5
  intrinsic_dim: int = 62
  low_rank: bool = True
  feature_sharing: bool = True
  projection: str = "per_token"
  scale: float = 1.0
  seed: int = 0

  def __post_init__(self):
    for name in ("num_tokens", "width", "rank", "intrinsic_dim"):
      validation.check_count(name, getattr(self, name))
    validation.check_choice("projection", self.projection, PROJECTIONS)
    if self.low_rank and self.rank > min(self.num_tokens, self.intrinsic_dim):
      raise ValueError(f"rank {self.rank} is above min(num_tokens "
                       f"{self.num_tokens}, intrinsic_dim "
                       f"{self.intrinsic_dim}).")

  def projection_matrices(self) -> Any:
    """The fixed projections (by ``seed``): ``(T or 1, d, D)`` float32 for
    the dense kinds; for ``'fastfood'`` a dict of ``(T, L)`` arrays
    ``signs``, ``permutation`` and ``gaussian`` (pass either to
    ``__call__``)."""
    rng = np.random.default_rng(self.seed)
    if self.projection == "fastfood":
      size = 1 << (max(self.intrinsic_dim, self.width) - 1).bit_length()
      t = self.num_tokens
      return {"signs": jnp.asarray(rng.choice([-1.0, 1.0], (t, size)),
                                   jnp.float32),
              "permutation": jnp.asarray(np.stack(
                  [rng.permutation(size) for _ in range(t)]), jnp.int32),
              "gaussian": jnp.asarray(rng.normal(size=(t, size)),
                                      jnp.float32)}
    count = self.num_tokens if self.projection == "per_token" else 1
    a = rng.normal(0.0, self.scale / math.sqrt(self.intrinsic_dim),
                   (count, self.intrinsic_dim, self.width))
    return jnp.asarray(a, jnp.float32)

  def init(self, seed: int = 0) -> dict[str, jax.Array]:
    """Trained numbers at their initial values (module docstring)."""
    rng = np.random.default_rng(seed)
    t, d, r = self.num_tokens, self.intrinsic_dim, self.rank
    params = {}
    if self.low_rank:
      params["u"] = np.zeros((t, r))
      params["s"] = np.ones(r)
      params["v"] = rng.normal(0.0, 1.0, (d, r))
    else:
      params["z"] = np.zeros((t, d))
    if self.feature_sharing:
      params["shared"] = np.zeros(d)
    return {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}

  def intrinsic(self, params: dict[str, jax.Array]) -> jax.Array:
    """``Z`` (T x d)."""
    if self.low_rank:
      z = (params["u"] * params["s"]) @ params["v"].T
    else:
      z = params["z"]
    if self.feature_sharing:
      z = z + params["shared"][None]
    return z

  def __call__(self, params: dict[str, jax.Array],
               projections: jax.Array, base: Any = None) -> jax.Array:
    """The prompt ``(T, D)``: ``base + Z_t A_t`` per token.

    Args:
      params: from :meth:`init`.
      projections: :meth:`projection_matrices` (passed in so a jitted
        caller holds them as an array, not a constant).
      base: ``(T, D)`` the prompt at ``Z = 0`` (None: zeros).
    """
    z = self.intrinsic(params)
    if self.projection == "fastfood":
      prompt = self.scale * jax.vmap(_fastfood, (0, 0, 0, 0, None))(
          z, projections["signs"], projections["permutation"],
          projections["gaussian"], self.width)
    else:
      a = jnp.broadcast_to(projections,
                           (self.num_tokens, *projections.shape[1:]))
      prompt = jnp.einsum("td,tdw->tw", z, a.astype(z.dtype))
    if base is not None:
      base = jnp.asarray(base)
      if base.shape != prompt.shape:
        raise ValueError(f"base must be {prompt.shape} (num_tokens, width), "
                         f"got {base.shape}.")
      prompt = prompt + base
    return prompt


def walsh_hadamard(x: jax.Array) -> jax.Array:
  """The unnormalized Walsh-Hadamard transform of a length-``2^k`` vector
  (``H x`` with ``H = [[1, 1], [1, -1]]^(x k)``), in ``k`` butterflies."""
  size = x.shape[-1]
  if size & (size - 1):
    raise ValueError(f"length {size} is not a power of two.")
  h = 1
  while h < size:
    x = x.reshape(-1, size // (2 * h), 2, h)
    x = jnp.stack([x[:, :, 0] + x[:, :, 1], x[:, :, 0] - x[:, :, 1]], axis=2)
    h *= 2
  return x.reshape(size)


def _fastfood(z: jax.Array, signs: jax.Array, permutation: jax.Array,
              gaussian: jax.Array, width: int) -> jax.Array:
  """One token's fastfood map (module docstring) from ``d`` to ``width``."""
  size = signs.shape[0]
  x = jnp.zeros(size, z.dtype).at[:z.shape[0]].set(z) * signs
  x = walsh_hadamard(x)[permutation] * gaussian
  x = walsh_hadamard(x)[:width]
  # ||H G Pi H B z|| ~ L ||g|| ||z|| / sqrt(L); keeping D of L entries.
  return x / (jnp.linalg.norm(gaussian) * jnp.sqrt(jnp.float32(width)))


def intrinsic_clip() -> optax.GradientTransformation:
  """Clips the updates' global norm at ``sqrt(N)``, ``N`` their number of
  entries (ZIP's intrinsic-dimensional clipping)."""

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    threshold = math.sqrt(num_numbers(updates))
    clipped, _ = optax.clip_by_global_norm(threshold).update(
        updates, optax.EmptyState())
    return clipped, state

  return optax.GradientTransformation(init_fn, update_fn)
