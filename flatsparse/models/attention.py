"""Pieces the transformer language models share: masks, rotary, attention.

Shapes: activations are ``(batch, seq, hidden)``; per-head tensors are
``(batch, seq, heads, head_dim)``; a boolean attention mask is
``(batch or 1, 1, query, key)`` with True where a query may attend a key.
Padding masks given to the models are ``(batch, seq)`` with 1 for a real token
and 0 for padding, as in Hugging Face ``transformers``.

Every projection is an ``nn.Dense`` with a ``(in, out)`` kernel, so code that
intercepts ``nn.Dense`` (pruning, input statistics) sees all of them.

References:
    Vaswani et al. 2017, "Attention Is All You Need", arXiv:1706.03762;
    Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position
    Embedding", arXiv:2104.09864; Ainslie et al. 2023, "GQA: Training
    Generalized Multi-Query Transformer Models from Multi-Head Checkpoints",
    arXiv:2305.13245.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["TransformerModule", "TransformerModel", "PreNormDecoderBlock",
           "DEFAULT_INIT", "check_tokens",
           "stat_dtype", "rotate_half", "rotary_cos_sin", "apply_rotary",
           "make_attention_mask", "dot_product_attention",
           "MultiHeadAttention"]

# The initializer_range (0.02) of the Hugging Face configs of all three LMs.
DEFAULT_INIT = nn.initializers.normal(stddev=0.02)


def check_tokens(tokens: jax.Array, max_positions: int | None = None
                 ) -> tuple[int, ...]:
  """The shape of int ``tokens`` ``(batch, seq)``; raises naming the bad
  shape, or a sequence longer than ``max_positions`` (a position table)."""
  shape = jnp.shape(tokens)
  if len(shape) != 2:
    raise ValueError(f"tokens must be (batch, seq), got shape {shape}.")
  if max_positions is not None and shape[1] > max_positions:
    raise ValueError(f"sequence length {shape[1]} exceeds "
                     f"max_position_embeddings={max_positions}.")
  return shape


def stat_dtype(dtype: Any) -> Any:
  """The dtype for statistics of ``dtype`` values: at least float32."""
  return jnp.promote_types(dtype, jnp.float32)


def rotate_half(x: jax.Array) -> jax.Array:
  """``[x1, x2] -> [-x2, x1]`` on the halves of the last axis.

  The Hugging Face convention: the rotary pairs are ``(i, i + d/2)``, not
  adjacent entries, so checkpoints of ``LlamaForCausalLM`` load as they are.
  """
  x1, x2 = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([-x2, x1], axis=-1)


def rotary_cos_sin(seq_len: int, head_dim: int, theta: float,
                   dtype: Any) -> tuple[jax.Array, jax.Array]:
  """Cosines and sines of positions ``0..seq_len-1``, ``(seq_len, head_dim)``.

  Frequencies ``theta^(-2i/head_dim)`` for ``i < head_dim/2``, repeated for
  both halves; computed in at least float32 and returned in ``dtype``.
  """
  if head_dim % 2:
    raise ValueError(f"rotary embeddings need an even head_dim, got "
                     f"{head_dim}.")
  work = stat_dtype(dtype)
  exponents = jnp.arange(0, head_dim, 2, dtype=work) / head_dim
  inv_freq = 1.0 / (jnp.asarray(theta, work) ** exponents)
  angles = jnp.arange(seq_len, dtype=work)[:, None] * inv_freq[None, :]
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates ``x`` of shape ``(batch, seq, heads, head_dim)`` by position."""
  cos, sin = cos[:, None, :], sin[:, None, :]  # broadcast over heads
  return x * cos + rotate_half(x) * sin


def make_attention_mask(attention_mask: jax.Array | None, seq_len: int, *,
                        causal: bool) -> jax.Array | None:
  """The boolean ``(batch or 1, 1, seq, seq)`` mask, or None for no mask.

  Args:
    attention_mask: ``(batch, seq_len)`` with nonzero entries for real tokens
      and 0 for padding (keys that no query attends), or None.
    seq_len: Sequence length of the queries and keys.
    causal: Whether query ``i`` may only attend keys ``j <= i``.

  Returns:
    True where a query may attend a key; None when nothing is masked.

  Raises:
    ValueError: ``attention_mask`` is not ``(batch, seq_len)``.
  """
  mask = None
  if causal:
    mask = jnp.tril(jnp.ones((seq_len, seq_len), bool))[None, None]
  if attention_mask is not None:
    attention_mask = jnp.asarray(attention_mask)
    if attention_mask.ndim != 2 or attention_mask.shape[1] != seq_len:
      raise ValueError(f"attention_mask must have shape (batch, {seq_len}), "
                       f"got {attention_mask.shape}.")
    keys = attention_mask.astype(bool)[:, None, None, :]
    mask = keys if mask is None else mask & keys
  return mask


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                          mask: jax.Array | None = None) -> jax.Array:
  """Softmax attention with grouped key/value heads.

  Query head ``h`` reads key/value head ``h // (heads // kv_heads)``, as
  Hugging Face's ``repeat_kv``. The logits are scaled by
  ``head_dim ** -0.5``, masked and normalized in at least float32; a row with
  every key masked gets uniform weights rather than NaN.

  Args:
    query: ``(batch, seq, heads, head_dim)``.
    key: ``(batch, seq, kv_heads, head_dim)``; ``kv_heads`` divides ``heads``.
    value: Like ``key``.
    mask: Boolean ``(batch or 1, 1, seq, seq)`` (True = attend), or None.

  Returns:
    ``(batch, seq, heads, head_dim)`` in the dtype of ``value``.
  """
  batch, seq, heads, head_dim = query.shape
  kv_heads = key.shape[2]
  if heads % kv_heads:
    raise ValueError(f"kv_heads={kv_heads} must divide heads={heads}.")
  query = query * jnp.asarray(head_dim ** -0.5, query.dtype)
  query = query.reshape(batch, seq, kv_heads, heads // kv_heads, head_dim)
  logits = jnp.einsum("bqgrd,bkgd->bgrqk", query, key)
  logits = logits.astype(stat_dtype(logits.dtype))
  if mask is not None:
    logits = jnp.where(mask[:, :, None], logits,
                       jnp.finfo(logits.dtype).min)
  weights = jax.nn.softmax(logits, axis=-1).astype(value.dtype)
  out = jnp.einsum("bgrqk,bkgd->bqgrd", weights, value)
  return out.reshape(batch, seq, heads, head_dim)


class TransformerModule(nn.Module):
  """The fields every block and model of the language models shares.

  Attributes:
    config: The model's shape (``LlamaConfig``, ``OPTConfig`` or
      ``BertConfig``).
    dtype: Computation dtype (e.g. ``jnp.bfloat16``); norms and softmax
      compute their statistics in at least float32.
    param_dtype: Parameter dtype.
  """

  config: Any = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @property
  def dtypes(self) -> dict[str, Any]:
    """``dtype`` and ``param_dtype`` as keywords for submodules."""
    return dict(dtype=self.dtype, param_dtype=self.param_dtype)


class PreNormDecoderBlock(TransformerModule):
  """A pre-norm causal block: ``h + attn(n1(h))``, then ``h + ff(n2(h))``.

  A subclass defines ``setup`` (with ``self_attn``) and the three pieces
  ``attention_norm``, ``mlp_norm`` and ``feed_forward`` (so its submodules
  keep the Hugging Face names of its family).
  """

  def __call__(self, hidden: jax.Array,
               attention_mask: jax.Array | None = None) -> jax.Array:
    """Maps ``(batch, seq, hidden)`` to the same shape.

    Args:
      hidden: The residual stream entering the block.
      attention_mask: ``(batch, seq)``, 1 = token, 0 = padding; or None.

    Returns:
      The residual stream leaving the block.
    """
    mask = make_attention_mask(attention_mask, hidden.shape[1], causal=True)
    hidden = hidden + self.self_attn(self.attention_norm(hidden), mask)
    return hidden + self.feed_forward(self.mlp_norm(hidden))


class TransformerModel(TransformerModule):
  """A model cut into ``embed``, blocks ``layers_i`` and ``head``.

  A subclass defines ``setup`` (with ``self.layers``), ``embed``, ``head``
  and the class attribute ``block_class``; ``__call__`` (the decoders'
  signature; BERT overrides it) and ``block_module`` come from here.
  """

  block_class = None  # a class attribute, not a field

  def __call__(self, tokens: jax.Array,
               attention_mask: jax.Array | None = None,
               train: bool = False) -> jax.Array:
    """Logits ``(batch, seq, vocab)`` for int tokens ``(batch, seq)``.

    Args:
      tokens: Token ids.
      attention_mask: ``(batch, seq)``, 1 = token, 0 = padding; or None.
      train: Ignored (no dropout); keeps the call uniform with the trainer.

    Returns:
      Logits in ``dtype``.
    """
    del train
    return self.head(self.run_blocks(self.embed(tokens, attention_mask),
                                     attention_mask))

  def run_blocks(self, hidden: jax.Array,
                 attention_mask: jax.Array | None) -> jax.Array:
    """Every block in order."""
    for layer in self.layers:
      hidden = layer(hidden, attention_mask)
    return hidden

  def block_module(self) -> nn.Module:
    """An unbound block; apply it to ``{'params': params['layers_i']}``."""
    return type(self).block_class(self.config, dtype=self.dtype,
                                  param_dtype=self.param_dtype, parent=None)


class MultiHeadAttention(nn.Module):
  """Self-attention with optional grouped KV heads and rotary embeddings.

  Four ``nn.Dense`` projections, named by ``names`` (query, key, value,
  output): query ``hidden -> heads * head_dim``, key and value
  ``hidden -> kv_heads * head_dim``, output ``heads * head_dim -> hidden``.
  With ``rope_theta`` set, queries and keys are rotated by their positions
  ``0..seq-1`` (no cache: the whole sequence at once).

  Attributes:
    num_heads: Query heads.
    head_dim: Width of each head.
    num_kv_heads: Key/value heads (None: ``num_heads``); must divide
      ``num_heads``.
    use_bias: Biases on the four projections.
    rope_theta: Rotary base, or None for no rotary embedding.
    names: Names of the query, key, value and output projections.
    dtype: Computation dtype.
    param_dtype: Parameter dtype.

  References:
    Vaswani et al. 2017, arXiv:1706.03762; Ainslie et al. 2023 (GQA),
    arXiv:2305.13245.
  """

  num_heads: int
  head_dim: int
  num_kv_heads: int | None = None
  use_bias: bool = False
  rope_theta: float | None = None
  names: tuple[str, str, str, str] = ("q_proj", "k_proj", "v_proj", "o_proj")
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array,
               mask: jax.Array | None = None) -> jax.Array:
    """Attends ``x`` of shape ``(batch, seq, hidden)`` to itself.

    Args:
      x: Input activations.
      mask: Boolean mask from :func:`make_attention_mask`, or None.

    Returns:
      The output projection, shaped like ``x``.
    """
    batch, seq, hidden = x.shape
    kv_heads = self.num_kv_heads or self.num_heads

    def dense(features: int, name: str) -> nn.Dense:
      return nn.Dense(features, use_bias=self.use_bias,
                      kernel_init=DEFAULT_INIT, dtype=self.dtype,
                      param_dtype=self.param_dtype, name=name)

    q_name, k_name, v_name, o_name = self.names
    q = dense(self.num_heads * self.head_dim, q_name)(x)
    k = dense(kv_heads * self.head_dim, k_name)(x)
    v = dense(kv_heads * self.head_dim, v_name)(x)
    q = q.reshape(batch, seq, self.num_heads, self.head_dim)
    k = k.reshape(batch, seq, kv_heads, self.head_dim)
    v = v.reshape(batch, seq, kv_heads, self.head_dim)
    if self.rope_theta is not None:
      cos, sin = rotary_cos_sin(seq, self.head_dim, self.rope_theta, q.dtype)
      q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    y = dot_product_attention(q, k, v, mask)
    y = y.reshape(batch, seq, self.num_heads * self.head_dim)
    return dense(hidden, o_name)(y)
