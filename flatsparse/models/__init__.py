"""Flax linen models: MLP and CIFAR-style ResNets."""

from flatsparse.models.mlp import MLP
from flatsparse.models.resnet import (
  BasicBlock,
  CifarResNet,
  ResNet18,
  ResNet20,
  ResNet32,
  ResNet56,
)

__all__ = [
  "MLP",
  "ResNet18",
  "ResNet20",
  "ResNet32",
  "ResNet56",
  "CifarResNet",
  "BasicBlock",
]
