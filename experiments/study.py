r"""Runs a study: every variant of a base config over several seeds, then a
report.

  python -m experiments.study --config=configs/flagship_digits.py \
      --workdir=workdirs/demo

A study config has ``base`` (an ``experiments/train.py`` config) and
``seeds``; its module's ``variants(config)`` returns the variants
(:class:`flatsparse.study.Variant`: name and overrides; in
``configs/flagship_digits.py`` one per entry of ``config.variants``,
``{name: {top-level key: replacement}}``). Runs go to
``workdir/<variant>/seed_<s>`` and leave ``result.json`` there (a finished run
is not trained again), then the markdown table, the plot and
``summary.json`` are written to ``workdir/report`` and the table is printed.
An optional ``labels`` (``{variant: description}``) names the rows of the
README table (``experiments.report --readme``).
"""

from __future__ import annotations

from collections.abc import Sequence
import os
import time
from typing import Any

from experiments import cli
from experiments import report
from flatsparse import study


def run_study(config: Any, variants: Sequence[study.Variant], workdir: str
              ) -> tuple[str, str]:
  """Trains every (variant, seed) not trained yet; returns the report's
  (markdown, png) paths."""
  begin = time.time()
  runs = study.plan(config.base, variants, config.seeds)

  def show(i: int, run: study.Run, record: dict[str, Any], seconds: float):
    del i
    print(f"{run.variant.name:10s} seed {run.seed}: test accuracy "
          f"{100 * record['accuracy']:.2f}%  ({seconds:.0f} s)", flush=True)

  study.run_or_load(runs, workdir, on_record=show)
  workdirs = [os.path.join(workdir, run.path) for run in runs]
  out = os.path.join(workdir, "report")
  paths = report.write_report(workdirs, out)
  report.write_summary(report.collect(workdirs), config, out,
                       time.time() - begin)
  return paths


def main(argv):
  del argv
  workdir = cli.workdir()
  cli.setup_logging(workdir)
  start = time.time()
  config = cli.config()
  md_path, png_path = run_study(config, cli.config_variants(config), workdir)
  print()
  print(open(md_path).read())
  print(f"Plot: {os.path.abspath(png_path)}")
  print(f"Table: {os.path.abspath(md_path)}  ({time.time() - start:.0f} s)")


if __name__ == "__main__":
  cli.define_flags("Study config.")
  cli.run(main)
