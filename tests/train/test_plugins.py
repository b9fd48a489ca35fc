"""Tasks and methods are plug-ins: the loop and step name neither."""

import json
import pathlib
import re
import subprocess
import sys

import numpy as np

from flatsparse.train import metrics as metrics_lib

ROOT = pathlib.Path(__file__).resolve().parents[2]
GENERIC = ("flatsparse/train/loop.py", "flatsparse/train/step.py")
# Names of methods (SAFE, flatness) and of the classification task's fields.
FORBIDDEN = ("safe", "flatness", "images", "labels")


def test_loop_and_step_name_no_method_or_task():
  for path in GENERIC:
    text = (ROOT / path).read_text()
    for word in FORBIDDEN:
      hits = [i + 1 for i, line in enumerate(text.splitlines())
              if re.search(rf"\b{word}\b", line, re.IGNORECASE)]
      assert not hits, f"{path} names {word!r} on lines {hits}"
    # Nor does either read a method's config section.
    assert not re.search(r"cfg\[\"(sparsity|safe|flatness)\"\]", text), path


def test_a_registered_task_trains_with_pruning_and_sam(tmp_path):
  """experiments/train.py on tests/train/regression_config.py: the config
  imports the plugin, which registers a dataset and a task; nothing else."""
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.train",
       "--config=tests/train/regression_config.py", f"--workdir={tmp_path}"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((tmp_path / "results.json").read_text())["0"]
  # Predicting 0 (or the mean) scores the targets' variance, |w|^2 + 0.01
  # ~ 1; the noise alone, 0.01.
  assert result["mse"] < 0.05, result
  rows = metrics_lib.read_metrics(str(tmp_path / "seed_0"))
  final = rows[-1]
  sparsities = [v for k, v in final.items() if k.startswith("sparsity/")
                and "kernel" in k]
  assert sparsities and np.allclose(sparsities, 0.5, atol=0.02), final
