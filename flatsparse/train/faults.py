"""Faults of a training run: preemption, non-finite loss, a changed config.

Used by :func:`flatsparse.train.loop.train_and_evaluate`:

* :class:`StopSignals` records SIGTERM/SIGINT while a run is in progress; the
  loop finishes the step, saves a checkpoint there and raises
  :class:`Preempted` (a ``SystemExit`` with status 128 + the signal number).
* :class:`NonFiniteCheck` tracks the first step with a non-finite loss on the
  device and reads it ``NONFINITE_LAG`` steps behind (no host sync on the
  step just queued); the loop raises :class:`NonFiniteLossError`.
* :func:`check_config_change` compares a workdir's ``config.json`` with the
  config of a resumed run.
"""

from __future__ import annotations

import collections
import json
import signal
import threading
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from flatsparse.train import config_schema
from flatsparse.train import metrics as metrics_lib

__all__ = ["NONFINITE_LAG", "Preempted", "NonFiniteLossError",
           "NonFiniteCheck", "StopSignals", "check_config_change"]


# How many steps the non-finite check reads behind the step just queued.
NONFINITE_LAG = 2


class Preempted(SystemExit):
  """SIGTERM/SIGINT stopped the run after saving a checkpoint at ``step``.

  A ``SystemExit``: uncaught, the process exits without a traceback, with
  status ``128 + signum`` (143 for SIGTERM, 130 for SIGINT), what a shell
  reports for a process the signal killed, so job scripts and schedulers
  that requeue on it keep working. Rerunning the same command resumes.

  Attributes:
    signum: the signal received.
    step: the step of the saved checkpoint.
    checkpoint_dir: the run's checkpoint directory.
  """

  def __init__(self, signum: int, step: int, checkpoint_dir: str):
    super().__init__(128 + signum)
    self.signum, self.step, self.checkpoint_dir = signum, step, checkpoint_dir

  def __str__(self) -> str:
    return (f"{signal.Signals(self.signum).name} after step {self.step}: "
            f"checkpoint saved in {self.checkpoint_dir}; exit status "
            f"{self.code}.")


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or inf; no checkpoint was written from ``step`` on.

  Attributes:
    step: the first step whose loss was not finite.
    stopped_at: the step the loop had reached when it noticed.
    last_checkpoint: the newest (good) checkpoint's step, or None.
  """

  def __init__(self, message: str, step: int, stopped_at: int,
               last_checkpoint: int | None):
    super().__init__(message)
    self.step, self.stopped_at = step, stopped_at
    self.last_checkpoint = last_checkpoint


@jax.jit
def _first_bad(first_bad, loss, step):
  return jnp.where((first_bad < 0) & ~jnp.isfinite(loss), step, first_bad)


class NonFiniteCheck:
  """The first step with a non-finite loss, tracked on device.

  ``update`` reads the value of ``NONFINITE_LAG`` steps ago (its copy to the
  host was started then), so the host never waits for the step it just
  queued; ``now`` waits for the latest (before a checkpoint, which waits for
  the state anyway).
  """

  def __init__(self, lag: int):
    self.lag = lag
    self._first_bad = jnp.int32(-1)
    self._pending: collections.deque = collections.deque()

  def update(self, step: int, loss: jax.Array) -> int | None:
    self._first_bad = _first_bad(self._first_bad, loss, np.int32(step))
    self._first_bad.copy_to_host_async()
    self._pending.append(self._first_bad)
    if len(self._pending) > self.lag:
      bad = int(self._pending.popleft())
      return bad if bad >= 0 else None
    return None

  def now(self) -> int | None:
    self._pending.clear()
    bad = int(self._first_bad)
    return bad if bad >= 0 else None


class StopSignals:
  """Records SIGTERM/SIGINT while installed; a second one acts as before.

  Installed only in the main thread of a single-process run (Python allows
  handlers only there; multi-host runs keep orbax's preemption policy, which
  saves at JAX's preemption sync point). The previous handlers come back on
  exit.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum: int | None = None
    self._announced = False
    self._previous: dict[int, Any] = {}

  def __enter__(self) -> StopSignals:
    if (threading.current_thread() is threading.main_thread()
        and jax.process_count() == 1):
      for signum in self.SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum: int, frame: Any) -> None:
    # No logging here: the signal may interrupt a write to the same log
    # stream (orbax logs while saving), and a reentrant write raises.
    # ``poll`` logs from the loop instead.
    del frame
    if self.signum is None:
      self.signum = signum
      return
    # A second signal: the previous behaviour (KeyboardInterrupt, or exit).
    previous = self._previous.get(signum)
    signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
    signal.raise_signal(signum)

  def poll(self) -> int | None:
    """The recorded signal, if any; logs it the first time it is seen."""
    signum = self.signum  # read once: signals arrive any time
    if signum is not None and not self._announced:
      self._announced = True
      logging.warning("Received %s: stopping after this step with a "
                      "checkpoint (send it again to stop at once).",
                      signal.Signals(signum).name)
    return signum

  def __exit__(self, *exc_info) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous if previous is not None else
                    signal.SIG_DFL)
    self._previous.clear()


def check_config_change(workdir: str, config: Any, allow: bool
                         ) -> list[tuple[str, Any, Any]]:
  """Differences from the workdir's ``config.json``; raises unless allowed.

  Every key counts (none is exempt: a changed log interval changes no
  result, but telling such keys apart would need a list to maintain); a key
  at its schema default counts as unset (``config_schema.minimal``).
  """
  previous = metrics_lib.read_config(workdir)
  if previous is None:
    return []
  # Keys at their schema defaults do not count, so a config.json written
  # before a key joined the schema still matches its completed config.
  changes = metrics_lib.config_diff(
      config_schema.minimal(previous),
      config_schema.minimal(json.loads(metrics_lib.config_to_json(config))))
  if changes and not allow:
    listing = "; ".join(f"{key}: {old!r} -> {new!r}"
                        for key, old, new in changes)
    raise ValueError(
        f"{workdir} holds a run of a different config ({listing}). "
        "Use a new workdir, or pass allow_config_change=True "
        "(--allow_config_change) to continue it with the new config (the old "
        "one is kept as config.<step>.json).")
  return changes
