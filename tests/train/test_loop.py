"""The loop: end to end for two configs, kill-and-resume equality, NaN stop,
schema errors, report."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import cifar100_resnet32
from configs import cifar10_resnet20
from configs import digits_mlp
from configs import imagenet_resnet50
from experiments import report
from flatsparse.train import checkpoint as checkpoint_lib
from flatsparse.train import loop
from flatsparse.train import metrics as metrics_lib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _latest_step(ckpt_dir):
  with checkpoint_lib.Checkpointer(str(ckpt_dir), every_steps=1,
                                   keep=2) as ckpt:
    return ckpt.latest_step()


def _params_of(workdir, config):
  """Restores the final params of a finished run."""
  loader, sample = loop.make_loader(config.dataset, config.batch_size)
  from flatsparse.train import builders, state as state_lib  # noqa
  model = builders.build_model(config.model, loader.num_classes)
  tx = builders.build_optimizer(config.optimizer, config.steps,
                                config.sparsity, config.get("flatness"))
  like = state_lib.create_train_state(model, tx, sample, config.seed)
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                     every_steps=1, keep=2)
  state, _ = ckpt.restore(like)
  ckpt.close()
  return state


def test_digits_tiny_end_to_end(tmp_path):
  config = digits_mlp.get_config("tiny")
  result = loop.train_and_evaluate(config, str(tmp_path))
  assert result["accuracy"] > 0.5  # 60 steps of a 32-unit MLP
  rows = metrics_lib.read_metrics(str(tmp_path))
  assert rows[-1]["sparsity/prunable"] == pytest.approx(0.9, abs=1e-3)
  assert (tmp_path / "config.json").exists()
  assert list((tmp_path / "tensorboard").iterdir())
  # Re-running the finished run resumes at the end and only evaluates.
  again = loop.train_and_evaluate(config, str(tmp_path))
  assert again["accuracy"] == pytest.approx(result["accuracy"])


@pytest.mark.parametrize("config_module", [
    cifar10_resnet20, cifar100_resnet32, imagenet_resnet50],
                         ids=["cifar10", "cifar100", "imagenet2012"])
def test_tfds_configs_end_to_end_on_mock_data(tmp_path, config_module):
  config = config_module.get_config("tiny")
  with tfds.testing.mock_data(num_examples=8,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    result = loop.train_and_evaluate(config, str(tmp_path))
  assert 0.0 <= result["accuracy"] <= 1.0 and np.isfinite(result["loss"])
  assert _latest_step(tmp_path / "checkpoints") == config.steps


def test_killed_run_resumes_to_the_same_parameters(tmp_path):
  config = digits_mlp.get_config("tiny")
  config.optimizer.schedule = "constant"  # independent of the total steps
  config.steps = 120
  straight = tmp_path / "straight"
  loop.train_and_evaluate(config, str(straight))

  killed = tmp_path / "killed"
  proc = subprocess.Popen(
      [sys.executable, "-m", "experiments.train",
       "--config=configs/digits_mlp.py:tiny", "--config.steps=100000",
       "--config.optimizer.schedule=constant", f"--workdir={killed}",
       "--seeds=0"], cwd=ROOT, stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL)
  ckpt_dir = killed / "seed_0" / "checkpoints"
  deadline = time.time() + 240
  try:
    while time.time() < deadline:
      steps = [int(p.name) for p in ckpt_dir.glob("*") if p.name.isdigit()]
      if steps and max(steps) >= 40:
        break
      time.sleep(0.2)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert proc.returncode == -signal.SIGKILL
  resumed_from = _latest_step(ckpt_dir)
  assert 40 <= resumed_from < 120
  loop.train_and_evaluate(config, str(killed / "seed_0"))
  a = _params_of(str(straight), config)
  b = _params_of(str(killed / "seed_0"), config)
  assert int(a.step) == int(b.step) == 120
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
  jax.tree.map(np.testing.assert_array_equal, a.opt_state, b.opt_state)


@pytest.mark.parametrize("variant", ["tiny", "rigl"])
def test_host_scheduled_mask_updates_equal_the_cond_path(tmp_path, variant):
  config = digits_mlp.get_config(variant)
  if variant == "rigl":
    config.model.hidden = (64,)
    config.steps, config.sparsity.update_freq = 40, 7
    config.eval_every = config.checkpoint_every = 40
  runs = {}
  for host in (False, True):
    config.host_mask_schedule = host
    loop.train_and_evaluate(config, str(tmp_path / str(host)))
    runs[host] = _params_of(str(tmp_path / str(host)), config)
  jax.tree.map(np.testing.assert_array_equal, runs[False].params,
               runs[True].params)
  jax.tree.map(np.testing.assert_array_equal, runs[False].opt_state,
               runs[True].opt_state)


@pytest.mark.parametrize("sparsity", [
    dict(algorithm="magnitude", sparsity=0.9, schedule="polynomial",
         update_freq=3, update_start_step=2, update_end_step=11),
    dict(algorithm="static_sparse", sparsity=0.5),
    dict(algorithm="acdc", sparsity=0.9, warmup_steps=2, sparse_steps=3,
         dense_steps=2, final_sparse_step=12),
], ids=["polynomial", "no_update", "acdc"])
def test_host_mask_schedule_matches_the_traced_predicate(sparsity):
  from flatsparse import sparsity as sparsity_lib
  from flatsparse.train import builders
  flags = builders.host_mask_schedule(sparsity, 16)
  updater = sparsity_lib.create_updater_from_config(sparsity)
  expected = [bool(updater.is_update_step(jax.numpy.int32(t)))
              for t in range(16)]
  assert flags.dtype == bool and flags.tolist() == expected
  assert builders.host_mask_schedule(None, 16) is None


def test_non_finite_loss_stops_with_the_step_and_keeps_last_good(tmp_path):
  config = digits_mlp.get_config("tiny")
  config.sparsity = None
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 1e12
  config.optimizer.weight_decay = 0.0
  with pytest.raises(FloatingPointError, match=r"non-finite\) at step \d+"):
    loop.train_and_evaluate(config, str(tmp_path))
  latest = _latest_step(tmp_path / "checkpoints")
  assert latest is None or latest < 60


@pytest.mark.parametrize("change,msg", [
    (lambda c: c.__delitem__("model"), r"missing required keys \['model'\]"),
    (lambda c: c.__setitem__("stepz", 3), r"Unknown config keys \['stepz'\]"),
    (lambda c: c.__setitem__("steps", 0), "config.steps must be a positive"),
    (lambda c: c.model.__setitem__("name", "lenet"), "Unknown model 'lenet'"),
    (lambda c: c.optimizer.__setitem__("name", "rmsprop2"),
     "Unknown optimizer 'rmsprop2'"),
    (lambda c: c.dataset.__setitem__("name", "imagenet_tiny"),
     "imagenet_tiny"),
    (lambda c: c.__setitem__("host_mask_schedule", "yes"),
     "host_mask_schedule must be None .auto., True or False, got 'yes'"),
])
def test_config_schema_errors(tmp_path, change, msg):
  config = digits_mlp.get_config("tiny")
  change(config)
  with pytest.raises(ValueError, match=msg):
    loop.train_and_evaluate(config, str(tmp_path))


def test_report_table_and_plot(tmp_path):
  for variant in ("dense", "tiny"):
    config = digits_mlp.get_config("tiny")
    config.steps = 30
    if variant == "dense":
      config.sparsity = None
    loop.train_and_evaluate(config, str(tmp_path / variant / "seed_0"))
  md, png = report.write_report(
      [str(p) for p in tmp_path.glob("*/seed_*")], str(tmp_path / "report"))
  text = pathlib.Path(md).read_text()
  assert "| dense | 1 |" in text and "| tiny | 1 |" in text
  assert pathlib.Path(png).stat().st_size > 1000
