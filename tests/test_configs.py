"""Every config file and variant: every schema key present and overridable.

The overrides go through ml_collections' config_flags, as on the command
line (``--config=configs/x.py:variant --config.sparsity.seed=7``); the typo
test runs ``experiments/train.py`` itself.
"""

import glob
import importlib
import os
import re
import subprocess
import sys

from absl import flags
import ml_collections
from ml_collections import config_flags
import pytest

from flatsparse.safe import config as safe_config
from flatsparse.sparsity import config as sparsity_config
from flatsparse.train import config_schema
from flatsparse.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "configs",
                                                             "*.py"))
    if not p.endswith("__init__.py"))
CASES = [(path, variant) for path in CONFIG_FILES for variant in
         importlib.import_module(
             "configs." + os.path.basename(path)[:-3]).VARIANTS]


def _module(path):
  return importlib.import_module("configs." + os.path.basename(path)[:-3])


def _own_keys(config):
  """A study config that holds no train config (one-shot pruning, ZIP):
  all its keys are its own."""
  return "base" not in config and "optimizer" not in config


def _train_configs(config):
  """``(prefix, train config)`` of a train config or a study/sweep's base
  (none for a config whose keys are all its own)."""
  if _own_keys(config):
    return []
  return [("base.", config.base)] if "base" in config else [("", config)]


def _leaf_paths(config, prefix=""):
  """``{dotted path: value}`` of every leaf of a config of its own keys
  (string tuples such as the method list aside)."""
  paths = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      paths.update(_leaf_paths(value, f"{prefix}{key}."))
    elif not (isinstance(value, tuple) and value
              and isinstance(value[0], str)):
      paths[prefix + key] = value
  return paths


def _schema_paths(config):
  """``{dotted path: value}`` of every key the schema knows in ``config``,
  plus ``{path: None}`` for the sections that are None."""
  paths = _leaf_paths(config) if _own_keys(config) else {}
  for prefix, train in _train_configs(config):
    for key in (*loop.REQUIRED_KEYS, *loop.OPTIONAL_KEYS):
      assert key in train, f"{prefix}{key} missing"
      if key not in config_schema.SECTIONS:
        paths[prefix + key] = train[key]
    for section in config_schema.SECTIONS:
      paths.update(_section_paths(f"{prefix}{section}", section,
                                  train[section]))
  if "base" in config:  # sections inside the variants' replacements
    for group in ("variants", "methods"):
      for name, replacement in (config.get(group) or {}).items():
        for section in config_schema.SECTIONS:
          if replacement.get(section) is not None:
            paths.update(_section_paths(f"{group}.{name}.{section}", section,
                                        replacement[section]))
  return paths


def _section_paths(path, section, values):
  if values is None:
    return {path: None}
  schema = config_schema.section_schema(section, values)
  keys = [*config_schema.REQUIRED_SECTION_KEYS[section], *(schema or {})]
  missing = [k for k in keys if k not in values]
  assert not missing, f"{path} lacks {missing}"
  paths = {}
  for k in keys:
    if isinstance(values[k], ml_collections.ConfigDict):  # nested model
      nested = _section_paths(f"{path}.{k}", section, values[k])
      paths.update({p: v for p, v in nested.items()
                    if not p.endswith(f"{k}.name")})
    else:
      paths[f"{path}.{k}"] = values[k]
  return paths


def _override(value):
  """A command-line string for a new value, and the value it parses to."""
  if value is None:  # unset keys: any literal
    return "7", 7
  if isinstance(value, bool):
    return str(not value).lower(), not value
  if isinstance(value, int):
    return str(value + 1), value + 1
  if isinstance(value, float):
    return repr(value / 2 + 0.25), value / 2 + 0.25
  if isinstance(value, str):
    return value + "_x", value + "_x"
  if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
    new = tuple(v + 1 for v in value)
    return repr(new), new
  raise AssertionError(f"no override for {value!r}")


def _parse(path, variant, overrides):
  source = f"{path}:{variant}" if variant else path
  argv = ["prog", f"--config={source}", *overrides]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values,
                                  lock_config=True, sys_argv=argv)
  values(argv)
  return values.config


def _get(config, path):
  for part in path.split("."):
    config = config[part]
  return config


@pytest.mark.parametrize("path,variant", CASES,
                         ids=[f"{p}:{v}" for p, v in CASES])
def test_every_schema_key_present_and_overridable(path, variant):
  config = _parse(path, variant, [])
  paths = _schema_paths(config)
  assert any(p.endswith("sparsity.seed") for p in paths) or all(
      t.sparsity is None for _, t in _train_configs(config))
  overrides, expected = [], {}
  for key, value in paths.items():
    if key.endswith(("base.dataset.name", "model.name")) or key.endswith(
        ".normalize") and isinstance(value, tuple):
      continue  # (a nested tuple; names are strings like the rest)
    if value is None and key.split(".")[-1] in config_schema.SECTIONS:
      text = "{'algorithm': 'x', 'name': 'x'}"
      overrides.append(f"--config.{key}={text}")
      expected[key] = {"algorithm": "x", "name": "x"}
      continue
    text, new = _override(value)
    overrides.append(f"--config.{key}={text}")
    expected[key] = new
  config = _parse(path, variant, overrides)
  for key, new in expected.items():
    got = _get(config, key)
    if isinstance(new, dict):
      got = dict(got)
    assert got == new, (key, got, new)


@pytest.mark.parametrize("path", CONFIG_FILES)
def test_unknown_variant_names_every_variant(path):
  module = _module(path)
  with pytest.raises(ValueError) as e:
    module.get_config("no_such_variant")
  for variant in module.VARIANTS:
    assert repr(variant) in str(e.value) or variant in str(e.value)


def _documented_keys(module):
  """The keys of a config module's docstring table (4-space indented)."""
  keys = set()
  for line in module.__doc__.splitlines():
    match = re.match(r"^    ([a-z_][a-z_0-9, ]*?)(\s{2,}|\s\(|$)", line)
    if match:
      keys.update(k.strip() for k in match.group(1).split(","))
  return keys


def test_schema_covers_the_documented_sparsity_and_safe_keys():
  sparsity = _documented_keys(sparsity_config)
  assert {"algorithm", "seed", "distribution", "update_freq"} <= sparsity
  assert sparsity - {"algorithm"} == set(
      config_schema.section_schema("sparsity"))
  safe = _documented_keys(safe_config)
  assert {"name", "seed", "lam", "bn_recalibration_examples"} <= safe
  assert safe - {"name"} == set(config_schema.section_schema("safe"))


def test_optimizer_flatness_model_keys_follow_the_named_factory():
  sgd = config_schema.section_schema("optimizer", {"name": "sgd"})
  assert {"momentum", "nesterov", "weight_decay", "schedule", "warmup_steps",
          "seed"} == set(sgd)
  assert "k" in config_schema.section_schema("optimizer", {"name": "sassha"})
  sam = config_schema.section_schema("flatness", {"name": "sam"})
  assert {"rho", "adaptive", "sub_batches"} <= set(sam) and "seed" not in sam
  resnet = config_schema.section_schema("model", {"name": "resnet20"})
  assert "width_multiplier" in resnet and "num_classes" not in resnet


def _small_config():
  return {
      "dataset": {"name": "digits"},
      "model": {"name": "mlp", "hidden": (8,)},
      "optimizer": {"name": "adamw", "learning_rate": 1e-3},
      "sparsity": {"algorithm": "magnitude", "sparsity": 0.5,
                   "schedule": "one_shot", "update_start_step": 0},
      "steps": 2, "batch_size": 4,
  }


def test_completed_config_validates_to_the_same_build_inputs():
  raw = _small_config()
  completed = config_schema.complete(ml_collections.ConfigDict(raw))
  assert completed.sparsity.seed is None and "b1" in completed.optimizer
  cfg = loop.validate_config(completed)
  assert cfg["sparsity"] == raw["sparsity"]  # every unset key dropped
  assert cfg["model"] == raw["model"]
  assert config_schema.minimal(cfg) == config_schema.minimal(
      loop.validate_config(raw))
  # Another optimizer by name: the old one's unset keywords are dropped.
  completed.optimizer.name = "sgd"
  assert loop.validate_config(completed)["optimizer"] == {
      "name": "sgd", "learning_rate": 1e-3, "schedule": "constant",
      "warmup_steps": 0}
  # A key with a real default keeps an explicit None (N:M SAFE scopes).
  safe = config_schema.drop_unset("safe", {"name": "safe", "sparsity": None,
                                           "scope": "2:4", "lam": None})
  assert safe == {"name": "safe", "sparsity": None, "scope": "2:4"}


def test_minimal_ignores_keys_at_their_defaults():
  raw = _small_config()
  completed = config_schema.complete(ml_collections.ConfigDict(raw))
  assert config_schema.minimal(completed.to_dict()) == config_schema.minimal(
      {**raw, "log_every": 100, "host_mask_schedule": None})
  changed = completed.to_dict()
  changed["sparsity"]["seed"] = 3
  assert config_schema.minimal(changed) != config_schema.minimal(raw)
  # A config.json from before the mask keys' rename: unset old keys do not
  # count, set ones do.
  old = completed.to_dict()
  old["sparsity"] = {**old["sparsity"], "dist_type": None,
                     "sparsity_type": None}
  assert config_schema.minimal(old) == config_schema.minimal(raw)
  old["sparsity"]["dist_type"] = "erk"
  assert config_schema.minimal(old) != config_schema.minimal(raw)


@pytest.mark.parametrize("key,section,guess", [
    ("stepz", None, "steps"), ("lrr", "optimizer", "learning_rate"),
    ("dist_typ", "sparsity", "distribution")])
def test_validate_config_names_the_closest_key(key, section, guess):
  config = _small_config()
  (config[section] if section else config)[key] = 1
  with pytest.raises(ValueError) as e:
    loop.validate_config(config)
  message = str(e.value)
  assert f"Did you mean {guess!r}" in message and key in message
  assert "\n" not in message


def _train_cli(*args, timeout=120):
  return subprocess.run(
      [sys.executable, "-m", "experiments.train",
       "--config=configs/digits_mlp.py:tiny", *args], cwd=ROOT,
      capture_output=True, text=True, timeout=timeout, check=False)


def test_cli_typo_is_one_line_naming_the_key_and_the_closest(tmp_path):
  result = _train_cli("--config.optimizer.lrr=0.1",
                      f"--workdir={tmp_path}")
  output = (result.stdout + result.stderr).strip()
  assert result.returncode != 0
  assert len(output.splitlines()) == 1, output
  assert "lrr" in output and "Did you mean 'learning_rate'" in output
  assert "weight_decay" in output  # the allowed keys at that level
  assert not os.listdir(tmp_path)  # nothing ran


def test_cli_key_inside_a_none_section_is_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.train",
       "--config=configs/digits_mlp.py:dense", "--config.sparsity.seed=1",
       f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
      timeout=120, check=False)
  output = (result.stdout + result.stderr).strip()
  assert result.returncode != 0 and len(output.splitlines()) == 1, output
  assert "config.sparsity is None" in output
