"""Hugging Face checkpoints (config.json + safetensors) for Llama, OPT, BERT.

No ``transformers`` and no PyTorch: the config is read as JSON and the tensors
with ``safetensors`` (NumPy arrays, bfloat16 through ``ml_dtypes``). A
PyTorch ``Linear`` stores its weight as ``(out, in)``; a Flax ``Dense``
kernel is ``(in, out)``, so linear weights are transposed both ways;
embeddings, biases and norm weights are stored as they are. Name mapping
(Flax path -> Hugging Face name, ``i`` the block):

==========================================  =================================
Flax (``params``)                           Hugging Face
==========================================  =================================
Llama ``embed_tokens/embedding``            ``model.embed_tokens.weight``
Llama ``layers_i/<m>/kernel|scale``         ``model.layers.i.<m>.weight``
  (``self_attn/q_proj`` ... ``o_proj``,     (``/`` -> ``.``)
  ``mlp/gate_proj|up_proj|down_proj``,
  ``input_layernorm``,
  ``post_attention_layernorm``)
Llama ``norm/scale``                        ``model.norm.weight``
Llama ``lm_head/kernel`` (untied only)      ``lm_head.weight``
OPT ``embed_tokens``, ``embed_positions``,  ``model.decoder.<same>.weight``
  ``final_layer_norm``                      (and ``.bias``)
OPT ``layers_i/<m>/...``                    ``model.decoder.layers.i.<m>...``
  (``self_attn/q_proj`` ... ``out_proj``,
  ``self_attn_layer_norm``, ``fc1``,
  ``fc2``, ``final_layer_norm``)
BERT ``word_embeddings``,                   ``embeddings.<same>.weight``
  ``position_embeddings``,
  ``token_type_embeddings``
BERT ``embeddings_layer_norm``              ``embeddings.LayerNorm``
BERT ``layers_i/attention/query|key|value`` ``encoder.layer.i.attention.self.
                                            query|key|value``
BERT ``layers_i/attention/output``          ``...attention.output.dense``
BERT ``layers_i/attention_layer_norm``      ``...attention.output.LayerNorm``
BERT ``layers_i/intermediate``              ``...intermediate.dense``
BERT ``layers_i/output``                    ``...output.dense``
BERT ``layers_i/output_layer_norm``         ``...output.LayerNorm``
BERT ``pooler``                             ``pooler.dense``
==========================================  =================================

Leaves: ``kernel`` -> ``weight`` (transposed), ``scale`` and ``embedding`` ->
``weight``, ``bias`` -> ``bias``. On loading, OPT names may lack ``model.``
(``decoder.layers...``, the original OPT files) and BERT names may carry
``bert.`` (a ``BertFor*`` body) or not (``BertModel``, sentence-transformers);
saving writes the names of the table. :func:`hf_name_map` gives the table for
one model.

References:
    Hugging Face ``transformers`` checkpoint layout (``LlamaForCausalLM``,
    ``OPTForCausalLM``, ``BertModel``) and the safetensors format.
"""

from __future__ import annotations

from collections.abc import Mapping
import functools
import json
import os
import pathlib
import re
from typing import Any

from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flatsparse.models import bert as bert_lib
from flatsparse.models import llama as llama_lib
from flatsparse.models import opt as opt_lib

__all__ = ["ARCHITECTURES", "IGNORED_TENSORS", "CONFIG_FILE", "WEIGHTS_FILE",
           "INDEX_FILE", "architecture", "model_from_hf_config",
           "hf_config_from_model", "hf_name_map", "load_hf_checkpoint",
           "save_hf_checkpoint"]

# The ``architectures`` entry of config.json -> the ``model_type`` it implies.
ARCHITECTURES = {"LlamaForCausalLM": "llama", "OPTForCausalLM": "opt",
                 "BertModel": "bert"}
_MODEL_TYPES = {v: k for k, v in ARCHITECTURES.items()}
# Buffers some checkpoints carry that no parameter corresponds to.
IGNORED_TENSORS = (r"(.*\.)?rotary_emb\.inv_freq", r"(.*\.)?position_ids")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_SHARD = "model-{:05d}-of-{:05d}.safetensors"
_SHARD_PATTERN = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")

_LEAVES = {"kernel": "weight", "scale": "weight", "embedding": "weight",
           "bias": "bias"}
_LAYER_PREFIX = {"llama": "model.layers.{}.",
                 "opt": "model.decoder.layers.{}.",
                 "bert": "encoder.layer.{}."}
_TOP = {
    "llama": {"embed_tokens": "model.embed_tokens", "norm": "model.norm",
              "lm_head": "lm_head"},
    "opt": {"embed_tokens": "model.decoder.embed_tokens",
            "embed_positions": "model.decoder.embed_positions",
            "final_layer_norm": "model.decoder.final_layer_norm"},
    "bert": {"word_embeddings": "embeddings.word_embeddings",
             "position_embeddings": "embeddings.position_embeddings",
             "token_type_embeddings": "embeddings.token_type_embeddings",
             "embeddings_layer_norm": "embeddings.LayerNorm",
             "pooler": "pooler.dense"},
}
_BERT_BLOCK = {"attention/query": "attention.self.query",
               "attention/key": "attention.self.key",
               "attention/value": "attention.self.value",
               "attention/output": "attention.output.dense",
               "attention_layer_norm": "attention.output.LayerNorm",
               "intermediate": "intermediate.dense",
               "output": "output.dense",
               "output_layer_norm": "output.LayerNorm"}
_TORCH_DTYPES = {"float32": "float32", "float64": "float64",
                 "float16": "float16", "bfloat16": "bfloat16"}

Path = str | os.PathLike


def _safetensors() -> Any:
  # Imported on use: ``import flatsparse.models`` must work without it.
  try:
    import safetensors.numpy
  except ImportError as e:
    raise ImportError("Hugging Face checkpoints need the 'safetensors' "
                      "package (pip install safetensors).") from e
  return safetensors


def architecture(hf_config: Mapping[str, Any]) -> str:
  """``'llama'``, ``'opt'`` or ``'bert'`` from a config.json dict.

  ``architectures`` decides when present (one of ``ARCHITECTURES``),
  ``model_type`` otherwise.

  Raises:
    ValueError: Neither names a supported architecture.
  """
  archs = hf_config.get("architectures")
  if archs:
    for arch in archs:
      if arch in ARCHITECTURES:
        return ARCHITECTURES[arch]
    raise ValueError(f"Unknown architectures {archs!r} in config.json; "
                     f"allowed: {', '.join(map(repr, ARCHITECTURES))}.")
  model_type = hf_config.get("model_type")
  if model_type not in _MODEL_TYPES:
    raise ValueError(f"Unknown model_type {model_type!r} in config.json (and "
                     "no architectures); allowed: "
                     f"{', '.join(map(repr, _MODEL_TYPES))}.")
  return model_type


def _field(hf: Mapping[str, Any], key: str, arch: str) -> Any:
  if hf.get(key) is None:
    raise ValueError(f"config.json has no {key!r}, which {arch} needs.")
  return hf[key]


def _expect(hf: Mapping[str, Any], key: str, default: Any,
            allowed: tuple[Any, ...], arch: str) -> Any:
  value = hf.get(key, default)
  if value not in allowed:
    raise ValueError(f"config.json: {key}={value!r} is not supported for "
                     f"{arch}; allowed: {', '.join(map(repr, allowed))}.")
  return value


def _rope_theta(hf: Mapping[str, Any]) -> float:
  # transformers >= 5 nests the rotary settings under rope_parameters.
  rope = hf.get("rope_parameters") or {}
  _expect(rope, "rope_type", "default", ("default",), "llama")
  _expect(hf, "rope_scaling", None, (None,), "llama")
  return float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))


def model_from_hf_config(hf_config: Mapping[str, Any], *, dtype: Any = None,
                         param_dtype: Any = None,
                         add_pooling_layer: bool = False) -> nn.Module:
  """The ``Llama``, ``OPT`` or ``Bert`` a config.json dict describes.

  Args:
    hf_config: The parsed config.json.
    dtype: Computation dtype; None means float32.
    param_dtype: Parameter dtype; None means ``dtype`` promoted to at least
      float32 (float32 for bfloat16, float64 for float64).
    add_pooling_layer: BERT only: give the model the pooler's parameters.

  Returns:
    An unbound model.

  Raises:
    ValueError: An unknown architecture or a setting the models lack (a
      rotary scaling, biased LLaMA projections, post-LN OPT, ...); the
      message names the field, its value and the allowed ones.
  """
  arch = architecture(hf_config)
  h = hf_config
  dtype = jnp.dtype(jnp.float32 if dtype is None else dtype)
  if param_dtype is None:
    param_dtype = jnp.promote_types(dtype, jnp.float32)
  kw = dict(dtype=dtype, param_dtype=jnp.dtype(param_dtype))

  def common() -> dict[str, Any]:
    return dict(vocab_size=_field(h, "vocab_size", arch),
                hidden_size=_field(h, "hidden_size", arch),
                num_layers=_field(h, "num_hidden_layers", arch),
                num_heads=_field(h, "num_attention_heads", arch))

  if arch == "llama":
    _expect(h, "hidden_act", "silu", ("silu",), arch)
    _expect(h, "attention_bias", False, (False,), arch)
    _expect(h, "mlp_bias", False, (False,), arch)
    config = llama_lib.LlamaConfig(
        **common(), intermediate_size=_field(h, "intermediate_size", arch),
        num_kv_heads=h.get("num_key_value_heads"), head_dim=h.get("head_dim"),
        rope_theta=_rope_theta(h), rms_norm_eps=h.get("rms_norm_eps", 1e-6),
        tie_word_embeddings=h.get("tie_word_embeddings", False),
        max_position_embeddings=h.get("max_position_embeddings", 2048))
    return llama_lib.Llama(config, **kw)
  if arch == "opt":
    _expect(h, "activation_function", "relu", ("relu",), arch)
    _expect(h, "layer_norm_elementwise_affine", True, (True,), arch)
    _expect(h, "_remove_final_layer_norm", False, (False,), arch)
    _expect(h, "tie_word_embeddings", True, (True,), arch)
    config = opt_lib.OPTConfig(
        **common(), ffn_dim=_field(h, "ffn_dim", arch),
        max_position_embeddings=h.get("max_position_embeddings", 2048),
        enable_bias=h.get("enable_bias", True),
        do_layer_norm_before=h.get("do_layer_norm_before", True),
        word_embed_proj_dim=h.get("word_embed_proj_dim"))
    return opt_lib.OPT(config, **kw)
  _expect(h, "position_embedding_type", "absolute", ("absolute",), arch)
  _expect(h, "is_decoder", False, (False,), arch)
  config = bert_lib.BertConfig(
      **common(), intermediate_size=_field(h, "intermediate_size", arch),
      max_position_embeddings=h.get("max_position_embeddings", 512),
      type_vocab_size=h.get("type_vocab_size", 2),
      layer_norm_eps=h.get("layer_norm_eps", 1e-12),
      hidden_act=h.get("hidden_act", "gelu"),
      add_pooling_layer=add_pooling_layer)
  return bert_lib.Bert(config, **kw)


def _model_arch(model: nn.Module) -> str:
  for arch, cls in (("llama", llama_lib.Llama), ("opt", opt_lib.OPT),
                    ("bert", bert_lib.Bert)):
    if isinstance(model, cls):
      return arch
  raise TypeError(f"Unknown model {type(model).__name__}; allowed: Llama, "
                  "OPT, Bert.")


def hf_config_from_model(model: nn.Module,
                         base: Mapping[str, Any] | None = None,
                         torch_dtype: str | None = None) -> dict[str, Any]:
  """config.json for ``model``: ``base`` updated with the model's fields.

  Args:
    model: A ``Llama``, ``OPT`` or ``Bert``.
    base: A config.json dict to keep the other keys of (token ids, ...).
    torch_dtype: Recorded as ``torch_dtype`` when given.

  Returns:
    A JSON-serializable dict.

  Raises:
    ValueError: ``base`` describes another architecture.
  """
  arch = _model_arch(model)
  out = dict(base or {})
  if base and (base.get("architectures") or base.get("model_type")):
    found = architecture(base)
    if found != arch:
      raise ValueError(f"hf_config describes {found!r} but the model is "
                       f"{arch!r}.")
  c = model.config
  out.update(architectures=[_MODEL_TYPES[arch]], model_type=arch,
             vocab_size=c.vocab_size, hidden_size=c.hidden_size,
             num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
             max_position_embeddings=c.max_position_embeddings)
  if arch == "llama":
    out.update(intermediate_size=c.intermediate_size,
               num_key_value_heads=c.num_kv_heads, head_dim=c.head_dim,
               rope_theta=c.rope_theta, rms_norm_eps=c.rms_norm_eps,
               tie_word_embeddings=c.tie_word_embeddings, hidden_act="silu",
               attention_bias=False, mlp_bias=False)
    if isinstance(out.get("rope_parameters"), dict):
      out["rope_parameters"] = dict(out["rope_parameters"],
                                    rope_theta=c.rope_theta)
  elif arch == "opt":
    out.update(ffn_dim=c.ffn_dim, enable_bias=c.enable_bias,
               do_layer_norm_before=True, word_embed_proj_dim=c.hidden_size,
               activation_function="relu", tie_word_embeddings=True)
  else:
    out.update(intermediate_size=c.intermediate_size,
               type_vocab_size=c.type_vocab_size,
               layer_norm_eps=c.layer_norm_eps, hidden_act=c.hidden_act,
               position_embedding_type="absolute")
  if torch_dtype is not None:
    out["torch_dtype"] = torch_dtype
    if "dtype" in out:  # transformers >= 5 writes this key instead
      out["dtype"] = torch_dtype
  return out


def _hf_name(arch: str, path: tuple[str, ...]) -> str:
  module, leaf = path[:-1], path[-1]
  layer = re.fullmatch(r"layers_(\d+)", module[0])
  if layer:
    inner = "/".join(module[1:])
    inner = (_BERT_BLOCK[inner] if arch == "bert"
             else inner.replace("/", "."))
    name = _LAYER_PREFIX[arch].format(layer[1]) + inner
  else:
    name = _TOP[arch]["/".join(module)]
  return f"{name}.{_LEAVES[leaf]}"


def _canonical(arch: str, name: str) -> str:
  if arch == "opt" and name.startswith("decoder."):
    return "model." + name
  if arch == "bert" and name.startswith("bert."):
    return name[len("bert."):]
  return name


def _param_shapes(model: nn.Module) -> dict[tuple[str, ...], Any]:
  # The x64 mode decides whether float64 params stay float64.
  return _traced_param_shapes(model, bool(jax.config.jax_enable_x64))


@functools.lru_cache(maxsize=16)  # tracing init costs ~0.2 s per call
def _traced_param_shapes(model: nn.Module,
                         x64: bool) -> dict[tuple[str, ...], Any]:
  del x64  # part of the cache key only
  key = jax.ShapeDtypeStruct((2,), jnp.uint32)  # abstract: nothing runs
  tokens = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  shapes = jax.eval_shape(model.init, key, tokens)
  return traverse_util.flatten_dict(shapes["params"])


def hf_name_map(model: nn.Module) -> dict[str, str]:
  """``{'/'-joined Flax parameter path: Hugging Face tensor name}``."""
  arch = _model_arch(model)
  return {"/".join(path): _hf_name(arch, path)
          for path in _param_shapes(model)}


def _hf_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
  return tuple(reversed(shape)) if path[-1] == "kernel" else tuple(shape)


def _tensor_files(directory: pathlib.Path) -> list[pathlib.Path]:
  index = directory / INDEX_FILE
  if index.exists():
    weight_map = json.loads(index.read_text())["weight_map"]
    return [directory / f for f in sorted(set(weight_map.values()))]
  single = directory / WEIGHTS_FILE
  if single.exists():
    return [single]
  raise FileNotFoundError(f"No {WEIGHTS_FILE} or {INDEX_FILE} in "
                          f"{str(directory)!r}.")


def load_hf_checkpoint(directory: Path, *, dtype: Any = None,
                       param_dtype: Any = None
                       ) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
  """Reads a Hugging Face checkpoint directory into a model and its params.

  The directory holds ``config.json`` and ``model.safetensors`` or a sharded
  ``model.safetensors.index.json`` (its ``weight_map`` names the shards).
  Every tensor's name and shape is checked before any data is read.

  Args:
    directory: The checkpoint directory.
    dtype: Computation dtype of the model; None means float32.
    param_dtype: Dtype of the returned params; None means ``dtype``
      promoted to at least float32 (float64 needs
      ``jax.enable_x64(True)``).

  Returns:
    ``(model, params, hf_config)``: params are ``variables['params']``
    (``model.apply({'params': params}, tokens)``), ``hf_config`` the parsed
    config.json.

  Raises:
    ValueError: Unknown architecture or unsupported setting (names the
      field, its value and the allowed ones); a missing tensor (names it);
      a shape mismatch (names the tensor, the expected and the found shape);
      an unexpected tensor (names it); a tied LM head stored with other
      values than the embedding.
    FileNotFoundError: No config.json or no safetensors file.
  """
  directory = pathlib.Path(directory)
  config_path = directory / CONFIG_FILE
  if not config_path.exists():
    raise FileNotFoundError(f"No {CONFIG_FILE} in {str(directory)!r}.")
  hf_config = json.loads(config_path.read_text())
  arch = architecture(hf_config)
  handles = [_safetensors().safe_open(str(f), framework="np")
             for f in _tensor_files(directory)]
  stored = {}  # canonical name -> (handle, name in the file)
  for handle in handles:
    for name in handle.keys():
      canonical = _canonical(arch, name)
      if canonical in stored:
        raise ValueError(f"Tensor {canonical!r} is stored twice in "
                         f"{str(directory)!r}.")
      stored[canonical] = (handle, name)

  model = model_from_hf_config(
      hf_config, dtype=dtype, param_dtype=param_dtype,
      add_pooling_layer="pooler.dense.weight" in stored)
  shapes = _param_shapes(model)
  names = {path: _hf_name(arch, path) for path in shapes}
  for path, name in names.items():
    if name not in stored:
      raise ValueError(f"Missing tensor {name!r} (for {'/'.join(path)}) in "
                       f"{str(directory)!r}.")
    handle, key = stored[name]
    found = tuple(handle.get_slice(key).get_shape())
    expected = _hf_shape(path, shapes[path].shape)
    if found != expected:
      raise ValueError(f"Tensor {name!r} has shape {found}; expected "
                       f"{expected}.")
  tied = arch == "opt" or (arch == "llama"
                           and model.config.tie_word_embeddings)
  known = set(names.values()) | ({"lm_head.weight"} if tied else set())
  extra = [name for name in stored if name not in known
           and not any(re.fullmatch(p, name) for p in IGNORED_TENSORS)]
  if extra:
    raise ValueError(f"Unexpected tensor(s) in {str(directory)!r}: "
                     f"{', '.join(map(repr, sorted(extra)))}.")

  def read(name: str) -> np.ndarray:
    handle, key = stored[name]
    return handle.get_tensor(key)

  flat = {}
  for path, name in names.items():
    array = read(name)
    if path[-1] == "kernel":
      array = array.T
    flat[path] = jnp.asarray(array, dtype=shapes[path].dtype)
  if tied and "lm_head.weight" in stored:
    embedding = _TOP[arch]["embed_tokens"] + ".weight"
    if not np.array_equal(read("lm_head.weight"), read(embedding)):
      raise ValueError(f"lm_head.weight differs from {embedding}, but the "
                       "config ties them (tie_word_embeddings).")
  return model, traverse_util.unflatten_dict(flat), hf_config


def _torch_dtype(flat: Mapping[tuple[str, ...], np.ndarray]) -> str | None:
  for array in flat.values():
    if jnp.issubdtype(array.dtype, jnp.floating):
      return _TORCH_DTYPES.get(array.dtype.name)
  return None


def save_hf_checkpoint(directory: Path, model: nn.Module,
                       params: Mapping[str, Any],
                       hf_config: Mapping[str, Any] | None = None, *,
                       max_shard_bytes: int | None = None) -> None:
  """Writes ``config.json`` and safetensors as :func:`load_hf_checkpoint`
  reads them (and ``transformers`` would: PyTorch names and orientation).

  Tensors keep the params' dtype. A tied LM head is not written (as
  ``transformers`` does). Weight files already in ``directory``
  (``model.safetensors``, the index, ``model-*-of-*.safetensors``) are
  removed first so that no stale file shadows the new ones.

  Args:
    directory: Created if missing.
    model: The ``Llama``, ``OPT`` or ``Bert`` of ``params``.
    params: ``variables['params']`` of ``model`` (or the variables).
    hf_config: A config.json dict whose other keys to keep (e.g. the one
      :func:`load_hf_checkpoint` returned); the model's fields override.
    max_shard_bytes: Shard the tensors into files of at most this many
      bytes (a larger tensor gets a file of its own) with an index; None
      writes one ``model.safetensors``.

  Raises:
    ValueError: ``params`` lack a parameter of ``model``, have another
      shape or an extra leaf; ``hf_config`` describes another architecture;
      ``max_shard_bytes`` is not a positive int.
  """
  arch = _model_arch(model)
  if max_shard_bytes is not None and (
      isinstance(max_shard_bytes, bool)
      or not isinstance(max_shard_bytes, int) or max_shard_bytes < 1):
    raise ValueError(f"max_shard_bytes must be an int >= 1 or None, got "
                     f"{max_shard_bytes!r}.")
  if set(params) == {"params"}:
    params = params["params"]
  flat = traverse_util.flatten_dict(dict(params))
  shapes = _param_shapes(model)
  extra = sorted("/".join(path) for path in flat.keys() - shapes.keys())
  if extra:
    raise ValueError(f"params have {', '.join(extra)}, which the {arch} "
                     "model lacks.")
  tensors = {}
  for path, spec in shapes.items():
    if path not in flat:
      raise ValueError(f"params lack {'/'.join(path)}.")
    array = np.asarray(flat[path])
    if array.shape != spec.shape:
      raise ValueError(f"params {'/'.join(path)} has shape {array.shape}; "
                       f"expected {spec.shape}.")
    if path[-1] == "kernel":
      array = array.T
    tensors[_hf_name(arch, path)] = np.ascontiguousarray(array)

  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  for old in directory.iterdir():
    if old.name in (WEIGHTS_FILE, INDEX_FILE) or _SHARD_PATTERN.fullmatch(
        old.name):
      old.unlink()
  config = hf_config_from_model(model, hf_config, _torch_dtype(flat))
  (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
  metadata = {"format": "pt"}  # transformers refuses files without it
  if max_shard_bytes is None:
    _safetensors().numpy.save_file(tensors, directory / WEIGHTS_FILE,
                                   metadata)
    return
  shards, size = [[]], 0
  for name, array in tensors.items():
    if shards[-1] and size + array.nbytes > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(name)
    size += array.nbytes
  weight_map = {}
  for i, shard in enumerate(shards):
    file = _SHARD.format(i + 1, len(shards))
    _safetensors().numpy.save_file({n: tensors[n] for n in shard},
                                   directory / file, metadata)
    weight_map.update(dict.fromkeys(shard, file))
  index = {"metadata": {"total_size": sum(a.nbytes for a in tensors.values())},
           "weight_map": weight_map}
  (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
