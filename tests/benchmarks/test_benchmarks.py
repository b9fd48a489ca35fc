"""Smoke tests of the benchmark scripts on the seconds-to-compile workloads.

They check that each script runs end to end, prints one JSON object with
finite ratios and compiles every step once; they time nothing worth
reading (the figures are measured by running the scripts, BENCHMARKS.md).
A script broken here would otherwise first fail on a device machine, whose
minutes are few.
"""

import json
import math
import pathlib
import subprocess
import sys

import pytest

from benchmarks import common
from benchmarks import flatness_cost
from benchmarks import safe_cost
from benchmarks import sparsity_overhead
from benchmarks import train_throughput

# The BatchNorm model runs where its path differs (flatness_cost: SAM and
# Sassha keep the first pass's statistics; train_throughput: the trainer).
TINY = ["--batch-size", "4", "--rounds", "1"]


def _numbers(tree):
  if isinstance(tree, dict):
    for value in tree.values():
      yield from _numbers(value)
  elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
    yield tree


def _run(module, extra, tmp_path, capsys, workloads=common.SMOKE_WORKLOADS):
  out = tmp_path / "result.json"
  result = module.main(["--workloads", ",".join(workloads)] + TINY + extra
                       + ["--json-out", str(out)])
  printed = json.loads(capsys.readouterr().out)
  assert printed == json.loads(out.read_text()) == json.loads(
      json.dumps(result))
  assert set(result["workloads"]) == set(workloads)
  return result


def _check_ratios(result):
  for name, workload in result["workloads"].items():
    ratios = workload["ratios"]
    assert ratios, name
    for value in _numbers(ratios):
      assert math.isfinite(value) and value > 0, (name, ratios)


# Slow: train_throughput's test runs the same step runner in the fast suite.
@pytest.mark.slow
def test_sparsity_overhead(tmp_path, capsys):
  result = _run(sparsity_overhead, ["--steps", "1", "--mask-reps", "1"],
                tmp_path, capsys, workloads=["mlp_tiny"])
  _check_ratios(result)
  assert result["config"]["batch_size"] == 4
  for workload in result["workloads"].values():
    assert workload["no_recompilation"]


# Slow: safe_cost's test runs the same time_variants path in the fast suite.
@pytest.mark.slow
def test_flatness_cost(tmp_path, capsys):
  # Every variant on the MLP; on the BatchNorm model the variants whose path
  # differs there (SAM and Sassha keep the first pass's statistics).
  result = _run(flatness_cost, ["--steps", "1", "--no-compiled-stats"],
                tmp_path, capsys, workloads=["mlp_tiny"])
  _check_ratios(result)
  assert result["no_recompilation"]
  result = _run(flatness_cost, ["--steps", "1", "--no-compiled-stats",
                                "--variants", "sgd,sam_ours,sassha,adamw"],
                tmp_path, capsys, workloads=["resnet_tiny"])
  _check_ratios(result)
  assert result["no_recompilation"]


def test_safe_cost(tmp_path, capsys):
  result = _run(safe_cost, ["--steps", "1"], tmp_path, capsys,
                workloads=["mlp_tiny"])
  _check_ratios(result)
  assert result["no_recompilation"]


def test_train_throughput(tmp_path, capsys):
  result = _run(train_throughput, ["--steps", "1", "--warmup", "1"],
                tmp_path, capsys)
  for workload in result["workloads"].values():
    assert min(workload["images_per_s"].values()) > 0
    assert workload["same_first_loss"]
    assert workload["no_recompilation"]


@pytest.mark.parametrize("module", [sparsity_overhead, flatness_cost,
                                    safe_cost, train_throughput])
@pytest.mark.parametrize("argv, message", [
    (["--workloads", "mlp,resnet9"], "resnet9"),
    (["--steps", "0"], "must be >= 1"),
])
def test_bad_settings_name_the_value(module, argv, message, capsys):
  with pytest.raises(SystemExit, match=message):
    module.main(argv)


def test_benchmarks_import_without_ml_collections_or_tfds():
  # The device machines have jax, flax and optax but neither of these.
  code = ("import sys\n"
          "sys.modules['ml_collections'] = None\n"
          "sys.modules['tensorflow_datasets'] = None\n"
          "import flatsparse\n"
          "from benchmarks import (flatness_cost, safe_cost, "
          "sparsity_overhead, train_throughput)\n")
  subprocess.run([sys.executable, "-c", code], check=True, timeout=300,
                 cwd=pathlib.Path(__file__).resolve().parents[2])
