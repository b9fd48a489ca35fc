"""SAFE, SAFE+, ADMM and IHT from a config (``config.safe`` of the trainer).

Keys (all optional except ``name``)::

    name               'safe' | 'safe_plus' | 'admm' | 'iht'
    sparsity           target in [0, 1) (None with an N:M scope)
    scope              'layer' | 'global' | 'row' | 'N:M' (e.g. '2:4')
    distribution       'uniform' | 'erk'   (layer and row scopes)
    importance         'magnitude' | 'activation' | 'gradient' | 'hessian'
                       (default: 'activation' for safe_plus, else 'magnitude')
    overrides          {leaf path: sparsity}
    min_kept           fewest entries a leaf (a row) keeps (default 1; 0
                       allows empty leaves)
    global_normalization  'none' | 'l2'   (global scope: rank raw scores, or
                       each leaf's divided by its L2 norm)
    rounding           'round' | 'floor'   (kept count n - round(s n), or
                       n - floor(s n) as the reference SAFE code)
    lam, rho, dual_period, penalty_schedule, importance_ema
    penalty_after_total  'hold' | 'continue'   (safe, safe_plus, admm: the
                       penalty after total_steps; 'continue' as the
                       reference SAFE code)
    seed               int, or None: the ``seed`` argument of create_from_config
                       (the trainer derives it from the run's seed)
    period, start_step (iht)
    bn_recalibration_examples   read by the training loop, not here

The mask keys (``scope``, ``distribution``, ``importance``, ``overrides``,
``min_kept``, ``global_normalization``) are the sparsity configs' too
(``flatsparse.sparsity.spec``); their old sparsity names (``dist_type``,
``sparsity_type``, ``structure``, ``score``) are errors naming the new key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optax

from flatsparse import validation
from flatsparse.safe.iht import iht
from flatsparse.safe.projection import Projection
from flatsparse.safe.safe import admm
from flatsparse.safe.safe import safe
from flatsparse.sparsity import spec

__all__ = ["METHODS", "PROJECTION_KEYS", "LOOP_KEYS", "METHOD_KEYS",
           "CONFIG_KEYS", "projection_from_config", "create_from_config"]

METHODS = ("safe", "safe_plus", "admm", "iht")
PROJECTION_KEYS = ("sparsity", *spec.SPEC_KEYS, "rounding")
LOOP_KEYS = ("bn_recalibration_examples",)
# The keywords of each method's factory (beyond base, projection and
# total_steps).
METHOD_KEYS = {
    "safe": ("lam", "rho", "dual_period", "penalty_schedule",
             "penalty_after_total", "importance_ema", "seed"),
    "safe_plus": ("lam", "rho", "dual_period", "penalty_schedule",
                  "penalty_after_total", "importance_ema", "seed"),
    "admm": ("lam", "dual_period", "penalty_schedule", "penalty_after_total",
             "importance_ema", "seed"),
    "iht": ("rho", "period", "start_step", "importance_ema", "seed"),
}
# Every key of config.safe but name (the trainer's config schema).
CONFIG_KEYS = tuple(dict.fromkeys(
    (*PROJECTION_KEYS, *LOOP_KEYS,
     *(k for keys in METHOD_KEYS.values() for k in keys))))


def _as_dict(config: Any) -> dict[str, Any]:
  return dict(config.to_dict() if hasattr(config, "to_dict") else config)


def _name(cfg: Mapping[str, Any]) -> str:
  spec.check_renamed(cfg, "SAFE config")
  name = cfg.get("name")
  validation.check_choice("SAFE-family method", name, METHODS)
  return name


def projection_from_config(config: Mapping[str, Any]) -> Projection:
  """The :class:`Projection` the config describes."""
  cfg = _as_dict(config)
  name = _name(cfg)
  kwargs = {k: cfg[k] for k in ("sparsity", "rounding") if k in cfg}
  kwargs.update(spec.config_kwargs(cfg, "SAFE config"))
  if name == "safe_plus":
    kwargs.setdefault("importance", "activation")
  return Projection(**kwargs)


def create_from_config(config: Mapping[str, Any],
                       base: optax.GradientTransformation,
                       total_steps: int, *, seed: Any = None
                       ) -> optax.GradientTransformationExtraArgs:
  """The transformation wrapping ``base``; penalty ramps over total_steps.

  ``seed`` (an int or a PRNG key) is used when ``config.seed`` is absent or
  None; ``flatsparse.train`` passes ``rng.transform_key(run_seed, 'safe')``.
  """
  cfg = _as_dict(config)
  name = _name(cfg)
  if cfg.get("seed") is None:
    cfg.pop("seed", None)
    if seed is not None and "seed" in METHOD_KEYS[name]:
      cfg["seed"] = seed
  rest = {k: v for k, v in cfg.items()
          if k not in ("name", *PROJECTION_KEYS, *LOOP_KEYS)}
  unknown = sorted(set(rest) - set(METHOD_KEYS[name]))
  if unknown:
    allowed = sorted((*METHOD_KEYS[name], *PROJECTION_KEYS, *LOOP_KEYS))
    raise ValueError(f"Unknown keys {unknown} for {name!r}; allowed: "
                     f"{allowed}.")
  projection = projection_from_config(cfg)
  if name == "iht":
    return iht(base, projection, **rest)
  if name == "admm":
    return admm(base, projection, total_steps=total_steps, **rest)
  return safe(base, projection, total_steps=total_steps, **rest)
