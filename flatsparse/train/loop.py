"""The generic training loop behind ``experiments/train.py``.

``train_and_evaluate(config, workdir)`` builds data, model and optimizer from
the config schema (see ``configs/digits_mlp.py``), resumes from the latest
checkpoint in ``workdir`` if there is one, trains with the generic jitted step
(data-parallel over all local devices when there are several), and writes the
resolved config, metrics as JSON lines and TensorBoard events, per-layer
sparsity, and orbax checkpoints.

Faults: a non-finite loss stops the run (:class:`NonFiniteLossError`) within
``NONFINITE_LAG`` steps of the step where it first appeared, read from the
device with that lag so the loop never waits for the step it just queued; no
checkpoint is written at or after that step. SIGTERM or SIGINT (preemption)
finishes the current step, saves a checkpoint there and raises
:class:`Preempted`, a ``SystemExit`` with status 128 + the signal number (143,
130); rerunning resumes exactly. A workdir whose ``config.json`` differs from
the new config is refused unless ``allow_config_change=True``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from flatsparse import data
from flatsparse.train import builders
from flatsparse.train import checkpoint as checkpoint_lib
from flatsparse.train import config_schema
from flatsparse.train import faults
from flatsparse.train import methods as methods_lib
from flatsparse.train import metrics as metrics_lib
from flatsparse.train import state as state_lib
from flatsparse.train import step as step_lib
from flatsparse.train import tasks as tasks_lib

# Re-exported: the faults a run raises.
NONFINITE_LAG = faults.NONFINITE_LAG
NonFiniteLossError = faults.NonFiniteLossError
Preempted = faults.Preempted

__all__ = ["REQUIRED_KEYS", "OPTIONAL_KEYS", "validate_config",
           "train_and_evaluate", "evaluate", "make_loader", "data_mesh",
           "build_run", "build_model_and_state",
           "place_batch", "Preempted",
           "NonFiniteLossError", "NONFINITE_LAG"]

REQUIRED_KEYS = ("dataset", "model", "optimizer", "steps", "batch_size")
# The method sections (flatsparse.train.methods.METHOD_PARTS) default to None.
OPTIONAL_KEYS = {
    "seed": 0, **dict.fromkeys(methods_lib.METHOD_PARTS),
    "task": "classification",
    "accum_steps": 1, "log_every": 100,
    "eval_every": 1000, "checkpoint_every": 1000, "keep_checkpoints": 2,
    "data_parallel": True, "eval_batch_size": 500,
    # Sparsity wrappers: decide mask updates on the host (two compiled steps,
    # no lax.cond, whose predicate XLA:GPU reads back every step). None: on
    # when jax's default backend is not the CPU.
    "host_mask_schedule": None,
}


def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
  """Checks the schema; returns the config with defaults filled in.

  The sections (``config_schema.SECTIONS``: dataset, model, optimizer and
  the method parts) come back as plain dicts without their unset
  keys (None where the schema's default is None), i.e. what the builders
  get. An unknown key, top-level or in a section whose keys the schema
  knows, raises a ValueError naming the allowed keys and the closest one.
  """
  cfg = dict(config.items())
  missing = [k for k in REQUIRED_KEYS if k not in cfg or cfg[k] is None]
  if missing:
    raise ValueError(f"Config is missing required keys {missing}; required: "
                     f"{list(REQUIRED_KEYS)}.")
  allowed = set(REQUIRED_KEYS) | set(OPTIONAL_KEYS)
  unknown = sorted(set(cfg) - allowed)
  if unknown:
    raise ValueError(config_schema.unknown_keys_message(unknown, allowed))
  for key, default in OPTIONAL_KEYS.items():
    cfg.setdefault(key, default)
  for section in config_schema.SECTIONS:
    cfg[section] = config_schema.drop_unset(section, cfg[section])
    schema = (cfg[section] is not None and section != "dataset"
              and config_schema.section_schema(section, cfg[section]))
    if schema:
      known = set(schema) | set(config_schema.REQUIRED_SECTION_KEYS[section])
      unknown = sorted(set(cfg[section]) - known)
      if unknown:
        raise ValueError(config_schema.unknown_keys_message(
            [f"{section}.{k}" for k in unknown], known, f"config.{section}"))
  for key in ("steps", "batch_size", "log_every", "eval_every",
              "checkpoint_every", "keep_checkpoints", "accum_steps"):
    if not isinstance(cfg[key], int) or cfg[key] < 1:
      raise ValueError(f"config.{key} must be a positive int, got "
                       f"{cfg[key]!r}.")
  if cfg["host_mask_schedule"] not in (None, True, False):
    raise ValueError("config.host_mask_schedule must be None (auto), True or "
                     f"False, got {cfg['host_mask_schedule']!r}.")
  return cfg


def _mask_update_flags(cfg: Mapping[str, Any], method: methods_lib.Method,
                       state: state_lib.TrainState,
                       start: int) -> np.ndarray | None:
  """Host-side mask-update flags per step (see OPTIONAL_KEYS), or None."""
  enabled = cfg["host_mask_schedule"]
  if enabled is None:
    enabled = jax.default_backend() != "cpu"
  if not (enabled and method.mask_update_flags):
    return None
  return method.mask_update_flags(state.opt_state, start, cfg["steps"])


def data_mesh(enabled: bool, batch_size: int) -> jax.sharding.Mesh | None:
  """A 1-d ``"data"`` mesh over all devices, or None on one device."""
  n = jax.device_count()
  if not enabled or n == 1:
    return None
  if batch_size % n:
    raise ValueError(f"batch_size {batch_size} must divide by the {n} "
                     "devices for data parallelism (or set "
                     "config.data_parallel=False).")
  return jax.make_mesh((n,), ("data",), axis_types=(AxisType.Auto,))


def place_batch(batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh | None,
                global_batch_size: int | None = None) -> dict[str, jax.Array]:
  """The batch on the default device, or split over ``mesh``'s data axis by
  ``data.shard_batch`` (the multi-host path: with ``global_batch_size``,
  ``batch`` holds this process's rows of the global batch)."""
  if mesh is None:
    return {k: jnp.asarray(v) for k, v in batch.items()}
  return data.shard_batch(batch, data.data_sharding(mesh), global_batch_size)


# Re-exported: the dataset section's loader.
make_loader = data.make_loader


def evaluate(eval_step, state: state_lib.TrainState,
             batches: Iterator[Mapping[str, np.ndarray]], mesh,
             task: tasks_lib.Task | None = None,
             global_batch_size: int | None = None) -> dict:
  """The task's exact metrics over padded eval batches (default:
  classification's accuracy and loss). ``global_batch_size``: the batches
  hold only this process's rows (multi-host)."""
  task = tasks_lib.Classification() if task is None else task
  sums: dict[str, float] = {}
  for batch in batches:
    out = jax.device_get(eval_step(
        state, place_batch(batch, mesh, global_batch_size)))
    for k, v in out.items():
      sums[k] = sums.get(k, 0.0) + float(v)
  return task.eval_metrics(sums)


def build_run(cfg: Mapping[str, Any]) -> tuple[
    tasks_lib.Task, Any, Any, methods_lib.Method, state_lib.TrainState]:
  """``(task, loader, model, method, initial state)`` of a validated config
  (:func:`validate_config`), as a run builds them."""
  task = tasks_lib.get_task(cfg["task"])
  loader, _ = make_loader(cfg["dataset"], cfg["batch_size"])
  model, method, state = build_model_and_state(
      cfg, loader.num_classes, task.model_inputs(loader.example_batch()))
  return task, loader, model, method, state


def build_model_and_state(cfg: Mapping[str, Any], num_classes: int,
                          sample_input: Any) -> tuple[
                              Any, methods_lib.Method, state_lib.TrainState]:
  """``(model, method, initial state)`` of a validated config, given what
  :func:`build_run` reads from the dataset: its ``num_classes`` and a sample
  of the model's inputs (``task.model_inputs`` of one example batch)."""
  task = tasks_lib.get_task(cfg["task"])
  model = builders.build_model(cfg["model"], task.num_outputs(num_classes))
  method = builders.build_method(
      cfg["optimizer"], cfg["steps"],
      {name: cfg[name] for name in methods_lib.METHOD_PARTS}, seed=cfg["seed"])
  state = state_lib.create_train_state(
      model, method.tx, jnp.asarray(sample_input), cfg["seed"],
      frozen=task.frozen_variables(model))
  return model, method, state


def train_and_evaluate(config: Any, workdir: str, *, return_state: bool = False,
                       allow_config_change: bool = False
                       ) -> dict[str, float] | tuple[dict[str, float], Any]:
  """Runs (or resumes) one training run; returns the final eval metrics.

  Resuming needs the same resolved config as the workdir's ``config.json``;
  otherwise a ValueError lists the differing keys (dotted paths, old -> new).
  SIGTERM and SIGINT save a checkpoint at the current step and raise
  :class:`Preempted` (handlers installed only during the call, in the main
  thread); a non-finite loss raises :class:`NonFiniteLossError`.

  Args:
    config: the run's config (see ``configs/digits_mlp.py``).
    workdir: where the run writes; resumed from its latest readable
      checkpoint.
    return_state: also return the final TrainState, e.g. to measure the
      sharpness of the solution afterwards.
    allow_config_change: continue a workdir whose config differs; the old
      ``config.json``/``.txt`` is kept as ``config.<step>.json``/``.txt``
      (``<step>``: where the new config takes over).

  Returns:
    The final eval metrics, or ``(metrics, final TrainState)``.

  Raises:
    Preempted: after SIGTERM/SIGINT, once the checkpoint is durable.
    NonFiniteLossError: if the loss became NaN or inf.
    ValueError: if the config is invalid or differs from the workdir's.
  """
  with faults.StopSignals() as stop:
    return _train_and_evaluate(config, workdir, return_state,
                               allow_config_change, stop)


def _train_and_evaluate(config: Any, workdir: str, return_state: bool,
                        allow_config_change: bool, stop: faults.StopSignals
                        ) -> dict[str, float] | tuple[dict[str, float], Any]:
  cfg = validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  config_changes = faults.check_config_change(workdir, config,
                                              allow_config_change)
  writer = metrics_lib.MetricWriter(workdir)
  task, loader, model, method, state = build_run(cfg)
  mesh = data_mesh(cfg["data_parallel"], cfg["batch_size"])
  eval_batch_size = cfg["eval_batch_size"]
  if mesh is not None:
    state = _replicate(state, mesh)
    # Eval batches are padded anyway: round up so they split over devices.
    eval_batch_size = -(-eval_batch_size // mesh.size) * mesh.size
  checkpoints = checkpoint_lib.Checkpointer(
      os.path.join(workdir, "checkpoints"), every_steps=cfg["checkpoint_every"],
      keep=cfg["keep_checkpoints"])
  start = 0
  if checkpoints.latest_step() is not None:
    state, _ = checkpoints.restore(state)
    start = int(state.step)
    logging.info("Resumed from step %d in %s", start, workdir)
  if config_changes:
    kept = writer.keep_previous_config(start)
    logging.warning("Continuing %s at step %d with a changed config (%s); the "
                    "previous one is kept as %s.", workdir, start,
                    ", ".join(key for key, _, _ in config_changes), kept)
  writer.write_config(config)
  # Multi-host: each process reads only its rows of every batch.
  sharding = None if mesh is None else data.data_sharding(mesh)
  train_rows = sharding and data.process_rows(sharding, cfg["batch_size"])
  eval_rows = sharding and data.process_rows(sharding, eval_batch_size)
  if train_rows is not None:
    logging.info("process %d of %d reads rows %d:%d of each train batch",
                 jax.process_index(), jax.process_count(), train_rows.start,
                 train_rows.stop)

  def train_batch(batch):
    return place_batch(batch, mesh, train_rows and cfg["batch_size"])

  def run_eval(eval_state):
    return evaluate(eval_step, eval_state,
                    loader.eval_batches(eval_batch_size, rows=eval_rows), mesh,
                    task, eval_rows and eval_batch_size)

  train_step = jax.jit(step_lib.make_train_step(
      model, method.tx, task=task, accum_steps=cfg["accum_steps"],
      sub_batches=method.sub_batches),
                       donate_argnums=0, static_argnames="mask_update")
  mask_updates = _mask_update_flags(cfg, method, state, start)
  eval_step = jax.jit(step_lib.make_eval_step(model, task))
  finalize_context = methods_lib.FinalizeContext(
      model=model, task=task,
      train_batches=lambda size: loader.eval_batches(size, split="train"))
  non_finite = faults.NonFiniteCheck(faults.NONFINITE_LAG)

  def stop_if_non_finite(bad: int | None, step: int) -> None:
    if bad is None:
      return
    checkpoints.wait()
    latest = checkpoints.latest_step()
    checkpoints.close()
    writer.close()
    where = ("none" if latest is None else
             f"step {latest} in {checkpoints.directory}")
    raise faults.NonFiniteLossError(
        f"Loss became NaN or inf (non-finite) at step {bad} of {workdir}; "
        f"stopped at step {step}. The last good checkpoint is {where}.",
        bad, step, latest)

  progress = metrics_lib.Progress(cfg["steps"])
  batches = loader.train_batches(seed=cfg["seed"], start_step=start,
                                 rows=train_rows)
  result: dict[str, float] = {}
  for step in range(start + 1, cfg["steps"] + 1):
    options = ({} if mask_updates is None else
               {"mask_update": bool(mask_updates[step - 1])})
    state, metrics = train_step(state, train_batch(next(batches)), **options)
    stop_if_non_finite(non_finite.update(step, metrics["loss"]), step)
    last = step == cfg["steps"]
    if step % cfg["log_every"] == 0 or last or step % cfg[
        "checkpoint_every"] == 0:
      stop_if_non_finite(non_finite.now(), step)
      scalars = {f"train/{k}": float(v) for k, v in
                 jax.device_get(metrics).items()}
      writer.write_scalars(step, scalars)
    if step % cfg["eval_every"] == 0 or last:
      if method.check:
        method.check(state)
      scalars = {}
      eval_state = state
      if last and method.finalize:
        scalars = {f"eval/{method.finalized_prefix}_{k}": v
                   for k, v in run_eval(state).items()}
        eval_state = method.finalize(state, finalize_context)
      result = run_eval(eval_state)
      writer.write_scalars(step, {
          **scalars, **{f"eval/{k}": v for k, v in result.items()},
          **metrics_lib.sparsity_scalars(jax.device_get(eval_state.params))})
    signum = stop.poll()
    stopping = signum is not None
    if stopping or last or checkpoints.should_save(step):
      stop_if_non_finite(non_finite.now(), step)  # never save after NaN
    checkpoints.save(step, state, metadata={"data_step": step},
                     force=last or stopping)
    progress.update(step)
    if stopping and not last:
      _preempt(signum, step, checkpoints, writer)
  checkpoints.wait()
  checkpoints.close()
  writer.close()
  if method.finalize:
    # Checkpoints hold the raw state; the finalized model is derived (above
    # at the last step, or here when the run resumed at its end).
    state = eval_state if result else method.finalize(state,
                                                      finalize_context)
  if not result:  # resumed at the end: evaluate what was restored.
    result = run_eval(state)
  result = {k: float(v) for k, v in result.items()}
  signum = stop.poll()
  if signum is not None:  # during the last step: the run is complete.
    error = faults.Preempted(signum, cfg["steps"], checkpoints.directory)
    logging.warning("Stopped by %s", error)
    raise error
  return (result, state) if return_state else result


def _replicate(state: state_lib.TrainState, mesh: jax.sharding.Mesh
               ) -> state_lib.TrainState:
  """``state`` replicated on every device of ``mesh`` (all processes)."""
  replicated = NamedSharding(mesh, P())
  if jax.process_count() == 1:
    return jax.device_put(state, replicated)
  # Every process holds the same initial state (same seed): each supplies
  # its own devices' copies.
  return jax.tree.map(lambda x: data.put_global(np.asarray(x), replicated),
                      state)


def _preempt(signum: int, step: int, checkpoints: checkpoint_lib.Checkpointer,
             writer: metrics_lib.MetricWriter) -> None:
  """Waits for the checkpoint at ``step``, closes the outputs, raises."""
  checkpoints.wait()
  checkpoints.close()
  writer.close()
  error = faults.Preempted(signum, step, checkpoints.directory)
  logging.warning("Stopped by %s", error)
  raise error


