"""The generic training loop behind ``experiments/train.py``.

``train_and_evaluate(config, workdir)`` builds data, model and optimizer from
the config schema (see ``configs/digits_mlp.py``), resumes from the latest
checkpoint in ``workdir`` if there is one, trains with the generic jitted step
(data-parallel over all local devices when there are several), and writes the
resolved config, metrics as JSON lines and TensorBoard events, per-layer
sparsity, and orbax checkpoints. A non-finite loss stops the run with the
step where it first appeared; no checkpoint is written after it.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Mapping

from absl import logging
import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import numpy as np

from flatsparse import data
from flatsparse import safe as safe_lib
from flatsparse import sparsity
from flatsparse.train import batch_norm
from flatsparse.train import builders
from flatsparse.train import checkpoint as checkpoint_lib
from flatsparse.train import metrics as metrics_lib
from flatsparse.train import state as state_lib
from flatsparse.train import step as step_lib

__all__ = ["REQUIRED_KEYS", "OPTIONAL_KEYS", "validate_config",
           "train_and_evaluate", "evaluate", "make_loader"]

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
  """Checks the top-level schema; returns it with defaults filled in."""
  cfg = dict(config.items())
  missing = [k for k in REQUIRED_KEYS if k not in cfg or cfg[k] is None]
  if missing:
    raise ValueError(f"Config is missing required keys {missing}; required: "
                     f"{list(REQUIRED_KEYS)}.")
  unknown = sorted(set(cfg) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
  if unknown:
    raise ValueError(f"Unknown config keys {unknown}; allowed: "
                     f"{sorted(set(REQUIRED_KEYS) | set(OPTIONAL_KEYS))}.")
  for key, default in OPTIONAL_KEYS.items():
    cfg.setdefault(key, default)
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


def _mesh(enabled: bool, batch_size: int) -> jax.sharding.Mesh | None:
  """A 1-d data mesh over all devices, or None on one device."""
  n = jax.device_count()
  if not enabled or n == 1:
    return None
  if batch_size % n:
    raise ValueError(f"batch_size {batch_size} must divide by the {n} "
                     "devices for data parallelism (or set "
                     "config.data_parallel=False).")
  return jax.make_mesh((n,), ("data",), axis_types=(AxisType.Auto,))


def _place(batch: Mapping[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  if mesh is None:
    return {k: jnp.asarray(v) for k, v in batch.items()}
  return {k: jax.device_put(v, NamedSharding(mesh, P("data")))
          for k, v in batch.items()}


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
    out = jax.device_get(eval_step(state, _place(batch, mesh)))
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


def train_and_evaluate(config: Any, workdir: str, *, return_state: bool = False
                       ) -> dict[str, float] | tuple[dict[str, float], Any]:
  """Runs (or resumes) one training run; returns the final eval metrics.

  With ``return_state=True`` returns ``(metrics, final TrainState)``, e.g. to
  measure the sharpness of the solution afterwards.
  """
  cfg = validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  writer = metrics_lib.MetricWriter(workdir)
  writer.write_config(config)
  loader, sample = make_loader(cfg["dataset"], cfg["batch_size"])
  model = builders.build_model(cfg["model"], loader.num_classes)
  tx = builders.build_optimizer(cfg["optimizer"], cfg["steps"],
                                cfg["sparsity"], cfg["flatness"], cfg["safe"])
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
  mesh = _mesh(cfg["data_parallel"], cfg["batch_size"])
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
  first_bad = jnp.int32(-1)  # first step with a non-finite loss, on device
  progress = metrics_lib.Progress(cfg["steps"])
  batches = loader.train_batches(seed=cfg["seed"], start_step=start)
  result: dict[str, float] = {}
  for step in range(start + 1, cfg["steps"] + 1):
    options = ({} if mask_updates is None else
               {"mask_update": bool(mask_updates[step - 1])})
    state, metrics = train_step(state, _place(next(batches), mesh), **options)
    first_bad = jnp.where((first_bad < 0) & ~jnp.isfinite(metrics["loss"]),
                          step, first_bad)
    last = step == cfg["steps"]
    if step % cfg["log_every"] == 0 or last or step % cfg[
        "checkpoint_every"] == 0:
      bad = int(first_bad)
      if bad >= 0:
        checkpoints.wait()
        raise FloatingPointError(
            f"Loss became {float(metrics['loss'])} (non-finite) at step {bad} "
            f"of {workdir}; stopped. The last good checkpoint is step "
            f"{checkpoints.latest_step()}.")
      scalars = {f"train/{k}": float(v) for k, v in
                 jax.device_get(metrics).items()}
      writer.write_scalars(step, scalars)
    if step % cfg["eval_every"] == 0 or last:
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
    checkpoints.save(step, state, metadata={"data_step": step}, force=last)
    progress.update(step)
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
  return (result, state) if return_state else result


