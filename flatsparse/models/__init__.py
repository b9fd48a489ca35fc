"""Flax linen models: MLP, CIFAR ResNets, ResNet-50, VGG-19, WRN and ViT."""

from flatsparse.models.imagenet_resnet import Bottleneck, ResNet50
from flatsparse.models.mlp import MLP
from flatsparse.models.resnet import (
  BasicBlock,
  CifarResNet,
  ResNet18,
  ResNet20,
  ResNet32,
  ResNet56,
)
from flatsparse.models.vgg import VGG19
from flatsparse.models.vit import ViT, ViTB16, ViTS16, ViTTi16
from flatsparse.models.wide_resnet import (
  WideResNet,
  WideResNet28x10,
  WideResNetBlock,
)

__all__ = [
  "MLP",
  "ResNet18",
  "ResNet20",
  "ResNet32",
  "ResNet56",
  "CifarResNet",
  "BasicBlock",
  "ResNet50",
  "Bottleneck",
  "VGG19",
  "WideResNet",
  "WideResNet28x10",
  "WideResNetBlock",
  "ViT",
  "ViTTi16",
  "ViTS16",
  "ViTB16",
]
