"""When masks are updated and to what sparsity.

A schedule answers two questions about the (0-based) step counter ``t`` of the
wrapper: ``is_update_step(t)`` and ``sparsity(t, target)``. Both take traced
integers; the predicate is a scalar that does not depend on anything batched,
which keeps ``lax.cond`` a real branch under ``vmap`` (see ``updater``).

* ``NoUpdate``: masks fixed after ``init`` (static sparse training).
* ``OneShot(step)``: prune once to the target at ``step``.
* ``Periodic(update_freq, start, end)``: re-prune to the target every
  ``update_freq`` steps in ``[start, end]``.
* ``Polynomial(update_freq, start, end, initial_sparsity, power=3)``: gradual
  pruning of Zhu & Gupta, ``s_t = s_f + (s_i - s_f) (1 - p_t)^3`` with
  ``p_t = clip((t - start) / (end - start), 0, 1)``.

References:
  Zhu & Gupta, "To prune, or not to prune", arXiv:1710.01878, 2017.
  Evci et al., "Rigging the Lottery", ICML 2020 (cosine drop fraction).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from flatsparse import validation

__all__ = [
    "Schedule",
    "NoUpdate",
    "OneShot",
    "Periodic",
    "Polynomial",
    "cosine_drop_fraction",
]

Array = jax.Array


def _check_int(name: str, value: int | None, low: int) -> None:
  if value is not None:
    validation.check_count(name, value, low)


class _FixedTarget:
  """Base of the schedules whose every update prunes to the target itself."""

  def sparsity(self, step: Array, target) -> Array:
    del step
    return jnp.asarray(target, jnp.float32)


@dataclasses.dataclass(frozen=True)
class NoUpdate(_FixedTarget):
  """Masks never change after ``init``."""

  def is_update_step(self, step: Array) -> Array:
    del step
    return jnp.asarray(False)


@dataclasses.dataclass(frozen=True)
class OneShot(_FixedTarget):
  """Prune to the target once, at ``target_step``."""

  target_step: int = 0

  def __post_init__(self):
    _check_int("target_step", self.target_step, 0)

  def is_update_step(self, step: Array) -> Array:
    return step == self.target_step


@dataclasses.dataclass(frozen=True)
class Periodic(_FixedTarget):
  """Re-prune to the target every ``update_freq`` steps in ``[start, end]``."""

  update_freq: int = 1
  update_start_step: int = 0
  update_end_step: int | None = None

  def __post_init__(self):
    _check_int("update_freq", self.update_freq, 1)
    _check_int("update_start_step", self.update_start_step, 0)
    _check_int("update_end_step", self.update_end_step, 0)
    if (self.update_end_step is not None
        and self.update_end_step < self.update_start_step):
      raise ValueError(
          f"update_end_step ({self.update_end_step}) must be >= "
          f"update_start_step ({self.update_start_step}).")

  def is_update_step(self, step: Array) -> Array:
    since = step - self.update_start_step
    ok = (since >= 0) & (since % self.update_freq == 0)
    if self.update_end_step is not None:
      ok &= step <= self.update_end_step
    return ok


@dataclasses.dataclass(frozen=True)
class Polynomial(Periodic):
  """Gradual pruning (Zhu & Gupta): cubic ramp from ``initial_sparsity``.

  ``s_t = s_f + (s_i - s_f) * (1 - p_t) ** power``,
  ``p_t = clip((t - start) / (end - start), 0, 1)``.
  """

  update_end_step: int = 1000
  initial_sparsity: float = 0.0
  power: float = 3.0

  def __post_init__(self):
    super().__post_init__()
    if not 0.0 <= self.initial_sparsity < 1.0:
      raise ValueError(
          f"initial_sparsity must be in [0, 1), got {self.initial_sparsity!r}.")
    if self.update_end_step <= self.update_start_step:
      raise ValueError(
          f"Polynomial needs update_end_step ({self.update_end_step}) > "
          f"update_start_step ({self.update_start_step}).")

  def sparsity(self, step: Array, target) -> Array:
    span = self.update_end_step - self.update_start_step
    progress = jnp.clip((step - self.update_start_step) / span, 0.0, 1.0)
    target = jnp.asarray(target, jnp.float32)
    return target + ((self.initial_sparsity - target)
                     * (1.0 - progress) ** self.power)


Schedule = NoUpdate | OneShot | Periodic | Polynomial


def cosine_drop_fraction(initial_fraction: float = 0.3, end_step: int = 1000):
  """RigL/SET drop fraction
  ``f_t = f_0 / 2 * (1 + cos(pi * min(t, T) / T))``."""
  if not 0.0 <= initial_fraction <= 1.0:
    raise ValueError(
        f"initial_fraction must be in [0, 1], got {initial_fraction!r}.")
  _check_int("end_step", end_step, 1)

  def fraction(step: Array) -> Array:
    t = jnp.minimum(step, end_step) / end_step
    return 0.5 * initial_fraction * (1.0 + jnp.cos(math.pi * t))

  return fraction
