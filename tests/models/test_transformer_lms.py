"""LLaMA, OPT and BERT: structure (every linear layer an ``nn.Dense`` with an
``(in, out)`` kernel, blocks at ``params['layers_i']``), the blockwise split
that one-shot pruning runs, dtypes, configs and the trainer's registry.

Numerics against an independent reference are in ``test_hf_checkpoint.py``.
Parameters here are random arrays shaped by ``jax.eval_shape`` (no compiled
``init``); shape-only checks trace without compiling.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flatsparse import models
from flatsparse.sparsity import spec
from flatsparse.sparsity.distributions import path_str
from flatsparse.train import builders

VOCAB = 50
TOKENS = np.array([[3, 17, 42, 5, 9, 31], [11, 2, 47, 8, 25, 19]])
LEFT_PAD = np.array([[1] * 6, [0, 0, 1, 1, 1, 1]])
RIGHT_PAD = np.array([[1] * 6, [1, 1, 1, 1, 0, 0]])


def make_models(**kw):
  """Tiny instances: (name, model, padding mask, Dense layers per block)."""
  return [
      ("llama", models.Llama(models.LlamaConfig(
          VOCAB, 16, 24, 2, num_heads=4, num_kv_heads=2), **kw), LEFT_PAD, 7),
      ("opt", models.OPT(models.OPTConfig(
          VOCAB, 16, 24, 2, num_heads=2, max_position_embeddings=8), **kw),
       LEFT_PAD, 6),
      ("bert", models.Bert(models.BertConfig(
          VOCAB, 16, 24, 2, num_heads=2, max_position_embeddings=8,
          add_pooling_layer=True), **kw), RIGHT_PAD, 6),
  ]


MODELS = make_models()


@functools.cache
def param_shapes(model):
  """``variables['params']`` of ``model`` as ShapeDtypeStructs."""
  return jax.eval_shape(model.init, jax.ShapeDtypeStruct((2,), jnp.uint32),
                        jax.ShapeDtypeStruct((1, 1), jnp.int32))["params"]


@functools.cache
def random_params(model, seed=0):
  """Params of ``model`` drawn with NumPy (norm scales near 1)."""
  rng = np.random.default_rng(seed)

  def draw(path, s):
    mean = 1.0 if path_str(path).endswith("scale") else 0.0
    return jnp.asarray(rng.normal(mean, 0.3, s.shape), s.dtype)

  return jax.tree_util.tree_map_with_path(draw, param_shapes(model))


def chain(bw, params, tokens, mask):
  hidden = bw.embed(params, tokens, mask)
  for name in bw.block_names:
    hidden = bw.block(params[name], hidden, mask)
  return bw.head(params, hidden)


@pytest.mark.parametrize("name,model,mask,per_block", MODELS,
                         ids=[m[0] for m in MODELS])
def test_blockwise_chain_traces_to_the_same_program_as_apply(
    name, model, mask, per_block):
  # The same primitives in the same order: equal outputs, bit for bit.
  del per_block
  bw = models.blockwise(model)
  assert bw.block_names == ("layers_0", "layers_1")
  params = param_shapes(model)
  chained = jax.make_jaxpr(lambda p, t, m: chain(bw, p, t, m))(
      params, TOKENS, mask)
  applied = jax.make_jaxpr(
      lambda p, t, m: model.apply({"params": p}, t, m))(params, TOKENS, mask)
  assert str(chained) == str(applied), name
  width = VOCAB if name != "bert" else 16
  assert chained.out_avals[0].shape == (2, 6, width)


def test_blockwise_pieces_run_jitted():
  # Equal to apply by the test above; here they compile and run, and one
  # compilation of the block serves every block.
  _, model, mask, _ = MODELS[0]
  params = random_params(model)
  bw = models.blockwise(model)
  block = jax.jit(bw.block)
  hidden = jax.jit(bw.embed)({"params": params}, TOKENS, mask)  # variables ok
  for name in bw.block_names:
    hidden = block(params[name], hidden, mask)
  assert block._cache_size() == 1
  logits = jax.jit(bw.head)(params, hidden)
  assert logits.shape == (2, 6, VOCAB) and np.isfinite(logits).all()


@pytest.mark.parametrize("name,model,mask,per_block", MODELS,
                         ids=[m[0] for m in MODELS])
def test_every_linear_layer_is_a_dense_with_an_in_out_kernel(name, model,
                                                             mask, per_block):
  params = param_shapes(model)
  calls = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Dense) and context.method_name == (
        "__call__"):
      calls.append((context.module.scope.path, args[0].shape[-1],
                    context.module.features))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda p: model.apply({"params": p}, TOKENS, mask), params)
  heads = {"llama": 1, "opt": 0, "bert": 0}[name]  # OPT's head is tied
  assert len(calls) == 2 * per_block + heads
  flat = {path_str(p): x for p, x in
          jax.tree_util.tree_flatten_with_path(params)[0]}
  for path, fan_in, fan_out in calls:
    assert flat["/".join(path) + "/kernel"].shape == (fan_in, fan_out)
  # Blocks are params['layers_i'] and the block module applies to them.
  assert {"layers_0", "layers_1"} <= set(params)
  block = model.block_module()
  assert block.parent is None
  hidden = jax.ShapeDtypeStruct((2, 6, 16), jnp.float32)
  out = jax.eval_shape(lambda p, h: block.apply({"params": p}, h, mask),
                       params["layers_1"], hidden)
  assert out.shape == (2, 6, 16)


@pytest.mark.parametrize("name,model,mask,per_block", MODELS,
                         ids=[m[0] for m in MODELS])
def test_the_default_pruning_predicate_selects_the_dense_kernels(
    name, model, mask, per_block):
  del mask
  flat = [(path_str(p), x) for p, x in jax.tree_util.tree_flatten_with_path(
      param_shapes(model))[0]]
  prunable = {p for p, x in flat if spec.default_is_prunable(p, x)}
  assert prunable == {p for p, _ in flat if p.endswith("/kernel")}
  per_model = {"llama": 1, "opt": 0, "bert": 1}[name]  # lm_head; pooler
  assert len(prunable) == 2 * per_block + per_model
  assert not any("embed" in p for p in prunable)


@pytest.mark.parametrize("dtype,param_dtype", [
    (jnp.bfloat16, jnp.float32), (jnp.float64, jnp.float64)],
                         ids=["bfloat16", "float64"])
def test_compute_and_param_dtypes(dtype, param_dtype):
  with jax.enable_x64(dtype == jnp.float64):
    for name, model, mask, _ in make_models(dtype=dtype,
                                            param_dtype=param_dtype):
      out, variables = jax.eval_shape(
          lambda key, m=model, k=mask: m.init_with_output(key, TOKENS, k),
          jax.ShapeDtypeStruct((2,), jnp.uint32))
      leaves = jax.tree.leaves(variables)
      assert all(x.dtype == param_dtype for x in leaves), name
      assert out.dtype == dtype, name


def test_bert_pooler_and_identity_head():
  _, model, _, _ = MODELS[2]
  params = param_shapes(model)
  hidden = jax.ShapeDtypeStruct((2, 6, 16), jnp.float32)
  pooled = jax.eval_shape(
      lambda p, h: model.apply({"params": p}, h, method="pool"), params,
      hidden)
  assert pooled.shape == (2, 16)
  x = jnp.arange(6.0).reshape(1, 2, 3)
  assert model.apply({"params": {}}, x, method="head") is x


@pytest.mark.parametrize("index", [1, 2], ids=["opt", "bert"])
def test_learned_positions_refuse_longer_sequences(index):
  _, model, _, _ = MODELS[index]
  params = param_shapes(model)
  with pytest.raises(ValueError, match="sequence length 9 exceeds "
                     "max_position_embeddings=8"):
    jax.eval_shape(lambda p: model.apply({"params": p},
                                         jnp.zeros((1, 9), jnp.int32)),
                   params)


def test_a_mask_of_the_wrong_shape_is_refused():
  _, model, _, _ = MODELS[0]
  with pytest.raises(ValueError, match=r"attention_mask must have shape "
                     r"\(batch, 6\), got \(2, 5\)"):
    jax.eval_shape(lambda p: model.apply({"params": p}, TOKENS,
                                         jnp.ones((2, 5))),
                   param_shapes(model))


@pytest.mark.parametrize("make,kw,match", [
    (models.LlamaConfig, dict(num_kv_heads=3), "num_kv_heads must divide"),
    (models.LlamaConfig, dict(head_dim=7), "head_dim must be even"),
    (models.LlamaConfig, dict(num_heads=5, num_kv_heads=None),
     "num_heads must divide hidden_size=16"),
    (models.OPTConfig, dict(do_layer_norm_before=False),
     "do_layer_norm_before=False.*not supported"),
    (models.OPTConfig, dict(word_embed_proj_dim=8),
     "word_embed_proj_dim=8 != hidden_size=16"),
    (models.BertConfig, dict(hidden_act="relu"),
     "Unknown hidden_act 'relu'; allowed: 'gelu'"),
    (models.BertConfig, dict(num_layers=0), "num_layers must be an int >= 1"),
])
def test_bad_configs_name_the_value_and_the_allowed_ones(make, kw, match):
  base = dict(vocab_size=VOCAB, hidden_size=16, num_layers=2, num_heads=4)
  base["ffn_dim" if make is models.OPTConfig else "intermediate_size"] = 24
  with pytest.raises(ValueError, match=match):
    make(**{**base, **kw})


def test_blockwise_refuses_other_models():
  with pytest.raises(TypeError, match="Llama, OPT or Bert.*MLP"):
    models.blockwise(models.MLP(hidden=(4,), num_classes=2))


@pytest.mark.parametrize("name", ["llama", "opt", "bert"])
def test_the_trainer_builds_the_models_by_name(name):
  fields = dict(hidden_size=16, num_layers=2, num_heads=2)
  fields["ffn_dim" if name == "opt" else "intermediate_size"] = 24
  model = builders.build_model(dict(name=name, dtype="bfloat16", **fields),
                               num_classes=VOCAB)
  assert model.config.vocab_size == VOCAB and model.dtype == jnp.bfloat16
  with pytest.raises(ValueError, match="Bad arguments for model"):
    builders.build_model(dict(name=name, bogus=1, **fields), VOCAB)
