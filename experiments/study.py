r"""Runs a study: every variant of a base config over several seeds, then a
report.

  python -m experiments.study --config=configs/flagship_digits.py \
      --workdir=workdirs/demo

A study config has ``base`` (an ``experiments/train.py`` config), ``seeds`` and
``variants`` (``{name: {top-level key: replacement}}``). Runs go to
``workdir/<variant>/seed_<s>`` (finished runs are resumed, i.e. only
re-evaluated), then the markdown table, the plot and ``summary.json`` are
written to ``workdir/report`` and the table is printed. An optional
``labels`` (``{variant: description}``) names the rows of the README table
(``experiments.report --readme``).
"""

from __future__ import annotations

import os
import time
from typing import Any

from absl import flags
import ml_collections
from ml_collections import config_flags

from experiments import cli
from experiments import report
from flatsparse.train import loop

_CONFIG = None
_WORKDIR = None


def define_flags() -> None:
  """Defines the flags; called only when run as a program, so the
  experiment modules can be imported together (tests, other mains)."""
  global _CONFIG, _WORKDIR
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Study config.")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs are written.",
                                 required=True)
  cli.define_flags()


def variant_config(study: Any, name: str, seed: int
                   ) -> ml_collections.ConfigDict:
  """The base config with the variant's top-level keys replaced."""
  config = ml_collections.ConfigDict(study.base.to_dict())
  for key, value in study.variants[name].items():
    config[key] = value
  config.seed = seed
  return config


def run_study(study: Any, workdir: str) -> tuple[str, str]:
  """Trains every (variant, seed); returns the report's (markdown, png)."""
  workdirs = []
  begin = time.time()
  for name in study.variants:
    for seed in study.seeds:
      run_dir = os.path.join(workdir, name, f"seed_{seed}")
      start = time.time()
      result = loop.train_and_evaluate(variant_config(study, name, seed),
                                       run_dir)
      print(f"{name:10s} seed {seed}: test accuracy "
            f"{100 * result['accuracy']:.2f}%  ({time.time() - start:.0f} s)",
            flush=True)
      workdirs.append(run_dir)
  out = os.path.join(workdir, "report")
  paths = report.write_report(workdirs, out)
  report.write_summary(report.collect(workdirs), study, out,
                       time.time() - begin)
  return paths


def main(argv):
  del argv
  cli.setup_logging(_WORKDIR.value)
  start = time.time()
  md_path, png_path = run_study(_CONFIG.value, _WORKDIR.value)
  print()
  print(open(md_path).read())
  print(f"Plot: {os.path.abspath(png_path)}")
  print(f"Table: {os.path.abspath(md_path)}  ({time.time() - start:.0f} s)")


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["config"])
  cli.run(main)
