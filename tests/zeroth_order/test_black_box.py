"""Tests of the black-box objective: values, query counts, no gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flatsparse.zeroth_order import black_box


def quadratic(params, batch):
  return jnp.sum((params["w"] - batch["x"]) ** 2)


def hits(params, batch):
  return jnp.mean((params["w"] > batch["x"]).astype(jnp.float32))


PARAMS = {"w": jnp.array([1.0, 2.0, 3.0])}
BATCH = {"x": jnp.array([0.0, 1.0, 1.0])}


@pytest.fixture
def box():
  return black_box.BlackBox(quadratic, hits)


def test_values_are_the_wrapped_functions(box):
  assert float(box.loss(PARAMS, BATCH)) == pytest.approx(6.0)
  assert float(box.accuracy(PARAMS, BATCH)) == pytest.approx(1.0)
  assert box.queries == 1 and box.accuracy_queries == 1


def test_counts_every_execution_and_every_vmap_lane(box):
  loss = jax.jit(box.loss)
  for _ in range(3):  # one trace, three executions
    loss(PARAMS, BATCH)
  many = {"w": jnp.ones((5, 3))}
  out = jax.vmap(box.loss, in_axes=(0, None))(many, BATCH)
  assert out.shape == (5,)
  four = {"w": jnp.ones((4, 3))}
  jax.block_until_ready(
      jax.jit(jax.vmap(box.loss, in_axes=(0, None)))(four, BATCH))
  assert box.queries == 3 + 5 + 4
  assert box.accuracy_queries == 0


def test_counts_lanes_the_value_ignores_nested_vmaps_and_scan():
  box = black_box.BlackBox(lambda p, b: jnp.sum(b["x"]))
  jax.vmap(box.loss, in_axes=(0, None))({"w": jnp.ones((4, 3))}, BATCH)
  assert box.queries == 4
  box.reset()
  nested = jax.vmap(jax.vmap(box.loss, in_axes=(0, None)), in_axes=(0, None))
  jax.jit(nested)({"w": jnp.ones((2, 3, 3))}, BATCH)
  assert box.queries == 6

  def scanned(ws):
    return jax.lax.scan(lambda c, w: (c + box.loss({"w": w}, BATCH), None),
                        0.0, ws)[0]

  jax.jit(scanned)(jnp.ones((7, 3)))
  assert box.queries == 13
  box.reset()
  jax.lax.map(lambda w: box.loss({"w": w}, BATCH), jnp.ones((6, 3)),
              batch_size=4)  # a scan of vmaps and a remainder
  assert box.queries == 6
  box.reset()
  loop = jax.jit(lambda n: jax.lax.fori_loop(  # a while loop: n is traced
      0, n, lambda i, c: c + box.loss({"w": c + i}, BATCH), 0.0))
  loop(5)
  assert box.queries == 5


def test_an_unused_value_is_still_counted(box):
  def discard(params):
    box.loss(params, BATCH)
    return params["w"]

  jax.jit(discard)(PARAMS)
  assert box.queries == 1


def test_reset_zeroes_both_counts(box):
  box.loss(PARAMS, BATCH)
  box.accuracy(PARAMS, BATCH)
  box.reset()
  assert (box.queries, box.accuracy_queries) == (0, 0)
  assert repr(box) == "BlackBox(queries=0, accuracy_queries=0)"


@pytest.mark.parametrize("transform", ["grad", "jvp", "vjp", "grad_jit"])
def test_differentiation_is_refused(box, transform):
  def f(w):
    return box.loss({"w": w}, BATCH)

  w = PARAMS["w"]
  with pytest.raises(TypeError, match="black box: it has no gradients"):
    if transform == "grad":
      jax.grad(f)(w)
    elif transform == "jvp":
      jax.jvp(f, (w,), (w,))
    elif transform == "vjp":
      jax.vjp(f, w)
    else:
      jax.jit(jax.grad(f))(w)


def test_accuracy_has_no_gradients_either(box):
  with pytest.raises(TypeError, match="BlackBox.accuracy is a black box"):
    jax.grad(lambda w: box.accuracy({"w": w}, BATCH))(PARAMS["w"])


def test_a_stopped_gradient_does_not_query_the_rule(box):
  g = jax.grad(lambda w: box.loss(jax.lax.stop_gradient({"w": w}), BATCH)
               + jnp.sum(w))(PARAMS["w"])
  np.testing.assert_array_equal(g, np.ones(3))


def test_errors_name_the_bad_value():
  with pytest.raises(TypeError, match="loss_fn must be callable.*got 3"):
    black_box.BlackBox(3)
  with pytest.raises(TypeError, match="accuracy_fn must be callable"):
    black_box.BlackBox(quadratic, "acc")
  with pytest.raises(ValueError, match="has no accuracy.*got None"):
    black_box.BlackBox(quadratic).accuracy(PARAMS, BATCH)
  vector = black_box.BlackBox(lambda p, b: p["w"])
  with pytest.raises(ValueError, match=r"must return a scalar.*\(3,\)"):
    vector.loss(PARAMS, BATCH)


def test_the_wrapped_functions_are_not_exposed(box):
  public = {n for n in dir(box) if not n.startswith("_")}
  assert public == {"loss", "accuracy", "queries", "accuracy_queries",
                    "reset"}
