"""CIFAR-style residual networks (Flax linen) with BatchNorm.

All models take NHWC inputs and return logits. BatchNorm statistics live in the
``batch_stats`` collection: call with ``train=True`` and
``mutable=["batch_stats"]`` to update them, ``train=False`` to use them.

References:
    He et al. 2016, "Deep Residual Learning for Image Recognition",
    arXiv:1512.03385.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from flatsparse.models import layers


class BasicBlock(layers.ResidualBlock):
  """Two 3x3 conv-BN layers with a residual connection (post-activation).

  The shortcut is the identity when input and output shapes agree, and a
  1x1 conv + BN projection (He et al. option B) otherwise.

  Attributes:
      features: Output channels.
      strides: Spatial stride of the first conv (and of the projection).
      dtype: Computation dtype.

  References:
      He et al. 2016, arXiv:1512.03385.
  """

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Applies the block to NHWC ``x``; ``train`` selects batch statistics."""
    conv = functools.partial(layers.conv, dtype=self.dtype)
    bn = functools.partial(layers.batch_norm, train, self.dtype)
    y = conv(self.features, 3, self.strides, name="conv1")(x)
    y = nn.relu(bn("bn1")(y))
    y = conv(self.features, 3, 1, name="conv2")(y)
    y = bn("bn2")(y)
    return self.add_shortcut(x, y, train)


class _ResNetBase(nn.Module):
  """Shared forward pass; subclasses define ``stage_config``.

  Layout: 3x3 stem conv (``widths[0]`` channels, stride 1, no max-pool) + BN +
  ReLU, then one stage of BasicBlocks per entry of ``stage_sizes`` (the
  first block of every stage but the first has stride 2), global average
  pooling and a Dense head.
  """

  num_classes: int

  def stage_config(self) -> tuple[Sequence[int], Sequence[int]]:
    """Returns ``(stage_sizes, widths)``."""
    raise NotImplementedError

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Computes logits.

    Args:
        x: Images of shape ``(batch, height, width, channels)``.
        train: Use batch statistics and update ``batch_stats`` (needs
            ``mutable=["batch_stats"]``) if True, running averages if False.

    Returns:
        Logits of shape ``(batch, num_classes)`` in ``dtype``.
    """
    stage_sizes, widths = self.stage_config()
    if len(stage_sizes) != len(widths):
      raise ValueError(f"{len(stage_sizes)=} != {len(widths)=}")
    dtype = self.dtype  # Declared as a field by every subclass.
    x = layers.conv(widths[0], 3, 1, dtype, name="stem_conv")(x)
    x = nn.relu(layers.batch_norm(train, dtype, name="stem_bn")(x))
    block = functools.partial(BasicBlock, dtype=dtype)
    x = layers.residual_stages(x, block, stage_sizes, widths, train)
    return layers.pooled_head(x, self.num_classes, dtype)


class CifarResNet(_ResNetBase):
  """Generic CIFAR-style ResNet of ``BasicBlock`` stages.

  See ``_ResNetBase`` for the layout. Projection (1x1 conv + BN) shortcuts are
  used wherever the shape changes.

  Attributes:
      num_classes: Number of output logits.
      stage_sizes: Number of blocks per stage.
      widths: Channels per stage (``widths[0]`` is also the stem width).
      dtype: Computation dtype; parameters stay float32.

  References:
      He et al. 2016, arXiv:1512.03385.
  """

  stage_sizes: Sequence[int]
  widths: Sequence[int]
  dtype: Any = jnp.float32

  def stage_config(self) -> tuple[Sequence[int], Sequence[int]]:
    return self.stage_sizes, self.widths


class ResNet18(_ResNetBase):
  """ResNet-18 for 32x32 inputs (the common "CIFAR ResNet-18", kuangliu layout).

  3x3 stem conv (stride 1, no max-pool), BasicBlocks [2, 2, 2, 2] with widths
  ``width * (1, 2, 4, 8)``, 1x1 conv + BN projection shortcuts where the shape
  changes, global average pooling and a Dense head.

  Trainable parameters with ``num_classes=10``, ``width=64``: 11,173,962.

  Attributes:
      num_classes: Number of output logits.
      width: Channels of the stem and first stage.
      dtype: Computation dtype; parameters stay float32.

  References:
      He et al. 2016, arXiv:1512.03385.
  """

  width: int = 64
  dtype: Any = jnp.float32

  def stage_config(self) -> tuple[Sequence[int], Sequence[int]]:
    w = self.width
    return (2, 2, 2, 2), (w, 2 * w, 4 * w, 8 * w)


class _HeCifarResNet(_ResNetBase):
  """He et al. CIFAR ResNet-(6n+2): 3 stages of n blocks, widths 16/32/64."""

  blocks_per_stage: ClassVar[int]

  width_multiplier: int = 1
  dtype: Any = jnp.float32

  def stage_config(self) -> tuple[Sequence[int], Sequence[int]]:
    k = self.width_multiplier
    return (self.blocks_per_stage,) * 3, (16 * k, 32 * k, 64 * k)


class ResNet20(_HeCifarResNet):
  """ResNet-20 (He et al. 2016, CIFAR-10 family, n=3).

  3x3 stem conv, 3 stages of 3 BasicBlocks with widths
  ``(16, 32, 64) * width_multiplier``, global average pooling, Dense head.
  Uses 1x1 conv + BN projection shortcuts (option B) where the shape changes,
  so it has 2,752 more parameters than the paper's option-A (zero-padding
  identity shortcut) model (269,722).

  Trainable parameters with ``num_classes=10``, ``width_multiplier=1``:
  272,474.

  Attributes:
      num_classes: Number of output logits.
      width_multiplier: Scales the stage widths 16, 32, 64.
      dtype: Computation dtype; parameters stay float32.

  References:
      He et al. 2016, arXiv:1512.03385.
  """

  blocks_per_stage: ClassVar[int] = 3


class ResNet32(_HeCifarResNet):
  """ResNet-32 (n=5): ``ResNet20`` with 5 BasicBlocks per stage.

  Same fields and option-B shortcuts as ``ResNet20``. Trainable parameters
  with ``num_classes=10``, ``width_multiplier=1``: 466,906 (paper's option A:
  464,154).
  """

  blocks_per_stage: ClassVar[int] = 5


class ResNet56(_HeCifarResNet):
  """ResNet-56 (n=9): ``ResNet20`` with 9 BasicBlocks per stage.

  Same fields and option-B shortcuts as ``ResNet20``. Trainable parameters
  with ``num_classes=10``, ``width_multiplier=1``: 855,770 (paper's option A:
  853,018).
  """

  blocks_per_stage: ClassVar[int] = 9
