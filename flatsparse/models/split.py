"""A transformer LM as pure functions: embed, one block at a time, head.

Layer-wise one-shot pruning (SparseGPT, Wanda) runs the calibration data
through the model one block at a time: the inputs of block ``i`` are the
outputs of block ``i - 1`` under the weights pruned so far. :func:`blockwise`
cuts a :class:`~flatsparse.models.Llama`, :class:`~flatsparse.models.OPT` or
:class:`~flatsparse.models.Bert` into those pieces:

  h = bw.embed(params, tokens, mask)
  for name in bw.block_names:
    h = bw.block(params[name], h, mask)
  out = bw.head(params, h)  # == model.apply({'params': params}, tokens, mask)

Every piece is a pure function of arrays (``jax.jit`` them as they are; the
block function is the same for every block, so one compilation serves all).

References:
    Frantar and Alistarh 2023, "SparseGPT: Massive Language Models Can Be
    Accurately Pruned in One-Shot", arXiv:2301.00774; Sun et al. 2024, "A
    Simple and Effective Pruning Approach for Large Language Models" (Wanda),
    arXiv:2306.11695.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax

__all__ = ["Blockwise", "blockwise"]

Params = Mapping[str, Any]


class Blockwise(NamedTuple):
  """A model's forward pass in pieces (see :func:`blockwise`).

  Attributes:
    embed: ``(params, tokens, attention_mask) -> hidden``: the hidden states
      entering the first block; ``params`` is the whole model's
      ``variables['params']``, ``attention_mask`` may be None.
    block: ``(block_params, hidden, attention_mask) -> hidden``: one block,
      ``block_params = params[name]`` for a name of ``block_names``.
    head: ``(params, hidden) -> outputs``: logits for the decoders, the
      hidden states themselves for BERT.
    block_names: The blocks' keys in ``params``, first to last.
  """

  embed: Callable[[Params, jax.Array, jax.Array | None], jax.Array]
  block: Callable[[Params, jax.Array, jax.Array | None], jax.Array]
  head: Callable[[Params, jax.Array], jax.Array]
  block_names: tuple[str, ...]


def _unwrap(params: Params) -> Params:
  # Also accept the full variables dict {'params': ...}.
  if set(params) == {"params"}:
    return params["params"]
  return params


def blockwise(model: nn.Module) -> Blockwise:
  """The pieces of ``model`` whose chain is ``model.apply``.

  Args:
    model: A ``Llama``, ``OPT`` or ``Bert`` (any module with ``embed``,
      ``head``, ``block_module()`` and ``config.num_layers``, blocks stored
      as ``layers_0``, ``layers_1``, ...).

  Returns:
    A :class:`Blockwise`; chaining its functions gives
    ``model.apply({'params': params}, tokens, attention_mask)``, the same
    operations in the same order.

  Raises:
    TypeError: ``model`` is not cut into blocks this way.
  """
  if not all(hasattr(model, name) for name in
             ("embed", "head", "block_module", "config")):
    raise TypeError(f"blockwise needs a Llama, OPT or Bert model, got "
                    f"{type(model).__name__}.")
  block_module = model.block_module()

  def embed(params: Params, tokens: jax.Array,
            attention_mask: jax.Array | None = None) -> jax.Array:
    return model.apply({"params": _unwrap(params)}, tokens, attention_mask,
                       method="embed")

  def block(block_params: Params, hidden: jax.Array,
            attention_mask: jax.Array | None = None) -> jax.Array:
    return block_module.apply({"params": _unwrap(block_params)}, hidden,
                              attention_mask)

  def head(params: Params, hidden: jax.Array) -> jax.Array:
    return model.apply({"params": _unwrap(params)}, hidden, method="head")

  names = tuple(f"layers_{i}" for i in range(model.config.num_layers))
  return Blockwise(embed=embed, block=block, head=head, block_names=names)
