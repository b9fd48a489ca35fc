"""The trainer's config schema: every key, its default, completion and typos.

A train config (``configs/digits_mlp.py``) has the top-level keys of
``loop.REQUIRED_KEYS`` and ``loop.OPTIONAL_KEYS``; six of them are sections
(sub-configs) with keys of their own:

    dataset    name, train_split, eval_split, augment, normalize, data_dir,
               label_noise, noise_kind, noise_seed, noise_pairs (+ options of
               the named dataset)
    model      name + the fields of the named model class (``MODELS``)
    optimizer  name, learning_rate, schedule, warmup_steps + the keywords of
               the named optimizer (``OPTIMIZERS``) + seed
    sparsity   the keys of ``flatsparse.sparsity.config`` (algorithm, ...)
    flatness   name + the keywords of the named transform (``FLATNESS``)
    safe       the keys of ``flatsparse.safe.config`` (name, ...)

:func:`complete` adds every key the schema knows that a config lacks, with its
default, so that each can be overridden on the command line
(``--config.sparsity.seed=1``); every ``get_config`` in ``configs/`` returns
``complete(config)``. A default of None means *unset*: the builder's own
default (the named optimizer's, model's or algorithm's), and for ``seed``
one derived from the run's seed. Unset keys are typed ``object`` so the
command line can give them any literal
(``--config.sparsity.distribution=erk``,
``--config.sparsity="{'algorithm': 'magnitude', 'sparsity': 0.9}"`` on a
dense config). ``loop.validate_config`` drops unset keys before building, so
a completed config trains exactly as the config it completes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
import dataclasses
import difflib
import inspect
from typing import Any

__all__ = ["SECTIONS", "REQUIRED_SECTION_KEYS", "section_schema", "complete",
           "drop_unset", "minimal", "closest", "unknown_keys_message"]

SECTIONS = ("dataset", "model", "optimizer", "sparsity", "flatness", "safe")
# Keys a section must set itself (no default).
REQUIRED_SECTION_KEYS = {
    "dataset": ("name",), "model": ("name",),
    "optimizer": ("name", "learning_rate"), "sparsity": ("algorithm",),
    "flatness": ("name",), "safe": ("name",),
}
_DATASET = {
    "train_split": "train", "eval_split": "test", "augment": False,
    "normalize": None, "data_dir": None, "label_noise": None,
    "noise_kind": "symmetric", "noise_seed": 0, "noise_pairs": None,
}
_OPTIMIZER = {"schedule": "constant", "warmup_steps": 0, "seed": None}
# Not model keywords: the flax Module plumbing and what the dataset fills.
_MODEL_SKIP = ("parent", "name", "num_classes")
# Study and sweep configs (experiments/study.py, sparsity_sweep.py,
# overparam.py) hold a train config and {name: top-level replacements}.
_META_BASE = "base"
_META_OVERRIDES = ("variants", "methods")


def _keywords(factory: Callable[..., Any], skip: Iterable[str]
              ) -> list[str] | None:
  """Keyword names of a model class or factory; None if it takes **kwargs."""
  skip = set(skip)
  if dataclasses.is_dataclass(factory):
    return [f.name for f in dataclasses.fields(factory)
            if f.init and f.name not in skip]
  try:
    params = inspect.signature(factory).parameters.values()
  except (TypeError, ValueError):
    return None
  if any(p.kind == p.VAR_KEYWORD for p in params):
    return None
  return [p.name for p in params if p.name not in skip
          and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


# pylint: disable=g-import-not-at-top
def _sparsity_keys() -> list[str]:
  """The keys create_updater_from_config accepts (its module docstring)."""
  from flatsparse.sparsity import config as sc
  return list(sc.CONFIG_KEYS)


def _safe_keys() -> list[str]:
  """The keys create_from_config accepts for some method (its docstring)."""
  from flatsparse.safe import config as sc
  return list(sc.CONFIG_KEYS)


def _renamed_keys() -> dict[str, str]:
  """Old mask keys -> their new names (``flatsparse.sparsity.spec``)."""
  from flatsparse.sparsity import spec
  return dict(spec.RENAMED_KEYS)
# pylint: enable=g-import-not-at-top


def section_schema(section: str, values: Mapping[str, Any] | None = None
                   ) -> dict[str, Any] | None:
  """``{key: default}`` of ``config.<section>`` beyond its required keys.

  Args:
    section: one of ``SECTIONS``.
    values: the section as configured; model, optimizer and flatness keys
      depend on its ``name``.

  Returns:
    The keys with their defaults (None: unset, the builder's default), or
    None when the section is open (its named factory takes ``**kwargs``, or
    the name is not registered): then no key is unknown.
  """
  from flatsparse.train import builders  # pylint: disable=g-import-not-at-top
  name = (values or {}).get("name")
  if section == "dataset":
    return dict(_DATASET)
  if section == "sparsity":
    return {k: None for k in _sparsity_keys() if k != "algorithm"}
  if section == "safe":
    # Projection's default; None is a value here (an N:M scope fixes it).
    return {**{k: None for k in _safe_keys()}, "sparsity": 0.9}
  registry, skip, extra = {
      "model": (builders.MODELS, _MODEL_SKIP, {}),
      "optimizer": (builders.OPTIMIZERS, ("learning_rate",), _OPTIMIZER),
      "flatness": (builders.FLATNESS, (), {}),
  }[section]
  if name not in registry:
    return None
  keys = _keywords(registry[name], skip)
  if keys is None:
    return None
  return {**{k: None for k in keys}, **extra}


def _unset() -> Any:
  from ml_collections import config_dict  # pylint: disable=g-import-not-at-top
  # A fresh reference each time: a shared one would link two fields.
  return config_dict.placeholder(object)


def _is_config_dict(value: Any) -> bool:
  # Imported here: `import flatsparse` must not need ml_collections.
  import ml_collections  # pylint: disable=g-import-not-at-top
  return isinstance(value, ml_collections.ConfigDict)


def _fill(config: Any, defaults: Mapping[str, Any]) -> None:
  for key, default in defaults.items():
    if key not in config:
      config[key] = _unset() if default is None else default
    elif config[key] is None and config.get_type(key) is not object:
      config[key] = _unset()  # a plain None field cannot be overridden


def _complete_section(section: str, values: Any) -> None:
  schema = section_schema(section, values)
  if schema:
    _fill(values, schema)
  if section == "model":  # nested model sections (a CBM's backbone)
    for key in list(values.keys()):
      if _is_config_dict(values[key]) and "name" in values[key]:
        _complete_section("model", values[key])


def _complete_train(config: Any) -> None:
  from flatsparse.train import loop  # pylint: disable=g-import-not-at-top
  _fill(config, loop.OPTIONAL_KEYS)
  for section in SECTIONS:
    value = config.get(section)
    if _is_config_dict(value):
      _complete_section(section, value)


def complete(config: Any) -> Any:
  """Adds every schema key ``config`` lacks, with its default; in place.

  A train config gets the top-level optional keys and every section's keys
  (a section that is None stays None, overridable as a whole). A study or
  sweep config (one with ``base``) gets its ``base`` completed, and the
  sections inside its ``variants``/``methods`` replacements (their other
  top-level keys stay partial: they replace the base's). Idempotent.

  Args:
    config: a ConfigDict, unlocked.

  Returns:
    ``config`` itself, for ``return complete(c)``.
  """
  if _META_BASE in config:
    if _is_config_dict(config[_META_BASE]):
      _complete_train(config[_META_BASE])
    for group in _META_OVERRIDES:
      overrides = config.get(group)
      if not _is_config_dict(overrides):
        continue
      for replacement in overrides.values():
        if not _is_config_dict(replacement):
          continue
        for section in SECTIONS:
          value = replacement.get(section)
          if _is_config_dict(value):
            _complete_section(section, value)
    return config
  _complete_train(config)
  return config


def _as_dict(value: Any) -> dict[str, Any]:
  return dict(value.to_dict() if hasattr(value, "to_dict") else value)


def drop_unset(section: str, values: Mapping[str, Any] | None
               ) -> dict[str, Any] | None:
  """``config.<section>`` as a dict without its unset keys: what the builders
  get. Unset: None where the schema's default is None, or, in a closed
  section, None on a key of another name (``--config.optimizer.name=sgd`` on
  an adamw config leaves adamw's unset ``b1``). None stays None."""
  if values is None:
    return None
  cfg = _as_dict(values)
  schema = section_schema(section, cfg)
  closed = schema is not None and section != "dataset"
  schema = schema or {}

  def unset(key: str) -> bool:
    return schema.get(key, None) is None and (key in schema or closed)

  return {k: v for k, v in cfg.items() if not (v is None and unset(k))}


def minimal(config: Mapping[str, Any]) -> dict[str, Any]:
  """A train config without the keys at their schema defaults.

  Two configs that train the same way have the same minimal form, whether
  or not they were completed (e.g. a ``config.json`` written before a key
  joined the schema): compare these to detect a changed config.
  """
  from flatsparse.train import loop  # pylint: disable=g-import-not-at-top
  out = {}
  renamed = _renamed_keys()
  for key, value in _as_dict(config).items():
    if key in SECTIONS and value is not None:
      schema = section_schema(key, value) or {}
      # An unset key under its old name (a config.json written before the
      # rename) is as unset as under the new one.
      value = {k: v for k, v in _as_dict(value).items()
               if not (k in schema and _same(v, schema[k]))
               and not (k in renamed and v is None)}
    elif key in loop.OPTIONAL_KEYS and _same(value, loop.OPTIONAL_KEYS[key]):
      continue
    out[key] = value
  return out


def _same(a: Any, b: Any) -> bool:
  return type(a) is type(b) and a == b  # 0 == False, but not the same


def closest(key: str, allowed: Iterable[str]) -> str | None:
  """The allowed key most like ``key`` (difflib ratio), or None."""
  allowed = list(allowed)
  match = difflib.get_close_matches(key, allowed, n=1, cutoff=0.0)
  if not match:
    return None
  ratio = difflib.SequenceMatcher(None, key, match[0]).ratio()
  return match[0] if ratio > 0 else None


def unknown_keys_message(unknown: Iterable[str], allowed: Iterable[str],
                         where: str = "config") -> str:
  """One line naming the ``unknown`` keys (dotted paths), the keys
  ``allowed`` in ``where`` and the closest to the first unknown one (its new
  name if it is a renamed mask key)."""
  unknown, allowed = list(unknown), sorted(allowed)
  key = unknown[0].rsplit(".", 1)[-1] if unknown else ""
  renamed = _renamed_keys().get(key)
  guess = closest(key, allowed) if unknown else None
  hint = f" Did you mean {guess!r}?" if guess else ""
  if renamed in allowed:
    hint = f" {key!r} is now {renamed!r}."
  return (f"Unknown config keys {unknown}; allowed in {where}: "
          f"{', '.join(allowed) or '(none)'}.{hint}")
