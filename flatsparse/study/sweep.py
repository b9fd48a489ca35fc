"""A study's runs: named variants of a base train config, times seeds.

A :class:`Variant` is a name (the folder of its runs), config overrides and
tags (what tables and plots group by). Sweeps are code that returns a list of
variants (e.g. ``variants(config)`` in a study's config module); a grid is
the :func:`product` of axes. :func:`plan` turns variants and seeds into
:class:`Run` objects, each with its own train config.

Overrides are ``{key: value}`` applied in order: a plain key (``'sparsity'``)
replaces that top-level key of the train config, a dotted key
(``'dataset.label_noise'``) sets one key inside a section::

    Variant("safe/sparsity_0.9",
            {"safe": {"name": "safe", "lam": 0.3}, "safe.sparsity": 0.9},
            tags={"method": "safe", "sparsity": 0.9})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import copy
import dataclasses
import json
import os
from typing import Any

import ml_collections

from flatsparse.train import loop

__all__ = ["Variant", "Run", "product", "plan", "apply_overrides", "plain",
           "PRUNING_SECTIONS", "sparsity_axis", "label_noise_axis"]


@dataclasses.dataclass(frozen=True)
class Variant:
  """One configuration of a study, run once per seed.

  Attributes:
    name: the folder of its runs under the study's workdir (``'/'`` nests;
      ``''`` only as an axis of :func:`product`).
    overrides: ``{key: value}`` applied to the base config in order (module
      docstring).
    tags: what identifies the variant in tables and plots beyond its name,
      e.g. ``{'method': 'gmp', 'sparsity': 0.9}``.
  """

  name: str
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  tags: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of a study: a variant at a seed.

  Attributes:
    variant: its :class:`Variant`.
    seed: the train config's ``seed``.
    config: the train config (a ``ConfigDict``).
  """

  variant: Variant
  seed: int
  config: ml_collections.ConfigDict

  @property
  def path(self) -> str:
    """``<variant name>/seed_<seed>``, relative to the study's workdir."""
    return os.path.join(self.variant.name, f"seed_{self.seed}")

  @property
  def tags(self) -> dict[str, Any]:
    """``variant`` (the variant's name), the variant's tags and ``seed``."""
    return {"variant": self.variant.name, **self.variant.tags,
            "seed": self.seed}


def plain(value: Any) -> Any:
  """``value`` as plain JSON types (ConfigDicts, tuples and numpy scalars
  unpacked): what a run's cached record stores and compares."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
  if hasattr(value, "item"):  # numpy scalars
    return value.item()
  if hasattr(value, "to_dict"):
    return value.to_dict()
  raise TypeError(f"Cannot store {value!r} (a {type(value).__name__}) in a "
                  "study config; use numbers, strings, lists and dicts.")


def product(*axes: Sequence[Variant]) -> list[Variant]:
  """Every combination of one variant per axis, the first axis outermost.

  Names are joined with ``'/'`` (empty names left out), overrides applied
  in axis order (a later axis wins) and tags merged.

  Args:
    *axes: sequences of variants, e.g. label-noise levels, then methods.

  Returns:
    The combined variants.
  """
  out = [Variant("")]
  for axis in axes:
    out = [Variant("/".join(n for n in (a.name, b.name) if n),
                   {**a.overrides, **b.overrides}, {**a.tags, **b.tags})
           for a in out for b in axis]
  return out


def apply_overrides(base: Any, overrides: Mapping[str, Any]
                    ) -> dict[str, Any]:
  """``base`` (a train config) as a plain dict with ``overrides`` applied.

  Args:
    base: a train config (ConfigDict or mapping); not modified.
    overrides: ``{key: value}``; a plain key replaces a top-level key, a
      dotted key sets a key inside a section (module docstring).

  Returns:
    The new config as plain JSON types.

  Raises:
    ValueError: if a dotted key goes through a value that is not a section
      (e.g. ``'sparsity.sparsity'`` where ``sparsity`` is None).
  """
  config = plain(base)
  for key, value in overrides.items():
    *parents, last = key.split(".")
    node = config
    for i, part in enumerate(parents):
      if not isinstance(node.get(part), dict):
        where = ".".join(parents[:i + 1])
        raise ValueError(
            f"Cannot set {key!r}: {where} is {node.get(part)!r} in the "
            f"config, not a section; override {where!r} as a whole first.")
      node = node[part]
    node[last] = plain(value)
  return config


def plan(base: Any, variants: Sequence[Variant], seeds: Sequence[int]
         ) -> list[Run]:
  """Every run of a study: each variant (in order) at each seed.

  Args:
    base: the train config every variant starts from.
    variants: the study's variants; names must be distinct and non-empty.
    seeds: the seeds of every variant (the train config's ``seed``).

  Returns:
    The runs, variant-major (all seeds of the first variant first).

  Raises:
    ValueError: naming the variant, on an empty or repeated name, an
      override of a top-level key the train config does not have, or no
      seeds.
  """
  if not variants:
    raise ValueError("A study needs at least one variant, got none.")
  if not seeds:
    raise ValueError(f"A study needs at least one seed, got {seeds!r}.")
  allowed = set(loop.REQUIRED_KEYS) | set(loop.OPTIONAL_KEYS)
  seen = set()
  for variant in variants:
    if not variant.name:
      raise ValueError(f"Every variant needs a non-empty name (its runs' "
                       f"folder); got {variant!r}.")
    if variant.name in seen:
      raise ValueError(f"Variant name {variant.name!r} appears twice; each "
                       "variant needs its own (its runs' folder).")
    seen.add(variant.name)
    bad = sorted({k.split(".")[0] for k in variant.overrides} - allowed)
    if bad:
      raise ValueError(f"Variant {variant.name!r} overrides unknown "
                       f"top-level keys {bad}; allowed: {sorted(allowed)}.")
  runs = []
  for variant in variants:
    config = apply_overrides(base, variant.overrides)
    for seed in seeds:
      config["seed"] = int(seed)
      runs.append(Run(variant, int(seed),
                      ml_collections.ConfigDict(copy.deepcopy(config))))
  return runs


PRUNING_SECTIONS = ("sparsity", "safe")


def sparsity_axis(methods: Mapping[str, Any], sparsities: Sequence[float],
                  order: Sequence[str] | None = None) -> list[Variant]:
  """Training methods at target sparsities: the usual axis of a pruning
  study.

  A method prunes if its overrides have a non-empty section of
  :data:`PRUNING_SECTIONS` (``sparsity``: a sparsity wrapper; ``safe``:
  SAFE/ADMM/IHT); it then runs once per target, set as that section's
  ``sparsity`` (name ``<method>/sparsity_<s>``). A method that does not
  prune (dense training) runs once (name ``<method>``, sparsity None).

  Args:
    methods: ``{name: top-level overrides}`` (a ConfigDict or mapping).
    sparsities: the target sparsities.
    order: the method names in the order they run and appear in tables;
      default sorted.

  Returns:
    Variants tagged ``method`` and ``sparsity``.

  Raises:
    ValueError: if ``order`` does not list every method once, or a method
      prunes and ``sparsities`` is empty.
  """
  names = sorted(methods.keys())
  if order is not None and sorted(order) != names:
    raise ValueError(f"order must list every method once; got {list(order)} "
                     f"for methods {names}.")
  out = []
  for name in order or names:
    overrides = plain(methods[name])
    section = next((k for k in PRUNING_SECTIONS if overrides.get(k)), None)
    if section is None:
      out.append(Variant(name, overrides, {"method": name, "sparsity": None}))
      continue
    if not sparsities:
      raise ValueError(f"Method {name!r} prunes (its {section!r} section) "
                       "but the list of sparsities is empty.")
    for s in map(float, sparsities):
      out.append(Variant(f"{name}/sparsity_{s:g}",
                         {**overrides, f"{section}.sparsity": s},
                         {"method": name, "sparsity": s}))
  return out


def label_noise_axis(levels: Sequence[float], kind: str = "symmetric",
                     seed: int = 0) -> list[Variant]:
  """Label-noise levels of the training split: one variant per level ``p``
  (name ``noise_<p>``, tag ``noise``) setting the dataset's
  ``label_noise``, ``noise_kind`` and ``noise_seed`` (the same noisy labels
  for every method and seed); no levels: one unnamed variant, noise None
  (the dataset as given)."""
  if not levels:
    return [Variant("", {}, {"noise": None})]
  return [Variant(f"noise_{p:g}", {"dataset.label_noise": p,
                                   "dataset.noise_kind": kind,
                                   "dataset.noise_seed": seed},
                  {"noise": p}) for p in map(float, levels)]
