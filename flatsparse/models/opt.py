"""OPT decoder-only language model (Flax linen), Hugging Face layout.

Learned position embeddings with OPT's offset of 2, pre-LayerNorm blocks
(``do_layer_norm_before=True``, every size except OPT-350m), biased
projections, a ReLU MLP ``fc2(relu(fc1(x)))``, a final LayerNorm and an LM
head tied to the token embedding. Parameter names follow ``OPTForCausalLM``
(``layers_3/fc1`` is ``model.decoder.layers.3.fc1``). As in Hugging Face,
positions count real tokens only: with an ``attention_mask`` the i-th real
token sits at position i (left padding shifts nothing) and padding at -1;
without a mask the positions are ``0..seq-1``.

References:
    Zhang et al. 2022, "OPT: Open Pre-trained Transformer Language Models",
    arXiv:2205.01068.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from flatsparse import validation
from flatsparse.models import attention

__all__ = ["OPTConfig", "OPTBlock", "OPT", "make_opt", "POSITION_OFFSET",
           "LAYER_NORM_EPS"]

# OPT's position table has two extra rows in front (fairseq's padding
# convention); position p reads row p + 2.
POSITION_OFFSET = 2
# OPT's LayerNorms use PyTorch's default epsilon (the config has no field).
LAYER_NORM_EPS = 1e-5


@dataclasses.dataclass(frozen=True)
class OPTConfig:
  """Shape of an OPT model (Hugging Face's ``OPTConfig``; ``num_layers``,
  ``num_heads`` stand for ``num_hidden_layers``, ``num_attention_heads``).

  Attributes:
    ffn_dim: Width of the MLP.
    max_position_embeddings: Longest sequence (the position table has
      ``max_position_embeddings + 2`` rows).
    enable_bias: Biases on the projections and the MLP.
    do_layer_norm_before: Must be True (pre-LN); OPT-350m's post-LN is not
      supported.
    word_embed_proj_dim: Must equal ``hidden_size`` (None: equal);
      OPT-350m's projected embeddings are not supported.
  """

  vocab_size: int
  hidden_size: int
  ffn_dim: int
  num_layers: int
  num_heads: int
  max_position_embeddings: int = 2048
  enable_bias: bool = True
  do_layer_norm_before: bool = True
  word_embed_proj_dim: int | None = None

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "ffn_dim", "num_layers",
                 "num_heads", "max_position_embeddings"):
      validation.check_count(name, getattr(self, name))
    if self.hidden_size % self.num_heads:
      raise ValueError(f"num_heads must divide hidden_size={self.hidden_size}"
                       f", got {self.num_heads}.")
    if not self.do_layer_norm_before:
      raise ValueError("do_layer_norm_before=False (post-LayerNorm OPT, as "
                       "OPT-350m) is not supported; allowed: True.")
    if self.word_embed_proj_dim is None:
      object.__setattr__(self, "word_embed_proj_dim", self.hidden_size)
    if self.word_embed_proj_dim != self.hidden_size:
      raise ValueError(f"word_embed_proj_dim={self.word_embed_proj_dim} != "
                       f"hidden_size={self.hidden_size} (projected embeddings"
                       ", as OPT-350m) is not supported; allowed: "
                       f"{self.hidden_size}.")

  @property
  def head_dim(self) -> int:
    """Width of each attention head."""
    return self.hidden_size // self.num_heads


def _layer_norm(**kw: Any) -> nn.LayerNorm:
  # Two-pass variance, as PyTorch's LayerNorm.
  return nn.LayerNorm(epsilon=LAYER_NORM_EPS, use_fast_variance=False, **kw)


class OPTBlock(attention.PreNormDecoderBlock):
  """One pre-LN OPT decoder block (causal self-attention + ReLU MLP).

  Submodules: ``self_attn_layer_norm``, ``self_attn`` (``q_proj``,
  ``k_proj``, ``v_proj``, ``out_proj``), ``final_layer_norm``, ``fc1``,
  ``fc2``.

  References:
    Zhang et al. 2022, arXiv:2205.01068.
  """

  def setup(self):
    c, kw = self.config, self.dtypes
    self.self_attn_layer_norm = _layer_norm(**kw)
    self.self_attn = attention.MultiHeadAttention(
        num_heads=c.num_heads, head_dim=c.head_dim, use_bias=c.enable_bias,
        names=("q_proj", "k_proj", "v_proj", "out_proj"), **kw)
    self.final_layer_norm = _layer_norm(**kw)
    self.fc1 = nn.Dense(c.ffn_dim, use_bias=c.enable_bias,
                        kernel_init=attention.DEFAULT_INIT, **kw)
    self.fc2 = nn.Dense(c.hidden_size, use_bias=c.enable_bias,
                        kernel_init=attention.DEFAULT_INIT, **kw)

  def attention_norm(self, x: jax.Array) -> jax.Array:
    return self.self_attn_layer_norm(x)

  def mlp_norm(self, x: jax.Array) -> jax.Array:
    return self.final_layer_norm(x)

  def feed_forward(self, x: jax.Array) -> jax.Array:
    return self.fc2(nn.relu(self.fc1(x)))


class OPT(attention.TransformerModel):
  """OPT causal language model: tokens to next-token logits.

  Parameters: ``embed_tokens`` (``(vocab, hidden)``), ``embed_positions``
  (``(max_position_embeddings + 2, hidden)``), ``layers_0`` ...
  ``layers_{n-1}`` (:class:`OPTBlock`) and ``final_layer_norm``; the logits
  are ``final_layer_norm(h) @ embed_tokens.T``. ``embed``, one
  ``block_module()`` per ``params['layers_i']`` and ``head`` chained give
  ``__call__``.

  References:
    Zhang et al. 2022, arXiv:2205.01068.
  """

  block_class = OPTBlock

  def setup(self):
    c, kw = self.config, self.dtypes
    self.embed_tokens = nn.Embed(c.vocab_size, c.hidden_size,
                                 embedding_init=attention.DEFAULT_INIT, **kw)
    self.embed_positions = nn.Embed(
        c.max_position_embeddings + POSITION_OFFSET, c.hidden_size,
        embedding_init=attention.DEFAULT_INIT, **kw)
    self.layers = [OPTBlock(c, **kw) for _ in range(c.num_layers)]
    self.final_layer_norm = _layer_norm(**kw)

  def embed(self, tokens: jax.Array,
            attention_mask: jax.Array | None = None) -> jax.Array:
    """Token plus position embeddings: the hidden states entering block 0."""
    shape = attention.check_tokens(tokens,
                                   self.config.max_position_embeddings)
    if attention_mask is None:
      positions = jnp.arange(shape[1])[None, :]
    else:
      real = jnp.asarray(attention_mask).astype(jnp.int32)
      positions = jnp.cumsum(real, axis=1) * real - 1
    return (self.embed_tokens(tokens)
            + self.embed_positions(positions + POSITION_OFFSET))

  def head(self, hidden: jax.Array) -> jax.Array:
    """Final LayerNorm and the tied LM head: hidden states to logits."""
    return self.embed_tokens.attend(self.final_layer_norm(hidden))



def make_opt(num_classes: int, *, dtype: Any = jnp.float32,
             param_dtype: Any = jnp.float32, **fields: Any) -> OPT:
  """``OPT(OPTConfig(vocab_size=num_classes, **fields))``.

  The trainer's model factory (``config.model.name = 'opt'``).
  """
  return OPT(OPTConfig(vocab_size=num_classes, **fields),
             dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype))
