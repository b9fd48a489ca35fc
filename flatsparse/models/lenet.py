"""LeNet-5 (Flax linen): the small convolutional classifier of MNIST-sized
images.

Two 5x5 convolutions (the first 'SAME' so a 28x28 input behaves like
LeNet's padded 32x32 one) each followed by ReLU and 2x2 average pooling
(LeNet's subsampling, without its trainable scale and bias), then two hidden
``Dense`` layers and the logits. ReLU replaces the original's scaled tanh
and the second convolution sees every channel (the original's C3 connects
each map to a subset). Average pooling also keeps the backward pass cheap on
CPUs, where max pooling's gradient (select-and-scatter) costs about half a
step more. With the defaults and a 28x28x1 input it has 61,706 parameters.

References:
  LeCun, Bottou, Bengio and Haffner, "Gradient-Based Learning Applied to
  Document Recognition", Proc. IEEE 86(11), 1998.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["LeNet5"]

# The smallest side with one output after conv (SAME), pool, conv (VALID),
# pool: floor((floor(h / 2) - 4) / 2) >= 1.
MIN_SIDE = 12


class LeNet5(nn.Module):
  """LeNet-5: conv-avgpool, conv-avgpool, two hidden Dense layers, logits.

  Parameters stay float32; ``dtype`` sets the computation dtype. 61,706
  parameters for 28x28x1 inputs and 10 classes at the default sizes.

  Attributes:
    num_classes: number of output logits.
    channels: output channels of the two 5x5 convolutions.
    hidden: widths of the hidden Dense layers.
    dtype: computation dtype of every layer.
  """

  num_classes: int
  channels: Sequence[int] = (6, 16)
  hidden: Sequence[int] = (120, 84)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Computes logits.

    Args:
      x: images ``(batch, height, width, channels)``, or ``(batch, height,
        width)`` for one channel.
      train: ignored (no BatchNorm or dropout); keeps the call signature of
        the BatchNorm models.

    Returns:
      Logits ``(batch, num_classes)`` in ``dtype``.

    Raises:
      ValueError: if ``channels`` does not hold two sizes or the input is
        not a batch of images of at least ``MIN_SIDE`` pixels a side.
    """
    del train
    if len(self.channels) != 2:
      raise ValueError(f"LeNet5 has two convolutions; channels must hold two "
                       f"sizes, got {tuple(self.channels)}.")
    if x.ndim == 3:
      x = x[..., None]
    if x.ndim != 4 or min(x.shape[1:3]) < MIN_SIDE:
      raise ValueError(f"LeNet5 takes (batch, height, width[, channels]) "
                       f"images of at least {MIN_SIDE}x{MIN_SIDE} (the "
                       f"second 5x5 convolution is unpadded), got shape "
                       f"{x.shape}.")
    for i, (width, padding) in enumerate(zip(self.channels, ("SAME", "VALID"))):
      x = nn.Conv(width, (5, 5), padding=padding, dtype=self.dtype,
                  name=f"conv_{i}")(x)
      x = nn.avg_pool(nn.relu(x), (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, dtype=self.dtype, name=f"dense_{i}")(x))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
