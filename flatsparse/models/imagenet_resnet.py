"""ImageNet-style residual networks (Flax linen) with Bottleneck blocks.

NHWC inputs (224x224 for ImageNet), logits out. BatchNorm statistics live in
the ``batch_stats`` collection: call with ``train=True`` and
``mutable=["batch_stats"]`` to update them, ``train=False`` to use them.
Convolutions, BatchNorm settings and initializers are those of the CIFAR
ResNets in ``flatsparse.models.resnet``.

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


class Bottleneck(layers.ResidualBlock):
  """1x1 -> 3x3 -> 1x1 conv-BN bottleneck with a residual connection.

  torchvision's ResNet v1.5 layout: the stride sits on the 3x3 conv (the
  original v1 puts it on the first 1x1 conv). The block outputs
  ``expansion * features`` channels; the shortcut is the identity when input
  and output shapes agree and a 1x1 conv + BN projection otherwise.

  Attributes:
      features: Bottleneck (inner) channels; the output has
          ``expansion * features``.
      strides: Spatial stride of the 3x3 conv (and of the projection).
      dtype: Computation dtype.

  References:
      He et al. 2016, arXiv:1512.03385; torchvision ``Bottleneck`` (v1.5).
  """

  expansion: ClassVar[int] = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Applies the block to NHWC ``x``; ``train`` selects batch statistics."""
    conv = functools.partial(layers.conv, dtype=self.dtype)
    bn = functools.partial(layers.batch_norm, train, self.dtype)
    out_features = self.expansion * self.features
    y = conv(self.features, 1, 1, name="conv1")(x)
    y = nn.relu(bn("bn1")(y))
    y = conv(self.features, 3, self.strides, name="conv2")(y)
    y = nn.relu(bn("bn2")(y))
    y = conv(out_features, 1, 1, name="conv3")(y)
    y = bn("bn3")(y)
    return self.add_shortcut(x, y, train)


class ResNet50(nn.Module):
  """ResNet-50 for ImageNet (224x224 inputs), torchvision v1.5 layout.

  7x7 stride-2 stem conv (64 channels) + BN + ReLU + 3x3 stride-2 max-pool,
  Bottleneck stages [3, 4, 6, 3] with inner widths 64, 128, 256, 512
  (expansion 4, so 256 ... 2048 output channels), stride 2 on the 3x3 conv of
  the first block of stages 2-4, 1x1 conv + BN projection shortcuts where the
  shape changes, global average pooling and a Dense head. Convolutions have
  no bias; BatchNorm scale and bias are trainable parameters, the running
  statistics are not.

  Trainable parameters with ``num_classes=1000``, ``width_multiplier=1``:
  25,557,032 (identical to torchvision's ``resnet50``).

  Attributes:
      num_classes: Number of output logits.
      width_multiplier: Scales every conv width (stem and all stages).
      dtype: Computation dtype; parameters stay float32.

  References:
      He et al. 2016, arXiv:1512.03385; torchvision ``resnet50`` (v1.5).
  """

  stage_sizes: ClassVar[Sequence[int]] = (3, 4, 6, 3)

  num_classes: int = 1000
  width_multiplier: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Logits ``(batch, num_classes)`` of NHWC images ``x`` (see the module
    docstring for ``train`` and ``batch_stats``)."""
    k = self.width_multiplier
    x = layers.conv(64 * k, 7, 2, self.dtype, name="stem_conv")(x)
    x = nn.relu(layers.batch_norm(train, self.dtype, name="stem_bn")(x))
    # Max-pool pads with -inf, as PyTorch's MaxPool2d(3, 2, padding=1).
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    widths = [64 * k * 2**i for i in range(len(self.stage_sizes))]
    block = functools.partial(Bottleneck, dtype=self.dtype)
    x = layers.residual_stages(x, block, self.stage_sizes, widths, train)
    return layers.pooled_head(x, self.num_classes, self.dtype)
