"""Tests for flatsparse.models: shapes, parameter counts, BatchNorm state,
dtypes."""

from __future__ import annotations

import ast
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flatsparse import models
from flatsparse.models import BasicBlock
from flatsparse.models import CifarResNet
from flatsparse.models import MLP
from flatsparse.models import ResNet18
from flatsparse.models import ResNet20
from flatsparse.models import ResNet32
from flatsparse.models import ResNet56

NUM_CLASSES = 10
IMAGE = (32, 32, 3)

# Trainable `params` for num_classes=10 at default width; must match docstrings.
EXPECTED_PARAMS = {
  ResNet18: 11_173_962,
  ResNet20: 272_474,
  ResNet32: 466_906,
  ResNet56: 855_770,
}


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _abstract_init(model: nn.Module, shape=(1, *IMAGE)):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), x)


@pytest.mark.parametrize("cls", list(EXPECTED_PARAMS), ids=lambda c: c.__name__)
def test_param_count_matches_docstring(cls):
  variables = _abstract_init(cls(num_classes=NUM_CLASSES))
  expected = EXPECTED_PARAMS[cls]
  assert _count(variables["params"]) == expected
  assert f"{expected:,}" in cls.__doc__
  assert "batch_stats" in variables


@pytest.mark.parametrize(
  "cls", [ResNet18, ResNet32, ResNet56], ids=lambda c: c.__name__
)
@pytest.mark.parametrize("train", [False, True])
def test_resnet_output_shape_abstract(cls, train):
  # Full trace of the forward pass without running it (cheap for big models).
  model = cls(num_classes=NUM_CLASSES)
  variables = _abstract_init(model)
  x = jax.ShapeDtypeStruct((2, *IMAGE), jnp.float32)
  if train:
    out, updates = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]),
      variables,
      x,
    )
    assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(
      variables["batch_stats"]
    )
  else:
    out = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False), variables, x
    )
  assert out.shape == (2, NUM_CLASSES)
  assert out.dtype == jnp.float32


@pytest.mark.parametrize("train", [False, True])
def test_resnet20_forward(train):
  model = ResNet20(num_classes=NUM_CLASSES)
  x = jax.random.normal(jax.random.key(1), (2, *IMAGE))
  variables = model.init(jax.random.key(0), x)
  if train:
    logits, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
  else:
    logits = model.apply(variables, x, train=False)
  assert logits.shape == (2, NUM_CLASSES)
  assert bool(jnp.all(jnp.isfinite(logits)))


def test_batch_stats_update_in_train_mode_only():
  model = CifarResNet(num_classes=3, stage_sizes=(1, 1), widths=(4, 8))
  x = 3.0 + jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  variables = model.init(jax.random.key(0), x)
  stats = variables["batch_stats"]
  assert set(stats["stem_bn"]) == {"mean", "var"}

  _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  new_stem = updates["batch_stats"]["stem_bn"]
  # momentum=0.9: new = 0.9 * old + 0.1 * batch; old mean is 0, inputs ~ +3.
  assert not np.allclose(new_stem["mean"], stats["stem_bn"]["mean"])
  assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(stats)

  # Eval mode uses the running averages and leaves them unchanged.
  _, eval_updates = model.apply(
    variables, x, train=False, mutable=["batch_stats"]
  )
  jax.tree.map(
    np.testing.assert_array_equal, eval_updates["batch_stats"], stats
  )


@pytest.mark.parametrize("train", [False, True])
def test_mlp_forward(train):
  model = MLP(hidden=(16, 8), num_classes=NUM_CLASSES)
  x = jnp.ones((2, 4, 4, 3))
  variables = model.init(jax.random.key(0), x)
  logits = model.apply(variables, x, train=train)
  assert logits.shape == (2, NUM_CLASSES)
  assert set(variables) == {"params"}
  assert _count(variables["params"]) == (48 * 16 + 16) + (16 * 8 + 8) + (
    8 * 10 + 10
  )


def test_mlp_bf16_compute_keeps_f32_params():
  model = MLP(hidden=(16,), num_classes=NUM_CLASSES, dtype=jnp.bfloat16)
  x = jnp.ones((2, 5))
  variables = model.init(jax.random.key(0), x)
  assert all(
    p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"])
  )
  assert model.apply(variables, x).dtype == jnp.bfloat16


def test_basic_block_projection_only_when_shape_changes():
  x = jax.ShapeDtypeStruct((1, 8, 8, 16), jnp.float32)

  def init(block):
    return jax.eval_shape(block.init, jax.random.key(0), x)["params"]

  assert "proj_conv" not in init(BasicBlock(16))
  assert "proj_conv" in init(BasicBlock(32))
  strided = init(BasicBlock(16, strides=2))
  assert strided["proj_conv"]["kernel"].shape == (1, 1, 16, 16)
  assert "proj_bn" in strided


def test_width_options_and_generic_resnet():
  wide = _abstract_init(ResNet20(num_classes=NUM_CLASSES, width_multiplier=2))
  assert wide["params"]["stage3_block1"]["conv1"]["kernel"].shape == (
    3,
    3,
    64,
    128,
  )
  narrow = _abstract_init(ResNet18(num_classes=NUM_CLASSES, width=16))
  assert narrow["params"]["head"]["kernel"].shape == (128, NUM_CLASSES)
  # ResNet20 == CifarResNet with its stage config.
  generic = CifarResNet(NUM_CLASSES, stage_sizes=(3, 3, 3), widths=(16, 32, 64))
  assert _count(_abstract_init(generic)["params"]) == EXPECTED_PARAMS[ResNet20]
  with pytest.raises(ValueError):
    _abstract_init(CifarResNet(NUM_CLASSES, stage_sizes=(1, 1), widths=(8,)))


def test_models_package_is_self_contained():
  # Lifting the models into another codebase takes flatsparse/models/ and the
  # dependency-free argument checks of flatsparse/validation.py, nothing else.
  assert set(models.__all__) == {
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
  }
  for path in pathlib.Path(models.__file__).parent.glob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      names = []
      if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names = [f"{node.module}.{alias.name}" for alias in node.names]
      for name in names:
        if name.split(".")[0] == "flatsparse":
          assert (name.startswith("flatsparse.models")
                  or name == "flatsparse.validation"), f"{path.name}: {name}"


def test_lenet5_shapes_and_param_count():
  model = models.LeNet5(num_classes=NUM_CLASSES)
  variables = _abstract_init(model, (1, 28, 28, 1))
  shapes = jax.tree.map(lambda p: p.shape, variables["params"])
  # 28x28 -> conv SAME 28x28x6 -> pool 14 -> conv VALID 10x10x16 -> pool 5.
  assert shapes["conv_0"]["kernel"] == (5, 5, 1, 6)
  assert shapes["conv_1"]["kernel"] == (5, 5, 6, 16)
  assert shapes["dense_0"]["kernel"] == (5 * 5 * 16, 120)
  assert shapes["head"]["kernel"] == (84, NUM_CLASSES)
  count = (25 * 6 + 6) + (25 * 6 * 16 + 16) + (400 * 120 + 120) + (
    120 * 84 + 84) + (84 * 10 + 10)
  assert _count(variables["params"]) == count == 61_706
  assert f"{count:,}" in models.LeNet5.__doc__
  assert set(variables) == {"params"}


def test_lenet5_forward_grayscale_and_bf16():
  model = models.LeNet5(num_classes=3, channels=(2, 3), hidden=(4,),
                        dtype=jnp.bfloat16)
  x = jnp.ones((2, 12, 12))  # (batch, h, w): one channel added
  variables = model.init(jax.random.key(0), x)
  assert all(
    p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"])
  )
  logits = model.apply(variables, x)
  assert logits.shape == (2, 3) and logits.dtype == jnp.bfloat16
  # Average pooling: a constant image gives the same logits at any offset
  # the pooling windows see identically (no max-pooling ties involved).
  np.testing.assert_array_equal(logits[0], logits[1])


@pytest.mark.parametrize(
  "kwargs, shape, match",
  [
    (dict(channels=(4,)), (1, 28, 28, 1), "two sizes, got \\(4,\\)"),
    ({}, (1, 8, 8, 1), "at least 12x12.*got shape \\(1, 8, 8, 1\\)"),
    ({}, (1, 28), "at least 12x12"),
  ],
)
def test_lenet5_bad_input_names_the_value(kwargs, shape, match):
  model = models.LeNet5(num_classes=3, **kwargs)
  with pytest.raises(ValueError, match=match):
    _abstract_init(model, shape)
