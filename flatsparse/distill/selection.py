"""Which patches the teacher sees: MaskedKD's selection and its ablations.

MaskedKD keeps the ``k = floor(r * P)`` patches that the student's last-layer
class token attends to most (the class-token row of the softmax, mean over
heads), per example; the ablations keep ``k`` random patches, or the ``k``
the teacher's own class token ranks highest (which costs a full teacher
pass). No gradient flows through a selection.

References:
  Son et al., "The role of masking for efficient supervised knowledge
  distillation of vision transformers" (MaskedKD), ECCV 2024,
  arXiv:2302.10494.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["SELECTIONS", "keep_count", "class_attention", "top_patches",
           "random_patches"]

# "student": MaskedKD; "random", "teacher": ablations; "all": full KD.
SELECTIONS = ("student", "random", "teacher", "all")


def keep_count(num_patches: int, keep_ratio: float) -> int:
  """``floor(keep_ratio * num_patches)`` (the reference keeps 98 of 196 at
  0.5).

  Raises:
    ValueError: ``keep_ratio`` outside (0, 1], or keeping no patch.
  """
  if isinstance(keep_ratio, bool) or not (
      isinstance(keep_ratio, (int, float)) and 0.0 < keep_ratio <= 1.0):
    raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio!r}.")
  count = math.floor(keep_ratio * num_patches + 1e-9)
  if count < 1:
    raise ValueError(f"keep_ratio {keep_ratio} keeps no patch of "
                     f"{num_patches}; allowed: at least 1 / {num_patches}.")
  return count


def class_attention(last_map: jax.Array, num_prefix_tokens: int = 1
                    ) -> jax.Array:
  """``(batch, patches)``: the class token's attention over the patches.

  Args:
    last_map: The last layer's softmax ``(batch, heads, tokens, tokens)``;
      token 0 is the class token, the patches start at
      ``num_prefix_tokens``.
    num_prefix_tokens: 1, or 2 with DeiT's distillation token.
  """
  if last_map.ndim != 4:
    raise ValueError(f"last_map must be (batch, heads, tokens, tokens), got "
                     f"shape {last_map.shape}.")
  scores = jnp.mean(last_map[:, :, 0, num_prefix_tokens:].astype(jnp.float32),
                    axis=1)
  return jax.lax.stop_gradient(scores)


def top_patches(scores: jax.Array, count: int) -> jax.Array:
  """``(batch, count)`` int32 indices of the highest scores, highest first;
  equal scores are taken in index order (``lax.top_k``)."""
  _, indices = jax.lax.top_k(jax.lax.stop_gradient(scores), count)
  return indices.astype(jnp.int32)


def random_patches(key: jax.Array, batch: int, num_patches: int, count: int
                   ) -> jax.Array:
  """``(batch, count)`` int32: ``count`` distinct random patches per
  example."""
  noise = jax.random.uniform(key, (batch, num_patches))
  return top_patches(noise, count)
