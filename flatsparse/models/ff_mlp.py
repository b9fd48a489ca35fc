"""The Forward-Forward MLP (Flax linen): layers that learn from local losses.

Each hidden layer is ``relu(Dense(normalize(h)))``; the input of every layer
after the first is the previous layer's activity divided by its L2 norm
(Hinton: the length carries the previous layer's goodness, the direction
what the next layer should use) and under ``stop_gradient``, so a loss on a
layer's activity trains that layer only. Training and prediction live in
:mod:`flatsparse.federated.forward_forward`.

References:
  Hinton, "The Forward-Forward Algorithm: Some Preliminary
  Investigations", arXiv:2212.13345, 2022.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["FFMLP", "FFOutputs", "normalize_length"]

# Added to the norm: a zero activity (all ReLUs off) stays zero, not NaN.
NORM_EPS = 1e-8


def normalize_length(h: jax.Array, eps: float = NORM_EPS) -> jax.Array:
  """``h / (||h||_2 + eps)`` over the last axis (computed in float32)."""
  h32 = h.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(jnp.square(h32), axis=-1, keepdims=True))
  return (h32 / (norm + eps)).astype(h.dtype)


class FFOutputs(NamedTuple):
  """What :class:`FFMLP` returns.

  Attributes:
    activations: one ``(batch, width)`` activity per hidden layer.
    logits: the linear readout's ``(batch, num_labels)`` logits on the
      normalized activities of all layers but the first (from
      ``stop_gradient`` inputs: the readout never trains the layers), or
      None when the model has no readout.
  """

  activations: tuple[jax.Array, ...]
  logits: jax.Array | None


class FFMLP(nn.Module):
  """Fully connected ReLU layers trained by Forward-Forward.

  Attributes:
    features: the hidden widths (Hinton's MNIST net: four of 2000).
    num_labels: the classes, written one-hot into the first ``num_labels``
      input values (``forward_forward.embed_label``).
    readout: add the linear readout (``num_labels`` logits).
    threshold: the goodness threshold ``theta`` of every layer (or one per
      layer); None: each layer's number of units.
    normalize_input: also length-normalize the first layer's input. The
      paper normalizes hidden vectors only (default False); the widely used
      PyTorch reference (pytorch_forward_forward) normalizes every layer's
      input, the first included.
    dtype: the computation dtype (params stay float32).

  Layers are named ``layer_0``, ``layer_1``, ... (kernels prunable by the
  default rule), the readout ``readout``.
  """

  features: Sequence[int] = (500, 500)
  num_labels: int = 10
  readout: bool = False
  threshold: float | Sequence[float] | None = None
  normalize_input: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> FFOutputs:
    """The activities of all layers (and the readout's logits).

    Args:
      x: inputs ``(batch, ...)``, flattened beyond the batch axis; the label
        embedding (``forward_forward.embed_label``) is already in them.
      train: unused (no train-dependent layer).

    Returns:
      :class:`FFOutputs`.
    """
    del train
    if not self.features:
      raise ValueError("FFMLP.features is empty; give at least one width.")
    h = x.reshape((x.shape[0], -1))
    activations = []
    for i, width in enumerate(self.features):
      if i > 0 or self.normalize_input:
        h = normalize_length(h)
      if i > 0:
        h = jax.lax.stop_gradient(h)
      h = nn.relu(nn.Dense(width, dtype=self.dtype, name=f"layer_{i}")(h))
      activations.append(h)
    logits = None
    if self.readout:
      used = activations[1:] or activations
      features = jnp.concatenate(
          [normalize_length(jax.lax.stop_gradient(a)) for a in used], -1)
      logits = nn.Dense(self.num_labels, dtype=self.dtype,
                        name="readout")(features)
    return FFOutputs(tuple(activations), logits)
