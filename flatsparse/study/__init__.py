"""Studies: variants x seeds of a train config, run or loaded, mean ± std.

One library for every experiment study (``experiments/study.py``,
``sparsity_sweep.py``, ``overparam.py`` are thin mains over it):

- **plan**: a sweep is code returning a list of :class:`Variant` (name,
  config overrides, tags), e.g. ``variants(config)`` in the study's config
  module; :func:`product` crosses axes (e.g. :func:`label_noise_axis` and
  :func:`sparsity_axis`: methods at target sparsities); :func:`plan` makes
  one :class:`Run` (train config) per variant and seed.
- **run or load**: :func:`run_or_load` trains each run once and caches its
  record as ``<workdir>/<variant>/seed_<s>/result.json``; a second call
  only loads (a changed config is an error, not a silent reuse).
- **aggregate**: :func:`aggregate` and :func:`summarize` give mean, std and
  n over seeds (``ddof=1``: sample std; the recorded studies use 0).
- **report**: :func:`markdown_table` and :func:`cell` (``mean ± std``);
  :func:`figure`, :func:`errorbar`, :func:`save_figure` (matplotlib,
  imported on first use).

Example::

  from flatsparse import study

  variants = [study.Variant("dense"),
              study.Variant("gmp", {"sparsity": {
                  "algorithm": "magnitude", "sparsity": 0.9,
                  "schedule": "polynomial", "update_end_step": 300}})]
  runs = study.plan(base_config, variants, seeds=(0, 1, 2))
  records = study.run_or_load(runs, "/tmp/study")  # trains, or loads
  rows = study.summarize(records, by=["variant"], fields=["accuracy"])
  print(study.markdown_table(
      ["variant", "test accuracy (%)"],
      [[r["variant"], study.cell(r["accuracy"], scale=100)] for r in rows]))
"""

from flatsparse.study.cache import config_differences
from flatsparse.study.cache import load_record
from flatsparse.study.cache import RESULT_FILE
from flatsparse.study.cache import run_or_load
from flatsparse.study.cache import save_record
from flatsparse.study.cache import train_record
from flatsparse.study.plots import errorbar
from flatsparse.study.plots import figure
from flatsparse.study.plots import save_figure
from flatsparse.study.summary import aggregate
from flatsparse.study.summary import cell
from flatsparse.study.summary import markdown_table
from flatsparse.study.summary import summarize
from flatsparse.study.sweep import apply_overrides
from flatsparse.study.sweep import label_noise_axis
from flatsparse.study.sweep import plain
from flatsparse.study.sweep import plan
from flatsparse.study.sweep import product
from flatsparse.study.sweep import PRUNING_SECTIONS
from flatsparse.study.sweep import Run
from flatsparse.study.sweep import sparsity_axis
from flatsparse.study.sweep import Variant

__all__ = [
    "Variant", "Run", "plan", "product", "apply_overrides", "plain",
    "sparsity_axis", "label_noise_axis", "PRUNING_SECTIONS",
    "run_or_load", "train_record", "load_record", "save_record",
    "config_differences", "RESULT_FILE", "aggregate", "summarize", "cell",
    "markdown_table", "figure", "save_figure", "errorbar",
]
