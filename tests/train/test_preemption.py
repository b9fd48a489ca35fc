"""SIGTERM/SIGINT: checkpoint at the current step, clean exit, exact resume."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from configs import digits_mlp
from flatsparse.train import loop
from flatsparse.train import metrics as metrics_lib
from tests.train.run_checks import assert_trees_equal as _assert_equal
from tests.train.run_checks import checkpoint_steps as _steps

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _config(steps):
  config = digits_mlp.get_config("tiny")
  config.optimizer.schedule = "constant"  # independent of config.steps
  config.steps = steps
  config.log_every = 5
  return config


def test_sigint_saves_the_current_step_and_resumes_exactly(
    tmp_path, monkeypatch):
  """In-process and deterministic: the signal arrives during step 13."""
  config = _config(steps=30)
  write = metrics_lib.MetricWriter.write_scalars

  def write_and_signal(self, step, scalars):
    write(self, step, scalars)
    if step == 13:
      os.kill(os.getpid(), signal.SIGINT)

  monkeypatch.setattr(metrics_lib.MetricWriter, "write_scalars",
                      write_and_signal)
  config.log_every = 1
  before = signal.getsignal(signal.SIGINT)
  with pytest.raises(loop.Preempted) as info:
    loop.train_and_evaluate(config, str(tmp_path / "stopped"))
  assert signal.getsignal(signal.SIGINT) is before  # handlers restored.
  assert info.value.code == 128 + signal.SIGINT == 130
  assert info.value.step == 13 and info.value.signum == signal.SIGINT
  assert _steps(tmp_path / "stopped")[-1] == 13  # off the interval of 20.
  monkeypatch.undo()

  _, resumed = loop.train_and_evaluate(config, str(tmp_path / "stopped"),
                                       return_state=True)
  _, straight = loop.train_and_evaluate(config, str(tmp_path / "straight"),
                                        return_state=True)
  assert int(resumed.step) == int(straight.step) == 30
  _assert_equal(resumed.params, straight.params)
  _assert_equal(resumed.opt_state, straight.opt_state)


def test_sigterm_to_a_training_process(tmp_path):
  """A real process: SIGTERM once it logged step 20, exit 143, exact resume."""
  workdir = tmp_path / "stopped"
  proc = subprocess.Popen(
      [sys.executable, "-m", "experiments.train",
       "--config=configs/digits_mlp.py:tiny", "--config.steps=100000",
       "--config.optimizer.schedule=constant", "--config.log_every=5",
       f"--workdir={workdir}", "--seeds=0"],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  metrics_file = workdir / "seed_0" / metrics_lib.METRICS_FILE
  deadline = time.time() + 120
  try:
    while time.time() < deadline and proc.poll() is None:
      if metrics_file.exists() and any(
          '"step": 20,' in line for line in metrics_file.read_text()
          .splitlines()):
        break
      time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 128 + signal.SIGTERM == 143, stderr[-3000:]
  assert "Traceback" not in stderr, stderr[-3000:]
  stopped_at = _steps(workdir / "seed_0")[-1]
  assert 20 <= stopped_at < 100000
  rows = metrics_lib.read_metrics(workdir / "seed_0")
  assert max(r["step"] for r in rows) <= stopped_at

  # Resume to 10 steps later (a changed config.steps, allowed; the constant
  # schedule does not depend on it) and compare with an uninterrupted run.
  config = _config(steps=stopped_at + 10)
  _, resumed = loop.train_and_evaluate(config, str(workdir / "seed_0"),
                                       return_state=True,
                                       allow_config_change=True)
  _, straight = loop.train_and_evaluate(config, str(tmp_path / "straight"),
                                        return_state=True)
  assert int(resumed.step) == int(straight.step) == stopped_at + 10
  _assert_equal(resumed.params, straight.params)
  _assert_equal(resumed.opt_state, straight.opt_state)
