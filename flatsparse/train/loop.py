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
from flatsparse import safe as safe_lib
from flatsparse import sparsity
from flatsparse.train import batch_norm
from flatsparse.train import builders
from flatsparse.train import checkpoint as checkpoint_lib
from flatsparse.train import config_schema
from flatsparse.train import faults
from flatsparse.train import metrics as metrics_lib
from flatsparse.train import state as state_lib
from flatsparse.train import step as step_lib

# Re-exported: the faults a run raises.
NONFINITE_LAG = faults.NONFINITE_LAG
NonFiniteLossError = faults.NonFiniteLossError
Preempted = faults.Preempted

__all__ = ["REQUIRED_KEYS", "OPTIONAL_KEYS", "validate_config",
           "train_and_evaluate", "evaluate", "make_loader", "data_mesh",
           "place_batch", "Preempted",
           "NonFiniteLossError", "NONFINITE_LAG"]

REQUIRED_KEYS = ("dataset", "model", "optimizer", "steps", "batch_size")
OPTIONAL_KEYS = {
    "seed": 0, "sparsity": None, "flatness": None, "safe": None,
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

  The sections (``config_schema.SECTIONS``: dataset, model, optimizer,
  sparsity, flatness, safe) come back as plain dicts without their unset
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


def _mask_update_flags(cfg: Mapping[str, Any], state: state_lib.TrainState,
                       start: int) -> np.ndarray | None:
  """Host-side mask-update flags per step (see OPTIONAL_KEYS), or None."""
  enabled = cfg["host_mask_schedule"]
  if enabled is None:
    enabled = jax.default_backend() != "cpu"
  if not (enabled and cfg["sparsity"]):
    return None
  count = int(sparsity.find_sparse_state(state.opt_state).count)
  if count != start:  # flags[t] is for the wrapper's counter t
    raise ValueError(f"The sparsity wrapper's step counter is {count} at "
                     f"train step {start}; host-scheduled mask updates "
                     "need them equal (set config.host_mask_schedule=False).")
  return builders.host_mask_schedule(cfg["sparsity"], cfg["steps"])


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


def place_batch(batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh | None
                ) -> dict[str, jax.Array]:
  """The batch on the default device, or split over ``mesh``'s data axis by
  ``data.shard_batch`` (the multi-host path: each process supplies the
  shards of its own devices)."""
  if mesh is None:
    return {k: jnp.asarray(v) for k, v in batch.items()}
  return data.shard_batch(batch, data.data_sharding(mesh))


_NOISE_KEYS = ("label_noise", "noise_kind", "noise_seed", "noise_pairs")


def make_loader(dataset: Mapping[str, Any], batch_size: int
                ) -> tuple[data.Loader, np.ndarray]:
  """Loader and a sample input from ``config.dataset``.

  Keys: ``name`` (see ``flatsparse.data.load_dataset``), ``train_split``
  ("train"), ``eval_split`` ("test"), ``augment``, ``normalize``, label-noise
  keys (train split only) and dataset-specific options.
  """
  cfg = dict(dataset.to_dict() if hasattr(dataset, "to_dict") else dataset)
  if "name" not in cfg:
    raise ValueError("config.dataset needs 'name' (e.g. 'digits', 'cifar10').")
  name = cfg.pop("name")
  train_split = cfg.pop("train_split", "train")
  eval_split = cfg.pop("eval_split", "test")
  augment = cfg.pop("augment", False)
  normalize = cfg.pop("normalize", False)
  train = data.load_dataset(name, train_split, **cfg)
  clean = {k: v for k, v in cfg.items() if k not in _NOISE_KEYS}
  test = data.load_dataset(name, eval_split, **clean)
  loader = data.Loader(train, test, batch_size=batch_size, augment=augment,
                       normalize=normalize)
  return loader, train.images[:1]


def evaluate(eval_step, state: state_lib.TrainState,
             batches: Iterator[Mapping[str, np.ndarray]], mesh) -> dict:
  """Exact accuracy and loss over padded eval batches."""
  sums = {"correct": 0.0, "loss_sum": 0.0, "count": 0.0}
  for batch in batches:
    out = jax.device_get(eval_step(state, place_batch(batch, mesh)))
    for k in sums:
      sums[k] += float(out[k])
  return {"accuracy": sums["correct"] / sums["count"],
          "loss": sums["loss_sum"] / sums["count"]}


def finalize_safe(model, state: state_lib.TrainState, safe_config: Any,
                  loader: data.Loader) -> state_lib.TrainState:
  """``Proj(w_T)`` of a SAFE/ADMM/IHT run, BatchNorm re-estimated.

  ``safe_config.bn_recalibration_examples`` (default 2048; 0 keeps the
  running statistics) training examples, un-augmented, re-estimate the
  BatchNorm statistics of the pruned network.
  """
  projection = safe_lib.projection_from_config(safe_config)
  params = safe_lib.finalize(state.params, state.opt_state, projection)
  examples = dict(safe_config).get("bn_recalibration_examples", 2048)
  batch_stats = state.batch_stats
  if batch_stats and examples:
    def chunks():  # the first examples of the train split, in order
      seen = 0
      for batch in loader.eval_batches(256, split="train"):
        images = batch["image"][batch["mask"] > 0][:examples - seen]
        if not len(images):
          return
        seen += len(images)
        yield jnp.asarray(images)
    batch_stats = batch_norm.recalibrate_batch_stats(
        model, params, batch_stats, chunks())
  return state.replace(params=params, batch_stats=batch_stats)


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
  loader, sample = make_loader(cfg["dataset"], cfg["batch_size"])
  model = builders.build_model(cfg["model"], loader.num_classes)
  tx = builders.build_optimizer(cfg["optimizer"], cfg["steps"],
                                cfg["sparsity"], cfg["flatness"], cfg["safe"],
                                seed=cfg["seed"])
  state = state_lib.create_train_state(model, tx, jnp.asarray(sample),
                                       cfg["seed"])
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
  mesh = data_mesh(cfg["data_parallel"], cfg["batch_size"])
  eval_batch_size = cfg["eval_batch_size"]
  if mesh is not None:
    state = jax.device_put(state, NamedSharding(mesh, P()))
    # Eval batches are padded anyway: round up so they split over devices.
    eval_batch_size = -(-eval_batch_size // mesh.size) * mesh.size
  # m-sharpness: SAM's sub_batches needs the step to split the batch too.
  sub_batches = int(dict(cfg["flatness"] or {}).get("sub_batches") or 1)
  train_step = jax.jit(step_lib.make_train_step(
      model, tx, accum_steps=cfg["accum_steps"], sub_batches=sub_batches),
                       donate_argnums=0, static_argnames="mask_update")
  mask_updates = _mask_update_flags(cfg, state, start)
  eval_step = jax.jit(step_lib.make_eval_step(model))
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
  batches = loader.train_batches(seed=cfg["seed"], start_step=start)
  result: dict[str, float] = {}
  for step in range(start + 1, cfg["steps"] + 1):
    options = ({} if mask_updates is None else
               {"mask_update": bool(mask_updates[step - 1])})
    state, metrics = train_step(state, place_batch(next(batches), mesh),
                                **options)
    stop_if_non_finite(non_finite.update(step, metrics["loss"]), step)
    last = step == cfg["steps"]
    if step % cfg["log_every"] == 0 or last or step % cfg[
        "checkpoint_every"] == 0:
      stop_if_non_finite(non_finite.now(), step)
      scalars = {f"train/{k}": float(v) for k, v in
                 jax.device_get(metrics).items()}
      writer.write_scalars(step, scalars)
    if step % cfg["eval_every"] == 0 or last:
      if cfg["sparsity"]:  # pruned weights exactly 0 (skips STE); else raises
        sparsity.check_sparse(state.params, state.opt_state, updater=sparsity
                              .create_updater_from_config(cfg["sparsity"]))
      scalars = {}
      eval_state = state
      if last and cfg["safe"]:
        scalars = {f"eval/unprojected_{k}": v for k, v in evaluate(
            eval_step, state, loader.eval_batches(eval_batch_size),
            mesh).items()}
        eval_state = finalize_safe(model, state, cfg["safe"], loader)
      result = evaluate(eval_step, eval_state,
                        loader.eval_batches(eval_batch_size), mesh)
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
  if cfg["safe"]:
    # Checkpoints hold w_T and the SAFE state; the projected model is derived
    # (above at the last step, or here when the run resumed at its end).
    state = eval_state if result else finalize_safe(model, state,
                                                    cfg["safe"], loader)
  if not result:  # resumed at the end: evaluate what was restored.
    result = evaluate(eval_step, state,
                      loader.eval_batches(eval_batch_size), mesh)
  result = {k: float(v) for k, v in result.items()}
  signum = stop.poll()
  if signum is not None:  # during the last step: the run is complete.
    error = faults.Preempted(signum, cfg["steps"], checkpoints.directory)
    logging.warning("Stopped by %s", error)
    raise error
  return (result, state) if return_state else result


def _preempt(signum: int, step: int, checkpoints: checkpoint_lib.Checkpointer,
             writer: metrics_lib.MetricWriter) -> None:
  """Waits for the checkpoint at ``step``, closes the outputs, raises."""
  checkpoints.wait()
  checkpoints.close()
  writer.close()
  error = faults.Preempted(signum, step, checkpoints.directory)
  logging.warning("Stopped by %s", error)
  raise error


