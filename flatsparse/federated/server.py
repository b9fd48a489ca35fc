"""Running FedAvg rounds with the server state checkpointed (orbax).

:func:`run_rounds` saves the :class:`~flatsparse.federated.ServerState`
after every ``checkpoint_every`` rounds through
:class:`flatsparse.train.Checkpointer` (newest readable step first, damaged
steps skipped) and, given a directory that holds one, resumes from it. A
round's randomness is a function of the run's key and the round index, so a
resumed run equals an uninterrupted one bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from flatsparse.federated import fedavg

__all__ = ["run_rounds"]

RoundFn = Callable[[fedavg.ServerState], tuple[fedavg.ServerState, dict]]


def run_rounds(round_fn: RoundFn, state: fedavg.ServerState,
               num_rounds: int, *, checkpoint_dir: str | None = None,
               checkpoint_every: int = 1, keep: int = 2,
               on_round: Callable[[fedavg.ServerState, dict], None] | None
               = None) -> fedavg.ServerState:
  """Runs rounds until ``state.round == num_rounds``.

  Args:
    round_fn: from :func:`flatsparse.federated.make_round`.
    state: the initial state (ignored when ``checkpoint_dir`` holds one:
      that is resumed, and ``state`` gives its structure).
    num_rounds: the total number of rounds.
    checkpoint_dir: where to save and resume from; None: no checkpoints.
    checkpoint_every: save every this many rounds (and after the last).
    keep: checkpoints kept.
    on_round: called with the new state and the round's metrics.

  Returns:
    The state after ``num_rounds`` rounds.
  """
  if checkpoint_dir is None:
    while int(state.round) < num_rounds:
      state, metrics = round_fn(state)
      if on_round is not None:
        on_round(state, metrics)
    return state
  # Imported here: flatsparse.train imports federated.forward_forward (its
  # forward_forward task), so federated imports nothing of train at load.
  from flatsparse.train import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  with checkpoint_lib.Checkpointer(checkpoint_dir,
                                   every_steps=checkpoint_every,
                                   keep=keep) as ckpt:
    if ckpt.latest_step() is not None:
      state, _ = ckpt.restore(jax.device_get(state))
    while int(state.round) < num_rounds:
      state, metrics = round_fn(state)
      if on_round is not None:
        on_round(state, metrics)
      done = int(state.round)
      ckpt.save(done, jax.device_get(state), force=done == num_rounds)
    ckpt.wait()
  return state
