"""Run or load: each finished run leaves one JSON record in its folder.

``workdir/<run.path>/<cache_file>`` holds what the run measured plus its
train config (under ``config_key``). A second call loads the record instead
of training again; a record of another config is an error (a changed study
must not silently reuse old runs). A run interrupted mid-way has no record
yet and resumes from its checkpoint (``flatsparse.train.train_and_evaluate``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import json
import os
import time
from typing import Any

from flatsparse.study.sweep import plain
from flatsparse.study.sweep import Run
from flatsparse.train import loop

__all__ = ["RESULT_FILE", "run_or_load", "load_record", "save_record",
           "train_record", "config_differences"]

RESULT_FILE = "result.json"

RunFn = Callable[[Run, str, "dict[str, Any] | None"], dict[str, Any]]
Progress = Callable[[int, Run, "dict[str, Any]", float], None]


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
  """Dotted keys whose values differ between two plain configs."""
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for key in sorted(set(old) | set(new), key=str):
      out += config_differences(old.get(key), new.get(key),
                                f"{prefix}{key}.")
    return out
  return [] if old == new else [prefix[:-1] or "(the config)"]


def load_record(path: str) -> dict[str, Any] | None:
  """The record at ``path``, or None if there is none."""
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def save_record(path: str, record: Mapping[str, Any]) -> None:
  """Writes ``record`` as JSON, atomically (a killed write leaves none)."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(record, f, indent=1)
  os.replace(path + ".tmp", path)


def train_record(run: Run, run_dir: str, stale: dict[str, Any] | None
                 ) -> dict[str, Any]:
  """The default run function: trains (or resumes) the run and returns its
  tags, seed, final eval metrics and training seconds."""
  del stale
  start = time.time()
  metrics = loop.train_and_evaluate(run.config, run_dir)
  return {**run.tags, **metrics, "train_s": round(time.time() - start, 2)}


def run_or_load(runs: Sequence[Run], workdir: str, fn: RunFn = train_record,
                *, cache_file: str = RESULT_FILE, config_key: str = "config",
                is_current: Callable[[dict[str, Any]], bool] | None = None,
                on_record: Progress | None = None) -> list[dict[str, Any]]:
  """Each run's record: loaded from its folder, or made by ``fn`` and saved.

  Args:
    runs: from :func:`flatsparse.study.plan`.
    workdir: the study's folder; run ``r`` lives in ``workdir/r.path``.
    fn: ``fn(run, run_dir, stale) -> record`` (JSON types) trains and
      measures one run; ``stale`` is the cached record that ``is_current``
      rejected (e.g. to keep its training time), else None.
    cache_file: the record's file name in the run's folder.
    config_key: the record's key for the run's train config (set here).
    is_current: whether a cached record of the same config can be used
      as it is (default: always); if not, ``fn`` runs again.
    on_record: ``on_record(index, run, record, seconds)`` after each run,
      e.g. to print progress.

  Returns:
    The records, in the order of ``runs``.

  Raises:
    ValueError: if a run's folder holds a record of another config.
  """
  records = []
  for i, run in enumerate(runs):
    start = time.time()
    run_dir = os.path.join(workdir, run.path)
    path = os.path.join(run_dir, cache_file)
    config = plain(run.config)
    record = load_record(path)
    if record is not None and record.get(config_key) != config:
      changed = config_differences(record.get(config_key), config)
      raise ValueError(
          f"{run_dir} holds a run of a different config than the study now "
          f"gives for {run.path} (changed: {', '.join(changed[:5])}"
          f"{', ...' if len(changed) > 5 else ''}); use a new --workdir or "
          "delete that run.")
    if record is None or (is_current is not None and not is_current(record)):
      record = dict(fn(run, run_dir, record))
      record[config_key] = config
      save_record(path, record)
    records.append(record)
    if on_record is not None:
      on_record(i, run, record, time.time() - start)
  return records
