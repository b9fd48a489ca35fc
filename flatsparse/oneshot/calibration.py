"""Self-generated calibration data for one-shot pruning.

Self-generated calibration (Shin et al., 2024, after LLM-QAT): sequences
sampled from the dense model itself, started from a random first token, the
next ``greedy_tokens`` tokens chosen greedily and the rest sampled from the
model's softmax. Used for reconstruction, alone or appended to the original
calibration data (the reference keeps the original data for the pruning
statistics and adds the generated sequences to the reconstruction set). The
reference also rejects starts whose first tokens are not English (a language
detector); a byte-level model has no such filter here.

References:
  Shin, Park, Kim, Lee, "Rethinking Pruning Large Language Models: Benefits
  and Pitfalls of Reconstruction Error Minimization", EMNLP 2024.
  Liu et al., "LLM-QAT: Data-Free Quantization Aware Training for Large
  Language Models", 2023.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from flatsparse import validation

__all__ = ["generate", "first_token_pool"]

LogitsFn = Callable[[jax.Array], jax.Array]


def first_token_pool(vocab_size: int,
                     allowed: Sequence[int] | None = None) -> jax.Array:
  """The token ids a generated sequence may start with (default: all)."""
  if allowed is None:
    return jnp.arange(vocab_size, dtype=jnp.int32)
  pool = jnp.asarray(list(allowed), jnp.int32)
  if pool.size == 0 or int(pool.min()) < 0 or int(pool.max()) >= vocab_size:
    raise ValueError(f"first tokens must be non-empty ids in [0, "
                     f"{vocab_size}), got {list(allowed)[:8]}...")
  return pool


def generate(logits_fn: LogitsFn, key: jax.Array, *, num_sequences: int,
             seq_len: int, vocab_size: int, greedy_tokens: int = 4,
             temperature: float = 1.0,
             first_tokens: Sequence[int] | None = None,
             batch_size: int = 32) -> jax.Array:
  """Samples ``(num_sequences, seq_len)`` tokens from a causal LM.

  Token 0 is drawn uniformly from ``first_tokens`` (default: the whole
  vocabulary); tokens ``1..greedy_tokens`` are the argmax of the model;
  later ones are sampled from ``softmax(logits / temperature)``. The model is
  run on the whole fixed-length buffer at every position (a KV-free forward:
  causal attention makes the unfilled tail irrelevant).

  Args:
    logits_fn: ``tokens (b, seq_len) -> logits (b, seq_len, vocab)``.
    key: the sampling key.
    num_sequences: how many sequences.
    seq_len: their length.
    vocab_size: the logits' last dimension.
    greedy_tokens: greedy positions after the first token (reference: 4).
    temperature: of the sampled positions (> 0).
    first_tokens: ids allowed at position 0 (e.g. printable bytes).
    batch_size: sequences generated together.

  Returns:
    int32 tokens.
  """
  validation.check_count("num_sequences", num_sequences)
  validation.check_count("seq_len", seq_len, minimum=2)
  validation.check_count("greedy_tokens", greedy_tokens, minimum=0)
  validation.check("temperature", temperature, lambda v: v > 0, "> 0")
  pool = first_token_pool(vocab_size, first_tokens)

  @jax.jit
  def sample_batch(batch_key):
    start_key, step_key = jax.random.split(batch_key)
    first = pool[jax.random.randint(start_key, (batch_size,), 0, pool.size)]
    buf = jnp.zeros((batch_size, seq_len), jnp.int32).at[:, 0].set(first)

    def body(t, buf):
      logits = logits_fn(buf)[:, t - 1].astype(jnp.float32)
      sampled = jax.random.categorical(jax.random.fold_in(step_key, t),
                                       logits / temperature)
      token = jnp.where(t <= greedy_tokens, jnp.argmax(logits, -1), sampled)
      return buf.at[:, t].set(token.astype(jnp.int32))
    return jax.lax.fori_loop(1, seq_len, body, buf)

  batches = -(-num_sequences // batch_size)
  out = [sample_batch(jax.random.fold_in(key, b)) for b in range(batches)]
  return jnp.concatenate(out)[:num_sequences]
