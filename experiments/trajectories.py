r"""Records short training trajectories, to show that a refactor changed
nothing.

Runs SAFE, SAFE+, Sassha, GMP and RigL for a few steps on the digits MLP and
on ResNet-20 (digits images, batch 8), each through
``train.train_and_evaluate`` as ``experiments/train.py`` would, and writes per
run the training loss of every step (exact float32 values, as hex) and a
SHA-256 of the final parameters and optimizer state. Two recordings from the
same machine and versions are equal byte for byte unless the numbers changed.

  python -m experiments.trajectories --out=/tmp/after.json
  python -m experiments.trajectories \
      --compare=benchmarks/results/trajectories_cpu.json

``--compare`` records anew and exits 1, listing the runs that differ, if any
loss or checksum differs from the file.
"""

from __future__ import annotations

from collections.abc import Callable
import hashlib
import json
import platform
import sys
import tempfile
from typing import Any

from absl import app
from absl import flags
import jax
import ml_collections
import numpy as np

from configs import digits_mlp
from flatsparse import train
from flatsparse.train import config_schema
from flatsparse.train import metrics as metrics_lib

_SAFE = {"sparsity": 0.9, "lam": 0.1, "rho": 0.1, "dual_period": 5}


def _base(model: str) -> ml_collections.ConfigDict:
  c = digits_mlp.get_config("dense")
  if model == "resnet20":
    c.model = ml_collections.ConfigDict(dict(name="resnet20"))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="sgd", learning_rate=0.05, momentum=0.9, weight_decay=1e-4,
        schedule="cosine"))
    c.steps, c.batch_size = 8, 8
  else:
    c.model.hidden = (32,)
    c.steps = 40
  c.log_every = 1
  c.eval_every = c.checkpoint_every = c.steps
  return c


def _variants(model: str) -> dict[str, Callable[[], ml_collections.ConfigDict]]:
  def gmp():
    c = _base(model)
    end = c.steps * 3 // 4
    c.sparsity = ml_collections.ConfigDict(dict(
        algorithm="magnitude", sparsity=0.9, schedule="polynomial",
        update_freq=max(1, end // 4), update_start_step=1, update_end_step=end))
    return c

  def rigl():
    c = _base(model)
    end = c.steps * 3 // 4
    c.sparsity = ml_collections.ConfigDict(dict(
        algorithm="rigl", sparsity=0.9, distribution="erk", schedule="periodic",
        update_freq=max(1, end // 4), update_end_step=end, drop_fraction=0.3,
        drop_fraction_end_step=end))
    return c

  def sassha():
    c = _base(model)
    c.optimizer = ml_collections.ConfigDict(dict(
        name="sassha", learning_rate=0.05, rho=0.1, k=2, weight_decay=5e-4))
    return c

  def safe(name):
    def build():
      c = _base(model)
      c.safe = ml_collections.ConfigDict(dict(name=name, **_SAFE))
      if name == "safe_plus":
        c.safe.importance = "activation"
      return c
    return build

  return {"gmp": gmp, "rigl": rigl, "sassha": sassha, "safe": safe("safe"),
          "safe_plus": safe("safe_plus")}


def runs() -> dict[str, Callable[[], ml_collections.ConfigDict]]:
  """``{name: config builder}`` of every recorded run."""
  return {f"{model}_{name}": build for model in ("mlp", "resnet20")
          for name, build in _variants(model).items()}


def _checksum(tree: Any) -> str:
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(tree):
    a = np.asarray(leaf)
    digest.update(str((a.dtype, a.shape)).encode())
    digest.update(a.tobytes())
  return digest.hexdigest()


def record_run(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """``{"loss": [hex floats per step], "params": sha, "opt_state": sha}``."""
  with tempfile.TemporaryDirectory() as workdir:
    _, state = train.train_and_evaluate(
        config_schema.complete(config), workdir, return_state=True)
    losses = [float(r["train/loss"]).hex()
              for r in metrics_lib.read_metrics(workdir) if "train/loss" in r]
  return {"loss": losses, "params": _checksum(state.params),
          "opt_state": _checksum(state.opt_state)}


def record(only: list[str] | None = None) -> dict[str, Any]:
  """Records every run (or those in ``only``) with the machine it ran on."""
  selected = runs()
  unknown = sorted(set(only or ()) - set(selected))
  if unknown:
    raise ValueError(f"Unknown runs {unknown}; allowed: {sorted(selected)}.")
  return {
      "machine": {"jax": jax.__version__, "backend": jax.default_backend(),
                  "processor": platform.processor() or platform.machine()},
      "runs": {name: record_run(build()) for name, build in selected.items()
               if not only or name in only},
  }


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  """The runs of ``new`` whose losses or checksums differ from ``old``'s."""
  out = []
  for name, run in new["runs"].items():
    if name not in old["runs"]:
      out.append(f"{name}: not in the old recording")
      continue
    for key, value in run.items():
      if old["runs"][name][key] != value:
        out.append(f"{name}: {key} differs")
  return out


def main(argv: list[str]) -> None:
  del argv
  values = flags.FLAGS
  result = record(values.only)
  text = json.dumps(result, indent=1, sort_keys=True)
  if values.out:
    with open(values.out, "w") as f:
      f.write(text + "\n")
  if values.compare:
    with open(values.compare) as f:
      diff = differences(json.load(f), result)
    print("\n".join(diff) or f"{len(result['runs'])} runs identical")
    if diff:
      sys.exit(1)


if __name__ == "__main__":
  # Defined here, not at import: the module is also a library (tests).
  flags.DEFINE_string("out", None, "Where to write the recording (JSON).")
  flags.DEFINE_string("compare", None,
                      "A recording to compare with (exit 1 on a difference).")
  flags.DEFINE_list("only", None, "Record only these runs.")
  app.run(main)
