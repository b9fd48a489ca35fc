"""ZIP's prompt reparameterization and intrinsic-dimensional clipping.

**Low rank with feature sharing.** ``T`` prompt tokens live in an intrinsic
space of width ``d`` as::

  Z = U diag(s) V^T + 1 v_shared^T        (T x d)

with ``U`` (T x r), ``s`` (r), ``V`` (d x r) and ``v_shared`` (d) trained,
and each token mapped to the model's token width ``D`` by a fixed random
projection: ``prompt_t = base_t + Z_t A_t`` with ``A_t`` (d x D) entries
``N(0, scale^2 / d)`` (``projection='per_token'``, the issue's reading of
ZIP) or one ``A`` for every token (``'shared'``, Black-Box Tuning's; ``T``
times less memory for wide models). ZIP's reference: ``T = 8``, ``r = 5``,
``d = 62``: ``8*5 + 5 + 62*5 + 62 = 417`` trained numbers. Ablations:
``low_rank=False`` trains ``Z`` itself (``T * d``), ``feature_sharing=False``
drops ``v_shared``.

Initialization: ``U`` and ``V`` random ``N(0, 1/r)``, ``s = 0`` and
``v_shared = 0``, so the prompt starts at ``base`` and every factor gets a
nonzero directional derivative through ``s`` (with ``U = V = 0`` the product
would be flat in ``U`` and ``V``).

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

__all__ = ["ZipPrompt", "PROJECTIONS", "intrinsic_clip", "num_numbers"]

PROJECTIONS = ("per_token", "shared")


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
    projection: ``'per_token'`` or ``'shared'``.
    scale: the projection's entries are ``N(0, scale^2 / d)``.
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

  def projection_matrices(self) -> jax.Array:
    """``(T or 1, d, D)`` float32, fixed by ``seed``."""
    count = self.num_tokens if self.projection == "per_token" else 1
    rng = np.random.default_rng(self.seed)
    a = rng.normal(0.0, self.scale / math.sqrt(self.intrinsic_dim),
                   (count, self.intrinsic_dim, self.width))
    return jnp.asarray(a, jnp.float32)

  def init(self, seed: int = 0) -> dict[str, jax.Array]:
    """Trained numbers at their initial values (module docstring)."""
    rng = np.random.default_rng(seed)
    t, d, r = self.num_tokens, self.intrinsic_dim, self.rank
    params = {}
    if self.low_rank:
      params["u"] = rng.normal(0.0, 1.0 / math.sqrt(r), (t, r))
      params["s"] = np.zeros(r)
      params["v"] = rng.normal(0.0, 1.0 / math.sqrt(r), (d, r))
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
    a = jnp.broadcast_to(projections, (self.num_tokens, *projections.shape[1:]))
    prompt = jnp.einsum("td,tdw->tw", z, a.astype(z.dtype))
    if base is not None:
      base = jnp.asarray(base)
      if base.shape != prompt.shape:
        raise ValueError(f"base must be {prompt.shape} (num_tokens, width), "
                         f"got {base.shape}.")
      prompt = prompt + base
    return prompt


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
