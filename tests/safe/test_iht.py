"""IHT: exact sparsity after each projection, weights re-enter, schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flatsparse as fs
from flatsparse.safe import Projection


def _step(tx, traces=None):
  @jax.jit
  def step(params, state, grads):
    if traces is not None:
      traces.append(1)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  return step


def test_projects_every_step_and_pruned_weights_reenter():
  params = {"kernel": jnp.asarray([[4.0, 3.0], [2.0, 1.0]])}
  tx = fs.safe.iht(optax.sgd(1.0), Projection(sparsity=0.5))
  state = tx.init(params)
  traces = []
  step = _step(tx, traces)
  # First step: no gradient, keep the two largest (4, 3), exact zeros.
  params, state = step(params, state, {"kernel": jnp.zeros((2, 2))})
  np.testing.assert_array_equal(params["kernel"], [[4.0, 3.0], [0.0, 0.0]])
  # A large gradient on a pruned entry makes it re-enter: w + B(g) is projected.
  params, state = step(params, state, {"kernel": jnp.asarray(
      [[0.0, 0.0], [-10.0, 0.0]])})
  np.testing.assert_array_equal(params["kernel"], [[4.0, 0.0], [10.0, 0.0]])
  assert len(traces) == 1


def test_start_step_and_period():
  params = {"kernel": jnp.arange(1.0, 9.0).reshape(2, 4)}
  tx = fs.safe.iht(optax.sgd(0.1), Projection(sparsity=0.5), period=2,
                   start_step=1)
  state = tx.init(params)
  step = _step(tx)
  grads = {"kernel": -jnp.ones((2, 4))}
  nnz = []
  for _ in range(5):
    params, state = step(params, state, grads)
    nnz.append(int(jnp.sum(params["kernel"] != 0)))
  # count 0: dense; projections at counts 2 and 4 ((count+1-1) % 2 == 0).
  assert nnz == [8, 8, 4, 8, 4]


def test_bad_arguments():
  with pytest.raises(ValueError, match="period must be an int >= 1"):
    fs.safe.iht(optax.sgd(0.1), Projection(sparsity=0.5), period=0)
  with pytest.raises(ValueError, match="start_step must be an int >= 0"):
    fs.safe.iht(optax.sgd(0.1), Projection(sparsity=0.5), start_step=-1)
