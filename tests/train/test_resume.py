"""Resuming a run: damaged checkpoints, changed configs, non-finite losses."""

import json
import logging
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import digits_mlp
from flatsparse.train import builders
from flatsparse.train import faults
from flatsparse.train import loop
from flatsparse.train import metrics as metrics_lib
from tests.train.run_checks import assert_trees_equal as _assert_equal
from tests.train.run_checks import checkpoint_steps as _steps


def _tiny(steps=60):
  config = digits_mlp.get_config("tiny")
  config.steps = steps
  config.log_every = 20
  return config


# ---- a damaged latest checkpoint --------------------------------------------


def test_resume_skips_a_damaged_latest_checkpoint(tmp_path, caplog):
  config = _tiny(steps=40)  # checkpoints at 20 and 40.
  _, first = loop.train_and_evaluate(config, str(tmp_path), return_state=True)
  assert _steps(tmp_path) == [20, 40]
  metadata = tmp_path / "checkpoints" / "40" / "state" / "_METADATA"
  metadata.write_bytes(metadata.read_bytes()[:100])  # truncated.
  caplog.set_level(logging.WARNING)
  _, again = loop.train_and_evaluate(config, str(tmp_path), return_state=True)
  skipped = [r.getMessage() for r in caplog.records
             if "Skipped unreadable checkpoint" in r.getMessage()]
  assert len(skipped) == 1 and "step 40" in skipped[0]
  assert str(metadata.parents[1]) in skipped[0]
  # Steps 21-40 ran again from step 20, to the same parameters; the damaged
  # step was replaced by a readable one.
  assert int(again.step) == 40
  _assert_equal(again.params, first.params)
  _assert_equal(again.opt_state, first.opt_state)
  assert _steps(tmp_path) == [20, 40]
  json.loads(metadata.read_text())


# ---- a changed config --------------------------------------------------------


def test_config_diff_lists_dotted_keys():
  old = {"a": 1, "opt": {"lr": 0.1, "b": [1, 2]}, "gone": 3, "flag": True}
  new = {"a": 1.0, "opt": {"lr": 0.2, "b": [1, 2], "new": None}, "flag": 1}
  diff = metrics_lib.config_diff(old, new)
  assert [(k, o, n) for k, o, n in diff
          if metrics_lib.MISSING not in (o, n)] == [
              ("flag", True, 1), ("opt.lr", 0.1, 0.2)]
  assert [k for k, _, _ in diff] == ["flag", "gone", "opt.lr", "opt.new"]
  assert metrics_lib.config_diff(old, json.loads(json.dumps(old))) == []


def test_resume_with_a_changed_config_is_refused_unless_allowed(tmp_path):
  config = _tiny(steps=20)
  config.sparsity = None
  loop.train_and_evaluate(config, str(tmp_path))
  saved = (tmp_path / "config.json").read_text()
  events = sorted((tmp_path / "tensorboard").iterdir())
  changed = ml_collections.ConfigDict(config.to_dict())
  changed.optimizer.learning_rate = 0.02
  changed.model.hidden = (32,)
  changed.steps = 40
  with pytest.raises(ValueError) as info:
    loop.train_and_evaluate(changed, str(tmp_path))
  message = str(info.value)
  assert str(tmp_path) in message and "allow_config_change" in message
  assert "model.hidden: [64] -> [32]" in message
  assert "optimizer.learning_rate: 0.01 -> 0.02" in message
  assert "steps: 20 -> 40" in message
  assert (tmp_path / "config.json").read_text() == saved  # untouched.
  assert sorted(p.name for p in tmp_path.glob("config*")) == [
      "config.json", "config.txt"]
  assert _steps(tmp_path) == [20]
  assert sorted((tmp_path / "tensorboard").iterdir()) == events  # no output.

  # Opting in continues at step 20 and keeps both configs.
  changed.model.hidden = (64,)  # the checkpoint's shapes.
  loop.train_and_evaluate(changed, str(tmp_path), allow_config_change=True)
  assert (tmp_path / "config.20.json").read_text() == saved
  assert (tmp_path / "config.20.txt").exists()
  now = json.loads((tmp_path / "config.json").read_text())
  assert now["optimizer"]["learning_rate"] == 0.02 and now["steps"] == 40
  assert _steps(tmp_path)[-1] == 40
  # The same config again is no change: nothing is renamed.
  loop.train_and_evaluate(changed, str(tmp_path))
  assert sorted(p.name for p in tmp_path.glob("config*.json")) == [
      "config.20.json", "config.json"]


# ---- a non-finite loss -------------------------------------------------------


def test_non_finite_check_reads_with_a_lag():
  check = faults.NonFiniteCheck(lag=2)
  losses = [1.0, 0.5, np.nan, 1.0, np.inf, 1.0]
  seen = [check.update(step, jnp.float32(loss))
          for step, loss in enumerate(losses, start=1)]
  assert seen == [None, None, None, None, 3, 3]  # step 3, seen at step 5.
  assert check.now() == 3
  fresh = faults.NonFiniteCheck(lag=2)
  assert fresh.update(1, jnp.float32(np.nan)) is None  # not read yet...
  assert fresh.now() == 1  # ...but a synchronous check sees it.


def _nan_at(learning_rate, at):
  """SGD whose update number ``at`` (0-based) is NaN."""

  def update(updates, count, params=None):
    del params
    scale = jnp.where(count == at, jnp.nan, -learning_rate)
    return jax.tree.map(lambda u: scale * u, updates), count + 1

  return optax.GradientTransformation(
      lambda params: jnp.zeros([], jnp.int32), update)


def test_non_finite_loss_is_caught_within_a_few_steps(tmp_path, monkeypatch):
  monkeypatch.setitem(builders.OPTIMIZERS, "nan_at", _nan_at)
  config = _tiny(steps=200)
  config.sparsity = None
  config.optimizer = ml_collections.ConfigDict(dict(
      name="nan_at", learning_rate=0.01, at=25))
  config.log_every = config.eval_every = 1000  # no reads but the check's.
  config.checkpoint_every = 25
  # Update 25 is applied in step 26; the loss of step 27 is the first one
  # computed from NaN weights.
  bad = 27
  with pytest.raises(loop.NonFiniteLossError) as info:
    loop.train_and_evaluate(config, str(tmp_path))
  error = info.value
  assert error.step == bad
  assert bad <= error.stopped_at <= bad + loop.NONFINITE_LAG
  assert error.last_checkpoint == 25
  assert re.search(rf"at step {bad} of .*; stopped at step "
                   rf"{error.stopped_at}\. The last good checkpoint is step "
                   rf"25 in {tmp_path / 'checkpoints'}", str(error))
  assert isinstance(error, FloatingPointError)
  assert _steps(tmp_path) == [25]  # nothing at or after the bad step.
