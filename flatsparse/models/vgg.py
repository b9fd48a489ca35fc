"""VGG networks with BatchNorm for CIFAR-sized inputs (Flax linen).

NHWC inputs, logits out. BatchNorm statistics live in the ``batch_stats``
collection: call with ``train=True`` and ``mutable=["batch_stats"]`` to update
them, ``train=False`` to use them.

References:
    Simonyan & Zisserman 2015, "Very Deep Convolutional Networks for
    Large-Scale Image Recognition", arXiv:1409.1556.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from flatsparse.models import layers

# Conv widths, "M" = 2x2 stride-2 max-pool (configuration E of the paper).
_VGG19_CONFIG = (
  (64, 64, "M", 128, 128, "M")
  + (256,) * 4
  + ("M",)
  + (512,) * 4
  + ("M",)
  + (512,) * 4
  + ("M",)
)


class VGG19(nn.Module):
  """VGG-19 with BatchNorm, the common CIFAR variant (32x32 inputs).

  Sixteen 3x3 conv (with bias, padding 1) + BN + ReLU layers in the
  configuration [64, 64, M, 128, 128, M, 256 x4, M, 512 x4, M, 512 x4, M]
  (M = 2x2 stride-2 max-pool), then the flattened features (512 for 32x32
  inputs) go through ONE Dense layer to the logits. This is the CIFAR variant
  used by most pruning papers (kuangliu/pytorch-cifar), not the ImageNet VGG
  with its 4096-wide two-layer classifier. The conv biases are redundant
  before BN but kept for parity with that reference; without them the model
  has 5,504 fewer parameters.

  Trainable parameters with ``num_classes=10``, ``width_multiplier=1``:
  20,040,522 (identical to kuangliu/pytorch-cifar ``VGG('VGG19')``).

  Attributes:
      num_classes: Number of output logits.
      width_multiplier: Scales every conv width; widths are
          ``max(1, round(c * width_multiplier))``, so fractions (e.g. 0.5)
          work.
      dtype: Computation dtype; parameters stay float32.

  References:
      Simonyan & Zisserman 2015, arXiv:1409.1556; kuangliu/pytorch-cifar.
  """

  config: ClassVar[Sequence[int | str]] = _VGG19_CONFIG

  num_classes: int
  width_multiplier: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Computes logits.

    Args:
        x: Images of shape ``(batch, height, width, channels)``; height and
            width must be multiples of 32 (five max-pools).
        train: Use batch statistics and update ``batch_stats`` (needs
            ``mutable=["batch_stats"]``) if True, running averages if False.

    Returns:
        Logits of shape ``(batch, num_classes)`` in ``dtype``.
    """
    if self.width_multiplier <= 0:
      raise ValueError(
        f"width_multiplier must be > 0, got {self.width_multiplier}"
      )
    conv_index = 0
    for item in self.config:
      if item == "M":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        continue
      conv_index += 1
      width = max(1, round(item * self.width_multiplier))
      x = nn.Conv(
        width,
        (3, 3),
        padding=1,
        kernel_init=layers.CONV_INIT,
        dtype=self.dtype,
        name=f"conv{conv_index}",
      )(x)
      x = nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=self.dtype,
        name=f"bn{conv_index}",
      )(x)
      x = nn.relu(x)
    x = x.reshape((x.shape[0], -1))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
