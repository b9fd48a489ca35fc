"""Shared test helpers: jitted runs, trajectory checks, a small MLP problem.

Used by the SAM, Sassha, AdaHessian/Sophia-H and SAFE tests: every
transform that takes ``value_fn`` is run the same way, one ``jax.jit``
program for all its steps (refresh, reuse, dual and projection steps alike).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax


def float64_start(w0, num_moments):
  """A numpy reference's start: ``w0`` in float64 and zero moments like it.

  Args:
    w0: ``{name: numpy array}``.
    num_moments: how many zero moments.

  Returns:
    ``[w, m_1, ..., m_n]``, each ``{name: float64 array}``.
  """
  w = {n: x.astype(np.float64) for n, x in w0.items()}
  return [w] + [{n: np.zeros_like(x) for n, x in w.items()}
                for _ in range(num_moments)]


def mlp_problem(keys, sizes, batch, dtype, scale):
  """A two-layer MLP's params and a regression batch, from four keys.

  Args:
    keys: at least four PRNG keys: the two kernels, then ``x`` and ``y``.
    sizes: ``(inputs, hidden, outputs)``.
    batch: the number of examples.
    dtype: of the params and the data.
    scale: of the normal initial kernels.

  Returns:
    ``(params, x, y)``; params ``{'l1': {'kernel', 'bias'}, 'l2':
    {'kernel'}}`` (``mlp_loss``'s).
  """
  n_in, hidden, n_out = sizes
  params = {
      "l1": {"kernel": jax.random.normal(keys[0], (n_in, hidden), dtype)
                       * scale,
             "bias": jnp.zeros(hidden, dtype)},
      "l2": {"kernel": jax.random.normal(keys[1], (hidden, n_out), dtype)
                       * scale}}
  x = jax.random.normal(keys[2], (batch, n_in), dtype)
  y = jax.random.normal(keys[3], (batch, n_out), dtype)
  return params, x, y


def mlp_loss(p, x, y, activation=jnp.tanh):
  """Mean squared error of the MLP of ``mlp_problem``."""
  h = activation(x @ p["l1"]["kernel"] + p["l1"]["bias"])
  return jnp.mean((h @ p["l2"]["kernel"] - y) ** 2)


def trajectory(tx, params, value_fn, steps, *, extra_name="value_fn",
               same_dtypes=False):
  """``steps`` steps of ``tx`` in one jitted step function.

  Args:
    tx: a transformation taking the loss as an extra argument.
    params: the initial params.
    value_fn: the loss, ``params -> scalar``.
    steps: how many steps.
    extra_name: the extra argument's name (``optax.contrib.sophia``:
      ``'obj_fn'``).
    same_dtypes: also check, when tracing, that every update has its
      param's dtype.

  Returns:
    ``(history, losses, traces)``: ``(params, state)`` after each step, the
    loss before each step, and how many times the step was traced.
  """
  traces = []

  @jax.jit
  def step(params, state):
    traces.append(1)
    loss, grads = jax.value_and_grad(value_fn)(params)
    updates, state = tx.update(grads, state, params, **{extra_name: value_fn})
    if same_dtypes:
      assert all(u.dtype == p.dtype for u, p in zip(
          jax.tree.leaves(updates), jax.tree.leaves(params)))
    return optax.apply_updates(params, updates), state, loss

  state = tx.init(params)
  history, losses = [], []
  for _ in range(steps):
    params, state, loss = step(params, state)
    history.append((params, state))
    losses.append(float(loss))
  return history, losses, len(traces)


def assert_trajectory(got, want, rtol=2e-5, atol=1e-6):
  """Params after each step (``got``) against numpy ones, leaf by leaf.

  Args:
    got: a list of ``{name: array}`` params.
    want: a list of ``{name: numpy array}``, as long.
    rtol: relative tolerance.
    atol: absolute tolerance.
  """
  assert len(got) == len(want)
  for t, (g, w) in enumerate(zip(got, want), 1):
    for n in w:
      np.testing.assert_allclose(np.asarray(g[n]), w[n], rtol=rtol, atol=atol,
                                 err_msg=f"step {t}, {n}")


def assert_trains_in_one_program(tx, params, value_fn, steps,
                                 same_dtypes=True):
  """The conformance claims: one trace, a falling loss, dtypes kept.

  Args:
    tx: a transformation taking the extra argument ``value_fn``.
    params: the initial params (all of one dtype).
    value_fn: the loss.
    steps: how many steps (cover refresh and reuse steps).
    same_dtypes: check that the updates have the params' dtypes.

  Returns:
    The state after the last step.
  """
  history, losses, traces = trajectory(tx, params, value_fn, steps,
                                       same_dtypes=same_dtypes)
  assert traces == 1
  assert losses[-1] < losses[0]
  final, state = history[-1]
  assert all(a.dtype == b.dtype for a, b in zip(jax.tree.leaves(final),
                                                jax.tree.leaves(params)))
  return state
