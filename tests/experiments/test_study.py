"""The flagship study, the study main end to end, and the foundation's
end-to-end pruning check."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs import flagship_digits
from experiments import study
from flatsparse import study as study_lib
from flatsparse.train import loop
from flatsparse.train import metrics as metrics_lib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _runs(config, names=None):
  variants = [v for v in flagship_digits.variants(config)
              if names is None or v.name in names]
  return study_lib.plan(config.base, variants, config.seeds)


def test_flagship_variants_are_the_configs_entries():
  """Every variant of the demo: the base with its section replaced (no
  training)."""
  config = flagship_digits.get_config()
  runs = _runs(config)
  assert [r.path for r in runs] == [
      f"{name}/seed_{s}" for name in sorted(config.variants)
      for s in (0, 1, 2)]
  for run in runs:
    replaced = config.variants[run.variant.name]
    for key in ("sparsity", "flatness", "optimizer", "safe"):
      want = replaced[key] if key in replaced else config.base[key]
      got = run.config[key]
      assert (got is None and want is None) or got.to_dict() == (
          want.to_dict()), (run.path, key)
    assert run.config.seed == run.seed
    assert run.config.steps == config.base.steps == 1500


def test_gradual_pruning_to_90_learns_in_a_short_run(tmp_path):
  """One seed, 500 steps (GMP ends at 330): both learn, GMP close to dense.

  The fast stand-in of the three-seed check below (``make test-all``).
  """
  config = flagship_digits.get_config()
  config.base.steps = config.base.eval_every = 500
  config.variants.gmp.sparsity.update_end_step = 330
  config.seeds = (0,)
  accuracy = {run.variant.name: loop.train_and_evaluate(
      run.config, str(tmp_path / run.path))["accuracy"]
              for run in _runs(config, ("dense", "gmp"))}
  assert accuracy["dense"] > 0.93, accuracy
  assert accuracy["gmp"] >= accuracy["dense"] - 0.03, accuracy


@pytest.mark.slow
def test_gradual_pruning_to_90_within_two_points_of_dense(tmp_path):
  """MLP on digits, 3 seeds: GMP to 90% vs dense (the foundation issue)."""
  config = flagship_digits.get_config()
  assert tuple(config.seeds) == (0, 1, 2)
  accuracy = {"dense": [], "gmp": []}
  for run in _runs(config, ("dense", "gmp")):
    accuracy[run.variant.name].append(loop.train_and_evaluate(
        run.config, str(tmp_path / run.path))["accuracy"])
  accuracy = {k: np.mean(v) for k, v in accuracy.items()}
  assert accuracy["dense"] > 0.95, accuracy  # it learned something real
  assert accuracy["gmp"] >= accuracy["dense"] - 0.02, accuracy


# A study config outside configs/: the main loads its module for the sweep.
_CONFIG = '''
from configs import flagship_digits
from flatsparse import study


def get_config():
  c = flagship_digits.get_config("tiny")
  c.variants = {k: c.variants[k] for k in ("dense", "gmp")}
  c.labels = {"gmp": "GMP (tiny)"}
  return c


def variants(c):
  return [study.Variant("gmp", dict(c.variants.gmp)),
          study.Variant("dense", dict(c.variants.dense))]
'''


def test_tiny_study_from_the_command_line(tmp_path, monkeypatch):
  path = tmp_path / "my_study.py"
  path.write_text(_CONFIG)
  workdir = tmp_path / "work"
  out = subprocess.run(
      [sys.executable, "-m", "experiments.study", f"--config={path}",
       f"--workdir={workdir}", "--config.base.eval_every=40"],
      capture_output=True, text=True, timeout=600, check=True, cwd=ROOT)
  config = flagship_digits.get_config("tiny")
  lines = out.stdout.splitlines()
  # The module's variants, in its order (gmp first).
  assert lines[0].startswith("gmp        seed 0: test accuracy ")
  assert lines[1].startswith("dense      seed 0: test accuracy ")
  for name in ("dense", "gmp"):
    # The row is the run's final evaluation and its sparsity the target of
    # the variant's pruning section (0 for the dense one).
    rows = metrics_lib.read_metrics(str(workdir / name / "seed_0"))
    assert [r["step"] for r in rows if "eval/accuracy" in r] == [40]
    accuracy = rows[-1]["eval/accuracy"]
    sparsity = rows[-1]["sparsity/prunable"]
    target = config.variants[name].get("sparsity")
    assert sparsity == pytest.approx(target.sparsity if target else 0.0,
                                     abs=1e-3), name
    assert (f"| {name} | 1 | {100 * accuracy:.2f} ± 0.00 | {sparsity:.3f} |"
            in out.stdout)
    assert f"{name:10s} seed 0: test accuracy {100 * accuracy:.2f}%" in (
        out.stdout)
    record = json.loads((workdir / name / "seed_0" / "result.json"
                         ).read_text())
    assert record["accuracy"] == accuracy
    assert record["config"]["eval_every"] == 40
  assert "Plot: " in out.stdout
  assert (workdir / "report" / "curves.png").stat().st_size > 1000
  summary = json.loads((workdir / "report" / "summary.json").read_text())
  assert [r["variant"] for r in summary["rows"]] == ["dense", "gmp"]
  assert summary["config"]["base"]["eval_every"] == 40
  assert summary["config"]["labels"] == {"gmp": "GMP (tiny)"}
  # Again, in this process: every run is loaded, none trained.

  def no_training(*args, **kwargs):
    raise AssertionError("a finished run was trained again")
  monkeypatch.setattr(loop, "train_and_evaluate", no_training)
  module = study.cli.load_config_module(str(path))
  again = module.get_config()
  again.base.eval_every = 40
  study.run_study(again, module.variants(again), str(workdir))
  assert json.loads((workdir / "report" / "summary.json").read_text())[
      "rows"] == summary["rows"]
