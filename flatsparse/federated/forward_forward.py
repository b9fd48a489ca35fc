"""Forward-Forward: goodness, the layer-local loss, labels in the input.

A layer's goodness is the sum of its squared activities, ``G = sum_j
z_j^2``, and ``p(positive) = sigmoid(G - theta)``. Each layer minimizes
(batch means)::

  L_l = softplus(-(G_pos - theta)) + softplus(G_neg - theta)

with ``theta`` the layer's number of units unless set. Positive inputs carry
the true label one-hot in their first ``num_classes`` values, negative ones
a wrong label drawn uniformly from the other classes. :class:`FFMLP` feeds
every layer the previous one's length-normalized activity under
``stop_gradient``, so ``d(sum_l L_l) / d(theta_l) = dL_l / d(theta_l)``: one
gradient of the summed loss is every layer's local gradient, and any optax
transformation of it trains each layer from its own loss (use
:func:`flatsparse.federated.layerwise` for SAM or pruning per layer).

Prediction: for each candidate label, embed it and sum the goodness of all
layers but the first; the argmax wins (``rule='goodness'``). Or a linear
readout on the normalized activities of all layers but the first, from an
input whose label positions hold 0.1 each (``rule='readout'``), trained by
cross-entropy on ``stop_gradient`` activities.

References:
  Hinton, "The Forward-Forward Algorithm: Some Preliminary
  Investigations", arXiv:2212.13345, 2022.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from flatsparse import validation

__all__ = ["goodness", "layer_loss", "embed_label", "embed_neutral",
           "wrong_labels", "FFTrainOutputs", "ff_forward", "ff_loss",
           "goodness_scores", "predict", "weighted_mean", "RULES"]

RULES = ("goodness", "readout")
# Hinton's neutral label: 0.1 in each of the label positions.
NEUTRAL_VALUE = 0.1


def goodness(activity: jax.Array) -> jax.Array:
  """``G = sum_j z_j^2`` over the last axis, in float32."""
  return jnp.sum(jnp.square(activity.astype(jnp.float32)), axis=-1)


def weighted_mean(values: jax.Array, weights: jax.Array | None
                  ) -> jax.Array:
  """``sum(w v) / sum(w)`` in float32 (the plain mean when ``weights`` is
  None); 0 for an all-padding batch (every weight 0)."""
  if weights is None:
    return jnp.mean(values)
  weights = weights.astype(jnp.float32)
  # An all-padding batch has loss 0 (the caller skips its update).
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1e-12)


def layer_loss(g_pos: jax.Array, g_neg: jax.Array, threshold: float | Any,
               weights: jax.Array | None = None) -> jax.Array:
  """``mean[softplus(theta - G_pos) + softplus(G_neg - theta)]``.

  Args:
    g_pos: goodness ``(batch,)`` of the positive inputs.
    g_neg: goodness ``(batch,)`` of the negative inputs (one per positive).
    threshold: ``theta``.
    weights: optional per-example weights (0 = padding): a weighted mean.

  Returns:
    The scalar loss (float32).
  """
  per_example = (jax.nn.softplus(threshold - g_pos)
                 + jax.nn.softplus(g_neg - threshold))
  return weighted_mean(per_example, weights)


def _flat(images: jax.Array, num_classes: int) -> jax.Array:
  x = images.reshape((images.shape[0], -1))
  if x.shape[1] <= num_classes:
    raise ValueError(
        f"Forward-Forward writes the label into the first num_classes="
        f"{num_classes} input values, but an input has only {x.shape[1]} "
        "values; it needs more than num_classes.")
  return x


def embed_label(images: jax.Array, labels: jax.Array, num_classes: int,
                value: float = 1.0) -> jax.Array:
  """Flattened ``images`` with their first ``num_classes`` values replaced by
  ``value * one_hot(labels)`` (Hinton's MNIST inputs; the first pixels of an
  MNIST image are always black).

  Args:
    images: ``(batch, ...)``.
    labels: int ``(batch,)`` in ``[0, num_classes)``.
    num_classes: the label positions.
    value: the one-hot's value (1.0: the top of ``[0, 1]`` pixels).

  Returns:
    ``(batch, D)`` in the images' dtype.
  """
  x = _flat(images, num_classes)
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=x.dtype) * value
  return jnp.concatenate([one_hot, x[:, num_classes:]], axis=1)


def embed_neutral(images: jax.Array, num_classes: int) -> jax.Array:
  """The readout's input: every label position holds 0.1."""
  x = _flat(images, num_classes)
  neutral = jnp.full((x.shape[0], num_classes), NEUTRAL_VALUE, x.dtype)
  return jnp.concatenate([neutral, x[:, num_classes:]], axis=1)


def wrong_labels(key: jax.Array, labels: jax.Array, num_classes: int
                 ) -> jax.Array:
  """A label drawn uniformly from the ``num_classes - 1`` wrong ones:
  ``(y + k) mod C`` with ``k ~ U{1, ..., C - 1}`` (never ``y``)."""
  validation.check_count("num_classes", num_classes, minimum=2)
  shift = jax.random.randint(key, labels.shape, 1, num_classes,
                             dtype=labels.dtype)
  return (labels + shift) % num_classes


class FFTrainOutputs(NamedTuple):
  """One training forward pass of positive and negative inputs.

  Attributes:
    positive: the layers' activities on the positive inputs.
    negative: the same on the negative inputs.
    logits: the readout's logits on the neutral inputs, or None.
  """

  positive: tuple[jax.Array, ...]
  negative: tuple[jax.Array, ...]
  logits: jax.Array | None


def ff_forward(model: nn.Module, variables: Mapping[str, Any],
               images: jax.Array, labels: jax.Array, key: jax.Array
               ) -> FFTrainOutputs:
  """Runs ``model`` (an :class:`flatsparse.models.FFMLP`) on positive and
  negative inputs (one batched call) and, with a readout, on neutral ones;
  ``key`` draws the wrong labels."""
  num_classes = model.num_labels
  positive = embed_label(images, labels, num_classes)
  negative = embed_label(images, wrong_labels(key, labels, num_classes),
                         num_classes)
  inputs = [positive, negative]
  if model.readout:
    inputs.append(embed_neutral(images, num_classes))
  outputs = model.apply(variables, jnp.concatenate(inputs))
  n = images.shape[0]
  pos = tuple(a[:n] for a in outputs.activations)
  neg = tuple(a[n:2 * n] for a in outputs.activations)
  logits = None if outputs.logits is None else outputs.logits[2 * n:]
  return FFTrainOutputs(pos, neg, logits)


def ff_loss(outputs: FFTrainOutputs, labels: jax.Array, *,
            threshold: float | Sequence[float] | None = None,
            weights: jax.Array | None = None
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """``sum_l L_l`` (+ the readout's cross-entropy) and its terms.

  Args:
    outputs: from :func:`ff_forward`.
    labels: the true labels (the readout's targets).
    threshold: ``theta`` for every layer, one per layer, or None: each
      layer's number of units (``FFMLP.threshold`` is what the library's
      losses pass).
    weights: per-example weights (0 = padding).

  Returns:
    ``(total, terms)`` with ``terms`` ``layer_<l>`` and ``readout``.
  """
  num_layers = len(outputs.positive)
  if threshold is None:
    thresholds = [float(a.shape[-1]) for a in outputs.positive]
  elif isinstance(threshold, (int, float)):
    thresholds = [float(threshold)] * num_layers
  else:
    thresholds = [float(t) for t in threshold]
    if len(thresholds) != num_layers:
      raise ValueError(f"threshold has {len(thresholds)} values for "
                       f"{num_layers} layers; give one per layer or one.")
  terms = {}
  for i, (pos, neg, theta) in enumerate(
      zip(outputs.positive, outputs.negative, thresholds)):
    terms[f"layer_{i}"] = layer_loss(goodness(pos), goodness(neg), theta,
                                     weights)
  if outputs.logits is not None:
    ce = optax.softmax_cross_entropy_with_integer_labels(
        outputs.logits.astype(jnp.float32), labels)
    terms["readout"] = weighted_mean(ce, weights)
  return sum(terms.values()), terms


def goodness_scores(model: nn.Module, variables: Mapping[str, Any],
                    images: jax.Array) -> jax.Array:
  """``(batch, num_classes)``: for each candidate label, the goodness summed
  over all layers but the first (the only layer if there is one)."""
  num_classes = model.num_labels
  n = images.shape[0]
  candidates = jnp.repeat(jnp.arange(num_classes, dtype=jnp.int32), n)
  tiled = jnp.tile(images.reshape((n, -1)), (num_classes, 1))
  outputs = model.apply(variables,
                        embed_label(tiled, candidates, num_classes))
  used = outputs.activations[1:] or outputs.activations
  total = sum(goodness(a) for a in used)
  return total.reshape((num_classes, n)).T


def predict(model: nn.Module, variables: Mapping[str, Any],
            images: jax.Array, rule: str = "goodness") -> jax.Array:
  """Predicted labels by ``rule`` (``'goodness'`` or ``'readout'``)."""
  validation.check_choice("rule", rule, RULES)
  if rule == "goodness":
    return jnp.argmax(goodness_scores(model, variables, images), -1)
  if not model.readout:
    raise ValueError("rule='readout' needs an FFMLP with readout=True.")
  outputs = model.apply(variables, embed_neutral(images, model.num_labels))
  return jnp.argmax(outputs.logits, -1)
