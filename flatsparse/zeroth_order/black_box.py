"""A black-box objective: loss values only, every evaluation counted.

Zeroth-order prompt tuning treats the model as an API that returns a loss
(and, for evaluation, an accuracy) for a prompt and a batch, and charges per
call. :class:`BlackBox` wraps such functions so that code under test can only
evaluate them:

* ``loss(prompt_params, batch)`` and ``accuracy(prompt_params, batch)``
  return the wrapped values; any differentiation (``jax.grad``, ``jvp``,
  ``vjp``, ``linearize``) raises a ``TypeError``.
* ``queries`` counts the evaluations of ``loss``, ``accuracy_queries`` those
  of ``accuracy`` (evaluation, not training queries); ``reset()`` zeroes
  both.

Counting happens on the host, in an ``io_callback`` that runs with every
execution of the compiled program, so a jitted loss counts once per call
(not once per trace), and under ``jax.vmap`` each lane counts one: the
callback is batched sequentially, once per lane, and its argument is marked
as batched whenever an input or the value is, so a vmap over ``q``
perturbations counts ``q`` even where the value does not depend on them.
Nested vmaps multiply, ``lax.scan`` counts each step. The callbacks run
asynchronously; reading a count waits for them (``jax.effects_barrier``), so
counts are exact when read. ``vmap`` of a ``lax.cond`` whose branch queries
the box is refused by JAX (an IO effect in a batched ``cond``).

Usage::

    box = BlackBox(task.loss, task.accuracy)
    step = jax.jit(jax.vmap(box.loss, in_axes=(0, None)))
    losses = step(perturbed_prompts, batch)  # q queries
    box.queries                              # q

References:
    Park et al. 2025, "ZIP: An Efficient Zeroth-order Prompt Tuning for
    Black-box Vision-Language Models", ICLR 2025.
"""

from __future__ import annotations

from collections.abc import Callable
import threading
from typing import Any

import jax
from jax.experimental import io_callback
import jax.numpy as jnp
import numpy as np

__all__ = ["BlackBox", "LossFn"]

# ``fn(prompt_params, batch) -> scalar``.
LossFn = Callable[[Any, Any], jax.Array]


def _lane_marker(*trees: Any) -> jax.Array:
  """An int32 one per vmap lane.

  ``ones_like`` of a batched value is a constant (unbatched), so the marker
  adds a zero-size sum of every leaf: batched exactly when some leaf is.
  """
  marker = jnp.ones((), jnp.int32)
  for leaf in jax.tree.leaves(trees):
    marker = marker + jnp.sum(jnp.ravel(leaf)[:0]).astype(jnp.int32)
  return marker


def _no_gradients(name: str) -> Callable[..., Any]:

  def jvp(primals, tangents):
    del primals, tangents
    raise TypeError(
        f"BlackBox.{name} is a black box: it has no gradients (jax.grad, "
        "jvp, vjp and linearize are refused); use a zeroth-order estimator "
        "(flatsparse.zeroth_order) that needs loss values only.")

  return jvp


class BlackBox:
  """Loss (and accuracy) values only, with the number of queries.

  Attributes:
    queries: Evaluations of ``loss`` so far (read waits for pending ones).
    accuracy_queries: Evaluations of ``accuracy`` so far.

  References:
    Park et al. 2025, ZIP, ICLR 2025.
  """

  __slots__ = ("_lock", "_counts", "_loss", "_accuracy")

  def __init__(self, loss_fn: LossFn, accuracy_fn: LossFn | None = None):
    """Wraps the functions; neither is reachable afterwards.

    Args:
      loss_fn: ``loss_fn(prompt_params, batch)`` -> a scalar; traceable
        (jit, vmap).
      accuracy_fn: The same signature, for evaluation; or None (then
        ``accuracy`` raises).

    Raises:
      TypeError: A function is not callable.
    """
    for name, fn in (("loss_fn", loss_fn), ("accuracy_fn", accuracy_fn)):
      if not (callable(fn) or (fn is None and name == "accuracy_fn")):
        raise TypeError(f"{name} must be callable (prompt_params, batch) -> "
                        f"scalar, got {fn!r}.")
    self._lock = threading.Lock()
    self._counts = {"loss": 0, "accuracy": 0}
    self._loss = self._wrap("loss", loss_fn)
    self._accuracy = (None if accuracy_fn is None
                      else self._wrap("accuracy", accuracy_fn))

  def _count(self, name: str, marker: Any) -> None:
    # Runs on a runtime thread; the lock keeps concurrent lanes exact. The
    # marker may arrive as a jax.Array: summing it with a JAX op here would
    # deadlock against the main thread's computation, so NumPy only.
    lanes = int(np.asarray(marker, np.float64).sum())
    with self._lock:
      self._counts[name] += lanes

  def _wrap(self, name: str, fn: LossFn) -> Callable[[Any, Any], jax.Array]:

    def count(marker):
      self._count(name, marker)

    @jax.custom_jvp
    def call(prompt_params, batch):
      value = fn(prompt_params, batch)
      if jnp.shape(value) != ():
        raise ValueError(f"{name}_fn must return a scalar, got shape "
                         f"{jnp.shape(value)}.")
      io_callback(count, None, _lane_marker(prompt_params, batch, value))
      return value

    call.defjvp(_no_gradients(name))
    return call

  def loss(self, prompt_params: Any, batch: Any) -> jax.Array:
    """The loss of ``prompt_params`` on ``batch``; counts one query."""
    return self._loss(prompt_params, batch)

  def accuracy(self, prompt_params: Any, batch: Any) -> jax.Array:
    """The accuracy; counts one ``accuracy_queries``, not a query.

    Raises:
      ValueError: The box was built without ``accuracy_fn``.
    """
    if self._accuracy is None:
      raise ValueError("This BlackBox has no accuracy: pass accuracy_fn= "
                       "(prompt_params, batch) -> scalar, got None.")
    return self._accuracy(prompt_params, batch)

  def _read(self, name: str) -> int:
    jax.effects_barrier()  # the callbacks of dispatched calls have run
    with self._lock:
      return self._counts[name]

  @property
  def queries(self) -> int:
    """Evaluations of ``loss`` so far (each vmap lane counts one)."""
    return self._read("loss")

  @property
  def accuracy_queries(self) -> int:
    """Evaluations of ``accuracy`` so far."""
    return self._read("accuracy")

  def reset(self) -> None:
    """Zeroes both counts (after the pending evaluations have counted)."""
    jax.effects_barrier()
    with self._lock:
      self._counts = {"loss": 0, "accuracy": 0}

  def __repr__(self) -> str:
    return (f"BlackBox(queries={self.queries}, "
            f"accuracy_queries={self.accuracy_queries})")
