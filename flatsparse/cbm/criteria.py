"""Concept selection criteria for test-time intervention.

Each criterion scores every concept of every example; an expert corrects
the highest scores first. With ``p = sigmoid(l)`` the predicted probability
of concept ``i``, ``v`` the bottleneck values ``f`` reads, ``q = softmax(f(
v))`` the class prediction, and ``q0`` / ``q1`` the prediction after setting
concept ``i`` to its 0 / 1 correction (``low_i`` / ``high_i``):

=========  ===============================================================
RAND       uniform random
UCP        ``1 / |p - 0.5|`` (uncertainty of the concept prediction)
LCP        ``|p - c|`` (loss of the concept prediction; an oracle)
CCTP       ``p_i * sum_j |d f_j / d v_i|`` at ``v`` (contribution to the
           target prediction; for a linear ``f`` the column norm of W)
ECTP       ``(1 - p) KL(q0 || q) + p KL(q1 || q)`` (expected change)
EUDTP      ``H(q) - [(1 - p) H(q0) + p H(q1)]`` (expected uncertainty drop)
entropy    ``-p log p - (1 - p) log(1 - p)`` (Park et al.'s noisy concepts)
=========  ===============================================================

The entropy of one Bernoulli prediction falls monotonically in ``|p - 0.5|``,
so ``entropy`` and UCP rank concepts identically (a test checks it); they
differ only in their values. The reference code squares UCP's and LCP's
denominators / differences (same ranking). Group scores are the mean of the
members' scores (the reference's rule); RAND draws one number per group.

References:
  Shin, Jo, Ahn and Lee, "A closer look at the intervention procedure of
  concept bottleneck models", ICML 2023; Park, Mun, Oh and Lee, "An
  analysis of concept bottleneck models: measuring, understanding, and
  mitigating the impact of noisy annotations", 2025 (entropy).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["CRITERIA", "concept_scores", "class_entropy"]

CRITERIA = ("rand", "ucp", "lcp", "cctp", "ectp", "eudtp", "entropy")

Predict = Callable[[jax.Array], jax.Array]


def _at_least_f32(x: jax.Array) -> jax.Array:
  """float32, or float64 if ``x`` is (the float64 tests)."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def class_entropy(logits: jax.Array) -> jax.Array:
  """Entropy (nats) of ``softmax(logits)`` over the last axis."""
  log_q = jax.nn.log_softmax(_at_least_f32(logits))
  return -jnp.sum(jnp.exp(log_q) * log_q, -1)


def _kl(logits_a: jax.Array, logits_b: jax.Array) -> jax.Array:
  """``KL(softmax(a) || softmax(b))`` over the last axis."""
  log_a = jax.nn.log_softmax(_at_least_f32(logits_a))
  log_b = jax.nn.log_softmax(_at_least_f32(logits_b))
  return jnp.sum(jnp.exp(log_a) * (log_a - log_b), -1)


def _one_concept_changes(predict: Predict, values: jax.Array, low: jax.Array,
                         high: jax.Array):
  """Class logits with concept ``i`` set to ``low_i`` / ``high_i``, for every
  ``i``: two ``(k, B, C)`` arrays, one ``f`` call per concept and value
  (a ``lax.map`` over concepts: memory of one batch of ``f``)."""
  k = values.shape[-1]

  def set_to(i):
    column = jnp.arange(k) == i
    return (predict(jnp.where(column, low[i], values)),
            predict(jnp.where(column, high[i], values)))

  return jax.lax.map(set_to, jnp.arange(k))


def concept_scores(criterion: str, *, concept_logits: jax.Array,
                   concepts: jax.Array, values: jax.Array, predict: Predict,
                   low: jax.Array, high: jax.Array,
                   key: jax.Array | None = None) -> jax.Array:
  """Scores ``(B, k)`` of ``criterion`` (module docstring).

  Args:
    criterion: One of ``CRITERIA``.
    concept_logits: ``(B, k)`` logits of ``g``.
    concepts: ``(B, k)`` true 0/1 concepts (LCP reads them).
    values: ``(B, k)`` bottleneck values ``f`` reads (before correction).
    predict: ``f``: ``(B, k)`` values -> ``(B, C)`` class logits.
    low: ``(k,)`` values of a concept corrected to 0.
    high: ``(k,)`` values of a concept corrected to 1.
    key: PRNG key (RAND only).

  Returns:
    ``(B, k)`` in float32 (float64 for float64 logits); intervene on the
    highest first.
  """
  p = jax.nn.sigmoid(_at_least_f32(concept_logits))
  if criterion == "rand":
    if key is None:
      raise ValueError("criterion 'rand' needs a PRNG key.")
    return jax.random.uniform(key, p.shape, p.dtype)
  if criterion == "ucp":
    return 1.0 / jnp.abs(p - 0.5)
  if criterion == "lcp":
    return jnp.abs(p - concepts.astype(p.dtype))
  if criterion == "entropy":
    return -(jax.scipy.special.xlogy(p, p)
             + jax.scipy.special.xlogy(1.0 - p, 1.0 - p))
  if criterion == "cctp":
    def f_single(v):
      return _at_least_f32(predict(v[None])[0])
    jacobian = jax.vmap(jax.jacrev(f_single))(values)  # (B, C, k)
    return p * jnp.sum(jnp.abs(jacobian), axis=1)
  if criterion in ("ectp", "eudtp"):
    base = predict(values)
    at_low, at_high = _one_concept_changes(predict, values, low, high)
    if criterion == "ectp":
      change_0 = _kl(at_low, base[None]).T
      change_1 = _kl(at_high, base[None]).T
      return (1.0 - p) * change_0 + p * change_1
    expected = ((1.0 - p) * class_entropy(at_low).T
                + p * class_entropy(at_high).T)
    return class_entropy(base)[:, None] - expected
  raise ValueError(f"Unknown criterion {criterion!r}; allowed: "
                   f"{', '.join(CRITERIA)}.")
