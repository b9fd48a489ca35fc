"""Shared check: a value_fn transform trains an nnx model through
nnx.Optimizer."""

from flax import nnx
import jax.numpy as jnp


def assert_trains_nnx_linear(tx) -> None:
  """10 steps of ``nnx.Optimizer(Linear(4, 2), tx)`` with ``value_fn``."""
  model = nnx.Linear(4, 2, rngs=nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  x = jnp.ones((8, 4))
  y = jnp.zeros((8, 2))

  @nnx.jit
  def train_step(model, optimizer):
    graphdef, _ = nnx.split(model)

    def value_fn(params):
      return jnp.mean((nnx.merge(graphdef, params)(x) - y) ** 2)

    loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    optimizer.update(model, grads, value_fn=value_fn)
    return loss

  losses = [float(train_step(model, optimizer)) for _ in range(10)]
  assert losses[-1] < losses[0]
