"""Tests for ResNet-50, VGG-19, Wide ResNets and ViTs.

The full-size models are only traced (``jax.eval_shape``): parameter counts and
output shapes without allocating or running anything. Real forward passes run
on tiny instances only.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flatsparse.models import Bottleneck
from flatsparse.models import ResNet50
from flatsparse.models import VGG19
from flatsparse.models import ViT
from flatsparse.models import ViTB16
from flatsparse.models import ViTS16
from flatsparse.models import ViTTi16
from flatsparse.models import WideResNet
from flatsparse.models import WideResNet28x10
from flatsparse.models import WideResNetBlock

CIFAR = (32, 32, 3)
IMAGENET = (224, 224, 3)

# (cls, num_classes, image shape, trainable params); must match docstrings.
EXPECTED_PARAMS = [
  (ResNet50, 1000, IMAGENET, 25_557_032),  # torchvision resnet50: same.
  (VGG19, 10, CIFAR, 20_040_522),  # kuangliu/pytorch-cifar VGG19: same.
  (WideResNet, 10, CIFAR, 36_479_194),  # WRN-28-10, paper: 36.5M.
  (WideResNet28x10, 10, CIFAR, 36_479_194),
  (ViTTi16, 1000, IMAGENET, 5_717_416),  # timm deit_tiny: same.
  (ViTS16, 1000, IMAGENET, 22_050_664),  # timm deit_small: same.
  (ViTB16, 1000, IMAGENET, 86_567_656),  # original ViT-B/16: same.
]


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _abstract_init(model: nn.Module, shape, dtype=jnp.float32):
  x = jax.ShapeDtypeStruct(shape, dtype)
  return jax.eval_shape(model.init, jax.random.key(0), x)


def _tiny_vit(**kwargs) -> ViT:
  defaults = dict(
    num_classes=5,
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    mlp_dim=64,
    patch_size=8,
  )
  return ViT(**{**defaults, **kwargs})


def _randomize_head(variables, key):
  # The ViT head is zero-initialized; give it weights so logits depend on x.
  params = dict(variables["params"])
  head = dict(params["head"])
  head["kernel"] = jax.random.normal(key, head["kernel"].shape)
  params["head"] = head
  return {**variables, "params": params}


@pytest.mark.parametrize(
  "cls,num_classes,image,expected",
  EXPECTED_PARAMS,
  ids=[c.__name__ for c, *_ in EXPECTED_PARAMS],
)
def test_param_count_matches_docstring(cls, num_classes, image, expected):
  variables = _abstract_init(cls(num_classes=num_classes), (1, *image))
  assert _count(variables["params"]) == expected
  assert f"{expected:,}" in cls.__doc__
  assert ("batch_stats" in variables) == (not issubclass(cls, ViT))
  assert all(
    p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"])
  )


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize(
  "cls,num_classes,image",
  [
    (ResNet50, 1000, IMAGENET),
    (VGG19, 10, CIFAR),
    (WideResNet28x10, 10, CIFAR),
  ],
  ids=["ResNet50", "VGG19", "WideResNet28x10"],
)
def test_cnn_output_shape_abstract(cls, num_classes, image, train):
  model = cls(num_classes=num_classes)
  variables = _abstract_init(model, (1, *image))
  x = jax.ShapeDtypeStruct((2, *image), jnp.float32)
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
  assert out.shape == (2, num_classes)
  assert out.dtype == jnp.float32


def test_resnet50_layout_and_width():
  params = _abstract_init(ResNet50(), (1, *IMAGENET))["params"]
  assert params["stem_conv"]["kernel"].shape == (7, 7, 3, 64)
  assert "bias" not in params["stem_conv"]
  assert [
    sum(k.startswith(f"stage{i}_") for k in params) for i in (1, 2, 3, 4)
  ] == [3, 4, 6, 3]
  # Projection in the first block of every stage (64 -> 256 in stage 1).
  assert params["stage1_block1"]["proj_conv"]["kernel"].shape == (1, 1, 64, 256)
  assert "proj_conv" not in params["stage1_block2"]
  assert params["stage4_block3"]["conv3"]["kernel"].shape == (1, 1, 512, 2048)
  assert params["head"]["kernel"].shape == (2048, 1000)

  wide = _abstract_init(
    ResNet50(num_classes=7, width_multiplier=2), (1, 64, 64, 3)
  )
  assert wide["params"]["stem_conv"]["kernel"].shape == (7, 7, 3, 128)
  assert wide["params"]["head"]["kernel"].shape == (4096, 7)


def test_bottleneck_strides_on_3x3_conv():
  block = Bottleneck(16, strides=2)
  x = jax.ShapeDtypeStruct((1, 8, 8, 32), jnp.float32)
  variables = jax.eval_shape(block.init, jax.random.key(0), x)
  out, state = jax.eval_shape(
    lambda v, x: block.apply(
      v, x, capture_intermediates=True, mutable=["intermediates"]
    ),
    variables,
    x,
  )
  inter = state["intermediates"]
  # torchvision v1.5: the 1x1 conv keeps the resolution, the 3x3 strides.
  assert inter["conv1"]["__call__"][0].shape == (1, 8, 8, 16)
  assert inter["conv2"]["__call__"][0].shape == (1, 4, 4, 16)
  assert out.shape == (1, 4, 4, 64)
  assert variables["params"]["proj_conv"]["kernel"].shape == (1, 1, 32, 64)
  same = jax.ShapeDtypeStruct((1, 8, 8, 64), jnp.float32)
  assert "proj_conv" not in jax.eval_shape(
    block.clone(strides=1).init, jax.random.key(0), same
  )["params"]


def test_bf16_compute_keeps_f32_params_abstract():
  model = ResNet50(num_classes=10, dtype=jnp.bfloat16)
  variables = _abstract_init(model, (1, 64, 64, 3))
  assert all(
    p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"])
  )
  x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
  assert out.dtype == jnp.bfloat16


@pytest.mark.parametrize("train", [False, True])
def test_vgg19_tiny_forward(train):
  model = VGG19(num_classes=10, width_multiplier=1 / 16)
  x = jax.random.normal(jax.random.key(1), (2, *CIFAR))
  variables = model.init(jax.random.key(0), x)
  params = variables["params"]
  assert sum(k.startswith("conv") for k in params) == 16
  assert params["conv1"]["kernel"].shape == (3, 3, 3, 4)
  assert params["head"]["kernel"].shape == (32, 10)  # One Dense on 512/16.
  if train:
    logits, _ = model.apply(variables, x, train=True, mutable=["batch_stats"])
  else:
    logits = model.apply(variables, x, train=False)
  assert logits.shape == (2, 10)
  assert bool(jnp.all(jnp.isfinite(logits)))


def test_vgg19_width_multiplier_abstract():
  wide = _abstract_init(VGG19(num_classes=100, width_multiplier=2), (1, *CIFAR))
  assert wide["params"]["conv16"]["kernel"].shape == (3, 3, 1024, 1024)
  assert wide["params"]["head"]["kernel"].shape == (1024, 100)
  half = _abstract_init(
    VGG19(num_classes=10, width_multiplier=0.5), (1, *CIFAR)
  )
  assert half["params"]["head"]["kernel"].shape == (256, 10)
  with pytest.raises(ValueError, match="width_multiplier"):
    _abstract_init(VGG19(num_classes=10, width_multiplier=0), (1, *CIFAR))


def test_wide_resnet_layout():
  params = _abstract_init(WideResNet(num_classes=10), (1, *CIFAR))["params"]
  assert [
    sum(k.startswith(f"group{i}_") for k in params) for i in (1, 2, 3)
  ] == [4, 4, 4]
  assert params["stem_conv"]["kernel"].shape == (3, 3, 3, 16)
  # 16 -> 160 in the first block: 1x1 conv shortcut without BN.
  first = params["group1_block1"]
  assert first["proj_conv"]["kernel"].shape == (1, 1, 16, 160)
  assert "proj_bn" not in first
  assert first["bn1"]["scale"].shape == (16,)  # Pre-activation on the input.
  assert "proj_conv" not in params["group1_block2"]
  assert params["group3_block1"]["proj_conv"]["kernel"].shape == (
    1,
    1,
    320,
    640,
  )
  assert params["head"]["kernel"].shape == (640, 10)
  with pytest.raises(ValueError, match="depth"):
    _abstract_init(WideResNet(num_classes=10, depth=27), (1, *CIFAR))


def test_wide_resnet_block_identity_shortcut():
  x = jax.ShapeDtypeStruct((1, 8, 8, 16), jnp.float32)

  def init(block):
    return jax.eval_shape(block.init, jax.random.key(0), x)["params"]

  assert "proj_conv" not in init(WideResNetBlock(16))
  assert "proj_conv" in init(WideResNetBlock(32))
  assert "proj_conv" in init(WideResNetBlock(16, strides=2))


def test_wide_resnet_tiny_forward_with_dropout():
  model = WideResNet(num_classes=10, depth=10, widen_factor=1, dropout_rate=0.3)
  x = jax.random.normal(jax.random.key(1), (2, *CIFAR))
  variables = model.init(jax.random.key(0), x)  # Eval-mode init: no rng.
  assert _count(variables["params"]) > 0

  eval_logits = model.apply(variables, x, train=False)
  assert eval_logits.shape == (2, 10)
  assert bool(jnp.all(jnp.isfinite(eval_logits)))

  apply = jax.jit(
    lambda v, x, key: model.apply(
      v, x, train=True, mutable=["batch_stats"], rngs={"dropout": key}
    )
  )
  out_a, updates = apply(variables, x, jax.random.key(2))
  out_a2, _ = apply(variables, x, jax.random.key(2))
  out_b, _ = apply(variables, x, jax.random.key(3))
  assert out_a.shape == (2, 10)
  assert bool(jnp.all(jnp.isfinite(out_a)))
  np.testing.assert_array_equal(out_a, out_a2)
  assert not np.allclose(out_a, out_b)  # Dropout masks differ.
  assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(
    variables["batch_stats"]
  )
  with pytest.raises(Exception, match="dropout"):
    model.apply(variables, x, train=True, mutable=["batch_stats"])

  # Without dropout, training needs no rng.
  no_drop = model.clone(dropout_rate=0.0)
  logits, _ = no_drop.apply(variables, x, train=True, mutable=["batch_stats"])
  assert logits.shape == (2, 10)


def test_vit_abstract_shapes_and_attention_maps():
  model = ViTB16(num_classes=1000)
  variables = _abstract_init(model, (1, *IMAGENET))
  params = variables["params"]
  assert set(variables) == {"params"}
  assert params["pos_embedding"].shape == (1, 197, 768)
  assert params["encoderblock_0"]["attention"]["query"]["kernel"].shape == (
    768,
    12,
    64,
  )
  x = jax.ShapeDtypeStruct((2, *IMAGENET), jnp.float32)
  logits, maps = jax.eval_shape(
    lambda v, x: model.apply(v, x, return_attention=True), variables, x
  )
  assert logits.shape == (2, 1000)
  assert len(maps) == 12
  assert all(m.shape == (2, 12, 197, 197) for m in maps)
  # Patch size is overridable; position embeddings follow the input size.
  b32 = _abstract_init(ViTB16(num_classes=10, patch_size=32), (1, 64, 96, 3))
  assert b32["params"]["pos_embedding"].shape == (1, 1 + 2 * 3, 768)
  assert b32["params"]["embedding"]["kernel"].shape == (32, 32, 3, 768)


def test_vit_tiny_forward_attention_rows_sum_to_one():
  model = _tiny_vit()
  x = jax.random.normal(jax.random.key(1), (3, *CIFAR))
  variables = _randomize_head(
    model.init(jax.random.key(0), x), jax.random.key(5)
  )
  logits, maps = model.apply(variables, x, return_attention=True)
  assert logits.shape == (3, 5)
  assert bool(jnp.all(jnp.isfinite(logits)))
  assert isinstance(maps, list) and len(maps) == 2
  for m in maps:
    assert m.shape == (3, 2, 1 + 16, 1 + 16)
    assert bool(jnp.all(m >= 0))
    np.testing.assert_allclose(m.sum(-1), 1.0, rtol=1e-5, atol=1e-5)
  # The class-token row of the last layer (what MaskedKD reads).
  assert maps[-1][:, :, 0, 1:].shape == (3, 2, 16)
  # Without maps every layer runs fused: the same logits within float
  # tolerance.
  np.testing.assert_allclose(
    model.apply(variables, x), logits, rtol=1e-4, atol=1e-4
  )
  # Logits depend on the input.
  assert not np.allclose(model.apply(variables, x + 1.0), logits)


def test_vit_tiny_dropout_and_gap():
  model = _tiny_vit(dropout=0.5)
  x = jax.random.normal(jax.random.key(1), (2, *CIFAR))
  variables = _randomize_head(
    model.init(jax.random.key(0), x), jax.random.key(5)
  )
  eval_logits = model.apply(variables, x)

  def train(key):
    return model.apply(variables, x, train=True, rngs={"dropout": key})

  a, b = train(jax.random.key(2)), train(jax.random.key(3))
  assert not np.allclose(a, b)
  assert not np.allclose(a, eval_logits)
  with pytest.raises(Exception, match="dropout"):
    model.apply(variables, x, train=True)

  gap = _tiny_vit(classifier="gap")
  gap_vars = gap.init(jax.random.key(0), x)
  assert "cls" not in gap_vars["params"]
  assert gap_vars["params"]["pos_embedding"].shape == (1, 16, 32)
  _, maps = gap.apply(gap_vars, x, return_attention=True)
  assert maps[0].shape == (2, 2, 16, 16)


def test_vit_bf16_and_validation():
  model = _tiny_vit(dtype=jnp.bfloat16)
  variables = _abstract_init(model, (1, *CIFAR))
  assert all(
    p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"])
  )
  x = jax.ShapeDtypeStruct((2, *CIFAR), jnp.float32)
  logits, maps = jax.eval_shape(
    lambda v, x: model.apply(v, x, return_attention=True), variables, x
  )
  assert logits.dtype == jnp.bfloat16 and maps[0].dtype == jnp.bfloat16
  with pytest.raises(ValueError, match="classifier"):
    _abstract_init(_tiny_vit(classifier="map"), (1, *CIFAR))
  with pytest.raises(ValueError, match="patch_size"):
    _abstract_init(_tiny_vit(), (1, 30, 32, 3))
  with pytest.raises(ValueError, match="num_heads"):
    _abstract_init(_tiny_vit(num_heads=3), (1, *CIFAR))
