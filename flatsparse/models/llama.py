"""LLaMA decoder-only language model (Flax linen), Hugging Face layout.

Pre-norm blocks: ``h + attn(RMSNorm(h))`` then ``h + mlp(RMSNorm(h))``, with
rotary position embeddings (Hugging Face's ``rotate_half`` pairing), grouped
key/value heads, a SwiGLU MLP ``down(silu(gate(x)) * up(x))``, no biases, a
final RMSNorm and an LM head (or the transposed embedding when tied).
Parameter names follow ``LlamaForCausalLM`` (``layers_3/self_attn/q_proj``
is ``model.layers.3.self_attn.q_proj``), so ``models.hf_checkpoint`` maps
checkpoints by renaming and transposing only. There is no KV cache: every
call runs the whole sequence at positions ``0..seq-1``.

References:
    Touvron et al. 2023, "LLaMA: Open and Efficient Foundation Language
    Models", arXiv:2302.13971; Shazeer 2020, "GLU Variants Improve
    Transformer", arXiv:2002.05202; Zhang and Sennrich 2019, "Root Mean
    Square Layer Normalization", arXiv:1910.07467.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from flatsparse import validation
from flatsparse.models import attention

__all__ = ["LlamaConfig", "RMSNorm", "LlamaMLP", "LlamaBlock", "Llama",
           "make_llama"]


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """Shape of a LLaMA model (Hugging Face's ``LlamaConfig``; ``num_layers``,
  ``num_heads`` stand for ``num_hidden_layers``, ``num_attention_heads``).

  Attributes:
    intermediate_size: Width of the SwiGLU MLP.
    num_kv_heads: Key/value heads (``num_key_value_heads``); None means
      ``num_heads``; fewer heads give grouped-query attention.
    head_dim: Width of each head; None means ``hidden_size // num_heads``.
    rope_theta: Base of the rotary frequencies.
    rms_norm_eps: Epsilon of the RMSNorms.
    tie_word_embeddings: LM head = transposed token embedding.
    max_position_embeddings: Recorded for checkpoints; rotary embeddings
      need no table, so longer sequences are not refused.
  """

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int | None = None
  head_dim: int | None = None
  rope_theta: float = 10000.0
  rms_norm_eps: float = 1e-6
  tie_word_embeddings: bool = False
  max_position_embeddings: int = 2048

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "intermediate_size",
                 "num_layers", "num_heads", "max_position_embeddings"):
      validation.check_count(name, getattr(self, name))
    if self.num_kv_heads is None:
      object.__setattr__(self, "num_kv_heads", self.num_heads)
    validation.check_count("num_kv_heads", self.num_kv_heads)
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_kv_heads must divide num_heads={self.num_heads}, "
                       f"got {self.num_kv_heads}.")
    if self.head_dim is None:
      if self.hidden_size % self.num_heads:
        raise ValueError(f"num_heads must divide hidden_size="
                         f"{self.hidden_size} when head_dim is None, got "
                         f"{self.num_heads}.")
      object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
    validation.check_count("head_dim", self.head_dim)
    if self.head_dim % 2:
      raise ValueError(f"head_dim must be even (rotary pairs), got "
                       f"{self.head_dim}.")
    validation.check("rope_theta", self.rope_theta, lambda v: v > 0, "> 0")
    validation.check("rms_norm_eps", self.rms_norm_eps, lambda v: v >= 0,
                     ">= 0")


class RMSNorm(nn.Module):
  """``scale * x / sqrt(mean(x^2) + eps)``, statistics in >= float32.

  As Hugging Face's ``LlamaRMSNorm``: the normalized values are cast to
  ``dtype`` before the scale multiplies them.

  Attributes:
    epsilon: Added to the mean square.
    dtype: Computation (output) dtype.
    param_dtype: Dtype of ``scale``.

  References:
    Zhang and Sennrich 2019, arXiv:1910.07467.
  """

  epsilon: float = 1e-6
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Normalizes the last axis of ``x``."""
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],),
                       self.param_dtype)
    y = x.astype(attention.stat_dtype(x.dtype))
    y = y * jax.lax.rsqrt(jnp.mean(jnp.square(y), axis=-1, keepdims=True)
                          + self.epsilon)
    return scale.astype(self.dtype) * y.astype(self.dtype)


class LlamaMLP(nn.Module):
  """SwiGLU: ``down_proj(silu(gate_proj(x)) * up_proj(x))``, no biases.

  Attributes:
    intermediate_size: Width of ``gate_proj`` and ``up_proj``.
    dtype: Computation dtype.
    param_dtype: Parameter dtype.

  References:
    Shazeer 2020, arXiv:2002.05202.
  """

  intermediate_size: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the MLP to the last axis of ``x``."""
    def dense(features: int, name: str) -> nn.Dense:
      return nn.Dense(features, use_bias=False,
                      kernel_init=attention.DEFAULT_INIT, dtype=self.dtype,
                      param_dtype=self.param_dtype, name=name)

    gate = dense(self.intermediate_size, "gate_proj")(x)
    up = dense(self.intermediate_size, "up_proj")(x)
    return dense(x.shape[-1], "down_proj")(nn.silu(gate) * up)


class LlamaBlock(attention.PreNormDecoderBlock):
  """One pre-norm LLaMA decoder block (causal self-attention + SwiGLU).

  Submodules: ``input_layernorm``, ``self_attn`` (``q_proj``, ``k_proj``,
  ``v_proj``, ``o_proj``), ``post_attention_layernorm``, ``mlp``
  (``gate_proj``, ``up_proj``, ``down_proj``).

  References:
    Touvron et al. 2023, arXiv:2302.13971.
  """

  def setup(self):
    c, kw = self.config, self.dtypes
    self.input_layernorm = RMSNorm(c.rms_norm_eps, **kw)
    self.self_attn = attention.MultiHeadAttention(
        num_heads=c.num_heads, head_dim=c.head_dim,
        num_kv_heads=c.num_kv_heads, rope_theta=c.rope_theta, **kw)
    self.post_attention_layernorm = RMSNorm(c.rms_norm_eps, **kw)
    self.mlp = LlamaMLP(c.intermediate_size, **kw)

  def attention_norm(self, x: jax.Array) -> jax.Array:
    return self.input_layernorm(x)

  def mlp_norm(self, x: jax.Array) -> jax.Array:
    return self.post_attention_layernorm(x)

  def feed_forward(self, x: jax.Array) -> jax.Array:
    return self.mlp(x)


class Llama(attention.TransformerModel):
  """LLaMA causal language model: tokens to next-token logits.

  Parameters: ``embed_tokens`` (``embedding``: ``(vocab, hidden)``),
  ``layers_0`` ... ``layers_{n-1}`` (:class:`LlamaBlock`), ``norm`` and,
  unless ``tie_word_embeddings``, ``lm_head`` (``kernel``:
  ``(hidden, vocab)``). ``embed``, one ``block_module()`` per
  ``params['layers_i']`` and ``head`` chained give ``__call__``.

  References:
    Touvron et al. 2023, arXiv:2302.13971.
  """

  block_class = LlamaBlock

  def setup(self):
    c, kw = self.config, self.dtypes
    self.embed_tokens = nn.Embed(c.vocab_size, c.hidden_size,
                                 embedding_init=attention.DEFAULT_INIT, **kw)
    self.layers = [LlamaBlock(c, **kw) for _ in range(c.num_layers)]
    self.norm = RMSNorm(c.rms_norm_eps, **kw)
    if not c.tie_word_embeddings:
      self.lm_head = nn.Dense(c.vocab_size, use_bias=False,
                              kernel_init=attention.DEFAULT_INIT, **kw)

  def embed(self, tokens: jax.Array,
            attention_mask: jax.Array | None = None) -> jax.Array:
    """The hidden states entering block 0 (the token embeddings)."""
    del attention_mask  # positions are 0..seq-1 whatever the padding
    attention.check_tokens(tokens)
    return self.embed_tokens(tokens)

  def head(self, hidden: jax.Array) -> jax.Array:
    """Final RMSNorm and LM head: hidden states to logits."""
    hidden = self.norm(hidden)
    if self.config.tie_word_embeddings:
      return self.embed_tokens.attend(hidden)
    return self.lm_head(hidden)



def make_llama(num_classes: int, *, dtype: Any = jnp.float32,
               param_dtype: Any = jnp.float32, **fields: Any) -> Llama:
  """``Llama(LlamaConfig(vocab_size=num_classes, **fields))``.

  The trainer's model factory (``config.model.name = 'llama'``): the
  vocabulary plays the part of the classes.
  """
  return Llama(LlamaConfig(vocab_size=num_classes, **fields),
               dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype))
