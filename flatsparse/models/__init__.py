"""Flax linen models: MLP, LeNet-5, the Forward-Forward MLP, CIFAR ResNets,
ResNet-50, VGG-19, WRN, ViT and the transformer LMs (LLaMA, OPT, BERT) with
Hugging Face checkpoints."""

from flatsparse.models.bert import Bert
from flatsparse.models.bert import BertBlock
from flatsparse.models.bert import BertConfig
from flatsparse.models.bert import make_bert
from flatsparse.models.ff_mlp import FFMLP
from flatsparse.models.ff_mlp import FFOutputs
from flatsparse.models.hf_checkpoint import load_hf_checkpoint
from flatsparse.models.hf_checkpoint import save_hf_checkpoint
from flatsparse.models.imagenet_resnet import Bottleneck
from flatsparse.models.imagenet_resnet import ResNet50
from flatsparse.models.lenet import LeNet5
from flatsparse.models.llama import Llama
from flatsparse.models.llama import LlamaBlock
from flatsparse.models.llama import LlamaConfig
from flatsparse.models.llama import make_llama
from flatsparse.models.mlp import MLP
from flatsparse.models.opt import make_opt
from flatsparse.models.opt import OPT
from flatsparse.models.opt import OPTBlock
from flatsparse.models.opt import OPTConfig
from flatsparse.models.resnet import BasicBlock
from flatsparse.models.resnet import CifarResNet
from flatsparse.models.resnet import ResNet18
from flatsparse.models.resnet import ResNet20
from flatsparse.models.resnet import ResNet32
from flatsparse.models.resnet import ResNet56
from flatsparse.models.split import Blockwise
from flatsparse.models.split import blockwise
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
  "LeNet5",
  "FFMLP",
  "FFOutputs",
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
  "Llama",
  "LlamaBlock",
  "LlamaConfig",
  "make_llama",
  "OPT",
  "OPTBlock",
  "OPTConfig",
  "make_opt",
  "Bert",
  "BertBlock",
  "BertConfig",
  "make_bert",
  "Blockwise",
  "blockwise",
  "load_hf_checkpoint",
  "save_hf_checkpoint",
]
