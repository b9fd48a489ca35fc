"""Wide residual networks for CIFAR-sized inputs (Flax linen).

NHWC inputs, logits out. BatchNorm statistics live in the ``batch_stats``
collection: call with ``train=True`` and ``mutable=["batch_stats"]`` to update
them, ``train=False`` to use them. With ``dropout_rate > 0`` a training call
also needs a ``'dropout'`` rng (``rngs={"dropout": key}``).

References:
    Zagoruyko & Komodakis 2016, "Wide Residual Networks", arXiv:1605.07146.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from flatsparse.models import layers


class WideResNetBlock(nn.Module):
  """Pre-activation basic block: (BN-ReLU-conv3x3) x 2, dropout in between.

  ``y = conv2(dropout(relu(bn2(conv1(relu(bn1(x)))))))``. The shortcut is the
  identity ``x`` when shapes agree; otherwise a 1x1 conv (no BN) applied to the
  pre-activated input ``relu(bn1(x))``, as in the authors' code.

  Attributes:
      features: Output channels.
      strides: Spatial stride of the first conv (and of the projection).
      dropout_rate: Dropout rate between the two convs (training only).
      dtype: Computation dtype.

  References:
      Zagoruyko & Komodakis 2016, arXiv:1605.07146.
  """

  features: int
  strides: int = 1
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Applies the block to NHWC ``x``; ``train`` selects batch statistics
    and enables dropout."""
    conv = functools.partial(layers.conv, dtype=self.dtype)
    bn = functools.partial(layers.batch_norm, train, self.dtype)
    project = self.strides != 1 or x.shape[-1] != self.features
    y = nn.relu(bn("bn1")(x))
    shortcut = x
    if project:
      shortcut = conv(self.features, 1, self.strides, name="proj_conv")(y)
    y = conv(self.features, 3, self.strides, name="conv1")(y)
    y = nn.relu(bn("bn2")(y))
    y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
    y = conv(self.features, 3, 1, name="conv2")(y)
    return shortcut + y


class WideResNet(nn.Module):
  """Wide ResNet WRN-``depth``-``widen_factor`` for 32x32 inputs.

  3x3 stem conv (16 channels), three groups of ``n = (depth - 4) / 6``
  pre-activation ``WideResNetBlock``s with widths
  ``(16, 32, 64) * widen_factor`` (stride 2 at the start of groups 2 and 3),
  1x1 conv projection shortcuts where the shape changes, then BN + ReLU,
  global average pooling and a Dense head. Convolutions have no bias.

  Trainable parameters with ``num_classes=10`` and the defaults
  ``depth=28``, ``widen_factor=10`` (WRN-28-10): 36,479,194 (the paper's
  "36.5M"; identical to the widely used PyTorch port xternalz/WideResNet).

  Attributes:
      num_classes: Number of output logits.
      depth: Total depth; ``depth - 4`` must be a multiple of 6.
      widen_factor: Width multiplier ``k`` of the three groups.
      dropout_rate: Dropout rate inside every block (0 disables dropout and
          the need for a ``'dropout'`` rng).
      dtype: Computation dtype; parameters stay float32.

  References:
      Zagoruyko & Komodakis 2016, arXiv:1605.07146.
  """

  num_classes: int
  depth: int = 28
  widen_factor: int = 10
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Logits ``(batch, num_classes)`` of NHWC images ``x``; ``train`` uses
    batch statistics and dropout (see the module docstring)."""
    if self.depth < 10 or (self.depth - 4) % 6:
      raise ValueError(
        f"depth must be 6 * n + 4 with n >= 1 (10, 16, 22, 28, 40, ...), "
        f"got {self.depth}"
      )
    blocks_per_group = (self.depth - 4) // 6
    k = self.widen_factor
    x = layers.conv(16, 3, 1, self.dtype, name="stem_conv")(x)
    block = functools.partial(WideResNetBlock, dropout_rate=self.dropout_rate,
                              dtype=self.dtype)
    x = layers.residual_stages(x, block, (blocks_per_group,) * 3,
                               (16 * k, 32 * k, 64 * k), train, prefix="group")
    x = nn.relu(layers.batch_norm(train, self.dtype, name="final_bn")(x))
    return layers.pooled_head(x, self.num_classes, self.dtype)


class WideResNet28x10(WideResNet):
  """WRN-28-10: ``WideResNet`` with ``depth=28``, ``widen_factor=10``.

  The defaults of ``WideResNet``, under the name studies use. Trainable
  parameters with ``num_classes=10``: 36,479,194 (paper: 36.5M).

  Attributes:
      num_classes: Number of output logits.
      depth: 28 (do not change; use ``WideResNet`` for other depths).
      widen_factor: 10 (do not change; use ``WideResNet`` otherwise).
      dropout_rate: Dropout rate inside every block (default 0; the paper
          also reports runs with 0.3).
      dtype: Computation dtype; parameters stay float32.

  References:
      Zagoruyko & Komodakis 2016, arXiv:1605.07146.
  """
