"""Model and optimizer from a config: one schema for every experiment.

``config.model``: ``name`` (one of ``MODELS``) plus keyword arguments of the
model class (``num_classes`` is filled from the dataset). ``config.optimizer``:
``name`` (one of ``OPTIMIZERS``), ``learning_rate``, ``schedule``
(``constant``, ``cosine``, ``warmup_cosine``), ``warmup_steps`` and the
optimizer's own keywords (``momentum``, ``nesterov``, ``weight_decay``,
``b1``...).
``config.flatness`` (optional): ``name`` (one of ``FLATNESS``, e.g. ``sam``)
and its keywords; it goes first in the chain. ``config.sparsity`` (optional):
a ``flatsparse.sparsity`` config; the wrapper goes outermost.
Seeds: every transform with random choices gets its key from the run's seed
(``flatsparse.rng.transform_key(seed, role)``, roles ``'sparsity'``,
``'optimizer'``, ``'safe'``) unless its config sets ``seed``.
``config.safe`` (optional): a ``flatsparse.safe`` config (SAFE, SAFE+, ADMM,
IHT) wrapping the optimizer; it brings its own SAM radius ``rho``, so it
excludes ``config.flatness`` and ``config.sparsity``. Later capabilities
register their transforms with :func:`register_optimizer`.

:func:`build_method` returns a ``flatsparse.train.methods.Method``: the
transformation and what the loop needs of it (step options, finalize, active
masks); the sections it reads are the registered method parts
(``flatsparse.train.method_parts``). :func:`build_optimizer` is its ``tx``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import inspect
from typing import Any

import flax.linen as nn
import numpy as np
import optax

from flatsparse import cbm
from flatsparse import distill
from flatsparse import flatness
from flatsparse import models
from flatsparse import rng
from flatsparse import sparsity
from flatsparse import validation
from flatsparse.train import method_parts
from flatsparse.train import methods

__all__ = ["MODELS", "OPTIMIZERS", "FLATNESS", "register_model",
           "register_optimizer", "build_model", "build_learning_rate",
           "build_flatness", "build_method", "build_optimizer",
           "host_mask_schedule"]

# Re-exported: the flatness registry is the flatness method part's.
FLATNESS = method_parts.FLATNESS
build_flatness = method_parts.build_flatness

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": models.MLP,
    "lenet5": models.LeNet5,
    "resnet18": models.ResNet18,
    "resnet20": models.ResNet20,
    "resnet32": models.ResNet32,
    "resnet56": models.ResNet56,
    "resnet50": models.ResNet50,
    "vgg19": models.VGG19,
    "wide_resnet": models.WideResNet,
    "wrn28_10": models.WideResNet28x10,
    "vit": models.ViT,
    "vit_ti16": models.ViTTi16,
    "vit_s16": models.ViTS16,
    "vit_b16": models.ViTB16,
    # Transformer LMs: num_classes is the vocabulary, the rest config fields.
    "llama": models.make_llama,
    "opt": models.make_opt,
    "bert": models.make_bert,
}


def concept_bottleneck(num_classes: int, num_concepts: int,
                       backbone: Mapping[str, Any], bottleneck: str = "soft",
                       mode: str = "joint", task_hidden: Any = (),
                       concept_weight: float | None = None) -> nn.Module:
  """A :class:`flatsparse.cbm.ConceptBottleneck` whose ``g`` is the model
  ``backbone`` (a model section: ``name`` and its keywords) built with
  ``num_concepts`` outputs; its unset (None) keys take the model's
  defaults."""
  cbm.check_mode(mode, bottleneck)
  validation.check_count("num_concepts", num_concepts)
  backbone = {k: v for k, v in _as_dict(backbone).items() if v is not None}
  return cbm.ConceptBottleneck(
      build_model(backbone, num_concepts), num_classes,
      bottleneck=bottleneck, mode=mode, task_hidden=tuple(task_hidden),
      concept_weight=concept_weight)


MODELS["concept_bottleneck"] = concept_bottleneck


def distillation(num_classes: int, student: Mapping[str, Any],
                 teacher_workdir: str | None = None,
                 teacher: Mapping[str, Any] | None = None,
                 keep_ratio: float = 0.5, selection: str = "student",
                 temperature: float = 1.0, alpha: float = 0.5,
                 kind: str = "soft") -> nn.Module:
  """A :class:`flatsparse.distill.Distiller` (the ``distillation`` task's
  model): ``student`` is a model section; the teacher is the model of the
  run in ``teacher_workdir`` (its weights: the task's frozen variables), or
  the model section ``teacher`` when the caller brings the weights."""
  student = {k: v for k, v in _as_dict(student).items() if v is not None}
  if teacher_workdir is not None:
    from flatsparse.train import restore  # pylint: disable=g-import-not-at-top
    teacher_model = restore.model_of_workdir(teacher_workdir)
  elif teacher is not None:
    teacher = {k: v for k, v in _as_dict(teacher).items() if v is not None}
    teacher_model = build_model(teacher, num_classes)
  else:
    raise ValueError("model.teacher_workdir (a trained run's workdir) or "
                     "model.teacher (a model section) is required.")
  return distill.Distiller(
      build_model(student, num_classes), teacher_model,
      teacher_workdir=teacher_workdir, keep_ratio=keep_ratio,
      selection=selection, temperature=temperature, alpha=alpha, kind=kind)


MODELS["distillation"] = distillation


def ff_mlp(num_classes: int, features: Any = (500, 500),
           readout: bool = False, threshold: Any = None,
           normalize_input: bool = False, dtype: Any = None) -> nn.Module:
  """A :class:`flatsparse.models.FFMLP` (the ``forward_forward`` task's
  model) with ``num_classes`` label positions."""
  kwargs = {} if dtype is None else {"dtype": dtype}
  if threshold is not None and not isinstance(threshold, (int, float)):
    threshold = tuple(float(t) for t in threshold)
  return models.FFMLP(tuple(features), num_labels=num_classes,
                      readout=readout, threshold=threshold,
                      normalize_input=normalize_input, **kwargs)


MODELS["ff_mlp"] = ff_mlp

def sgd(learning_rate: Any, momentum: float | None = None,
        nesterov: bool = False, weight_decay: float = 0.0
        ) -> optax.GradientTransformation:
  """SGD with PyTorch-style (coupled) L2: ``g + wd * w`` before momentum."""
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.sgd(learning_rate, momentum, nesterov))


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": sgd,
    "adam": optax.adam,
    "adamw": optax.adamw,
    "sassha": flatness.sassha,
    "adahessian": flatness.adahessian,
    "sophia_h": flatness.sophia_h,
}

SCHEDULES = ("constant", "cosine", "warmup_cosine")


def _as_dict(config: Any) -> dict[str, Any]:
  return dict(config.to_dict() if hasattr(config, "to_dict") else config)


def register_model(name: str, factory: Callable[..., nn.Module], *,
                   overwrite: bool = False) -> None:
  """Makes ``config.model.name = name`` build ``factory(num_classes=...,
  **kwargs)``; its keyword names become the section's config keys."""
  validation.register(MODELS, "model", name, factory,
                      overwrite=overwrite)


def register_optimizer(name: str,
                       factory: Callable[..., optax.GradientTransformation],
                       *, overwrite: bool = False) -> None:
  """Makes ``config.optimizer.name = name`` build ``factory(lr, **kwargs)``
  (``lr`` a float or an optax schedule); its keyword names become the
  section's config keys."""
  validation.register(OPTIMIZERS, "optimizer", name, factory,
                      overwrite=overwrite)


def build_model(config: Mapping[str, Any], num_classes: int) -> nn.Module:
  """``MODELS[config.name](num_classes=..., **rest)`` with clear errors."""
  cfg = _as_dict(config)
  if "name" not in cfg:
    raise ValueError(
        f"config.model needs 'name'; allowed: {', '.join(MODELS)}.")
  name = cfg.pop("name")
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r}; allowed: {', '.join(MODELS)}.")
  # Lists from JSON or the command line: flax modules are hashed (jit's
  # static arguments), so sequences of sizes must be tuples.
  cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
  try:
    return MODELS[name](num_classes=num_classes, **cfg)
  except TypeError as e:
    raise ValueError(f"Bad arguments for model {name!r}: {e}") from e


def build_learning_rate(config: Mapping[str, Any],
                        total_steps: int) -> optax.Schedule | float:
  """Constant, cosine decay, or linear warm-up then cosine to 0."""
  lr = config["learning_rate"]
  kind = config.get("schedule", "constant")
  if kind == "constant":
    return lr
  if kind == "cosine":
    return optax.cosine_decay_schedule(lr, total_steps)
  if kind == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, config.get("warmup_steps", 0), total_steps)
  raise ValueError(f"Unknown learning-rate schedule {kind!r}; allowed: "
                   f"{', '.join(SCHEDULES)}.")


def build_method(config: Mapping[str, Any], total_steps: int,
                 sections: Mapping[str, Any] | None = None,
                 seed: Any = None) -> methods.Method:
  """The optimizer of ``config`` wrapped by every set method section.

  Args:
    config: ``config.optimizer``.
    total_steps: the run's length (learning-rate and method schedules).
    sections: ``{section: config or None}`` for the sections of
      ``methods.METHOD_PARTS`` (flatness, sparsity, safe); each set one
      wraps the method built so far, in that order.
    seed: the run's seed: each transform with random choices whose config
      leaves ``seed`` unset (or None) gets ``rng.transform_key(seed, role)``.
      With ``seed=None`` the transforms keep their own defaults (seed 0).

  Returns:
    A :class:`flatsparse.train.methods.Method`.
  """
  sections = {k: v for k, v in (sections or {}).items() if v}
  unknown = sorted(set(sections) - set(methods.METHOD_PARTS))
  if unknown:
    raise ValueError(f"Unknown method sections {unknown}; allowed: "
                     f"{', '.join(methods.METHOD_PARTS)}.")
  for name in sections:
    part = methods.METHOD_PARTS[name]
    clash = [other for other in part.excludes if other in sections]
    if clash:
      others = " and ".join(f"config.{other}" for other in part.excludes)
      raise ValueError(f"config.{name} excludes {others}: {part.reason} Set "
                       "the others to None.")
  method = methods.Method(tx=_base_optimizer(config, total_steps, seed))
  context = methods.BuildContext(
      total_steps=total_steps,
      key=lambda role: None if seed is None else rng.transform_key(seed, role))
  for name, part in methods.METHOD_PARTS.items():
    if name in sections:
      method = part.build(_as_dict(sections[name]), method, context)
  return method


def _base_optimizer(config: Mapping[str, Any], total_steps: int,
                    seed: Any) -> optax.GradientTransformation:
  """``OPTIMIZERS[config.name](learning_rate schedule, **rest)``."""
  cfg = _as_dict(config)
  for key in ("name", "learning_rate"):
    if key not in cfg:
      raise ValueError(f"config.optimizer needs {key!r} (optimizers: "
                       f"{', '.join(OPTIMIZERS)}).")
  name = cfg.pop("name")
  if name not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {name!r}; allowed: "
                     f"{', '.join(OPTIMIZERS)}.")
  lr = build_learning_rate(cfg, total_steps)
  for key in ("learning_rate", "schedule", "warmup_steps"):
    cfg.pop(key, None)
  if cfg.get("seed", None) is None:
    cfg.pop("seed", None)
    if seed is not None and _takes_seed(OPTIMIZERS[name]):
      cfg["seed"] = rng.transform_key(seed, "optimizer")
  try:
    return OPTIMIZERS[name](lr, **cfg)
  except TypeError as e:
    raise ValueError(f"Bad arguments for optimizer {name!r}: {e}") from e


def build_optimizer(config: Mapping[str, Any], total_steps: int,
                    sparsity_config: Mapping[str, Any] | None = None,
                    flatness_config: Mapping[str, Any] | None = None,
                    safe_config: Mapping[str, Any] | None = None,
                    seed: Any = None) -> optax.GradientTransformation:
  """``sparsity.wrap(chain(flatness, optimizer))`` or ``safe(optimizer)``:
  the ``tx`` of :func:`build_method` with these sections."""
  return build_method(config, total_steps, {
      "flatness": flatness_config, "sparsity": sparsity_config,
      "safe": safe_config}, seed=seed).tx


def _takes_seed(factory: Callable[..., Any]) -> bool:
  try:
    return "seed" in inspect.signature(factory).parameters
  except (TypeError, ValueError):  # builtins without a signature
    return False


def host_mask_schedule(sparsity_config: Mapping[str, Any] | None,
                       total_steps: int) -> np.ndarray | None:
  """``method_parts.mask_update_flags`` of the updater ``sparsity_config``
  builds, or None without sparsity."""
  if not sparsity_config:
    return None
  return method_parts.mask_update_flags(
      sparsity.create_updater_from_config(sparsity_config), total_steps)
