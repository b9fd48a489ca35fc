"""Guards of SAM and the other value_fn users: bad rho, (loss, aux) value_fn."""

import re

import jax
import jax.numpy as jnp
import optax
import pytest

import flatsparse as fs
from flatsparse.flatness import curvature
from flatsparse.safe import Projection
from flatsparse.safe import safe

W = {"kernel": jnp.array([[1.0, -2.0], [0.5, 3.0]])}


def loss_and_aux(p):
  return jnp.sum(p["kernel"] ** 2), {"logits": p["kernel"]}


@pytest.mark.parametrize("rho", [float("nan"), float("inf"), -0.1, None, "0.1"])
def test_sam_rejects_bad_rho_naming_it(rho):
  with pytest.raises(ValueError, match=re.escape(
      f"rho must be >= 0, got {rho!r}; allowed: a finite number >= 0.")):
    fs.sam(rho)


def test_sam_rho_may_still_be_injected():
  tx = optax.inject_hyperparams(fs.sam)(rho=0.05)
  update = jax.jit(lambda s: tx.update(W, s, W, value_fn=lambda p: jnp.sum(
      p["kernel"] ** 2)))
  sharp, _ = update(tx.init(W))
  assert jnp.all(jnp.isfinite(sharp["kernel"]))


def _sam(value_fn):
  tx = fs.sam(0.1)
  return jax.jit(lambda: tx.update(W, tx.init(W), W, value_fn=value_fn))()


def _sub_batches(value_fn):
  tx = fs.sam(0.1, sub_batches=2)
  return jax.jit(lambda: tx.update(
      W, tx.init(W), W, sub_batch_value_fn=lambda p, i: value_fn(p)))()


def _sassha(value_fn):
  tx = fs.flatness.sassha(0.1, k=1)
  return jax.jit(lambda: tx.update(W, tx.init(W), W, value_fn=value_fn))()


def _sophia(value_fn):
  tx = fs.flatness.sophia_h(0.1, k=1)
  return jax.jit(lambda: tx.update(W, tx.init(W), W, value_fn=value_fn))()


def _safe(value_fn):
  tx = safe(optax.sgd(0.1), Projection(sparsity=0.5), rho=0.1,
           penalty_schedule="constant")
  return jax.jit(lambda: tx.update(W, tx.init(W), W, value_fn=value_fn))()


def _trace(value_fn):
  return jax.jit(lambda: curvature.hutchinson_trace(
      value_fn, W, jax.random.PRNGKey(0), num_probes=1))()


USERS = [_sam, _sub_batches, _sassha, _sophia, _safe, _trace]


@pytest.mark.parametrize("user", USERS, ids=lambda f: f.__name__[1:])
def test_value_fn_returning_loss_and_aux_is_a_clear_error(user):
  with pytest.raises(TypeError) as err:
    user(loss_and_aux)
  message = str(err.value)
  assert "must return the scalar loss only" in message
  assert "got a tuple of 2 items" in message
  assert "lambda p: loss_fn(p)[0]" in message
  assert "Traced" not in message  # no tracer dump
  user(lambda p: loss_and_aux(p)[0])  # the fix it names works


@pytest.mark.parametrize("value_fn,match", [
    (lambda p: p["kernel"] ** 2, r"got an array of shape \(2, 2\); reduce it"),
    (lambda p: jnp.sum(p["kernel"] > 0), "got dtype int32"),
], ids=["per_example", "integer"])
def test_value_fn_must_be_a_float_scalar(value_fn, match):
  with pytest.raises(TypeError, match=match):
    _sam(value_fn)


def test_sam_first_rule_is_documented():
  # chain(optimizer, sam) cannot be detected cheaply (see sam's Note); the
  # rule and its fix must stay where users look.
  assert "must be the FIRST transformation" in fs.sam.__doc__
  assert "chain(adamw(lr), sam(rho))" in fs.sam.__doc__
