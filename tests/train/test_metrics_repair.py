"""metrics.jsonl after a crash mid-write: repaired on open, nothing whole
lost."""

import json
import logging

import pytest

from flatsparse.train import metrics


def _write(tmp_path, steps):
  with metrics.MetricWriter(tmp_path, tensorboard=False) as writer:
    for s in steps:
      writer.write_scalars(s, {"train/loss": 1.0 / s})


def _steps(tmp_path):
  return [row["step"] for row in metrics.read_metrics(tmp_path)]


def _warnings(caplog):
  return [r.getMessage() for r in caplog.records
          if r.levelno >= logging.WARNING]


def test_torn_last_line_is_removed_when_a_writer_opens_the_file(
    tmp_path, caplog):
  _write(tmp_path, [1, 2])
  path = tmp_path / metrics.METRICS_FILE
  with open(path, "a") as f:
    f.write('{"step": 3, "train/lo')  # the crash: half a row, no newline.
  caplog.set_level("WARNING")
  _write(tmp_path, [4, 5])  # the resumed run appends.
  (line,) = _warnings(caplog)
  assert "torn last line" in line and str(path) in line
  assert path.read_text().endswith("}\n")
  assert _steps(tmp_path) == [1, 2, 4, 5]
  assert all(json.loads(row) for row in path.read_text().splitlines())


def test_whole_last_row_without_its_newline_is_kept(tmp_path, caplog):
  _write(tmp_path, [1])
  path = tmp_path / metrics.METRICS_FILE
  with open(path, "a") as f:
    f.write('{"step": 2, "train/loss": 0.5}')  # lost only the newline.
  caplog.set_level("WARNING")
  _write(tmp_path, [3])
  assert not _warnings(caplog)
  assert _steps(tmp_path) == [1, 2, 3]


def test_fragment_only_file_and_empty_file(tmp_path):
  path = tmp_path / metrics.METRICS_FILE
  path.write_text('{"st')
  _write(tmp_path, [7])
  assert _steps(tmp_path) == [7]
  path.write_text("")
  _write(tmp_path, [8])
  assert _steps(tmp_path) == [8]


def test_reader_keeps_a_whole_row_glued_to_a_torn_fragment(tmp_path, caplog):
  # What a writer that did not repair on open left: the next row appended
  # to the fragment, on the same line.
  path = tmp_path / metrics.METRICS_FILE
  path.write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a"{"step": 3, "a": 3.0}'
                  '\n{"step": 4, "a": 4.0}\n{"step": 5, "a')
  caplog.set_level("WARNING")
  assert metrics.read_metrics(tmp_path) == [
      {"step": 1, "a": 1.0}, {"step": 3, "a": 3.0}, {"step": 4, "a": 4.0}]
  warned = _warnings(caplog)
  assert len(warned) == 2 and "line 2" in warned[0]
  # Garbage that is not a torn row is still an error, with its line.
  path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
  with pytest.raises(ValueError, match="line 2"):
    metrics.read_metrics(tmp_path)
