"""Argument checks in one dialect: name the bad value and the allowed ones.

Every factory checks its arguments when it is called, before anything is
traced, and raises a ``ValueError`` that says which argument, what it got and
what it accepts (``"rho must be >= 0, got nan."``, ``"Unknown probe 'x';
allowed: 'rademacher', 'gaussian'."``). Values that are traced (``optax.
inject_hyperparams`` passes arrays) cannot be checked at build time and are
let through; NaN fails every numeric check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
import numbers
from typing import Any

import jax

__all__ = ["concrete", "register", "check", "check_betas", "check_int",
           "check_count", "check_choice", "is_number"]


def concrete(value: Any) -> float | None:
  """``float(value)``, or None for a traced value (inject_hyperparams)."""
  try:
    return float(value)
  except (TypeError, jax.errors.ConcretizationTypeError):
    return None


def is_number(value: Any, target: float | None = None) -> bool:
  """Whether ``value`` is a Python number (equal to ``target`` if given).

  For choosing a cheaper code path at build time (``k == 1``,
  ``weight_decay == 0``); arrays, traced or not, are never a number here.
  """
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return False
  return target is None or value == target


def check(name: str, value: Any, ok: Callable[[float], bool],
          allowed: str) -> None:
  """Raises if concrete ``value`` fails ``ok``; ``allowed`` says what passes.

  Example: ``check("rho", rho, lambda v: v >= 0, ">= 0")``.
  """
  v = concrete(value)
  if v is not None and not ok(v):
    raise ValueError(f"{name} must be {allowed}, got {value!r}.")


def check_betas(**betas: Any) -> None:
  """Each decay rate in [0, 1)."""
  for name, value in betas.items():
    check(name, value, lambda v: 0.0 <= v < 1.0, "in [0, 1)")


def check_int(name: str, value: Any, minimum: int = 1) -> None:
  """An integer >= ``minimum``, or an array (under inject_hyperparams)."""
  if isinstance(value, bool) or (
      isinstance(value, float) and not value.is_integer()):
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
  check(name, value, lambda v: v >= minimum, f"an int >= {minimum}")


def check_count(name: str, value: Any, minimum: int = 1) -> int:
  """A static Python int >= ``minimum`` (a shape or a loop length)."""
  if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
      or value < minimum):
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
  return int(value)


def check_choice(name: str, value: Any, allowed: Iterable[str]) -> None:
  """``value`` is one of ``allowed``: ``Unknown <name> 'x'; allowed: ...``."""
  allowed = tuple(allowed)
  if value not in allowed:
    raise ValueError(f"Unknown {name} {value!r}; allowed: "
                     f"{', '.join(map(repr, allowed))}.")


def register(registry: dict[str, Any], kind: str, name: str, value: Any, *,
             overwrite: bool, valid: Callable[[Any], bool] = callable,
             expected: str = "callable") -> None:
  """``registry[name] = value``: refuses a taken name unless ``overwrite``
  and a value that is not ``valid`` (naming what was ``expected``)."""
  if not valid(value):
    raise TypeError(f"The {kind} {name!r} must be {expected}, got {value!r}.")
  if name in registry and not overwrite:
    raise ValueError(f"{kind.capitalize()} {name!r} is already registered; "
                     "pass overwrite=True to replace it.")
  registry[name] = value
