"""The loop: end to end for two configs, kill-and-resume equality, NaN stop,
schema errors, report."""

import collections
import functools
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds

from configs import cifar10_resnet20
from configs import cifar100_resnet32
from configs import digits_mlp
from configs import imagenet_resnet50
from experiments import report
from flatsparse import data
from flatsparse import models
from flatsparse.train import checkpoint as checkpoint_lib
from flatsparse.train import loop
from flatsparse.train import metrics as metrics_lib
from flatsparse.train import state as state_lib
from flatsparse.train import step as step_lib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _latest_step(ckpt_dir):
  with checkpoint_lib.Checkpointer(str(ckpt_dir), every_steps=1,
                                   keep=2) as ckpt:
    return ckpt.latest_step()


def _params_of(workdir, config):
  """Restores the final params of a finished run."""
  cfg = loop.validate_config(config)  # sections without their unset keys
  loader, sample = loop.make_loader(cfg["dataset"], cfg["batch_size"])
  from flatsparse.train import builders, state as state_lib  # noqa
  model = builders.build_model(cfg["model"], loader.num_classes)
  tx = builders.build_optimizer(cfg["optimizer"], cfg["steps"],
                                cfg["sparsity"], cfg["flatness"],
                                seed=cfg["seed"])
  # Shapes only: nothing to compile or initialise for the restore target.
  like = jax.eval_shape(functools.partial(
      state_lib.create_train_state, model, tx, seed=cfg["seed"]), sample)
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                     every_steps=1, keep=2)
  state, _ = ckpt.restore(like)
  ckpt.close()
  return state


def test_digits_tiny_end_to_end(tmp_path):
  config = digits_mlp.get_config("tiny")
  result = loop.train_and_evaluate(config, str(tmp_path))
  # Exact over the 359 test images: a whole number of them is right (359 is
  # prime: dividing by a padded count, e.g. 500, gives a non-multiple).
  n = len(data.load_dataset("digits", "test").labels)
  assert result["accuracy"] * n == pytest.approx(
      round(result["accuracy"] * n), abs=1e-6)
  # 60 steps of a 64-unit MLP at 90% sparsity measure 0.546; counting the
  # padding of the eval batch of 500 scores 0.392 (0.546 * 359 / 500).
  assert result["accuracy"] > 0.47
  rows = metrics_lib.read_metrics(str(tmp_path))
  assert rows[-1]["sparsity/prunable"] == pytest.approx(0.9, abs=1e-3)
  assert (tmp_path / "config.json").exists()
  assert list((tmp_path / "tensorboard").iterdir())
  # Re-running the finished run resumes at the end and only evaluates.
  again = loop.train_and_evaluate(config, str(tmp_path))
  assert again["accuracy"] == pytest.approx(result["accuracy"])


def test_evaluate_is_exact_on_a_padded_last_batch():
  """37 examples in eval batches of 16: the last has 11 padding rows, which
  the untrained model classifies as their label 0 (zero image, zero biases),
  so counting them in either sum changes the result."""
  rng = np.random.default_rng(0)
  images = rng.normal(size=(37, 5)).astype(np.float32)
  labels = rng.integers(0, 3, 37).astype(np.int32)
  test = data.Dataset(images, labels, 3)
  loader = data.Loader(test, test, batch_size=8)
  model = models.MLP(hidden=(8,), num_classes=3)
  state = state_lib.create_train_state(model, optax.identity(),
                                       jnp.asarray(images[:1]), 0)
  got = loop.evaluate(jax.jit(step_lib.make_eval_step(model)), state,
                      loader.eval_batches(16), None)
  logits = np.asarray(model.apply({"params": state.params}, images),
                      np.float64)
  log_probs = logits - np.log(np.sum(np.exp(logits), -1, keepdims=True))
  want_accuracy = np.mean(np.argmax(logits, -1) == labels)
  assert got["accuracy"] * 37 == pytest.approx(want_accuracy * 37, abs=1e-6)
  assert 0 < want_accuracy < 1
  np.testing.assert_allclose(got["loss"],
                             -np.mean(log_probs[np.arange(37), labels]),
                             rtol=1e-5)
  zero = model.apply({"params": state.params}, np.zeros((1, 5), np.float32))
  assert int(np.argmax(zero)) == 0  # padding would count as correct


def _tfds_run(config, workdir, monkeypatch):
  """Trains on TFDS mock data (9 examples per split); returns the result,
  the final state and the eval steps' summed outputs."""
  sums = collections.Counter()
  evaluate = loop.evaluate

  def spy(eval_step, *args):
    def step(*step_args):
      out = eval_step(*step_args)
      sums.update({k: float(v) for k, v in jax.device_get(out).items()})
      return out
    return evaluate(step, *args)
  monkeypatch.setattr(loop, "evaluate", spy)
  with tfds.testing.mock_data(num_examples=9,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    result, state = loop.train_and_evaluate(config, workdir,
                                            return_state=True)
  return result, state, sums


# Fast: each config's TFDS dataset, optimizer and pruning through the loop
# with a small MLP, 2 steps. The configs' own models (ResNet-20, ResNet-32,
# ResNet-50) run in the slow variants.
@pytest.mark.parametrize("config_module, model, num_classes", [
    pytest.param(cifar10_resnet20, "mlp", 10, id="cifar10"),
    pytest.param(cifar100_resnet32, "mlp", 100, id="cifar100"),
    pytest.param(imagenet_resnet50, "mlp", 1000, id="imagenet2012"),
    pytest.param(cifar10_resnet20, None, 10, id="cifar10_resnet20",
                 marks=pytest.mark.slow),
    pytest.param(cifar100_resnet32, None, 100, id="cifar100_resnet32",
                 marks=pytest.mark.slow),
    pytest.param(imagenet_resnet50, None, 1000, id="imagenet2012_resnet50",
                 marks=pytest.mark.slow),
])
def test_tfds_configs_end_to_end_on_mock_data(tmp_path, monkeypatch,
                                              config_module, model,
                                              num_classes):
  config = config_module.get_config("tiny")
  if model is not None:
    config.model = {"name": model, "hidden": (8,)}
    config.batch_size = 4
  # Two steps, both mask updates (one train program), one eval at the end.
  config.steps = config.eval_every = config.checkpoint_every = 2
  config.log_every = 1
  config.sparsity.update_start_step = 0
  config.sparsity.update_end_step = 1
  result, state, sums = _tfds_run(config, str(tmp_path), monkeypatch)
  # The eval counted exactly the 9 mock test examples (padded batch of 500
  # or 4), and the result is those sums' ratio.
  assert sums["count"] == 9
  assert result["accuracy"] == pytest.approx(sums["correct"] / 9, abs=1e-12)
  assert result["loss"] == pytest.approx(sums["loss_sum"] / 9, rel=1e-6)
  assert sums["correct"] == int(sums["correct"])
  assert np.isfinite(result["loss"]) and result["loss"] > 0
  # The classifier (the widest Dense kernel: the MLP's hidden layer has 8
  # units) has the TFDS dataset's number of classes.
  assert max(leaf.shape[-1] for leaf in jax.tree.leaves(state.params)
             if leaf.ndim == 2) == num_classes
  rows = metrics_lib.read_metrics(str(tmp_path))
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert len(losses) == 2 and np.all(np.isfinite(losses))
  # Pruned to the config's target at the last mask update.
  assert rows[-1]["sparsity/prunable"] == pytest.approx(
      config.sparsity.sparsity, abs=1e-3)
  assert rows[-1]["eval/accuracy"] == result["accuracy"]
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
  # config.steps differs from the killed run's (allowed; constant schedule).
  loop.train_and_evaluate(config, str(killed / "seed_0"),
                          allow_config_change=True)
  a = _params_of(str(straight), config)
  b = _params_of(str(killed / "seed_0"), config)
  assert int(a.step) == int(b.step) == 120
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
  jax.tree.map(np.testing.assert_array_equal, a.opt_state, b.opt_state)


# rigl (slow) adds periodic updates to tiny's polynomial ones.
@pytest.mark.parametrize("variant", [
    "tiny", pytest.param("rigl", marks=pytest.mark.slow)])
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
