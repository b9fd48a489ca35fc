"""Registry of algorithms and a factory from an ``ml_collections.ConfigDict``.

Config keys (all optional except ``algorithm``)::

    algorithm          name in ALGORITHMS (or one added by register_algorithm);
                       it sets the importance (magnitude, saliency, random)
    sparsity           target in [0, 1)
    scope              'layer' | 'N:M' (e.g. '2:4') | 'block:RxC' | 'channel'
                       (default 'layer'; 'global' for the global_* algorithms,
                       their default)
    distribution       'uniform' | 'erk'
    overrides          {leaf path: sparsity}
    min_kept           fewest weights a prunable leaf keeps (default 1; 0
                       allows empty leaves)
    global_normalization  'none' | 'l2'   (global_* algorithms: rank raw
                       scores, or each leaf's divided by its L2 norm)
    schedule           'no_update' | 'one_shot' | 'periodic' | 'polynomial'
    update_freq, update_start_step, update_end_step, initial_sparsity
                       (polynomial reads all four, periodic all but
                       initial_sparsity, one_shot only update_start_step,
                       no_update none; a key the schedule does not read is
                       an error unless None)
    drop_fraction, drop_fraction_end_step          (SET / RigL)
    warmup_steps, sparse_steps, dense_steps, final_sparse_step   (AC/DC)
    mask_storage       'uint8' | 'packed'
    seed               int, or None: the ``seed`` argument of
                       create_updater_from_config (the trainer derives it from
                       the run's seed; see ``flatsparse.rng``)

The mask keys (``scope``, ``distribution``, ``overrides``, ``min_kept``,
``global_normalization``) are SAFE's too (``flatsparse.sparsity.spec``); the
old names ``dist_type``, ``sparsity_type`` and ``structure`` are errors naming
the new key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flatsparse.sparsity import algorithms
from flatsparse.sparsity import schedules
from flatsparse.sparsity import spec
from flatsparse.sparsity.updater import SparseUpdater

__all__ = ["ALGORITHMS", "register_algorithm", "create_updater_from_config",
           "SCHEDULES", "MASK_KEYS", "CONFIG_KEYS"]

ALGORITHMS: dict[str, Callable[..., SparseUpdater]] = {
    "no_prune": algorithms.no_pruning,
    "magnitude": algorithms.magnitude_pruning,
    "random": algorithms.random_pruning,
    "saliency": algorithms.saliency_pruning,
    "global_magnitude": algorithms.global_magnitude_pruning,
    "global_saliency": algorithms.global_saliency_pruning,
    "magnitude_ste": algorithms.magnitude_ste,
    "random_ste": algorithms.random_ste,
    "static_sparse": algorithms.static_sparse,
    "set": algorithms.set_sparse,
    "rigl": algorithms.rigl,
    "acdc": algorithms.acdc,
}

SCHEDULES = ("no_update", "one_shot", "periodic", "polynomial")
_SCHEDULE_KEYS = ("update_freq", "update_start_step", "update_end_step",
                  "initial_sparsity")
_SCHEDULE_USES = {"no_update": (), "one_shot": ("update_start_step",),
                  "periodic": _SCHEDULE_KEYS[:3], "polynomial": _SCHEDULE_KEYS}
# The mask specification's keys (spec.SPEC_KEYS) but importance, which the
# algorithm's name sets.
MASK_KEYS = tuple(k for k in spec.SPEC_KEYS if k != "importance")
_PASSED = ("sparsity", "mask_storage", "seed", "drop_fraction",
           "drop_fraction_end_step", "warmup_steps", "sparse_steps",
           "dense_steps", "final_sparse_step")
# Every key create_updater_from_config accepts besides ``algorithm``.
CONFIG_KEYS = ("schedule", *_SCHEDULE_KEYS, *MASK_KEYS, *_PASSED)


def register_algorithm(name: str, factory: Callable[..., SparseUpdater],
                       *, overwrite: bool = False) -> None:
  """Adds ``factory(**kwargs) -> SparseUpdater`` under ``name``."""
  if name in ALGORITHMS and not overwrite:
    raise ValueError(f"Algorithm {name!r} is already registered; pass "
                     "overwrite=True to replace it.")
  ALGORITHMS[name] = factory


def _schedule(kind: str, cfg: Mapping[str, Any]) -> schedules.Schedule:
  used = _SCHEDULE_USES.get(kind, _SCHEDULE_KEYS)
  # None reads as unset (config_schema completes configs with None).
  args = {k: cfg[k] for k in used if cfg.get(k) is not None}
  # A key the schedule does not read would be dropped silently.
  unused = [k for k in _SCHEDULE_KEYS if cfg.get(k) is not None
            and k not in used]
  if unused:
    uses = ", ".join(_SCHEDULE_USES[kind]) or "none"
    raise ValueError(
        f"Schedule {kind!r} does not use "
        f"{', '.join(f'{k}={cfg[k]!r}' for k in unused)}; the keys it uses: "
        f"{uses}. Remove them (or set them to None), or use schedule="
        "'polynomial' for a ramp from initial_sparsity.")
  if kind == "no_update":
    return schedules.NoUpdate()
  if kind == "one_shot":
    return schedules.OneShot(args.get("update_start_step", 0))
  if kind == "periodic":
    return schedules.Periodic(**args)
  if kind == "polynomial":
    return schedules.Polynomial(**args)
  raise ValueError(
      f"Unknown schedule {kind!r}; allowed: {', '.join(SCHEDULES)}.")


def create_updater_from_config(config: Mapping[str, Any], *,
                               seed: Any = None) -> SparseUpdater:
  """Builds a sparsity updater from a ConfigDict (or any mapping).

  Args:
    config: the keys in this module's docstring.
    seed: the updater's seed (an int or a PRNG key) when ``config.seed`` is
      absent or None; ``flatsparse.train`` passes
      ``rng.transform_key(run_seed, 'sparsity')``. Both None: seed 0.
  """
  cfg = dict(config.to_dict() if hasattr(config, "to_dict") else config)
  if cfg.get("seed") is None:
    cfg.pop("seed", None)
    if seed is not None:
      cfg["seed"] = seed
  if "algorithm" not in cfg:
    raise ValueError("Sparsity config needs 'algorithm'; allowed: "
                     f"{', '.join(ALGORITHMS)}.")
  name = cfg.pop("algorithm")
  if name not in ALGORITHMS:
    raise ValueError(f"Unknown sparsity algorithm {name!r}; allowed: "
                     f"{', '.join(ALGORITHMS)}.")
  mask = spec.config_kwargs(cfg, "Sparsity config")
  allowed = set(CONFIG_KEYS)
  unknown = sorted(set(cfg) - allowed)
  if unknown:
    hint = (" The algorithm's name sets the importance (e.g. 'magnitude', "
            "'saliency', 'global_magnitude')." if "importance" in unknown
            else "")
    raise ValueError(f"Unknown sparsity config keys {unknown}; allowed: "
                     f"{sorted(allowed)}.{hint}")
  kwargs = {k: cfg[k] for k in _PASSED if k in cfg}
  kwargs.update(mask)
  if cfg.get("schedule") is not None:
    kwargs["schedule"] = _schedule(cfg["schedule"], cfg)
  elif any(cfg.get(k) is not None for k in _SCHEDULE_KEYS):
    given = [k for k in _SCHEDULE_KEYS if cfg.get(k) is not None]
    raise ValueError(f"Keys {given} need a 'schedule' (one of "
                     f"{', '.join(SCHEDULES)}).")
  return ALGORITHMS[name](**kwargs)
