"""Building blocks shared by the convolutional models (ResNets, WRN, VGG)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn

__all__ = ["conv", "batch_norm", "CONV_INIT"]

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
