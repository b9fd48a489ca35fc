"""Pieces shared by the benchmark scripts: device info, loss, jit cache size."""

from __future__ import annotations

import datetime
import os
import sys
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import optax

PyTree = Any


def device_info() -> dict[str, Any]:
  """What ran the benchmark: device, versions, XLA flags, UTC date."""
  device = jax.devices()[0]
  return {
    "device_kind": device.device_kind,
    "platform": device.platform,
    "device_count": jax.device_count(),
    "cpu_count": os.cpu_count(),
    "jax": jax.__version__,
    "optax": optax.__version__,
    "flax": flax.__version__,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="seconds"
    ),
  }


def make_log(name: str) -> Callable[[str], None]:
  """Progress printer on stderr (stdout carries only the JSON object)."""

  def log(message: str) -> None:
    print(f"[{name}] {message}", file=sys.stderr, flush=True)

  return log


def cache_size(fn: Any) -> int | None:
  """Compiled entries of a jitted function (None where jax lacks the API)."""
  size = getattr(fn, "_cache_size", None)
  return size() if callable(size) else None


def classification_loss(
  model: nn.Module, has_batch_stats: bool
) -> Callable[..., tuple[jax.Array, PyTree]]:
  """``(params, batch_stats, x, y) -> (mean cross-entropy, new batch_stats)``."""

  def loss_fn(
    params: PyTree, batch_stats: PyTree, x: jax.Array, y: jax.Array
  ) -> tuple[jax.Array, PyTree]:
    if has_batch_stats:
      logits, new_vars = model.apply(
        {"params": params, "batch_stats": batch_stats},
        x,
        train=True,
        mutable=["batch_stats"],
      )
      batch_stats = new_vars["batch_stats"]
    else:
      logits = model.apply({"params": params}, x, train=True)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, batch_stats

  return loss_fn
