"""Multi-host for real: two processes of 4 CPU devices each = one of 8.

``jax.distributed.initialize`` with two processes on 127.0.0.1 (gloo CPU
collectives, loopback only) runs ``experiments/train.py --multihost`` with a
pruning wrapper and SAM; the loss curve and final parameters match the same
config trained by this (single, 8-device) process. Each process reads only
its rows of every batch; metrics and checkpoints are written once.
"""

import os
import pathlib
import re
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from flatsparse.train import checkpoint as checkpoint_lib
from flatsparse.train import loop
from flatsparse.train import metrics as metrics_lib
from tests.train import multihost_config

pytestmark = [pytest.mark.multidevice,
              pytest.mark.timeout(400, method="thread")]

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _four_device_env() -> dict[str, str]:
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                 os.environ.get("XLA_FLAGS", ""))
  return {**os.environ, "XLA_FLAGS": (
      f"{flags} --xla_force_host_platform_device_count=4").strip(),
          "JAX_PLATFORMS": "cpu"}


def test_two_processes_match_one_process_of_eight_devices(tmp_path):
  if jax.device_count() != 8 or jax.process_count() != 1:
    pytest.skip("needs one process with 8 simulated devices")
  port = _free_port()
  multi = tmp_path / "multi"
  procs = [subprocess.Popen(
      [sys.executable, "-m", "experiments.train",
       "--config=tests/train/multihost_config.py", f"--workdir={multi}",
       "--multihost", f"--coordinator_address=127.0.0.1:{port}",
       "--num_processes=2", f"--process_id={i}", "--log_to_console"],
      cwd=ROOT, env=_four_device_env(), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=300))
  finally:
    for proc in procs:
      proc.kill()
  for proc, (_, err) in zip(procs, outputs):
    assert proc.returncode == 0, err[-3000:]
  # Each process read only its half of every batch.
  for i, (_, err) in enumerate(outputs):
    rows = f"{64 * i}:{64 * (i + 1)}"
    assert f"process {i} of 2 reads rows {rows}" in err, err[-3000:]

  single = tmp_path / "single"
  config = multihost_config.get_config()
  _, state = loop.train_and_evaluate(config, str(single / "seed_0"),
                                     return_state=True)

  got = metrics_lib.read_metrics(str(multi / "seed_0"))
  want = metrics_lib.read_metrics(str(single / "seed_0"))
  # Written once: the same rows as the single process's, not two copies.
  assert [r["step"] for r in got] == [r["step"] for r in want]
  for g, w in zip(got, want):
    assert g.keys() == w.keys()
    for key in g:
      np.testing.assert_allclose(g[key], w[key], rtol=2e-5, atol=1e-6,
                                 err_msg=f"step {g['step']} {key}")
  checkpoints = checkpoint_lib.Checkpointer(
      str(multi / "seed_0" / "checkpoints"), every_steps=1, keep=2)
  restored, _ = checkpoints.restore(state)
  checkpoints.close()
  assert int(restored.step) == int(state.step) == config.steps
  for g, w in zip(jax.tree.leaves(restored.params),
                  jax.tree.leaves(state.params)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=2e-5,
                               atol=1e-6)
