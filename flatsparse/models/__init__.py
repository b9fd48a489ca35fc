"""Flax linen models: MLP, CIFAR ResNets, ResNet-50, VGG-19, WRN and ViT."""

from flatsparse.models.imagenet_resnet import Bottleneck
from flatsparse.models.imagenet_resnet import ResNet50
from flatsparse.models.mlp import MLP
from flatsparse.models.resnet import BasicBlock
from flatsparse.models.resnet import CifarResNet
from flatsparse.models.resnet import ResNet18
from flatsparse.models.resnet import ResNet20
from flatsparse.models.resnet import ResNet32
from flatsparse.models.resnet import ResNet56
from flatsparse.models.vgg import VGG19
from flatsparse.models.vit import ViT
from flatsparse.models.vit import ViTB16
from flatsparse.models.vit import ViTS16
from flatsparse.models.vit import ViTTi16
from flatsparse.models.wide_resnet import WideResNet
from flatsparse.models.wide_resnet import WideResNet28x10
from flatsparse.models.wide_resnet import WideResNetBlock

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
