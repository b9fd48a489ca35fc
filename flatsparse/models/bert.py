"""BERT encoder (Flax linen), Hugging Face layout; outputs hidden states.

Word + position + token-type embeddings and a LayerNorm, then post-LN encoder
blocks: ``h = LN(h + attn(h))``, ``h = LN(h + output(gelu(intermediate(h))))``
with bidirectional attention restricted by the padding mask. The output is the
last hidden states; the optional pooler (``tanh(dense(h[:, 0]))``) is kept
for checkpoints and available as :meth:`Bert.pool`. Parameter names are the
Hugging Face ``BertModel`` ones renamed per ``models.hf_checkpoint``.

References:
    Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional
    Transformers for Language Understanding", arXiv:1810.04805.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from flatsparse import validation
from flatsparse.models import attention

__all__ = ["BertConfig", "BertBlock", "Bert", "make_bert", "HIDDEN_ACTS"]

# Hugging Face's names: "gelu" is the exact (erf) GELU, the other two the tanh
# approximation.
HIDDEN_ACTS = ("gelu", "gelu_new", "gelu_pytorch_tanh")


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Shape of a BERT encoder (Hugging Face's ``BertConfig``; ``num_layers``,
  ``num_heads`` stand for ``num_hidden_layers``, ``num_attention_heads``).

  Attributes:
    intermediate_size: Width of the MLP.
    max_position_embeddings: Longest sequence.
    type_vocab_size: Token types (segments).
    layer_norm_eps: Epsilon of the LayerNorms.
    hidden_act: One of ``HIDDEN_ACTS``.
    add_pooling_layer: Whether the model has the pooler's parameters.
  """

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_act: str = "gelu"
  add_pooling_layer: bool = False

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "intermediate_size",
                 "num_layers", "num_heads", "max_position_embeddings",
                 "type_vocab_size"):
      validation.check_count(name, getattr(self, name))
    if self.hidden_size % self.num_heads:
      raise ValueError(f"num_heads must divide hidden_size={self.hidden_size}"
                       f", got {self.num_heads}.")
    validation.check_choice("hidden_act", self.hidden_act, HIDDEN_ACTS)
    validation.check("layer_norm_eps", self.layer_norm_eps, lambda v: v >= 0,
                     ">= 0")

  @property
  def head_dim(self) -> int:
    """Width of each attention head."""
    return self.hidden_size // self.num_heads


def _layer_norm(eps: float, **kw: Any) -> nn.LayerNorm:
  # Two-pass variance, as PyTorch's LayerNorm (BERT's eps is 1e-12).
  return nn.LayerNorm(epsilon=eps, use_fast_variance=False, **kw)


def _dense(features: int, **kw: Any) -> nn.Dense:
  return nn.Dense(features, kernel_init=attention.DEFAULT_INIT, **kw)


class BertBlock(attention.TransformerModule):
  """One post-LN BERT encoder block (padding-masked attention + GELU MLP).

  Submodules: ``attention`` (``query``, ``key``, ``value``, ``output``),
  ``attention_layer_norm``, ``intermediate``, ``output``,
  ``output_layer_norm``.

  References:
    Devlin et al. 2019, arXiv:1810.04805.
  """

  def setup(self):
    c, kw = self.config, self.dtypes
    self.attention = attention.MultiHeadAttention(
        num_heads=c.num_heads, head_dim=c.head_dim, use_bias=True,
        names=("query", "key", "value", "output"), **kw)
    self.attention_layer_norm = _layer_norm(c.layer_norm_eps, **kw)
    self.intermediate = _dense(c.intermediate_size, **kw)
    self.output = _dense(c.hidden_size, **kw)
    self.output_layer_norm = _layer_norm(c.layer_norm_eps, **kw)

  def __call__(self, hidden: jax.Array,
               attention_mask: jax.Array | None = None) -> jax.Array:
    """Maps ``(batch, seq, hidden)`` to the same shape.

    Args:
      hidden: The hidden states entering the block.
      attention_mask: ``(batch, seq)``, 1 = token, 0 = padding (no query
        attends it); or None.

    Returns:
      The hidden states leaving the block.
    """
    mask = attention.make_attention_mask(attention_mask, hidden.shape[1],
                                         causal=False)
    hidden = self.attention_layer_norm(hidden + self.attention(hidden, mask))
    approximate = self.config.hidden_act != "gelu"
    mlp = nn.gelu(self.intermediate(hidden), approximate=approximate)
    return self.output_layer_norm(hidden + self.output(mlp))


class Bert(attention.TransformerModel):
  """BERT encoder: tokens to the last hidden states ``(batch, seq, hidden)``.

  Parameters: ``word_embeddings``, ``position_embeddings``,
  ``token_type_embeddings``, ``embeddings_layer_norm``, ``layers_0`` ...
  ``layers_{n-1}`` (:class:`BertBlock`) and, with ``add_pooling_layer``,
  ``pooler``. ``embed``, one ``block_module()`` per ``params['layers_i']``
  and ``head`` (the identity) chained give ``__call__``.

  References:
    Devlin et al. 2019, arXiv:1810.04805.
  """

  block_class = BertBlock

  def setup(self):
    c, kw = self.config, self.dtypes

    def embed(rows: int) -> nn.Embed:
      return nn.Embed(rows, c.hidden_size,
                      embedding_init=attention.DEFAULT_INIT, **kw)

    self.word_embeddings = embed(c.vocab_size)
    self.position_embeddings = embed(c.max_position_embeddings)
    self.token_type_embeddings = embed(c.type_vocab_size)
    self.embeddings_layer_norm = _layer_norm(c.layer_norm_eps, **kw)
    self.layers = [BertBlock(c, **kw) for _ in range(c.num_layers)]
    if c.add_pooling_layer:
      self.pooler = _dense(c.hidden_size, **kw)

  def __call__(self, tokens: jax.Array,
               attention_mask: jax.Array | None = None, train: bool = False,
               token_type_ids: jax.Array | None = None) -> jax.Array:
    """The last hidden states for int tokens ``(batch, seq)``.

    Args:
      tokens: Token ids.
      attention_mask: ``(batch, seq)``, 1 = token, 0 = padding; or None.
      train: Ignored (no dropout); keeps the call uniform with the trainer.
      token_type_ids: ``(batch, seq)`` segment ids; None means all 0.

    Returns:
      ``(batch, seq, hidden)`` in ``dtype``.
    """
    del train
    hidden = self.embed(tokens, attention_mask, token_type_ids)
    hidden = self.run_blocks(hidden, attention_mask)
    if self.config.add_pooling_layer and self.is_initializing():
      self.pool(hidden)  # creates the pooler's parameters
    return self.head(hidden)

  def embed(self, tokens: jax.Array, attention_mask: jax.Array | None = None,
            token_type_ids: jax.Array | None = None) -> jax.Array:
    """Embeddings and their LayerNorm: the hidden states entering block 0."""
    del attention_mask  # absolute positions 0..seq-1 whatever the padding
    shape = attention.check_tokens(tokens,
                                   self.config.max_position_embeddings)
    if token_type_ids is None:
      token_type_ids = jnp.zeros(shape, jnp.int32)
    hidden = (self.word_embeddings(tokens)
              + self.token_type_embeddings(token_type_ids)
              + self.position_embeddings(jnp.arange(shape[1]))[None])
    return self.embeddings_layer_norm(hidden)

  def head(self, hidden: jax.Array) -> jax.Array:
    """The identity: the encoder's output is its last hidden states."""
    return hidden

  def pool(self, hidden: jax.Array) -> jax.Array:
    """The pooler: ``tanh(dense(hidden[:, 0]))``, ``(batch, hidden)``."""
    if not self.config.add_pooling_layer:
      raise ValueError("pool needs add_pooling_layer=True, got False.")
    return jnp.tanh(self.pooler(hidden[:, 0]))



def make_bert(num_classes: int, *, dtype: Any = jnp.float32,
              param_dtype: Any = jnp.float32, **fields: Any) -> Bert:
  """``Bert(BertConfig(vocab_size=num_classes, **fields))``.

  The trainer's model factory (``config.model.name = 'bert'``); the model
  returns hidden states, so a task must bring its own head.
  """
  return Bert(BertConfig(vocab_size=num_classes, **fields),
              dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype))
