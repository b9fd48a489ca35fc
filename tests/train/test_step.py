"""Generic train/eval steps: value_fn protocol, BatchNorm, accumulation,
dtypes."""

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flatsparse import models
from flatsparse.train import builders
from flatsparse.train import state as state_lib
from flatsparse.train import step as step_lib


class _Seen(NamedTuple):
  value: jax.Array


def recording_transform(perturb: float = 0.0):
  """Stores value_fn(params + perturb) in its state: what SAM-like code sees."""

  def init(params):
    del params
    return _Seen(jnp.zeros([]))

  def update(updates, state, params=None, *, value_fn, **extra):
    del state, extra
    shifted = jax.tree.map(lambda p: p + perturb, params)
    return updates, _Seen(value_fn(shifted))

  return optax.GradientTransformationExtraArgs(init, update)


def _batch(n=32, shape=(8, 8, 1), seed=0):
  kx, ky = jax.random.split(jax.random.PRNGKey(seed))
  return {"image": jax.random.normal(kx, (n, *shape)),
          "label": jax.random.randint(ky, (n,), 0, 10)}


def test_value_fn_is_the_loss_on_the_same_batch():
  model = models.MLP(hidden=(16,), num_classes=10)
  tx = optax.chain(recording_transform(), optax.sgd(0.1))
  batch = _batch()
  state = state_lib.create_train_state(model, tx, batch["image"][:1], 0)
  new, metrics = jax.jit(step_lib.make_train_step(model, tx))(state, batch)
  np.testing.assert_allclose(new.opt_state[0].value, metrics["loss"], rtol=1e-6)


def test_value_fn_keeps_first_pass_batch_stats():
  class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      x = nn.Conv(4, (3, 3))(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.5)(x)
      return nn.Dense(10)(x.mean((1, 2)))

  net = Net()
  batch = _batch()
  plain = optax.sgd(0.1)
  probing = optax.chain(recording_transform(perturb=0.3), optax.sgd(0.1))
  inits, results = [], []
  for tx in (plain, probing):
    state = state_lib.create_train_state(net, tx, batch["image"][:1], 0)
    new, _ = jax.jit(step_lib.make_train_step(net, tx))(state, batch)
    inits.append(state)
    results.append(new)
  # Perturbed evaluations inside the transform leave the statistics alone,
  # and they did move from their initial values in the first pass.
  jax.tree.map(np.testing.assert_array_equal, results[0].batch_stats,
               results[1].batch_stats)
  init = inits[0]
  assert not np.allclose(results[0].batch_stats["BatchNorm_0"]["mean"],
                         init.batch_stats["BatchNorm_0"]["mean"])


def test_gradient_accumulation_equals_full_batch():
  model = models.MLP(hidden=(16,), num_classes=10)
  tx = optax.adam(1e-2)
  batch = _batch(64)
  state = state_lib.create_train_state(model, tx, batch["image"][:1], 0)
  full, m1 = jax.jit(step_lib.make_train_step(model, tx))(state, batch)
  accum, m2 = jax.jit(step_lib.make_train_step(model, tx, accum_steps=4))(
      state, batch)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
               full.params, accum.params)
  np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-5)
  with pytest.raises(ValueError, match="accum_steps must be an int >= 1"):
    step_lib.make_train_step(model, tx, accum_steps=0)


def test_bf16_compute_keeps_f32_params_and_learns():
  model = models.MLP(hidden=(32,), num_classes=10, dtype=jnp.bfloat16)
  tx = optax.adam(1e-2)
  batch = _batch(64)
  state = state_lib.create_train_state(model, tx, batch["image"][:1], 0)
  step = jax.jit(step_lib.make_train_step(model, tx))
  losses = []
  for _ in range(20):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
  assert losses[-1] < losses[0] * 0.5


def test_eval_step_is_exact_with_padding():
  model = models.MLP(hidden=(8,), num_classes=10)
  tx = optax.sgd(0.1)
  batch = _batch(10)
  state = state_lib.create_train_state(model, tx, batch["image"][:1], 0)
  evaluate = jax.jit(step_lib.make_eval_step(model))
  full = evaluate(state, batch)
  padded = {"image": jnp.concatenate([batch["image"], batch["image"][:6]]),
            "label": jnp.concatenate([batch["label"], batch["label"][:6]]),
            "mask": jnp.concatenate([jnp.ones(10), jnp.zeros(6)])}
  sums = evaluate(state, padded)
  for key in ("correct", "loss_sum", "count"):
    np.testing.assert_allclose(sums[key], full[key], rtol=1e-6)
  assert float(sums["count"]) == 10


def test_builder_errors():
  with pytest.raises(ValueError, match="Unknown model 'resnet9'; allowed: mlp"):
    builders.build_model({"name": "resnet9"}, 10)
  with pytest.raises(ValueError, match="config.model needs 'name'"):
    builders.build_model({}, 10)
  with pytest.raises(ValueError,
                     match="Unknown optimizer 'lamb'; allowed: sgd"):
    builders.build_optimizer({"name": "lamb", "learning_rate": 0.1}, 10)
  with pytest.raises(ValueError, match="needs 'learning_rate'"):
    builders.build_optimizer({"name": "sgd"}, 10)
  with pytest.raises(ValueError, match="Unknown learning-rate schedule 'step'"):
    builders.build_optimizer({"name": "sgd", "learning_rate": 0.1,
                              "schedule": "step"}, 10)
  with pytest.raises(ValueError, match="Bad arguments for optimizer 'sgd'"):
    builders.build_optimizer({"name": "sgd", "learning_rate": 0.1,
                              "betas": 3}, 10)
