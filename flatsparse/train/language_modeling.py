"""Next-token language modelling: a task of the loop and perplexity helpers.

``config.task = "language_modeling"`` trains a model that maps int tokens
``(batch, seq)`` to logits ``(batch, seq, vocab)`` (called as
``model.apply(variables, tokens, train=...)``) with the next-token softmax
cross-entropy. The batch keys are the data ``Loader``'s: ``'image'`` holds
the input tokens and ``'label'`` the next-token targets, both int32
``(batch, seq)`` (a ``Dataset(inputs, targets, vocab_size)`` such as
``shakespeare_bytes``), and eval batches add ``'mask'`` (1 real, 0 padding).

Eval metrics, from sums over every real token: ``loss`` (mean token NLL,
nats), ``perplexity`` = exp(loss), ``bits_per_byte`` = loss / ln 2 (bits per
token; per byte for byte-level tokens) and ``accuracy`` (next-token top-1).

:func:`perplexity` measures the same metrics for any ``tokens -> logits``
function (e.g. a pruned model's ``partial(model.apply, params)``), on token
windows such as ``flatsparse.data.shakespeare.byte_windows``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flatsparse import validation
from flatsparse.train import tasks

__all__ = ["LanguageModeling", "token_nll", "nll_sums", "lm_metrics",
           "perplexity"]

Batch = Mapping[str, jax.Array]


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Negative log-likelihood of each target token, float32.

  Args:
    logits: ``(..., vocab)``, any float dtype.
    targets: int ``(...)``, the token each position predicts.

  Returns:
    float32 ``(...)``: ``-log softmax(logits)[target]``.
  """
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), targets)


def nll_sums(logits: jax.Array, targets: jax.Array,
             mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Summed token NLL and the number of tokens it sums over.

  Args:
    logits: ``(..., vocab)``.
    targets: int ``(...)``.
    mask: optional, broadcastable to ``targets``; only tokens where it is
      > 0 count (padding excluded with ``where``, so NaN there cannot leak).

  Returns:
    ``(nll_sum, num_tokens)``, float32 scalars.
  """
  nll = token_nll(logits, targets)
  real = (jnp.ones(nll.shape, bool) if mask is None
          else jnp.broadcast_to(jnp.asarray(mask) > 0, nll.shape))
  return (jnp.sum(jnp.where(real, nll, 0.0)),
          jnp.sum(real.astype(jnp.float32)))


def lm_metrics(nll_sum: float, num_tokens: float) -> dict[str, float]:
  """``loss`` (mean NLL, nats), ``perplexity`` and ``bits_per_byte``.

  Raises:
    ValueError: if ``num_tokens`` is not positive.
  """
  if not num_tokens > 0:
    raise ValueError(f"num_tokens must be > 0, got {num_tokens!r}.")
  loss = float(nll_sum) / float(num_tokens)
  return {"loss": loss, "perplexity": math.exp(loss),
          "bits_per_byte": loss / math.log(2.0)}


class LanguageModeling(tasks.Classification):
  """Next-token prediction of ``batch['label']`` from ``batch['image']``.

  Classification of every position: the loss (softmax cross-entropy averaged
  over every token of the batch, float32) and the train ``accuracy``
  (next-token top-1) are the classifier's. Eval: see the module docstring;
  padded examples (``weights`` 0) count for nothing.
  """

  def eval_sums(self, outputs: jax.Array, batch: Batch, weights: jax.Array
                ) -> dict[str, jax.Array]:
    targets = batch[self.target_key]
    real = jnp.broadcast_to((weights > 0)[:, None], targets.shape)
    nll_sum, num_tokens = nll_sums(outputs, targets, real)
    correct = jnp.argmax(outputs, -1) == targets
    return {"nll_sum": nll_sum, "tokens": num_tokens,
            "correct": jnp.sum(jnp.where(real, correct, False)),
            "count": jnp.sum(weights)}

  def eval_metrics(self, sums: Mapping[str, float]) -> dict[str, float]:
    return {**lm_metrics(sums["nll_sum"], sums["tokens"]),
            "accuracy": sums["correct"] / sums["tokens"]}

  def per_example(self, outputs: jax.Array, batch: Batch
                  ) -> dict[str, jax.Array]:
    return {"nll": token_nll(outputs, batch[self.target_key]),
            "logits": outputs}


@jax.jit
def _batch_sums(logits: jax.Array, targets: jax.Array, weights: jax.Array
                ) -> tuple[jax.Array, jax.Array]:
  return nll_sums(logits, targets, weights[:, None])


def perplexity(logits_fn: Callable[[jax.Array], jax.Array], tokens: Any, *,
               batch_size: int) -> dict[str, float]:
  """Held-out perplexity of any ``tokens -> logits`` function.

  Each row of ``tokens`` is a window: the function sees ``row[:-1]`` and is
  scored on predicting ``row[1:]``. Rows go in batches of ``batch_size``;
  the last is padded with zero rows that are masked out, so every call has
  one shape (one compilation of a jitted ``logits_fn``). Sums accumulate in
  float64 on the host.

  Example::

    windows = shakespeare.byte_windows(shakespeare.encode(text), 128)
    logits_fn = jax.jit(lambda x: model.apply(variables, x, train=False))
    perplexity(logits_fn, windows, batch_size=64)

  Args:
    logits_fn: int ``(batch, seq)`` -> logits ``(batch, seq, vocab)``.
    tokens: int ``(n, seq + 1)`` windows.
    batch_size: rows per call, >= 1.

  Returns:
    ``{"loss", "perplexity", "bits_per_byte", "tokens"}`` (floats; loss in
    nats per token).

  Raises:
    ValueError: if ``tokens`` is not 2-d with at least 2 columns and 1 row.
  """
  batch_size = validation.check_count("batch_size", batch_size)
  tokens = np.asarray(tokens)
  if tokens.ndim != 2 or tokens.shape[0] < 1 or tokens.shape[1] < 2:
    raise ValueError("tokens must be (n >= 1, seq + 1 >= 2) windows, got "
                     f"shape {tokens.shape}.")
  total, count = 0.0, 0.0
  for start in range(0, tokens.shape[0], batch_size):
    rows = tokens[start:start + batch_size]
    real = rows.shape[0]
    weights = np.zeros(batch_size, np.float32)
    weights[:real] = 1.0
    if real < batch_size:
      rows = np.concatenate(
          [rows, np.zeros((batch_size - real, rows.shape[1]), rows.dtype)])
    logits = logits_fn(jnp.asarray(rows[:, :-1]))
    nll_sum, num_tokens = jax.device_get(
        _batch_sums(logits, jnp.asarray(rows[:, 1:]), jnp.asarray(weights)))
    total += float(nll_sum)
    count += float(num_tokens)
  return {**lm_metrics(total, count), "tokens": count}


tasks.register_task("language_modeling", LanguageModeling())
