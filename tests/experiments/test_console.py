"""A quiet console: library logs go to the workdir, results stay on screen."""

import io
import os
import re
import subprocess
import sys

from absl import flags
from ml_collections import config_flags
import pytest

from experiments import cli
from flatsparse.train import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
# absl's record prefix, e.g. "I1128 21:55:52.685529 1403291 deleter.py:397]".
ABSL_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\]")
# orbax's modules among the record prefixes.
ORBAX = re.compile(r"(checkpoint_manager|checkpointer|jax_array_handlers|"
                   r"async_io_engine|deleter|array_metadata_store|"
                   r"pytree_checkpoint_handler)\.py:\d+\]")


def _train(workdir, *extra):
  """A dense 64-8-10 MLP for 2 steps, checkpoints at both (~10 s)."""
  return subprocess.run(
      [sys.executable, "-m", "experiments.train",
       "--config=configs/digits_mlp.py:dense", "--config.model.hidden=(8,)",
       "--config.steps=2", "--config.log_every=1", "--config.eval_every=2",
       "--config.checkpoint_every=1", f"--workdir={workdir}", *extra],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_train_console_is_quiet_and_the_log_file_has_the_rest(tmp_path):
  result = _train(tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  console = (result.stdout + result.stderr).splitlines()
  assert len(console) <= 5, console
  assert not [line for line in console if ABSL_LINE.match(line)], console
  assert any(line.startswith("seed 0: ") for line in console)
  with open(tmp_path / cli.LOG_FILE) as f:
    logged = f.read().splitlines()
  assert len([line for line in logged if ORBAX.search(line)]) >= 5


@pytest.mark.slow
def test_log_to_console_brings_the_library_logs_back(tmp_path):
  result = _train(tmp_path, "--log_to_console")
  assert result.returncode == 0, result.stderr[-3000:]
  shown = (result.stdout + result.stderr).splitlines()
  assert len([line for line in shown if ORBAX.search(line)]) >= 5, shown
  with open(tmp_path / cli.LOG_FILE) as f:  # and still to the file
    assert ORBAX.search(f.read())


def test_override_error_walks_the_config():
  argv = ["prog", "--config=configs/digits_mlp.py:dense",
          "--config.optimizer.learning_rat=1", "--config.sparsity.seed=1"]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values,
                                  sys_argv=argv)
  message = cli.override_error(argv, values)
  assert "'optimizer.learning_rat'" in message
  assert "config.optimizer:" in message
  assert "Did you mean 'learning_rate'" in message
  message = cli.override_error([*argv[:2], argv[3]], values)
  assert "config.sparsity is None" in message
  assert cli.override_error(argv[:2] + ["--config.steps=3"], values) is None


class _Clock:

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


class _Terminal(io.StringIO):

  def isatty(self):
    return True


def test_progress_prints_off_a_terminal_at_most_every_console_secs():
  clock, stream = _Clock(), io.StringIO()
  progress = metrics.Progress(1000, every_steps=100, clock=clock,
                              stream=stream, console_secs=30.0)
  progress.update(0)
  for step in range(100, 1001, 100):
    clock.now += 5.0
    assert progress.update(step) is not None  # reported every 100 steps
  # 50 s in all: one printed line (at 30 s), not ten.
  assert stream.getvalue().splitlines() == [
      "step 600/1000 (60.0%), 20.00 steps/s, ETA 20s"]


def test_progress_rewrites_one_line_on_a_terminal_and_erases_it_at_the_end():
  clock, stream = _Clock(), _Terminal()
  progress = metrics.Progress(200, every_steps=100, clock=clock,
                              stream=stream)
  progress.update(0)
  clock.now = 10.0
  progress.update(100)
  assert stream.getvalue() == ("\r step 100/200 (50.0%), 10.00 steps/s, "
                               "ETA 10s\x1b[K").replace("\r ", "\r")
  clock.now = 20.0
  progress.update(200)
  assert stream.getvalue().endswith("\r\x1b[K")
  assert "\n" not in stream.getvalue()


def test_progress_does_not_use_the_absl_logger(monkeypatch):
  logged = []
  monkeypatch.setattr(metrics.logging, "info", logged.append)
  clock, stream = _Clock(), io.StringIO()
  progress = metrics.Progress(10, every_steps=5, clock=clock, stream=stream,
                              console_secs=1.0)
  progress.update(0)
  clock.now = 2.0
  progress.update(10)
  assert not logged and stream.getvalue().startswith("step 10/10")
