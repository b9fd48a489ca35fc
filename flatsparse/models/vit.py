"""Vision Transformer (Flax linen) that can return its attention maps.

NHWC inputs, logits out. The image size is whatever the input has at ``init``:
the position embeddings are sized from it (no interpolation to other sizes).
With ``dropout > 0`` a training call needs a ``'dropout'`` rng
(``rngs={"dropout": key}``).

Parameter shapes follow google-research/vision_transformer (per-head
``query``/``key``/``value``/``out`` kernels as in
``nn.MultiHeadDotProductAttention``, a class token, one position embedding per
token including it), so its checkpoints convert by renaming paths only.

References:
    Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words: Transformers for
    Image Recognition at Scale", arXiv:2010.11929.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

_CLASSIFIERS = ("token", "gap")


class SelfAttention(nn.Module):
  """Multi-head dot-product self-attention that returns its softmax weights.

  Same parameters as ``nn.MultiHeadDotProductAttention`` (``query``, ``key``,
  ``value``: ``[hidden, heads, head_dim]`` kernels with biases; ``out``:
  ``[heads, head_dim, hidden]``), written out so the attention weights are a
  return value rather than a ``sow``. The softmax is computed in float32.

  Attributes:
      num_heads: Number of heads; must divide the input width.
      dtype: Computation dtype.

  References:
      Vaswani et al. 2017, "Attention Is All You Need", arXiv:1706.03762.
  """

  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, need_weights: bool = True
               ) -> tuple[jax.Array, jax.Array | None]:
    """Attends ``x`` of shape ``(batch, tokens, hidden)`` to itself.

    Args:
        x: The tokens.
        need_weights: Write the softmax out and return it; False calls
            ``jax.nn.dot_product_attention`` (XLA's fused attention; cuDNN's
            flash kernel on GPUs where it applies), same parameters and the
            same result within float tolerance.

    Returns:
        ``(out, weights)``: ``out`` like ``x``; ``weights`` of shape
        ``(batch, heads, tokens, tokens)``, rows summing to one, or None
        when not ``need_weights``.
    """
    hidden = x.shape[-1]
    if hidden % self.num_heads:
      raise ValueError(
        f"hidden size {hidden} is not divisible by num_heads={self.num_heads}"
      )
    head_dim = hidden // self.num_heads
    dense = functools.partial(
      nn.DenseGeneral,
      features=(self.num_heads, head_dim),
      kernel_init=nn.initializers.xavier_uniform(),
      dtype=self.dtype,
    )
    q = dense(name="query")(x)
    k = dense(name="key")(x)
    v = dense(name="value")(x)
    if need_weights:
      q = q / jnp.sqrt(head_dim).astype(self.dtype)
      logits = jnp.einsum("bqhd,bkhd->bhqk", q, k)
      weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
      weights = weights.astype(self.dtype)
      y = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    else:
      weights = None
      y = jax.nn.dot_product_attention(q, k, v)  # scale 1/sqrt(head_dim)
    out = nn.DenseGeneral(
      hidden,
      axis=(-2, -1),
      kernel_init=nn.initializers.xavier_uniform(),
      dtype=self.dtype,
      name="out",
    )(y)
    return out, weights


class EncoderBlock(nn.Module):
  """Pre-LN transformer block: ``x + attn(LN(x))``, then ``x + MLP(LN(x))``.

  The MLP is Dense(``mlp_dim``) - GELU (exact, not the tanh approximation) -
  Dense(hidden), with dropout after each Dense and after the attention.

  Attributes:
      num_heads: Attention heads.
      mlp_dim: Hidden width of the MLP.
      dropout: Dropout rate (training only).
      dtype: Computation dtype.

  References:
      Dosovitskiy et al. 2021, arXiv:2010.11929.
  """

  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(
    self, x: jax.Array, train: bool = False, need_weights: bool = True
  ) -> tuple[jax.Array, jax.Array | None]:
    """Returns ``(x_out, attention_weights)`` for ``x`` of shape (B, T, D);
    the weights are None (fused attention) unless ``need_weights``."""
    drop = functools.partial(nn.Dropout, self.dropout, deterministic=not train)
    dense = functools.partial(
      nn.Dense,
      kernel_init=nn.initializers.xavier_uniform(),
      bias_init=nn.initializers.normal(stddev=1e-6),
      dtype=self.dtype,
    )
    y = nn.LayerNorm(dtype=self.dtype, name="ln1")(x)
    y, weights = SelfAttention(self.num_heads, self.dtype, name="attention")(
      y, need_weights
    )
    x = x + drop()(y)
    y = nn.LayerNorm(dtype=self.dtype, name="ln2")(x)
    y = dense(self.mlp_dim, name="mlp_dense1")(y)
    y = drop()(nn.gelu(y, approximate=False))
    y = dense(x.shape[-1], name="mlp_dense2")(y)
    return x + drop()(y), weights


class ViT(nn.Module):
  """Vision Transformer: patch embedding, pre-LN encoder, linear head.

  A ``patch_size`` x ``patch_size`` stride-``patch_size`` conv embeds the
  patches; with ``classifier="token"`` a learned class token is prepended
  (and with ``distillation_token`` a second one, DeiT's); learned position
  embeddings (one per token, sized from the input at init) are added;
  ``num_layers`` ``EncoderBlock``s and a final LayerNorm follow; the class
  token (or, with ``"gap"``, the mean over tokens) goes through a
  zero-initialized Dense head.

  **Token subsets** (MaskedKD's teacher): ``patch_indices`` keeps only those
  patch tokens, gathered after the position embeddings are added, so each
  kept patch carries its own position; the class (and distillation) tokens
  are always kept. Same parameters, any subset size.

  **Attention**: layers whose maps are not returned use the fused
  ``jax.nn.dot_product_attention``; ``return_attention=True`` writes every
  layer's softmax out, ``"last"`` only the last layer's.

  **Distillation token** (DeiT): a second learned token with its own head
  ``head_dist``; the call returns the mean of the two heads' logits, or the
  pair ``(class_logits, distillation_logits)`` with ``separate_heads=True``
  (what a distillation loss trains: the class head on the labels, the
  distillation head on the teacher).

  The presets ``ViTTi16``, ``ViTS16`` and ``ViTB16`` only give
  ``hidden_size``, ``num_layers``, ``num_heads`` and ``mlp_dim`` defaults
  (every field can still be overridden, ``patch_size`` too). Trainable
  parameters for 224x224 inputs and ``num_classes=1000``, token classifier:
  ViT-B/16 86,567,656 (identical to the original ViT-B/16 and timm
  ``vit_base_patch16_224``), ViT-S/16 22,050,664, ViT-Ti/16 5,717,416
  (identical to timm/DeiT).

  Attributes:
      num_classes: Number of output logits.
      hidden_size: Token width.
      num_layers: Number of encoder blocks.
      num_heads: Attention heads per block.
      mlp_dim: Hidden width of the MLPs.
      patch_size: Patch side; input height and width must be multiples.
      dropout: Dropout rate (embeddings, attention output, MLP).
      classifier: ``"token"`` (class token) or ``"gap"`` (global average
          pooling of the tokens, no class token).
      distillation_token: Add DeiT's distillation token and head (needs
          ``classifier="token"``).
      dtype: Computation dtype; parameters stay float32.

  References:
      Dosovitskiy et al. 2021, arXiv:2010.11929; Touvron et al. 2021,
      "Training data-efficient image transformers & distillation through
      attention" (DeiT), arXiv:2012.12877.
  """

  num_classes: int
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  patch_size: int = 16
  dropout: float = 0.0
  classifier: str = "token"
  distillation_token: bool = False
  dtype: Any = jnp.float32

  @property
  def num_prefix_tokens(self) -> int:
    """Tokens before the patches: class (and distillation) token."""
    if self.classifier != "token":
      return 0
    return 2 if self.distillation_token else 1

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    train: bool = False,
    return_attention: bool | str = False,
    patch_indices: jax.Array | None = None,
    separate_heads: bool = False,
  ) -> Any:
    """Computes logits (and optionally attention maps).

    Args:
        x: Images of shape ``(batch, height, width, channels)``; height and
            width must be multiples of ``patch_size`` and equal to those seen
            at init.
        train: Apply dropout (needs a ``'dropout'`` rng when
            ``dropout > 0``) if True.
        return_attention: False, True (every layer's map) or ``"last"``
            (only the last layer's; the others run fused).
        patch_indices: Optional ``(batch, k)`` int indices into the
            ``(height / p) * (width / p)`` patches (row-major): only these
            patch tokens enter the encoder.
        separate_heads: With ``distillation_token``, return
            ``(class_logits, distillation_logits)`` instead of their mean.

    Returns:
        Logits of shape ``(batch, num_classes)`` in ``dtype`` (a pair with
        ``separate_heads``); with ``return_attention`` the pair
        ``(logits, maps)`` where ``maps`` is a list (first to last layer;
        one entry, the last layer's, for ``"last"``) of softmax weights of
        shape ``(batch, heads, tokens, tokens)``. Token 0 is the class token
        (``classifier="token"``); the patches start at
        ``num_prefix_tokens``, so ``maps[-1][:, :, 0, num_prefix_tokens:]``
        is the last layer's class-token attention over the patches
        (MaskedKD).
    """
    if self.classifier not in _CLASSIFIERS:
      raise ValueError(
        f"classifier must be one of {_CLASSIFIERS}, got {self.classifier!r}"
      )
    if self.distillation_token and self.classifier != "token":
      raise ValueError(
        "distillation_token needs classifier='token', got "
        f"{self.classifier!r}"
      )
    if return_attention not in (False, True, "last"):
      raise ValueError(
        "return_attention must be False, True or 'last', got "
        f"{return_attention!r}"
      )
    _, height, width, _ = x.shape
    p = self.patch_size
    if height % p or width % p:
      raise ValueError(
        f"image size {height}x{width} is not a multiple of patch_size={p}"
      )
    x = nn.Conv(
      self.hidden_size,
      (p, p),
      strides=(p, p),
      padding="VALID",
      dtype=self.dtype,
      name="embedding",
    )(x)
    x = x.reshape((x.shape[0], -1, self.hidden_size))
    num_patches = x.shape[1]
    prefix = []
    if self.classifier == "token":
      names = ("cls", "dist") if self.distillation_token else ("cls",)
      for name in names:
        token = self.param(name, nn.initializers.zeros,
                           (1, 1, self.hidden_size))
        prefix.append(jnp.broadcast_to(token, (x.shape[0], 1,
                                               self.hidden_size)))
      x = jnp.concatenate([t.astype(x.dtype) for t in prefix] + [x], axis=1)
    pos = self.param(
      "pos_embedding",
      nn.initializers.normal(stddev=0.02),
      (1, x.shape[1], self.hidden_size),
    )
    x = x + pos.astype(x.dtype)
    if patch_indices is not None:
      x = _keep_patches(x, patch_indices, len(prefix), num_patches)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    maps = []
    for i in range(self.num_layers):
      need = return_attention is True or (
        return_attention == "last" and i == self.num_layers - 1
      )
      x, weights = EncoderBlock(
        self.num_heads,
        self.mlp_dim,
        self.dropout,
        self.dtype,
        name=f"encoderblock_{i}",
      )(x, train, need)
      if need:
        maps.append(weights)
    x = nn.LayerNorm(dtype=self.dtype, name="encoder_norm")(x)
    head = functools.partial(
      nn.Dense,
      self.num_classes,
      kernel_init=nn.initializers.zeros,
      dtype=self.dtype,
    )
    logits = head(name="head")(
      x[:, 0] if self.classifier == "token" else jnp.mean(x, axis=1)
    )
    if self.distillation_token:
      dist_logits = head(name="head_dist")(x[:, 1])
      logits = (
        (logits, dist_logits) if separate_heads else (logits + dist_logits) / 2
      )
    return (logits, maps) if return_attention else logits


def _keep_patches(
  tokens: jax.Array, indices: jax.Array, prefix: int, num_patches: int
) -> jax.Array:
  """The prefix tokens and the patch tokens at ``indices`` (per example)."""
  indices = jnp.asarray(indices)
  if indices.ndim != 2 or indices.shape[0] != tokens.shape[0]:
    raise ValueError(
      f"patch_indices must be (batch={tokens.shape[0]}, k), got shape "
      f"{indices.shape}"
    )
  if not jnp.issubdtype(indices.dtype, jnp.integer):
    raise ValueError(f"patch_indices must be integers, got {indices.dtype}")
  if not 1 <= indices.shape[1] <= num_patches:
    raise ValueError(
      f"patch_indices keeps {indices.shape[1]} patches; allowed: 1 to "
      f"{num_patches}"
    )
  # An index outside [0, num_patches) (not checkable under jit) gives NaN
  # tokens, never a silently clamped patch.
  patches = jnp.take_along_axis(
    tokens[:, prefix:], indices[..., None], axis=1, mode="fill"
  )
  return jnp.concatenate([tokens[:, :prefix], patches], axis=1)


class ViTTi16(ViT):
  """ViT-Ti/16: DeiT-Tiny's shape (Touvron et al. 2021, arXiv:2012.12877).

  5,717,416 trainable parameters (224x224 inputs, 1000 classes).
  """

  hidden_size: int = 192
  num_layers: int = 12
  num_heads: int = 3
  mlp_dim: int = 768


class ViTS16(ViT):
  """ViT-S/16, DeiT-Small's shape: 22,050,664 parameters (as in ``ViT``)."""

  hidden_size: int = 384
  num_layers: int = 12
  num_heads: int = 6
  mlp_dim: int = 1536


class ViTB16(ViT):
  """ViT-B/16 (Dosovitskiy et al. 2021): 86,567,656 parameters, see ``ViT``."""

  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
