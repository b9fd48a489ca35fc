"""Test-time intervention curves: task error against the number of
corrected concepts (or concept groups), per selection criterion.

At step ``n`` an expert has replaced the ``n`` highest-scored concepts (or
groups) of each example by their true value, in the bottleneck's own
representation (``replacement_values``): 0/1 for ``'hard'`` and
``'sigmoid'``, and for ``'soft'`` the 5th / 95th percentile of that
concept's logits on the training set (Shin et al.'s rule; the reference
code takes the percentiles of the evaluated set: ``percentiles_of=``). The
order is fixed from the uncorrected prediction (as in the reference), so
step ``n`` corrects a superset of step ``n - 1``.

Budgets: ``'example'`` gives each example ``n`` corrections;
``'batch'`` shares ``n * B`` corrections over the ``B`` evaluated examples
(the reference's batch intervention: one ranking of every (example,
concept) score of the set).

The whole curve for a set, ``0..max_steps``, is one compiled computation
(scores, ranks, and a ``lax.map`` over steps of ``f`` on the corrected
values), not a loop over examples.

References:
  Shin et al., "A closer look at the intervention procedure of concept
  bottleneck models", ICML 2023.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flatsparse import rng
from flatsparse import validation
from flatsparse.cbm import criteria as criteria_lib
from flatsparse.cbm.model import bottleneck_values
from flatsparse.cbm.model import BOTTLENECKS
from flatsparse.cbm.model import ConceptBottleneck

__all__ = ["BUDGETS", "Groups", "replacement_values", "group_index",
           "group_ranks", "selected_concepts", "compiled_curve",
           "intervention_curve",
           "intervention_curves", "corrected_values"]

BUDGETS = ("example", "batch")
Groups = Sequence[Sequence[int]] | np.ndarray | None


def replacement_values(bottleneck: str, concept_logits: Any = None,
                       percentiles: tuple[float, float] = (5.0, 95.0)
                       ) -> tuple[np.ndarray, np.ndarray] | tuple[float, float]:
  """``(low, high)``: what a concept corrected to 0 / 1 becomes.

  Args:
    bottleneck: ``'soft'``, ``'sigmoid'`` or ``'hard'``.
    concept_logits: ``(N, k)`` logits whose percentiles the soft
      representation uses (the training set's, by the paper's rule).
    percentiles: The two percentiles (numpy's linear interpolation).

  Returns:
    ``(0.0, 1.0)`` for 0/1 representations, else two ``(k,)`` arrays.
  """
  validation.check_choice("bottleneck", bottleneck, BOTTLENECKS)
  if bottleneck != "soft":
    return 0.0, 1.0
  if concept_logits is None:
    raise ValueError("The soft bottleneck's corrections are percentiles of "
                     "concept logits: pass concept_logits (N, k).")
  logits = np.asarray(concept_logits, np.float64)
  return (np.percentile(logits, percentiles[0], axis=0),
          np.percentile(logits, percentiles[1], axis=0))


def group_index(groups: Groups, k: int) -> tuple[np.ndarray, np.ndarray]:
  """``(index (G, s) int32, valid (G, s) bool)``: each group's concepts,
  padded to the largest group (None: every concept its own group).

  Raises:
    ValueError: for an empty group or a concept outside [0, k).
  """
  if groups is None:
    return np.arange(k, dtype=np.int32)[:, None], np.ones((k, 1), bool)
  groups = [list(map(int, g)) for g in groups]
  if not groups or min(map(len, groups)) == 0:
    raise ValueError("Every concept group needs at least one concept.")
  flat = [i for g in groups for i in g]
  if min(flat) < 0 or max(flat) >= k:
    raise ValueError(f"Group members must be concepts in [0, {k}); got "
                     f"{min(flat)}..{max(flat)}.")
  size = max(map(len, groups))
  index = np.zeros((len(groups), size), np.int32)
  valid = np.zeros((len(groups), size), bool)
  for g, members in enumerate(groups):
    index[g, :len(members)] = members
    valid[g, :len(members)] = True
  return index, valid


def group_ranks(scores: jax.Array, budget: str) -> jax.Array:
  """Rank of each (example, group) score, 0 = corrected first (ties: the
  lower index first); per example, or over the whole set."""
  flat = scores.reshape(-1) if budget == "batch" else scores
  order = jnp.argsort(-flat, axis=-1, stable=True)
  return jnp.argsort(order, axis=-1).reshape(scores.shape)  # the inverse


def selected_concepts(ranks: jax.Array, n: Any, index: jax.Array,
                      valid: jax.Array, k: int, budget: str) -> jax.Array:
  """``(B, k)`` bool: the concepts corrected after ``n`` steps, given the
  ``(B, G)`` group ranks (``n`` groups per example, or ``n * B`` over the
  set for the ``'batch'`` budget)."""
  per_step = ranks.shape[0] if budget == "batch" else 1
  chosen = (ranks < n * per_step).astype(jnp.float32)  # (B, G)
  num_groups = index.shape[0]
  membership = jnp.zeros((num_groups, k), jnp.float32).at[
      jnp.arange(num_groups)[:, None], index].max(valid.astype(jnp.float32))
  return (chosen @ membership) > 0


def corrected_values(values: jax.Array, concepts: jax.Array,
                     selected: jax.Array, low: Any, high: Any) -> jax.Array:
  """``values`` with the ``selected`` ``(B, k)`` entries set to the truth."""
  truth = jnp.where(concepts > 0, jnp.asarray(high, values.dtype),
                    jnp.asarray(low, values.dtype))
  return jnp.where(selected, truth, values)


@functools.partial(jax.jit, static_argnames=(
    "model", "criterion", "budget", "max_steps"))
def compiled_curve(model: ConceptBottleneck, criterion: str, budget: str,
                   max_steps: int, f_params: Any, concept_logits: jax.Array,
                   concepts: jax.Array, classes: jax.Array, low: jax.Array,
                   high: jax.Array, index: jax.Array, valid: jax.Array,
                   key: jax.Array) -> jax.Array:
  """The jitted curve (arguments checked by :func:`intervention_curve`)."""
  def predict(v):
    return model.apply({"params": f_params}, v,
                       method=ConceptBottleneck.predict_from_concepts)

  values = bottleneck_values(concept_logits, model.bottleneck)
  num_groups, k = index.shape[0], concept_logits.shape[-1]
  if criterion == "rand":
    group_scores = jax.random.uniform(key, (concept_logits.shape[0],
                                            num_groups))
  else:
    scores = criteria_lib.concept_scores(
        criterion, concept_logits=concept_logits, concepts=concepts,
        values=values, predict=predict, low=low, high=high)
    members = jnp.where(valid, scores[:, index], 0.0)
    group_scores = jnp.sum(members, -1) / jnp.sum(valid, -1)
  ranks = group_ranks(group_scores, budget)

  def error_after(n):
    selected = selected_concepts(ranks, n, index, valid, k, budget)
    logits = predict(corrected_values(values, concepts, selected, low, high))
    return 1.0 - jnp.mean((jnp.argmax(logits, -1) == classes).astype(
        jnp.float32))

  return jax.lax.map(error_after, jnp.arange(max_steps + 1))


def intervention_curve(model: ConceptBottleneck, params: Any,
                       concept_logits: Any, concepts: Any, classes: Any, *,
                       criterion: str, low: Any = 0.0, high: Any = 1.0,
                       groups: Groups = None, budget: str = "example",
                       max_steps: int | None = None,
                       seed: int | jax.Array = 0) -> np.ndarray:
  """Task error after ``0..max_steps`` corrections (module docstring).

  Args:
    model: The :class:`ConceptBottleneck` (its ``f`` and bottleneck).
    params: Its parameters (``variables['params']``).
    concept_logits: ``(B, k)`` logits of ``g`` on the evaluated examples.
    concepts: ``(B, k)`` true 0/1 concepts.
    classes: ``(B,)`` true classes.
    criterion: One of ``criteria.CRITERIA``.
    low: Corrections to 0 (``replacement_values``): a scalar or ``(k,)``.
    high: Corrections to 1, likewise.
    groups: Concept groups (lists of concept indices); None: individual
      concepts. Steps then count groups.
    budget: ``'example'`` or ``'batch'``.
    max_steps: Last number of corrections (default: every group).
    seed: RAND's seed (an int or a key).

  Returns:
    float64 ``(max_steps + 1,)``: the error after ``n`` corrections.

  Raises:
    ValueError: for an unknown criterion or budget, a shape mismatch, or a
      ``max_steps`` above the number of concepts (groups).
  """
  validation.check_choice("criterion", criterion, criteria_lib.CRITERIA)
  validation.check_choice("budget", budget, BUDGETS)
  concept_logits = jnp.asarray(concept_logits)
  concepts = jnp.asarray(concepts)
  classes = jnp.asarray(classes)
  if concept_logits.ndim != 2 or concepts.shape != concept_logits.shape:
    raise ValueError(
        f"concept_logits and concepts must both be (B, k); got "
        f"{concept_logits.shape} and {concepts.shape}.")
  if classes.shape != concept_logits.shape[:1]:
    raise ValueError(f"classes must be ({concept_logits.shape[0]},), got "
                     f"{classes.shape}.")
  k = concept_logits.shape[1]
  index, valid = group_index(groups, k)
  level = "concepts" if groups is None else "concept groups"
  if max_steps is None:
    max_steps = index.shape[0]
  validation.check_count("max_steps", max_steps, minimum=0)
  if max_steps > index.shape[0]:
    raise ValueError(f"max_steps {max_steps} is above the {index.shape[0]} "
                     f"{level} an expert can correct.")
  dtype = concept_logits.dtype
  low = jnp.broadcast_to(jnp.asarray(low, dtype), (k,))
  high = jnp.broadcast_to(jnp.asarray(high, dtype), (k,))
  errors = compiled_curve(model, criterion, budget, int(max_steps), params,
                  concept_logits, concepts, classes, low, high,
                  jnp.asarray(index), jnp.asarray(valid),
                  rng.base_key(seed))
  return np.asarray(errors, np.float64)


def intervention_curves(model: ConceptBottleneck, params: Any,
                        concept_logits: Any, concepts: Any, classes: Any, *,
                        criteria: Sequence[str] = criteria_lib.CRITERIA,
                        **kwargs: Any) -> dict[str, np.ndarray]:
  """:func:`intervention_curve` for each criterion (same arguments)."""
  return {c: intervention_curve(model, params, concept_logits, concepts,
                                classes, criterion=c, **kwargs)
          for c in criteria}
