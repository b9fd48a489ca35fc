"""The exactly sparse end point of a SAFE, ADMM or IHT run: ``Proj(w_T)``."""

from __future__ import annotations

from typing import Any

from flatsparse import tree_utils
from flatsparse.safe.iht import IHTState
from flatsparse.safe.projection import Projection
from flatsparse.safe.safe import SafeState

__all__ = ["find_state", "finalize"]

_STATES = (SafeState, IHTState)


def find_state(opt_state: Any) -> SafeState | IHTState:
  """The single SAFE/ADMM/IHT state inside a possibly nested optimizer state
  (chains, ``inject_hyperparams``, masked wrappers)."""
  found = tree_utils.find_states(opt_state, _STATES)
  if len(found) != 1:
    raise ValueError(f"Expected one SafeState or IHTState in the optimizer "
                     f"state, found {len(found)}.")
  return found[0]


def finalize(params: Any, opt_state: Any, projection: Projection) -> Any:
  """``Proj(w_T)`` with exact sparsity, scored with the stored importance.

  Non-prunable leaves (biases, norms) are returned unchanged.
  """
  importance = find_state(opt_state).importance
  return projection.project(params, importance)[0]
