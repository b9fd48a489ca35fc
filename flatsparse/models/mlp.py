"""Multi-layer perceptron classifier (Flax linen)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
  """Fully connected ReLU network mapping inputs to class logits.

  Inputs are flattened beyond the batch dimension, passed through one
  ``Dense`` + ReLU layer per entry of ``hidden`` and a final ``Dense`` layer
  producing logits. Parameters are kept in float32 (``param_dtype`` default);
  ``dtype`` only sets the computation dtype (e.g. ``jnp.bfloat16``).

  Attributes:
      hidden: Widths of the hidden layers, in order.
      num_classes: Number of output logits.
      dtype: Computation dtype of the Dense layers.
  """

  hidden: Sequence[int]
  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Computes logits.

    Args:
        x: Inputs of shape ``(batch, ...)``.
        train: Ignored; keeps the call signature uniform with BatchNorm
            models.

    Returns:
        Logits of shape ``(batch, num_classes)`` in ``dtype``.
    """
    del train  # No train/eval-dependent layers.
    x = x.reshape((x.shape[0], -1))
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, dtype=self.dtype, name=f"dense_{i}")(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
