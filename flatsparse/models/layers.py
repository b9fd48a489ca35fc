"""Building blocks shared by the convolutional models (ResNets, WRN, VGG)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["conv", "batch_norm", "ResidualBlock", "residual_stages",
           "pooled_head", "CONV_INIT"]

CONV_INIT = nn.initializers.kaiming_normal()


def batch_norm(train: bool, dtype: Any, name: str) -> nn.BatchNorm:
  """BatchNorm as in PyTorch's ResNets: momentum 0.9 (0.1 there), eps 1e-5."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                      epsilon=1e-5, dtype=dtype, name=name)


def conv(features: int, kernel: int, strides: int, dtype: Any,
         name: str) -> nn.Conv:
  """A bias-free square convolution, He-normal initialized.

  Padding is ``kernel // 2`` on each side, symmetric as PyTorch's
  ``padding=1`` (XLA's "SAME" pads asymmetrically for even sizes).
  """
  return nn.Conv(features, (kernel, kernel), strides=(strides, strides),
                 padding=kernel // 2, use_bias=False, kernel_init=CONV_INIT,
                 dtype=dtype, name=name)


class ResidualBlock(nn.Module):
  """Fields and shortcut of the post-activation residual blocks.

  ``resnet.BasicBlock`` and ``imagenet_resnet.Bottleneck`` subclass it: their
  ``nn.compact`` ``__call__`` computes the residual branch ``y`` and returns
  ``self.add_shortcut(x, y, train)``.

  Attributes:
      features: Channels of the block (see the subclass).
      strides: Spatial stride of the block (and of the projection).
      dtype: Computation dtype.
  """

  features: int
  strides: int = 1
  dtype: Any = jnp.float32

  def add_shortcut(self, x: jax.Array, y: jax.Array,
                   train: bool) -> jax.Array:
    """Returns ``relu(shortcut(x) + y)``; call from the ``compact`` method.

    The shortcut is the identity when ``x`` and ``y`` agree in stride and
    channels, and a 1x1 conv ``proj_conv`` + BatchNorm ``proj_bn`` projection
    (He et al. option B) otherwise.
    """
    if self.strides != 1 or x.shape[-1] != y.shape[-1]:
      x = conv(y.shape[-1], 1, self.strides, self.dtype, name="proj_conv")(x)
      x = batch_norm(train, self.dtype, name="proj_bn")(x)
    return nn.relu(x + y)


def residual_stages(x: jax.Array, block: Callable[..., nn.Module],
                    stage_sizes: Sequence[int], widths: Sequence[int],
                    train: bool, prefix: str = "stage") -> jax.Array:
  """Applies the residual stages of a ResNet or WRN; call inside ``compact``.

  Stage ``i`` is ``stage_sizes[i]`` blocks ``block(widths[i], strides,
  name=...)`` called as ``(x, train)``; the first block of every stage but the
  first has stride 2, the others stride 1. Block ``j`` of stage ``i`` is named
  ``f"{prefix}{i + 1}_block{j + 1}"`` (both 1-based).
  """
  for i, (num_blocks, width) in enumerate(zip(stage_sizes, widths)):
    for j in range(num_blocks):
      strides = 2 if i > 0 and j == 0 else 1
      name = f"{prefix}{i + 1}_block{j + 1}"
      x = block(width, strides, name=name)(x, train)
  return x


def pooled_head(x: jax.Array, num_classes: int, dtype: Any) -> jax.Array:
  """Global average pooling of NHWC ``x`` and a Dense layer named ``head``."""
  x = jnp.mean(x, axis=(1, 2))
  return nn.Dense(num_classes, dtype=dtype, name="head")(x)
