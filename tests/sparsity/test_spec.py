"""The shared mask vocabulary: prunable leaves of every model, min_kept,
global L2 normalization, and the errors for old or unsupported names."""

import dataclasses
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import flatsparse as fs
from flatsparse import models
from flatsparse.safe import config as safe_config
from flatsparse.safe import Projection
from flatsparse.sparsity import config as sparsity_config
from flatsparse.sparsity import importance
from flatsparse.sparsity import spec
from flatsparse.sparsity.distributions import path_str
from flatsparse.train import config_schema

# Every model of flatsparse.models (small where the class allows), with the
# input shape its abstract init needs.
MODELS = {
    "MLP": (lambda: models.MLP(hidden=(8,), num_classes=3), (1, 8)),
    "LeNet5": (lambda: models.LeNet5(num_classes=3, channels=(2, 3),
                                     hidden=(4,)), (1, 12, 12, 1)),
    "CifarResNet": (lambda: models.CifarResNet(
        num_classes=3, stage_sizes=(1, 1), widths=(4, 8)), (1, 8, 8, 3)),
    "ResNet18": (lambda: models.ResNet18(num_classes=3, width=4),
                 (1, 8, 8, 3)),
    "ResNet20": (lambda: models.ResNet20(num_classes=3), (1, 8, 8, 3)),
    "ResNet32": (lambda: models.ResNet32(num_classes=3), (1, 8, 8, 3)),
    "ResNet56": (lambda: models.ResNet56(num_classes=3), (1, 8, 8, 3)),
    "BasicBlock": (lambda: models.BasicBlock(features=4, strides=2),
                   (1, 8, 8, 3)),
    "ResNet50": (lambda: models.ResNet50(num_classes=3), (1, 32, 32, 3)),
    "Bottleneck": (lambda: models.Bottleneck(features=2), (1, 8, 8, 3)),
    "FFMLP": (lambda: models.FFMLP((8, 4), num_labels=3, readout=True),
              (1, 16)),
    "VGG19": (lambda: models.VGG19(num_classes=3, width_multiplier=0.125),
              (1, 32, 32, 3)),
    "WideResNet": (lambda: models.WideResNet(num_classes=3, depth=10,
                                             widen_factor=1), (1, 8, 8, 3)),
    "WideResNet28x10": (lambda: models.WideResNet28x10(num_classes=3),
                        (1, 8, 8, 3)),
    "WideResNetBlock": (lambda: models.WideResNetBlock(features=4, strides=2),
                        (1, 8, 8, 3)),
    "ViT": (lambda: models.ViT(num_classes=3, hidden_size=8, num_layers=2,
                               num_heads=2, mlp_dim=16, patch_size=4),
            (1, 8, 8, 3)),
    "ViTTi16": (lambda: models.ViTTi16(num_classes=3), (1, 16, 16, 3)),
    "ViTS16": (lambda: models.ViTS16(num_classes=3), (1, 16, 16, 3)),
    "ViTB16": (lambda: models.ViTB16(num_classes=3), (1, 16, 16, 3)),
    # Language models take int tokens (an int32 input of this shape); their
    # embeddings are matrices that are not kernels, and stay dense.
    "Llama": (lambda: models.make_llama(11, hidden_size=8,
                                        intermediate_size=16, num_layers=1,
                                        num_heads=2), (1, 4)),
    "OPT": (lambda: models.make_opt(11, hidden_size=8, ffn_dim=16,
                                    num_layers=1, num_heads=2), (1, 4)),
    "Bert": (lambda: models.make_bert(11, hidden_size=8,
                                      intermediate_size=16, num_layers=1,
                                      num_heads=2), (1, 4)),
    "LlamaBlock": (lambda: models.LlamaBlock(models.LlamaConfig(
        11, 8, 16, 1, 2)), (1, 4, 8)),
    "OPTBlock": (lambda: models.OPTBlock(models.OPTConfig(11, 8, 16, 1, 2)),
                 (1, 4, 8)),
    "BertBlock": (lambda: models.BertBlock(models.BertConfig(11, 8, 16, 1, 2)),
                  (1, 4, 8)),
}
_TOKEN_MODELS = ("Llama", "OPT", "Bert")
_VIT_DENSE = ("cls", "pos_embedding", "query/bias", "key/bias", "value/bias")


def test_model_table_covers_every_model():
  classes = {name for name in models.__all__
             if isinstance(getattr(models, name), type)
             and issubclass(getattr(models, name), nn.Module)}
  assert set(MODELS) == classes


@pytest.mark.parametrize("name", sorted(MODELS))
def test_default_predicate_selects_the_kernels_of_every_model(name):
  make, shape = MODELS[name]
  dtype = jnp.int32 if name in _TOKEN_MODELS else jnp.float32
  variables = jax.eval_shape(make().init, jax.random.key(0),
                             jax.ShapeDtypeStruct(shape, dtype))
  flat = [(path_str(p), x) for p, x in
          jax.tree_util.tree_flatten_with_path(variables)[0]]
  prunable = {p for p, x in flat if spec.default_is_prunable(p, x)}
  matrices = {p for p, x in flat if spec.is_floating_matrix(p, x)}
  assert prunable and prunable == {p for p in matrices
                                   if p.endswith("/kernel")}
  if name.startswith("ViT"):
    # Class token, position embedding and the (heads, head_dim) attention
    # biases stay dense; nothing else differs from ndim > 1.
    assert matrices - prunable and all(
        p.endswith(_VIT_DENSE) for p in matrices - prunable)
    assert any(p.endswith("attention/out/kernel") for p in prunable)
  elif name in _TOKEN_MODELS:
    # Token, position (and segment) embeddings stay dense.
    assert matrices - prunable and all(
        p.endswith("/embedding") for p in matrices - prunable)
  else:
    # MLPs and conv nets: exactly the leaves ndim > 1 selected (so the same
    # masks and numbers as before).
    assert prunable == matrices


def test_default_predicate_names_dtypes_and_nnx():
  matrix = jnp.ones((3, 4))
  assert spec.default_is_prunable("params/Dense_0/kernel", matrix)
  assert spec.default_is_prunable("l1/kernel/value", matrix)  # nnx state
  assert spec.default_is_prunable("kernel", jnp.ones((3, 4), jnp.bfloat16))
  for path, leaf in [("params/Dense_0/kernel", jnp.ones(4)),
                     ("params/Dense_0/kernel", jnp.ones((3, 4), jnp.int32)),
                     ("params/cls", jnp.ones((1, 1, 4))),
                     ("params/embed/embedding", matrix), ("0", matrix),
                     ("value", matrix)]:
    assert not spec.default_is_prunable(path, leaf), path
  assert spec.is_floating_matrix("params/cls", jnp.ones((1, 1, 4)))


def test_overrides_select_a_leaf_the_predicate_leaves_dense():
  params = {"pos_embedding": jnp.arange(1.0, 9.0).reshape(2, 4),
            "dense": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones(4)}}
  overrides = {"pos_embedding": 0.5}
  _, masks = fs.sparsity.magnitude_pruning(
      sparsity=0.5, overrides=overrides).instant_sparsify(params)
  masks_safe = Projection(sparsity=0.5, overrides=overrides).masks(params)
  for m in (masks, masks_safe):
    np.testing.assert_array_equal(m["pos_embedding"], [[0] * 4, [1] * 4])
    assert int(np.sum(m["dense"]["kernel"])) == 8 and m["dense"]["bias"] is None


# ---- min_kept ----------------------------------------------------------------

def _tiny_and_big(dtype=jnp.float32):
  big = jax.random.normal(jax.random.PRNGKey(0), (8, 8)).astype(dtype)
  return {"big": {"kernel": big},
          "small": {"kernel": jnp.asarray([[0.01, 0.04], [0.03, 0.02]],
                                          dtype)}}


def _kept(masks):
  return {k: int(np.sum(np.asarray(v["kernel"]))) for k, v in masks.items()}


def _wrapper_masks(pruner, params):
  tx = pruner.wrap(optax.sgd(0.0))
  _, state = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params),
                       params)
  return fs.sparsity.get_masks(state, params)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64],
                         ids=["f32", "f64"])
def test_min_kept_keeps_a_weight_in_a_small_leaf(dtype):
  # At 90% a 2x2 leaf would keep 4 - round(3.6) = 0 weights.
  with jax.enable_x64(dtype == jnp.float64):
    params = _tiny_and_big(dtype)
    assert params["small"]["kernel"].dtype == dtype
    got = {}
    for min_kept in (1, 0):
      pruner = fs.sparsity.magnitude_pruning(sparsity=0.9, min_kept=min_kept)
      _, masks = pruner.instant_sparsify(params)
      got[min_kept] = (_kept(masks), _kept(_wrapper_masks(pruner, params)),
                       _kept(Projection(sparsity=0.9, min_kept=min_kept)
                             .masks(params)))
      if min_kept:  # the largest weight is the one kept
        np.testing.assert_array_equal(masks["small"]["kernel"],
                                      [[False, True], [False, False]])
  assert got[1] == ({"big": 6, "small": 1},) * 3
  assert got[0] == ({"big": 6, "small": 0},) * 3


def test_min_kept_for_every_scope():
  params = _tiny_and_big()
  for min_kept, want in ((1, 1), (0, 0)):
    channel = fs.sparsity.magnitude_pruning(sparsity=0.9, scope="channel",
                                            min_kept=min_kept)
    assert _kept(channel.instant_sparsify(params)[1])["small"] == 2 * want
    row = Projection(sparsity=0.9, scope="row", min_kept=min_kept)
    assert _kept(row.masks(params))["small"] == 2 * want  # one per row
    # Global at 90% of 68: the small leaf's weights are all below the
    # threshold; min_kept reserves its largest, the total stays 7.
    for kept in (_kept(fs.sparsity.global_magnitude_pruning(
        sparsity=0.9, min_kept=min_kept).instant_sparsify(params)[1]),
                 _kept(Projection(sparsity=0.9, scope="global",
                                  min_kept=min_kept).masks(params))):
      assert kept["small"] == want and sum(kept.values()) == 7


def test_min_kept_changes_nothing_when_every_leaf_keeps_weights():
  params = _tiny_and_big()
  params["small"]["kernel"] = params["small"]["kernel"] * 100.0
  for pruner in (fs.sparsity.magnitude_pruning(sparsity=0.5),
                 fs.sparsity.global_magnitude_pruning(sparsity=0.2),
                 Projection(sparsity=0.2, scope="global")):
    assert pruner.min_kept == 1
    masks = (pruner.masks if isinstance(pruner, Projection) else
             lambda p, u=pruner: u.instant_sparsify(p)[1])
    zero = dataclasses.replace(pruner, min_kept=0)
    zero_masks = (zero.masks if isinstance(zero, Projection) else
                  lambda p, u=zero: u.instant_sparsify(p)[1])
    assert _kept(masks(params))["small"] > 0
    jax.tree.map(np.testing.assert_array_equal, masks(params),
                 zero_masks(params))


def test_topk_ranks_float64_scores_in_float32():
  # Documented: 1 + 1e-12 and 1 are one float32 value, a tie broken by index.
  with jax.enable_x64(True):
    scores = jnp.asarray([1.0, 1.0 + 1e-12, 0.5], jnp.float64)
    assert scores[1] > scores[0]
    mask = fs.sparsity.topk_mask(scores, 1)
  np.testing.assert_array_equal(mask, [True, False, False])


@pytest.mark.parametrize("value", [-1, 1.5, True, "1", None])
def test_min_kept_is_validated(value):
  for build in (lambda: fs.sparsity.magnitude_pruning(min_kept=value),
                lambda: Projection(min_kept=value)):
    with pytest.raises(ValueError, match=r"min_kept must be an int >= 0 .*"
                       + "got " + re.escape(repr(value))):
      build()


# ---- global L2 normalization -------------------------------------------------

def test_global_l2_normalization_hand_computed():
  params = {"a": {"kernel": jnp.asarray([[10.0, 9.0], [8.0, 7.0]])},
            "b": {"kernel": jnp.asarray([[1.0, 2.0], [3.0, 4.0]])}}
  # ||a|| = sqrt(294) = 17.15: a / ||a|| = .583 .525 .467 .408;
  # ||b|| = sqrt(30) = 5.48:   b / ||b|| = .183 .365 .548 .730.
  # The top 4 of the 8: b's 4 and 3, a's 10 and 9 (raw: all of a).
  want = {"a": [[True, True], [False, False]],
          "b": [[False, False], [True, True]]}
  pruner = fs.sparsity.global_magnitude_pruning(
      sparsity=0.5, global_normalization="l2")
  configured = fs.sparsity.create_updater_from_config(
      {"algorithm": "global_magnitude", "sparsity": 0.5,
       "global_normalization": "l2"})
  assert configured == pruner
  proj = safe_config.projection_from_config(
      {"name": "safe", "sparsity": 0.5, "scope": "global",
       "global_normalization": "l2"})
  for masks in (pruner.instant_sparsify(params)[1],
                _wrapper_masks(pruner, params), proj.masks(params)):
    for leaf in want:
      np.testing.assert_array_equal(masks[leaf]["kernel"], want[leaf])
  # Raw scores: all of a, but min_kept=1 reserves b's largest.
  raw = Projection(sparsity=0.5, scope="global").masks(params)
  assert _kept(raw) == {"a": 3, "b": 1}


def test_l2_normalize_ignores_inactive_entries():
  got = importance.l2_normalize(jnp.asarray([3.0, -jnp.inf, 4.0]))
  np.testing.assert_allclose(got, [0.6, -np.inf, 0.8], rtol=1e-6)


# ---- vocabulary --------------------------------------------------------------

def test_both_families_share_the_key_names():
  assert set(sparsity_config.MASK_KEYS) | {"importance"} == set(
      spec.SPEC_KEYS)
  assert set(spec.SPEC_KEYS) <= set(safe_config.PROJECTION_KEYS)
  assert set(spec.SPEC_KEYS) <= set(fs.safe.CONFIG_KEYS)
  assert set(sparsity_config.MASK_KEYS) <= set(sparsity_config.CONFIG_KEYS)
  assert set(Projection.__dataclass_fields__) >= set(spec.SPEC_KEYS)
  assert set(fs.sparsity.SparseUpdater.__dataclass_fields__) >= set(
      spec.SPEC_KEYS)
  assert set(importance.SCORES) | set(importance.STORED) | {
      "magnitude"} == set(spec.IMPORTANCES)
  assert set(fs.safe.SCOPES) <= set(spec.SCOPES)


@pytest.mark.parametrize("old, new", sorted(spec.RENAMED_KEYS.items()))
def test_old_names_are_errors_naming_the_new_key(old, new):
  message = f"'{old}' is now '{new}'"
  value = "erk" if new == "distribution" else "magnitude" if (
      new == "importance") else "2:4"
  with pytest.raises(ValueError, match=message):
    fs.sparsity.create_updater_from_config(
        {"algorithm": "magnitude", "sparsity": 0.5, old: value})
  with pytest.raises(ValueError, match=message):
    safe_config.projection_from_config({"name": "safe", old: value})
  with pytest.raises(ValueError, match=message):
    safe_config.create_from_config({"name": "safe", old: value},
                                   optax.sgd(0.1), 10)
  if old in ("structure", "score"):  # the Python arguments of old
    with pytest.raises(ValueError, match=message):
      fs.sparsity.magnitude_pruning(sparsity=0.5, **{old: value})
  # The trainer's schema check (loop.validate_config, the command line).
  section = "sparsity" if new != "importance" else "safe"
  allowed = [*config_schema.section_schema(section), "algorithm", "name"]
  assert message in config_schema.unknown_keys_message(
      [f"{section}.{old}"], allowed, f"config.{section}")


@pytest.mark.parametrize("build, msg", [
    (lambda: fs.sparsity.magnitude_pruning(scope="row"),
     "scope 'row' is not supported by SparseUpdater.*allowed: 'layer', "
     "'N:M'"),
    (lambda: fs.sparsity.magnitude_pruning(scope="global"),
     "GlobalPruning, the algorithms global_magnitude"),
    (lambda: fs.sparsity.magnitude_pruning(scope="unstructured"),
     "Unknown scope 'unstructured'.*'unstructured' is the scope 'layer'"),
    (lambda: fs.sparsity.global_magnitude_pruning(scope="layer"),
     "scope 'layer' is not supported by GlobalPruning; allowed: 'global'"),
    (lambda: fs.sparsity.magnitude_pruning(scope="block:2xa"),
     "Bad block scope 'block:2xa'"),
    (lambda: Projection(scope="channel"),
     "scope 'channel' is not supported by Projection; allowed: 'global'"),
    (lambda: fs.sparsity.SparseUpdater(importance="hessian"),
     "importance 'hessian' is not supported by SparseUpdater"),
    (lambda: Projection(importance="saliency"),
     "importance 'saliency' is not supported by Projection"),
    (lambda: fs.sparsity.magnitude_pruning(global_normalization="l2"),
     "global_normalization='l2' applies to scope 'global' only"),
    (lambda: Projection(global_normalization="l2"),
     "global_normalization='l2' applies to scope 'global' only"),
    (lambda: Projection(scope="global", global_normalization="l1"),
     "Unknown global_normalization 'l1'; allowed: 'none', 'l2'"),
    (lambda: fs.sparsity.create_updater_from_config(
        {"algorithm": "magnitude", "importance": "saliency"}),
     "algorithm's name sets the importance"),
])
def test_vocabulary_errors_name_the_allowed_values(build, msg):
  with pytest.raises(ValueError, match=msg):
    build()


def test_config_keys_reach_the_transforms():
  up = fs.sparsity.create_updater_from_config(ml_collections.ConfigDict(dict(
      algorithm="magnitude", sparsity=0.5, scope="block:2x2",
      distribution="erk", min_kept=0, overrides={"a/kernel": 0.0})))
  assert (up.scope, up.distribution, up.min_kept) == ("block:2x2", "erk", 0)
  assert up.structure == fs.sparsity.Block((2, 2))
  assert up.overrides == {"a/kernel": 0.0}
  proj = safe_config.projection_from_config(ml_collections.ConfigDict(dict(
      name="safe_plus", sparsity=None, scope="2:4", min_kept=0)))
  assert (proj.importance, proj.min_kept) == ("activation", 0)
  assert proj.scope == "2:4"
