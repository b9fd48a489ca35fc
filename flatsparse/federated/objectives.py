"""The clients' losses (Forward-Forward, backprop) and their evaluation.

Both losses have the signature :func:`flatsparse.federated.make_client_update`
expects, ``(params, images, labels, weights, key) -> loss`` (a weighted mean;
weights 0 mark padding), so FedFwd and FedAvg-with-backprop differ only in
this function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from flatsparse import validation
from flatsparse.federated import forward_forward as ff

__all__ = ["forward_forward_loss", "backprop_loss", "make_predict",
           "accuracy"]


def forward_forward_loss(model: nn.Module) -> Callable[..., jax.Array]:
  """The summed layer-local FF losses of an :class:`FFMLP` at its
  ``threshold`` (and its readout's cross-entropy); the key draws the
  negative labels."""
  def loss(params, images, labels, weights, key):
    outputs = ff.ff_forward(model, {"params": params}, images, labels, key)
    return ff.ff_loss(outputs, labels, threshold=model.threshold,
                      weights=weights)[0]
  return loss


def backprop_loss(model: nn.Module) -> Callable[..., jax.Array]:
  """The weighted softmax cross-entropy of a classifier (key unused)."""
  def loss(params, images, labels, weights, key):
    del key
    logits = model.apply({"params": params}, images)
    return ff.weighted_mean(optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), labels), weights)
  return loss


def make_predict(model: nn.Module, kind: str, rule: str = "goodness"
                 ) -> Callable[[Any, jax.Array], jax.Array]:
  """A jitted ``(params, images) -> labels`` for ``kind`` ``'ff'`` (by
  ``rule``) or ``'bp'`` (argmax of the logits)."""
  validation.check_choice("kind", kind, ("ff", "bp"))
  if kind == "ff":
    return jax.jit(lambda p, x: ff.predict(model, {"params": p}, x, rule))
  return jax.jit(lambda p, x: jnp.argmax(model.apply({"params": p}, x), -1))


def accuracy(predict_fn: Callable[[Any, jax.Array], jax.Array], params: Any,
             images: np.ndarray, labels: np.ndarray, batch_size: int = 1000
             ) -> float:
  """Exact accuracy over ``images`` in batches (the last one padded)."""
  n = labels.shape[0]
  correct = 0
  for start in range(0, n, batch_size):
    x = images[start:start + batch_size]
    real = x.shape[0]
    if real < batch_size:  # one compiled shape
      x = np.concatenate([x, np.zeros((batch_size - real,) + x.shape[1:],
                                      x.dtype)])
    pred = np.asarray(predict_fn(params, x))[:real]
    correct += int(np.sum(pred == labels[start:start + real]))
  return correct / n
