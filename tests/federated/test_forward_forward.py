"""Forward-Forward: goodness, the local loss, labels, stop-gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flatsparse import federated as fl
from flatsparse.federated import forward_forward as ff
from flatsparse.models import FFMLP


def test_goodness_is_the_sum_of_squares_not_of_activities():
  z = jnp.array([[1.0, -2.0, 3.0], [0.0, 0.5, 0.0]])
  # A public JAX port sums the activities (1 - 2 + 3 = 2): not FF's rule.
  np.testing.assert_allclose(fl.goodness(z), [14.0, 0.25])


def test_layer_loss_by_hand():
  g_pos, g_neg = jnp.array([3.0, 1.0]), jnp.array([0.5, 4.0])
  theta = 2.0
  sp = lambda v: np.log1p(np.exp(v))  # noqa: E731
  by_hand = np.mean([sp(2 - 3) + sp(0.5 - 2), sp(2 - 1) + sp(4 - 2)])
  np.testing.assert_allclose(fl.layer_loss(g_pos, g_neg, theta), by_hand,
                             rtol=1e-6)
  # Weighted: the second example is padding.
  np.testing.assert_allclose(
      fl.layer_loss(g_pos, g_neg, theta, jnp.array([1.0, 0.0])),
      sp(2 - 3) + sp(0.5 - 2), rtol=1e-6)


def test_label_embedding_and_neutral_input():
  x = jnp.arange(2 * 14, dtype=jnp.float32).reshape(2, 2, 7) / 100
  out = fl.embed_label(x, jnp.array([3, 0]), 4)
  np.testing.assert_array_equal(out[:, :4], [[0, 0, 0, 1], [1, 0, 0, 0]])
  np.testing.assert_array_equal(out[:, 4:], x.reshape(2, -1)[:, 4:])
  neutral = ff.embed_neutral(x, 4)
  np.testing.assert_allclose(neutral[:, :4], 0.1)
  with pytest.raises(ValueError, match="num_classes=20.*only 14"):
    fl.embed_label(x, jnp.array([0, 1]), 20)


def test_negative_labels_are_never_the_true_one_and_uniform():
  labels = jnp.tile(jnp.arange(10, dtype=jnp.int32), 2000)
  wrong = fl.wrong_labels(jax.random.PRNGKey(0), labels, 10)
  assert not np.any(np.asarray(wrong == labels))
  # For the true label 3, each of the 9 others about 2000 / 9 times.
  counts = np.bincount(np.asarray(wrong[labels == 3]), minlength=10)
  assert counts[3] == 0
  assert np.all(np.abs(counts[np.arange(10) != 3] - 2000 / 9) < 70), counts
  with pytest.raises(ValueError, match="num_classes"):
    fl.wrong_labels(jax.random.PRNGKey(0), labels, 1)


def _model_and_params(**kwargs):
  model = FFMLP((6, 5, 4), num_labels=3, **kwargs)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8)))["params"]
  return model, params


def test_a_layer_loss_has_no_gradient_into_earlier_layers():
  model, params = _model_and_params(readout=True)
  x = jax.random.uniform(jax.random.PRNGKey(1), (5, 8))
  y = jnp.array([0, 1, 2, 0, 1])

  def term(p, name):
    out = fl.ff_forward(model, {"params": p}, x, y, jax.random.PRNGKey(2))
    return fl.ff_loss(out, y, threshold=1.0)[1][name]

  grad = jax.jit(jax.grad(term), static_argnums=1)
  g2 = grad(params, "layer_2")
  assert float(jnp.abs(g2["layer_2"]["kernel"]).sum()) > 0
  for name in ("layer_0", "layer_1", "readout"):
    assert not np.any(jax.tree_util.tree_map(
        lambda a: np.asarray(a).any(), g2[name])["kernel"]), name
  g_readout = grad(params, "readout")
  for name in ("layer_0", "layer_1", "layer_2"):
    assert not np.asarray(g_readout[name]["kernel"]).any(), name
  # The summed loss's gradient on each layer is that layer's own.
  total = jax.jit(jax.grad(
      lambda p: sum(term(p, f"layer_{i}") for i in range(3))))(params)
  g0 = grad(params, "layer_0")
  np.testing.assert_allclose(total["layer_0"]["kernel"],
                             g0["layer_0"]["kernel"], rtol=1e-6)


def test_hidden_activities_are_length_normalized_before_the_next_layer():
  model, params = _model_and_params()
  x = jax.random.uniform(jax.random.PRNGKey(3), (4, 8))
  acts = model.apply({"params": params}, x).activations
  h = acts[0] / (jnp.linalg.norm(acts[0], axis=-1, keepdims=True) + 1e-8)
  layer = params["layer_1"]
  by_hand = jax.nn.relu(h @ layer["kernel"] + layer["bias"])
  np.testing.assert_allclose(acts[1], by_hand, rtol=1e-5, atol=1e-6)
  # Scaling the input scales layer 0 but not what follows (normalized).
  acts2 = model.apply({"params": params}, 3.0 * x).activations
  np.testing.assert_allclose(acts2[0], 3 * acts[0], rtol=1e-5)
  np.testing.assert_allclose(acts2[2], acts[2], rtol=1e-4, atol=1e-6)


def test_goodness_prediction_sums_all_layers_but_the_first():
  model, params = _model_and_params()
  x = jax.random.uniform(jax.random.PRNGKey(4), (3, 8))
  scores = fl.goodness_scores(model, {"params": params}, x)
  for c in range(3):
    acts = model.apply({"params": params}, fl.embed_label(
        x, jnp.full((3,), c), 3)).activations
    np.testing.assert_allclose(
        scores[:, c], fl.goodness(acts[1]) + fl.goodness(acts[2]), rtol=1e-5)
  np.testing.assert_array_equal(fl.predict(model, {"params": params}, x),
                                jnp.argmax(scores, -1))
  with pytest.raises(ValueError, match="readout=True"):
    fl.predict(model, {"params": params}, x, rule="readout")
  with pytest.raises(ValueError, match="Unknown rule 'best'"):
    fl.predict(model, {"params": params}, x, rule="best")


def test_threshold_defaults_to_each_layers_width():
  model, params = _model_and_params()
  x = jax.random.uniform(jax.random.PRNGKey(5), (4, 8))
  y = jnp.array([0, 1, 2, 0])
  out = fl.ff_forward(model, {"params": params}, x, y, jax.random.PRNGKey(6))
  _, terms = fl.ff_loss(out, y)
  for i, width in enumerate((6, 5, 4)):
    np.testing.assert_allclose(terms[f"layer_{i}"], fl.layer_loss(
        fl.goodness(out.positive[i]), fl.goodness(out.negative[i]),
        float(width)), rtol=1e-6)
  with pytest.raises(ValueError, match="2 values for 3 layers"):
    fl.ff_loss(out, y, threshold=(1.0, 2.0))
