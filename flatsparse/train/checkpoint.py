"""Checkpointing: a thin wrapper over orbax's ``CheckpointManager``.

A run's checkpoints live in ``directory/<step>/`` with two items: ``state``
(any pytree of arrays: a train state with params, batch statistics and the
optax state, including a sparsity wrapper's masks, counters and PRNG keys) and
``metadata`` (a small JSON dict: data-iterator position, seed, config hash).

Example::

    ckpt = Checkpointer(workdir + "/checkpoints", every_steps=1000, keep=3)
    if ckpt.latest_step() is not None:
      state, meta = ckpt.restore(state)        # state: arrays or abstract
    for step in range(start, total):
      state = train_step(state, batch)
      ckpt.save(step + 1, state, {"epoch": epoch})   # saves every 1000 steps
    ckpt.save(total, state, force=True)              # final, any step
    ckpt.close()

Saving is asynchronous by default: ``save`` returns once the arrays are copied
off the devices (so the caller may donate or overwrite them), the files are
written in a background thread, and ``wait()`` (or the next ``save``, or
``close``) blocks until they are durable. Orbax writes each step into
``<step>.orbax-checkpoint-tmp-*`` and renames it to ``<step>`` only when
complete, so a crash mid-save never corrupts or hides the previous checkpoint;
leftover temporary folders are ignored, and deleted when the next
``Checkpointer`` opens the directory.

A complete folder can still be damaged afterwards (a disk fault, a file
truncated by a full quota or a bad copy). ``restore()`` without a ``step`` then
falls back to the newest readable step and logs one warning per skipped step
with its path and the reason; it raises :class:`UnreadableCheckpointError`
(listing every step's path and reason) only when no step is readable. A step
a fallback skipped is deleted by this ``Checkpointer``'s next ``save`` (orbax
would otherwise take it for the latest and save no older step).

Pytree conventions carried over unchanged: ``None`` leaves (dense layers in
``SparseState.masks``) are empty subtrees, saved and restored as ``None``;
NamedTuples and ``flax.struct`` dataclasses come back as the same types when
``restore`` is given a ``state_like`` of that structure.
"""

from __future__ import annotations

from collections.abc import Mapping
import contextlib
import gc
import inspect
import json
import logging as pylogging
import numbers
import os
import sys
from typing import Any

from absl import logging
from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocp_policies

__all__ = ["Checkpointer", "UnreadableCheckpointError"]

_STATE = "state"
_METADATA = "metadata"


class UnreadableCheckpointError(OSError):
  """A checkpoint's files cannot be read (truncated, garbage, missing).

  Attributes:
    reasons: ``{step: (path, reason)}`` for each unreadable step.
  """

  def __init__(self, message: str, reasons: Mapping[int, tuple[str, str]]):
    super().__init__(message)
    self.reasons = dict(reasons)


# JSON files of a step folder, checked to name the damaged one in a reason.
_JSON_FILES = ("_CHECKPOINT_METADATA", f"{_STATE}/_METADATA",
               f"{_STATE}/_sharding", f"{_METADATA}/metadata")


def _one_line(text: str, limit: int = 300) -> str:
  text = " ".join(str(text).split())
  return text if len(text) <= limit else text[:limit - 3] + "..."


def _reason(step_dir: epath.Path, error: BaseException) -> str:
  """Why a step cannot be read: the damaged JSON file if any, and the error."""
  damaged = []
  for name in _JSON_FILES:
    path = step_dir / name
    try:
      if path.exists():
        json.loads(path.read_text())
    except (OSError, ValueError):  # JSONDecodeError and UnicodeDecodeError.
      damaged.append(name)
  prefix = f"{', '.join(damaged)} not valid JSON; " if damaged else ""
  return _one_line(f"{prefix}{type(error).__name__}: {error}")


@contextlib.contextmanager
def _quiet_failed_reads():
  """Silences the leftovers of a failed orbax read (on failure only).

  When one array of a step cannot be read, orbax's other read tasks are
  left unawaited; garbage-collected later, each prints a traceback ("Task
  exception was never retrieved", "Exception ignored in: <coroutine ...>",
  "Event loop is closed"). The error itself is reported by the caller, once.
  Leftovers collected after this context may still print (rarely).
  """
  def quiet_task_errors(record: pylogging.LogRecord) -> bool:
    return "exception was never retrieved" not in record.getMessage()

  def quiet_unraisable(unraisable: Any) -> None:
    if not (inspect.iscoroutine(unraisable.object) or
            "Event loop is closed" in str(unraisable.exc_value)):
      previous_hook(unraisable)

  try:
    yield
  except Exception:
    asyncio_logger = pylogging.getLogger("asyncio")
    previous_hook = sys.unraisablehook
    asyncio_logger.addFilter(quiet_task_errors)
    sys.unraisablehook = quiet_unraisable
    try:
      gc.collect()
    finally:
      sys.unraisablehook = previous_hook
      asyncio_logger.removeFilter(quiet_task_errors)
    raise


def _check_positive_int(name: str, value: Any) -> int:
  if (not isinstance(value, numbers.Integral) or isinstance(value, bool)
      or value < 1):
    raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
  return int(value)


def _as_step(step: Any) -> int:
  """A non-negative Python int from an int, numpy or 0-d jax integer."""
  if isinstance(step, bool):
    raise TypeError(f"step must be an integer, got {step!r}.")
  if not isinstance(step, numbers.Integral):
    arr = np.asarray(step)
    if arr.ndim != 0 or not np.issubdtype(arr.dtype, np.integer):
      raise TypeError(f"step must be an integer, got {step!r}.")
    step = arr.item()
  if step < 0:
    raise ValueError(f"step must be >= 0, got {step}.")
  return int(step)


def _check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
  """A JSON-serializable copy of ``metadata`` (``{}`` for None)."""
  if metadata is None:
    return {}
  if not isinstance(metadata, Mapping):
    raise TypeError(
        f"metadata must be a dict or None, got {type(metadata).__name__}.")
  bad_keys = [k for k in metadata if not isinstance(k, str)]
  if bad_keys:
    raise TypeError(f"metadata keys must be strings, got {bad_keys!r}.")
  try:
    # A round trip through JSON: what restore returns is exactly this.
    return json.loads(json.dumps(dict(metadata)))
  except (TypeError, ValueError) as e:
    raise TypeError(
        "metadata must be JSON-serializable (str, int, float, bool, None, "
        f"lists and dicts of them; convert numpy/jax scalars with int() or "
        f"float()): {e}") from e


def _abstract_leaf(x: Any) -> Any:
  """What orbax restores into: shape, dtype and sharding of a jax array."""
  if isinstance(x, jax.core.Tracer):
    raise TypeError("restore() cannot run under jit/vmap: state_like holds a "
                    "tracer. Call it outside transformations.")
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  # ShapeDtypeStructs (with or without a sharding), numpy arrays (restored as
  # numpy) and Python scalars pass through unchanged.
  return x


def _remove_unfinished(directory: str) -> None:
  """Deletes folders of saves that never finished (a killed process)."""
  path = epath.Path(directory)
  if jax.process_index() != 0 or not path.exists():
    return
  for stale in path.glob("*orbax-checkpoint-tmp*"):
    logging.info("Removing unfinished checkpoint %s", stale)
    if stale.is_dir():
      stale.rmtree(missing_ok=True)
    else:
      stale.unlink(missing_ok=True)


class Checkpointer:
  """Saves and restores a train state every ``every_steps`` steps.

  Attributes:
    directory: where the step folders are written.
    restored_step: the step the latest ``restore`` read (None before).
    every_steps: ``save`` writes only when ``step % every_steps == 0`` (or
      ``force=True``, or a preemption was signalled to JAX's coordinator).
    keep: the number of most recent checkpoints kept; older ones are deleted
      after each save.
  """

  def __init__(self, directory: str, *, every_steps: int, keep: int,
               async_save: bool = True):
    """Opens (and creates if needed) a checkpoint directory.

    Args:
      directory: a local path or any path ``etils.epath`` understands
        (``gs://...``). Existing checkpoints in it are found at once.
      every_steps: save interval in steps, >= 1.
      keep: how many of the latest checkpoints to keep, >= 1.
      async_save: write files in a background thread (see the module doc);
        False makes ``save`` block until the checkpoint is durable.

    Raises:
      ValueError: if ``every_steps`` or ``keep`` is not an integer >= 1.
    """
    self.every_steps = _check_positive_int("every_steps", every_steps)
    self.keep = _check_positive_int("keep", keep)
    directory = str(directory)
    # orbax needs absolute local paths; URLs (gs://...) pass through.
    self.directory = directory if "://" in directory else os.path.abspath(
        directory)
    _remove_unfinished(self.directory)
    options = ocp.CheckpointManagerOptions(
        # Explicit policies: orbax's defaults for `save_interval_steps` also
        # include InitialSavePolicy, which saves the first step of a fresh run
        # whatever its number.
        save_decision_policy=ocp_policies.AnySavePolicy([
            ocp_policies.FixedIntervalPolicy(self.every_steps),
            ocp_policies.PreemptionCheckpointingPolicy(),
        ]),
        preservation_policy=ocp_policies.LatestN(n=self.keep),
        enable_async_checkpointing=async_save,
        # Done synchronously above: orbax's own cleanup can race a save that
        # removes the same unfinished folder (seen after a killed run).
        cleanup_tmp_directories=False,
        create=True,
    )
    self._manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={_STATE: ocp.StandardCheckpointHandler(),
                       _METADATA: ocp.JsonCheckpointHandler()})
    # Steps a fallback restore skipped, {step: (path, reason)}; deleted by
    # the next save (see _delete_unreadable).
    self._unreadable: dict[int, tuple[str, str]] = {}
    self.restored_step: int | None = None

  # ---- queries ---------------------------------------------------------------

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None if there is none."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Steps of all kept checkpoints, oldest first."""
    return sorted(self._manager.all_steps())

  def should_save(self, step: int, force: bool = False) -> bool:
    """Whether ``save(step, ..., force=force)`` would write a checkpoint.

    Like ``save``, it first deletes the steps a fallback restore skipped.
    """
    step = _as_step(step)
    if self._unreadable:
      self._delete_unreadable()
    if step in self._manager.all_steps():
      return False
    return force or self._manager.should_save(step)

  # ---- save / restore --------------------------------------------------------

  def save(self, step: int, state: Any,
           metadata: Mapping[str, Any] | None = None,
           force: bool = False) -> bool:
    """Saves ``state`` at ``step`` if ``step % every_steps == 0`` or ``force``.

    Args:
      step: the training step (an int, or a 0-d integer array).
      state: any pytree of jax/numpy arrays and Python scalars; ``None``
        leaves are allowed (saved as empty subtrees). Zero-size arrays are
        not supported by orbax.
      metadata: a JSON-serializable dict saved beside the state (data
        iterator position, seed, config hash, ...).
      force: save even off the interval. A step that is already saved is
        never saved again (returns False), so a final ``force=True`` save
        after the loop is always safe.

    Returns:
      Whether a checkpoint was started (durable after ``wait()``).

    Raises:
      TypeError: if ``step`` is not an integer or ``metadata`` is not a
        JSON-serializable dict.
      ValueError: if ``step`` is negative.
    """
    step = _as_step(step)
    metadata = _check_metadata(metadata)
    if self._unreadable:
      self._delete_unreadable()
    if step in self._manager.all_steps():
      logging.info("Checkpoint for step %d already exists in %s; not saving.",
                   step, self.directory)
      return False
    return bool(self._manager.save(
        step,
        args=ocp.args.Composite(**{
            _STATE: ocp.args.StandardSave(state),
            _METADATA: ocp.args.JsonSave(metadata),
        }),
        force=force))

  def restore(self, state_like: Any, step: int | None = None
              ) -> tuple[Any, dict[str, Any]]:
    """Restores the checkpoint at ``step`` (default: the newest readable one).

    Args:
      state_like: a pytree with the saved structure: concrete arrays or
        ``jax.ShapeDtypeStruct`` s (e.g. from ``jax.eval_shape``). Each array
        is restored with the leaf's dtype and, for jax arrays and
        ShapeDtypeStructs with a ``sharding``, onto that sharding (any mesh
        and layout, not necessarily the one saved from). Numpy leaves come
        back as numpy, ``None`` leaves as ``None``.
      step: which checkpoint; None for the latest. With None, a latest step
        whose files cannot be read (truncated or garbage) is skipped with one
        warning naming its path and the reason, and the next older one is
        tried; a given ``step`` is never replaced by another.

    Returns:
      ``(state, metadata)``: the restored pytree (same tree structure and
      node types as ``state_like``) and the metadata dict given to ``save``.
      ``restored_step`` holds the step it came from.

    Raises:
      FileNotFoundError: if there is no checkpoint (at ``step``).
      UnreadableCheckpointError: if the files of ``step`` (or, with None, of
        every step) cannot be read; it lists each step's path and reason.
      ValueError: if the checkpoint's tree structure or shapes differ from
        ``state_like``.
    """
    steps = self.all_steps()
    if step is None:
      if not steps:
        raise FileNotFoundError(f"No checkpoint in {self.directory}.")
      candidates = steps[::-1]
    else:
      step = _as_step(step)
      if step not in steps:
        raise FileNotFoundError(
            f"No checkpoint for step {step} in {self.directory}; available "
            f"steps: {steps or 'none'}.")
      candidates = [step]
    abstract = jax.tree.map(_abstract_leaf, state_like)
    skipped: dict[int, tuple[str, str]] = {}
    for candidate in candidates:
      try:
        state, metadata = self._restore_step(candidate, abstract)
      except UnreadableCheckpointError as e:
        if step is not None:
          raise
        skipped.update(e.reasons)
        continue
      for bad, (path, reason) in skipped.items():
        logging.warning("Skipped unreadable checkpoint step %d at %s (%s); "
                        "restored step %d.", bad, path, reason, candidate)
      self._unreadable.update(skipped)
      self.restored_step = candidate
      return state, metadata
    listing = "; ".join(f"step {s} at {path}: {reason}"
                        for s, (path, reason) in skipped.items())
    raise UnreadableCheckpointError(
        f"No readable checkpoint in {self.directory}: {listing}. Move or "
        "delete the damaged step folders to start over.", skipped)

  def _step_dir(self, step: int) -> epath.Path:
    return epath.Path(self.directory) / str(step)

  def _unreadable_error(self, step: int, error: BaseException
                        ) -> UnreadableCheckpointError:
    path = str(self._step_dir(step))
    reason = _reason(self._step_dir(step), error)
    return UnreadableCheckpointError(
        f"Checkpoint step {step} at {path} is unreadable: {reason}",
        {step: (path, reason)})

  def _restore_step(self, step: int, abstract: Any
                    ) -> tuple[Any, dict[str, Any]]:
    """One step; damaged files raise UnreadableCheckpointError."""
    try:
      tree = getattr(self._manager.item_metadata(step)[_STATE], "tree", None)
    except Exception as e:  # pylint: disable=broad-except
      raise self._unreadable_error(step, e) from e
    if tree is not None:
      saved, wanted = len(jax.tree.leaves(tree)), len(jax.tree.leaves(abstract))
      if saved != wanted:
        raise ValueError(
            f"Checkpoint step {step} in {self.directory} does not match "
            f"state_like: it has {saved} array leaves, state_like has "
            f"{wanted} (a None leaf where the other side has an array, or a "
            "different model/optimizer?).")
    try:
      with _quiet_failed_reads():
        restored = self._manager.restore(
            step, args=ocp.args.Composite(**{
                _STATE: ocp.args.StandardRestore(abstract),
                _METADATA: ocp.args.JsonRestore(),
            }))
    except Exception as e:  # pylint: disable=broad-except
      # Orbax raises ValueError both for a state_like that does not match and
      # for damaged files. Reading the step without a target tells them
      # apart: it fails only if the files are damaged.
      if self._readable(step):
        if isinstance(e, ValueError):
          raise ValueError(
              f"Checkpoint step {step} in {self.directory} does not match "
              f"state_like: {e}") from e
        raise
      raise self._unreadable_error(step, e) from e
    state = restored[_STATE]
    # Orbax treats None on either side as "skip this subtree"; the leaf count
    # above and this check turn such mismatches into errors.
    if jax.tree.structure(state) != jax.tree.structure(abstract):
      raise ValueError(
          f"Checkpoint step {step} in {self.directory} does not match "
          f"state_like: restored structure {jax.tree.structure(state)} != "
          f"expected {jax.tree.structure(abstract)} (a None leaf where the "
          "other side has an array?).")
    return state, dict(restored[_METADATA] or {})

  def _delete_unreadable(self) -> None:
    """Deletes the steps a fallback restore skipped (before the next save).

    They are newer than the restored step: left in place, they would count
    as the latest checkpoint, and orbax saves no step older than the latest.
    Each is read once more first, so a transient read error (remote storage)
    never deletes a good checkpoint.
    """
    for step, (path, _) in sorted(self._unreadable.items()):
      if step not in self._manager.all_steps():
        continue
      if self._readable(step):
        logging.warning("Checkpoint step %d at %s, skipped by restore, reads "
                        "now; kept.", step, path)
        continue
      logging.warning("Deleting unreadable checkpoint step %d at %s "
                      "(skipped by restore).", step, path)
      self._manager.delete(step)
    self._unreadable.clear()

  def _readable(self, step: int) -> bool:
    """Whether every file of ``step`` reads back (as saved, no target)."""
    try:
      with _quiet_failed_reads():
        self._manager.restore(step, args=ocp.args.Composite(**{
            _STATE: ocp.args.StandardRestore(),
            _METADATA: ocp.args.JsonRestore(),
        }))
    except Exception:  # pylint: disable=broad-except
      return False
    return True

  # ---- lifecycle -------------------------------------------------------------

  def wait(self) -> None:
    """Blocks until pending saves are durable (re-raises their errors)."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases orbax's threads."""
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
