"""Metric files (JSONL, TensorBoard), config files, progress, sparsity."""

import json
import sys

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import flatsparse as fs
from flatsparse.train import metrics


def test_write_scalars_jsonl_and_tensorboard(tmp_path):
  writer = metrics.MetricWriter(tmp_path)
  writer.write_scalars(1, {"train/loss": jnp.float32(0.5), "train/n": 3,
                           "lr": np.float64(0.125)})
  # Flushed at once: readable while the writer is still open.
  assert metrics.read_metrics(tmp_path) == [
      {"step": 1, "train/loss": 0.5, "train/n": 3, "lr": 0.125}]
  writer.write_scalars(jnp.asarray(2, jnp.int32),
                       {"train/loss": np.float32(0.25), "flag": True})
  writer.write_scalars(10, {"eval/acc": jnp.asarray([0.75])})
  writer.close()
  rows = metrics.read_metrics(tmp_path)
  assert rows == [
      {"step": 1, "train/loss": 0.5, "train/n": 3, "lr": 0.125},
      {"step": 2, "train/loss": 0.25, "flag": 1},
      {"step": 10, "eval/acc": 0.75},
  ]
  assert isinstance(rows[0]["train/n"], int)
  lines = (tmp_path / metrics.METRICS_FILE).read_text().splitlines()
  assert json.loads(lines[1]) == rows[1]

  scalars = metrics.read_tensorboard_scalars(tmp_path / metrics.TENSORBOARD_DIR)
  assert scalars == {"train/loss": [(1, 0.5), (2, 0.25)], "train/n": [(1, 3.0)],
                     "lr": [(1, 0.125)], "flag": [(2, 1.0)],
                     "eval/acc": [(10, 0.75)]}


def test_tensorboard_events_readable_by_tensorboard(tmp_path):
  # A test dependency (pyproject.toml): a missing reader fails, never skips.
  from tensorboard.backend.event_processing import event_accumulator
  with metrics.MetricWriter(tmp_path) as writer:
    writer.write_scalars(3, {"train/loss": 1.5})
    writer.write_scalars(4, {"train/loss": 0.75})
  acc = event_accumulator.EventAccumulator(
      str(tmp_path / metrics.TENSORBOARD_DIR))
  acc.Reload()
  assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [
      (3, 1.5), (4, 0.75)]


def test_appends_across_writers(tmp_path):
  with metrics.MetricWriter(tmp_path) as writer:
    writer.write_scalars(1, {"a": 1.0})
  with metrics.MetricWriter(tmp_path) as writer:  # a resumed run.
    writer.write_scalars(2, {"a": 2.0})
  assert [r["step"] for r in metrics.read_metrics(tmp_path)] == [1, 2]
  tb = metrics.read_tensorboard_scalars(tmp_path / metrics.TENSORBOARD_DIR)
  assert tb == {"a": [(1, 1.0), (2, 2.0)]}


def test_scalar_validation(tmp_path):
  with metrics.MetricWriter(tmp_path, tensorboard=False) as writer:
    with pytest.raises(ValueError, match="reserved"):
      writer.write_scalars(1, {"step": 3})
    with pytest.raises(TypeError, match="single int or float"):
      writer.write_scalars(1, {"loss": jnp.ones(3)})
    with pytest.raises(TypeError, match="'name'"):
      writer.write_scalars(1, {"name": "abc"})
    with pytest.raises(TypeError, match="step must be an integer"):
      writer.write_scalars(1.5, {"a": 1.0})
  assert metrics.read_metrics(tmp_path) == []
  assert not (tmp_path / metrics.TENSORBOARD_DIR).exists()


def test_disabled_writer_writes_nothing(tmp_path):
  writer = metrics.MetricWriter(tmp_path / "run", enabled=False)
  writer.write_scalars(1, {"a": 1.0})
  writer.write_config({"a": 1})
  writer.close()
  assert not (tmp_path / "run").exists()


def test_missing_tensorboardx_is_a_clear_error(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)
  with pytest.raises(ImportError, match="pip install tensorboardX"):
    metrics.MetricWriter(tmp_path)
  metrics.MetricWriter(tmp_path, tensorboard=False).close()


def test_write_config(tmp_path):
  config = ml_collections.ConfigDict()
  config.lr = 0.1
  config.model = ml_collections.ConfigDict({"name": "resnet20", "width": 16})
  config.warmup = config.get_ref("lr") * 2  # resolved when written.
  config.seeds = (1, 2)
  with metrics.MetricWriter(tmp_path) as writer:
    writer.write_config(config)
  loaded = json.loads((tmp_path / "config.json").read_text())
  assert loaded == {"lr": 0.1, "model": {"name": "resnet20", "width": 16},
                    "warmup": 0.2, "seeds": [1, 2]}
  text = (tmp_path / "config.txt").read_text()
  assert "lr: 0.1" in text and "name: resnet20" in text

  with metrics.MetricWriter(tmp_path / "plain") as writer:
    writer.write_config({"a": 1, "b": {"c": [1, 2]}})
    with pytest.raises(TypeError, match="ConfigDict or a mapping"):
      writer.write_config([1, 2])
  assert json.loads((tmp_path / "plain" / "config.json").read_text()) == {
      "a": 1, "b": {"c": [1, 2]}}


def test_read_metrics_tolerates_truncated_last_line(tmp_path):
  path = tmp_path / metrics.METRICS_FILE
  path.write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a"')
  assert metrics.read_metrics(tmp_path) == [{"step": 1, "a": 1.0}]
  path.write_text('{"step": 1, "a": 1.0}\n{"step": 2,\n{"step": 3}\n')
  with pytest.raises(ValueError, match="line 2"):
    metrics.read_metrics(tmp_path)
  with pytest.raises(FileNotFoundError):
    metrics.read_metrics(tmp_path / "nothing")


def test_read_tensorboard_scalars_detects_corruption(tmp_path):
  with metrics.MetricWriter(tmp_path) as writer:
    writer.write_scalars(1, {"a": 1.0})
  logdir = tmp_path / metrics.TENSORBOARD_DIR
  (event_file,) = list(logdir.iterdir())
  data = bytearray(event_file.read_bytes())
  data[-6] ^= 0xFF  # Flip a byte of the last record's payload.
  event_file.write_bytes(bytes(data))
  with pytest.raises(ValueError, match="corrupt record"):
    metrics.read_tensorboard_scalars(logdir)
  with pytest.raises(FileNotFoundError):
    metrics.read_tensorboard_scalars(tmp_path)


class _Clock:

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_progress_rate_and_eta():
  clock, lines = _Clock(), []
  progress = metrics.Progress(1000, every_steps=100, clock=clock,
                              log_fn=lines.append)
  assert progress.update(0) is None  # Starts the clock (after compiling).
  clock.now += 5.0
  assert progress.update(50) is None  # Not at a multiple of 100 yet.
  clock.now += 5.0
  line = progress.update(100)  # 100 steps in 10 s.
  assert progress.rate == pytest.approx(10.0)
  assert progress.eta_secs == pytest.approx(90.0)
  assert line == "step 100/1000 (10.0%), 10.00 steps/s, ETA 1m30s"
  clock.now += 50.0
  line = progress.update(350)  # Crossed 200 and 300: 250 steps in 50 s.
  assert progress.rate == pytest.approx(5.0)
  assert progress.eta_secs == pytest.approx(130.0)
  assert line == "step 350/1000 (35.0%), 5.00 steps/s, ETA 2m10s"
  clock.now += 1.0
  assert progress.update(399) is None
  clock.now += 0.25
  line = progress.update(1000)  # The last step always reports.
  assert progress.rate == pytest.approx(650 / 1.25)
  assert progress.eta_secs == 0.0
  assert line.endswith("ETA 0s")
  assert lines == [
      "step 100/1000 (10.0%), 10.00 steps/s, ETA 1m30s",
      "step 350/1000 (35.0%), 5.00 steps/s, ETA 2m10s",
      "step 1000/1000 (100.0%), 520.00 steps/s, ETA 0s"]


def test_progress_every_secs_and_restart():
  clock, lines = _Clock(), []
  progress = metrics.Progress(100_000, every_steps=10_000, every_secs=60.0,
                              clock=clock, log_fn=lines.append)
  progress.update(10)
  clock.now += 59.0
  assert progress.update(20) is None
  clock.now += 1.0
  assert progress.update(30) == (
      "step 30/100000 (0.0%), 0.33 steps/s, ETA 83h18m30s")
  assert progress.eta_secs == pytest.approx((100_000 - 30) / (20 / 60))
  # A lower step (a restore from a checkpoint) restarts the clock.
  clock.now += 1000.0
  assert progress.update(5) is None
  clock.now += 60.0
  progress.update(605)
  assert progress.rate == pytest.approx(10.0)
  assert len(lines) == 2


def test_progress_validation():
  with pytest.raises(ValueError, match="total_steps"):
    metrics.Progress(0)
  with pytest.raises(ValueError, match="every_steps"):
    metrics.Progress(10, every_steps=0)
  with pytest.raises(ValueError, match="every_secs"):
    metrics.Progress(10, every_secs=0)


def test_sparsity_scalars():
  params = {
      "Dense_0": {"kernel": jnp.array([[0.0, 1.0], [0.0, 0.0]]),  # 3/4 zeros
                  "bias": jnp.array([0.0, 1.0])},  # not prunable (1-d)
      "Dense_1": {"kernel": jnp.ones((2, 2), jnp.bfloat16),
                  "bias": jnp.ones(2)},
  }
  scalars = metrics.sparsity_scalars(params)
  assert scalars == {
      "sparsity/Dense_0/kernel": 0.75,
      "sparsity/Dense_1/kernel": 0.0,
      "sparsity/total": 1 - 8 / 12,
      "sparsity/prunable": 3 / 8,
  }
  everything = metrics.sparsity_scalars(params, all_leaves=True)
  assert everything["sparsity/Dense_0/bias"] == 0.5
  assert len(everything) == 6


def test_sparsity_scalars_of_a_pruned_model(tmp_path):
  params = {"Dense_0": {"kernel": jnp.arange(1.0, 17.0).reshape(4, 4),
                        "bias": jnp.ones(4)}}
  pruned, _ = fs.sparsity.magnitude_pruning(sparsity=0.75).instant_sparsify(
      params)
  scalars = metrics.sparsity_scalars(pruned)
  assert scalars["sparsity/Dense_0/kernel"] == 0.75
  assert scalars["sparsity/prunable"] == 0.75
  assert scalars["sparsity/total"] == pytest.approx(12 / 20)
  with metrics.MetricWriter(tmp_path) as writer:
    writer.write_scalars(7, scalars)
  assert metrics.read_metrics(tmp_path)[0]["sparsity/Dense_0/kernel"] == 0.75
