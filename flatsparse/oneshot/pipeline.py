"""Prune a transformer block by block from a little calibration data.

The model is taken apart by :func:`flatsparse.models.split` (embedding,
blocks, head). Two activation streams run through it on the calibration
sequences: the pruned model's (``x``: what the already-pruned prefix outputs)
and the dense model's (``d``). For each block ``i``:

1. the dense block runs on ``x``; every linear layer's input statistics are
   collected on the way (``||X_j||^2`` for Wanda and SAFE+, ``X^T X`` for
   SparseGPT), from the original calibration sequences only;
2. the solver prunes each linear layer's kernel (``flatsparse.oneshot``'s
   magnitude / Wanda / SparseGPT), or SAFE trains and projects the block;
3. the reconstruction (:mod:`flatsparse.oneshot.reconstruction`) trains the
   pruned block on ``x`` to the dense block's output on ``x`` (BR) or to the
   dense activation ``block_i(d)`` (GP); with CR, blocks ``i`` and ``i+1``
   (``i+1`` pruned on the outputs of the pruned block ``i``) are trained
   together to the dense activation after block ``i+1``;
4. ``x <- block_i(x)`` with the final weights, ``d <- block_i(d)`` dense.

Every block is pruned, whatever the pattern (the public reference code of
the reconstruction paper prunes only the first block on its LLaMA path when
CR is off, and its 2:4 path fails). Progress is logged per block; with a
``workdir`` each finished block is saved, and a rerun resumes after the last
finished one (a different method or calibration set is refused).

References:
  Frantar, Alistarh, "SparseGPT: Massive Language Models Can Be Accurately
  Pruned in One-Shot", ICML 2023.
  Sun, Liu, Bair, Kolter, "A Simple and Effective Pruning Approach for Large
  Language Models" (Wanda), ICLR 2024.
  Shin, Park, Kim, Lee, "Rethinking Pruning Large Language Models: Benefits
  and Pitfalls of Reconstruction Error Minimization", EMNLP 2024.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import functools
import json
import os
import time
from typing import Any, NamedTuple
import zlib

from absl import logging
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from flatsparse.models.split import Blockwise
from flatsparse.oneshot import block_safe
from flatsparse.oneshot import magnitude as magnitude_lib
from flatsparse.oneshot import pattern as pattern_lib
from flatsparse.oneshot import sparsegpt as sparsegpt_lib
from flatsparse.oneshot import statistics as statistics_lib
from flatsparse.oneshot import wanda as wanda_lib
from flatsparse.oneshot.method import OneShotMethod
from flatsparse.oneshot.reconstruction import reconstruct

__all__ = ["OneShotResult", "prune", "block_errors", "is_block_kernel",
           "sparsity_of"]

PROGRESS_FILE = "progress.json"


class OneShotResult(NamedTuple):
  """What :func:`prune` returns.

  Attributes:
    params: the full model's parameters with every block pruned.
    masks: ``{block name: masks}`` (bool at the pruned kernels, None
      elsewhere).
    blocks: one dict per block: ``name``, ``seconds``, ``losses`` (the
      reconstruction's epoch losses, empty for LR).
  """

  params: Any
  masks: dict[str, Any]
  blocks: list[dict[str, Any]]


def is_block_kernel(path: Sequence[str], leaf: Any) -> bool:
  """The leaves a block's solver prunes: 2-d ``kernel`` leaves (nn.Dense)."""
  return bool(path) and path[-1] == "kernel" and getattr(leaf, "ndim", 0) == 2


def _batched(fn: Callable[..., jax.Array], x: jax.Array,
             attention_mask: jax.Array | None, batch_size: int) -> jax.Array:
  outs = []
  for start in range(0, x.shape[0], batch_size):
    part = slice(start, start + batch_size)
    mask = None if attention_mask is None else attention_mask[part]
    outs.append(fn(x[part], mask))
  return jnp.concatenate(outs)


@functools.lru_cache(maxsize=8)
def _compiled(blockwise: Blockwise):
  """Jitted embedding, block and statistics of one model (shared by every
  block and every call with the same ``Blockwise``)."""
  def statistics(p, h, m, with_gram):
    return statistics_lib.statistics_during(
        lambda: blockwise.block(p, h, m), p, with_gram=with_gram,
        attention_mask=m)
  return (jax.jit(blockwise.embed), jax.jit(blockwise.block),
          jax.jit(statistics, static_argnames="with_gram"))


@functools.lru_cache(maxsize=8)
def _chain(blockwise: Blockwise) -> Callable[[Any, jax.Array, Any],
                                             jax.Array]:
  """``(window params, x, mask) -> y``: the window's blocks in order (one
  function per model, so the reconstruction's compilations are shared)."""
  def apply(window, x, attention_mask):
    for p in window:
      x = blockwise.block(p, x, attention_mask)
    return x
  return apply


class _Runner:
  """Jitted block calls and statistics over batches of sequences."""

  def __init__(self, blockwise: Blockwise, batch_size: int):
    self.bw = blockwise
    self.batch_size = batch_size
    self._embed, self._block, self._statistics = _compiled(blockwise)

  def embed(self, params, tokens, attention_mask):
    return _batched(lambda t, m: self._embed(params, t, m), tokens,
                    attention_mask, self.batch_size)

  def block(self, block_params, x, attention_mask):
    return _batched(lambda h, m: self._block(block_params, h, m), x,
                    attention_mask, self.batch_size)

  def statistics(self, block_params, x, attention_mask, *, with_gram):
    total = None
    for start in range(0, x.shape[0], self.batch_size):
      part = slice(start, start + self.batch_size)
      mask = None if attention_mask is None else attention_mask[part]
      stats = self._statistics(block_params, x[part], mask,
                               with_gram=with_gram)
      total = stats if total is None else jax.tree_util.tree_map(
          jnp.add, total, stats)
    return total


def _solve(method: OneShotMethod, pattern: Any, block_params: Any,
           stats: Any) -> tuple[Any, Any]:
  """Prunes every kernel of one block with a layer-wise solver."""
  flat = flax.traverse_util.flatten_dict(block_params)
  flat_stats = (flax.traverse_util.flatten_dict(
      stats, is_leaf=lambda p, v: isinstance(v, statistics_lib.LayerStatistics))
      if stats is not None else {})
  new, masks = {}, {}
  for path, leaf in flat.items():
    if not is_block_kernel(path, leaf):
      new[path], masks[path] = leaf, None
      continue
    layer = flat_stats.get(path)
    if method.solver == "magnitude":
      new[path], masks[path] = magnitude_lib.magnitude_prune(leaf, pattern)
    elif method.solver == "wanda":
      new[path], masks[path] = wanda_lib.wanda_prune(
          leaf, layer.sq_norms, pattern)
    else:
      hessian = statistics_lib.hessian(
          layer, normalize=method.hessian_normalization)
      new[path], masks[path] = sparsegpt_lib.sparsegpt_prune(
          leaf, hessian, pattern, block_size=method.block_size,
          dampening=method.dampening, ties=method.ties)
  return (flax.traverse_util.unflatten_dict(new),
          flax.traverse_util.unflatten_dict(masks))


def _activation_norms(block_params: Any, stats: Any) -> Any:
  """A params-like pytree: ``||X_j||^2`` at the kernels (SAFE+), else None."""
  flat = flax.traverse_util.flatten_dict(block_params)
  flat_stats = flax.traverse_util.flatten_dict(
      stats, is_leaf=lambda p, v: isinstance(v, statistics_lib.LayerStatistics))
  return flax.traverse_util.unflatten_dict({
      path: (flat_stats[path].sq_norms if is_block_kernel(path, leaf)
             else None) for path, leaf in flat.items()})


def _check_masks_cover(masks: Any, block_params: Any, name: str) -> None:
  """Every 2-d kernel of the block must have been pruned."""
  flat_p = flax.traverse_util.flatten_dict(block_params)
  flat_m = flax.traverse_util.flatten_dict(
      masks, is_leaf=lambda p, v: v is None)
  missing = [("/".join(p)) for p, leaf in flat_p.items()
             if is_block_kernel(p, leaf) and flat_m.get(p) is None]
  if missing:
    raise ValueError(f"block {name!r}: no mask for {missing}.")


# Resuming ---------------------------------------------------------------------

def _fingerprint(tokens: jax.Array) -> int:
  return zlib.crc32(np.ascontiguousarray(np.asarray(tokens)).tobytes())


def _save_block(workdir: str, name: str, params: Any, masks: Any) -> None:
  arrays = {"p/" + "/".join(k): np.asarray(v) for k, v in
            flax.traverse_util.flatten_dict(params).items()}
  arrays.update({"m/" + "/".join(k): np.asarray(v) for k, v in
                 flax.traverse_util.flatten_dict(
                     masks, is_leaf=lambda p, v: v is None).items()
                 if v is not None})
  path = os.path.join(workdir, f"{name}.npz")
  with open(path + ".tmp", "wb") as f:
    np.savez(f, **arrays)
  os.replace(path + ".tmp", path)


def _load_block(workdir: str, name: str, like: Any) -> tuple[Any, Any]:
  with np.load(os.path.join(workdir, f"{name}.npz")) as data:
    stored = dict(data)
  flat = flax.traverse_util.flatten_dict(like)
  params = {k: jnp.asarray(stored["p/" + "/".join(k)], v.dtype)
            for k, v in flat.items()}
  masks = {k: (jnp.asarray(stored["m/" + "/".join(k)])
               if "m/" + "/".join(k) in stored else None) for k in flat}
  return (flax.traverse_util.unflatten_dict(params),
          flax.traverse_util.unflatten_dict(masks))


def _write_progress(workdir: str, record: dict[str, Any]) -> None:
  path = os.path.join(workdir, PROGRESS_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump(record, f, indent=1)
  os.replace(path + ".tmp", path)


def _read_progress(workdir: str, identity: dict[str, Any]) -> dict[str, Any]:
  path = os.path.join(workdir, PROGRESS_FILE)
  if not os.path.exists(path):
    return {"identity": identity, "done": [], "blocks": []}
  with open(path) as f:
    record = json.load(f)
  if record["identity"] != identity:
    changed = sorted(k for k in set(identity) | set(record["identity"])
                     if identity.get(k) != record["identity"].get(k))
    raise ValueError(
        f"{path} belongs to another one-shot run (differs in {changed}); "
        f"use a new workdir or delete it.")
  return record


# The block loop ---------------------------------------------------------------

def prune(blockwise: Blockwise, params: Any, tokens: jax.Array, *,
          method: OneShotMethod, attention_mask: jax.Array | None = None,
          extra_tokens: jax.Array | None = None, key: jax.Array,
          batch_size: int = 8, workdir: str | None = None,
          log: Callable[[str], None] = logging.info) -> OneShotResult:
  """Prunes every block of a model with ``method``.

  Args:
    blockwise: the model taken apart (``flatsparse.models.split``).
    params: the dense model's parameters.
    tokens: ``(n, seq)`` calibration sequences (statistics and
      reconstruction).
    method: solver, pattern and reconstruction.
    attention_mask: ``(n + n_extra, seq)`` (1 = real token) or None.
    extra_tokens: ``(n_extra, seq)`` sequences used for reconstruction only
      (e.g. self-generated, :func:`flatsparse.oneshot.generate`).
    key: shuffles the reconstruction batches.
    batch_size: sequences per forward pass.
    workdir: where finished blocks are saved (resume); None keeps nothing.
    log: progress lines (one per block).

  Returns:
    A :class:`OneShotResult`.
  """
  pattern = pattern_lib.parse_pattern(sparsity=method.sparsity,
                                      scope=method.effective_scope)
  names = tuple(blockwise.block_names)
  for name in names:
    flat = flax.traverse_util.flatten_dict(params[name])
    for path, leaf in flat.items():
      if is_block_kernel(path, leaf):
        pattern.check(leaf.shape, f"{name}/{'/'.join(path)}")
  n_stats = tokens.shape[0]
  if extra_tokens is not None:
    tokens = jnp.concatenate([tokens, jnp.asarray(extra_tokens, tokens.dtype)])
  if attention_mask is not None and attention_mask.shape != tokens.shape:
    raise ValueError(f"attention_mask shape {attention_mask.shape} does not "
                     f"match the tokens' {tokens.shape}.")
  runner = _Runner(blockwise, batch_size)
  identity = {"method": method.describe(), "tokens": _fingerprint(tokens),
              "blocks": list(names)}
  record = ({"identity": identity, "done": [], "blocks": []}
            if workdir is None else _read_progress(workdir, identity))
  if workdir is not None:
    os.makedirs(workdir, exist_ok=True)

  pruned = dict(params)
  masks: dict[str, Any] = {}
  for name in record["done"]:
    pruned[name], masks[name] = _load_block(workdir, name, params[name])
  # A CR window leaves the next block pruned but not final: saved apart.
  pending = record.get("pending")
  if pending is not None:
    pruned[pending], masks[pending] = _load_block(workdir, pending,
                                                  params[pending])
  start = len(record["done"])
  x = runner.embed(params, tokens, attention_mask)
  d = x
  for name in names[:start]:
    x = runner.block(pruned[name], x, attention_mask)
    d = runner.block(params[name], d, attention_mask)
  if start:
    log(f"resumed after {start} of {len(names)} blocks from {workdir}")
  stats_mask = (None if attention_mask is None
                else attention_mask[:n_stats])

  def prune_one(name, inputs):
    """The layer-wise solver on one block: ``(params, masks)``."""
    stats = None
    if method.needs_statistics:
      stats = runner.statistics(params[name], inputs[:n_stats], stats_mask,
                                with_gram=method.needs_gram)
    return _solve(method, pattern, params[name], stats)

  for i in range(start, len(names)):
    name = names[i]
    t0 = time.perf_counter()
    losses: list[float] = []
    dense_out = runner.block(params[name], d, attention_mask)
    if method.is_safe:
      stats = (runner.statistics(params[name], x[:n_stats], stats_mask,
                                 with_gram=False)
               if method.solver == "safe+" else None)
      target = (dense_out if method.safe.target == "dense"
                else runner.block(params[name], x, attention_mask))
      projection = block_safe.projection_for(
          method.solver, method.sparsity, method.effective_scope)
      pruned[name], masks[name], losses = block_safe.safe_block(
          blockwise.block, params[name], x, target, attention_mask,
          projection=projection, config=method.safe,
          activations=(None if stats is None
                       else _activation_norms(params[name], stats)),
          key=jax.random.fold_in(key, i))
    elif not method.cross_block:
      target = (dense_out if method.global_propagation
                else runner.block(params[name], x, attention_mask))
      pruned[name], masks[name] = prune_one(name, x)
      if method.trains_blocks:
        (pruned[name],), losses = reconstruct(
            _chain(blockwise), (pruned[name],), (masks[name],), x, target,
            attention_mask, config=method.reconstruction_config,
            key=jax.random.fold_in(key, i))
    else:
      if name not in masks:  # the first block (later ones: the last window)
        pruned[name], masks[name] = prune_one(name, x)
      window = [name]
      target = dense_out
      if i + 1 < len(names):
        nxt = names[i + 1]
        x_next = runner.block(pruned[name], x, attention_mask)
        pruned[nxt], masks[nxt] = prune_one(nxt, x_next)
        window.append(nxt)
        target = runner.block(params[nxt], dense_out, attention_mask)
      trained, losses = reconstruct(
          _chain(blockwise), tuple(pruned[n] for n in window),
          tuple(masks[n] for n in window), x, target, attention_mask,
          config=method.reconstruction_config,
          key=jax.random.fold_in(key, i))
      for n, p in zip(window, trained):
        pruned[n] = p
      record["pending"] = window[1] if len(window) > 1 else None
    _check_masks_cover(masks[name], params[name], name)
    x = runner.block(pruned[name], x, attention_mask)
    d = dense_out
    seconds = time.perf_counter() - t0
    entry = {"name": name, "seconds": seconds, "losses": losses}
    record["done"].append(name)
    record["blocks"].append(entry)
    if workdir is not None:
      _save_block(workdir, name, pruned[name], masks[name])
      if record.get("pending"):
        _save_block(workdir, record["pending"], pruned[record["pending"]],
                    masks[record["pending"]])
      _write_progress(workdir, record)
    tail = f", loss {losses[0]:.3g} -> {losses[-1]:.3g}" if losses else ""
    log(f"block {i + 1}/{len(names)} {name}: {method.name}, {seconds:.1f} s"
        f"{tail}")
  return OneShotResult(pruned, masks, record["blocks"])


def block_errors(blockwise: Blockwise, dense: Any, pruned: Any,
                 tokens: jax.Array, attention_mask: jax.Array | None = None,
                 *, batch_size: int = 8) -> list[dict[str, float]]:
  """Per block: the mean squared error of the pruned model's activation
  after the block against the dense model's, on ``tokens``, and that error
  relative to the dense activation's mean square (``relative``)."""
  runner = _Runner(blockwise, batch_size)
  x = runner.embed(dense, tokens, attention_mask)
  d = x
  weights = (jnp.ones(tokens.shape, jnp.float32) if attention_mask is None
             else attention_mask.astype(jnp.float32))[..., None]
  count = jnp.sum(weights) * x.shape[-1]
  out = []
  for name in blockwise.block_names:
    x = runner.block(pruned[name], x, attention_mask)
    d = runner.block(dense[name], d, attention_mask)
    diff = (x.astype(jnp.float32) - d.astype(jnp.float32))
    mse = float(jnp.sum(jnp.square(diff) * weights) / count)
    power = float(jnp.sum(jnp.square(d.astype(jnp.float32)) * weights)
                  / count)
    out.append({"name": name, "mse": mse, "relative": mse / max(power, 1e-30)})
  return out


def sparsity_of(masks: dict[str, Any]) -> float:
  """The fraction of pruned entries over all masked kernels."""
  leaves = [m for m in jax.tree_util.tree_leaves(masks) if m is not None]
  total = sum(int(m.size) for m in leaves)
  kept = sum(int(jnp.sum(m)) for m in leaves)
  return 1.0 - kept / max(total, 1)

