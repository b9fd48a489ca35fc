"""FedAvg: weighted aggregation, client updates, rounds, resume."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flatsparse import federated as fl
from flatsparse.federated import objectives
from flatsparse.models import FFMLP
from flatsparse.models import MLP


def test_weighted_average_by_hand_and_dtypes_kept():
  stacked = {"w": jnp.array([[1.0, 2.0], [3.0, 6.0]]),
             "b": jnp.array([[1.0], [5.0]], jnp.bfloat16)}
  out = fl.aggregate(stacked, jnp.array([1.0, 3.0]))
  np.testing.assert_allclose(out["w"], [2.5, 5.0])
  assert out["b"].dtype == jnp.bfloat16
  np.testing.assert_allclose(np.float32(out["b"]), [4.0])


def test_averaging_identical_clients_is_a_no_op():
  params = {"w": jax.random.normal(jax.random.PRNGKey(0), (5, 3))}
  stacked = jax.tree_util.tree_map(lambda a: jnp.stack([a] * 7), params)
  out = fl.aggregate(stacked, jnp.array([3.0, 1, 4, 1, 5, 9, 2]))
  np.testing.assert_allclose(out["w"], params["w"], rtol=1e-6)


def test_client_sampling_counts_and_fraction_errors():
  assert fl.clients_per_round(10, 0.3) == 3
  assert fl.clients_per_round(10, 0.01) == 1
  assert fl.clients_per_round(7, 1.0) == 7
  ids = np.asarray(fl.sample_clients(jax.random.PRNGKey(0), 100, 10))
  assert len(set(ids.tolist())) == 10 and np.all(np.diff(ids) > 0)
  for bad in (0, 1.5, -0.2):
    with pytest.raises(ValueError, match=f"client_fraction must be in "
                       rf"\(0, 1\], got {bad}"):
      fl.clients_per_round(10, bad)


def _digits_clients(num_clients=6, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.uniform(size=(120, 16)).astype(np.float32)
  labels = (images[:, 10:].sum(1) > 3).astype(np.int32) + 2 * (
      images[:, 11] > 0.5)
  parts = fl.partition.dirichlet(labels, num_clients, seed, alpha=1.0,
                                 min_size=5)
  return fl.stack_clients(images, labels, parts)


def _ff_update(data, lr=0.05, tx=None):
  model = FFMLP((12, 8), num_labels=4, threshold=2.0)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16)))["params"]
  update = fl.make_client_update(
      objectives.forward_forward_loss(model), tx or optax.adam(lr),
      batch_size=8, local_epochs=2)
  return model, params, update


def test_padding_does_not_change_a_clients_update():
  data = _digits_clients()
  k = int(np.argmin(data.sizes))
  n = int(data.sizes[k])
  _, params, update = _ff_update(data)
  key = jax.random.PRNGKey(7)
  step = jax.jit(update)
  a, ma = step(params, data.images[k], data.labels[k], n, key)
  b, mb = step(params, data.images[k, :n], data.labels[k, :n], n, key)
  assert data.images.shape[1] > n + 8  # padded by more than a batch
  assert int(ma["steps"]) == int(mb["steps"]) == 2 * -(-n // 8)
  jax.tree_util.tree_map(
      lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
      a, b)
  assert not np.allclose(a["layer_0"]["kernel"], params["layer_0"]["kernel"])


def test_zero_learning_rate_round_keeps_the_model():
  data = _digits_clients()
  _, params, update = _ff_update(data, tx=optax.sgd(0.0))
  round_fn = fl.make_round(update, data, client_fraction=0.5)
  state, metrics = round_fn(fl.init_server(params, 0))
  assert int(state.round) == 1 and len(metrics["clients"]) == 3
  jax.tree_util.tree_map(
      lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), state.params,
      params)


def test_vmapped_round_equals_the_loop_over_clients():
  data = _digits_clients()
  _, params, update = _ff_update(data)
  state = fl.init_server(params, 3)
  s_vec, m_vec = fl.make_round(update, data, client_fraction=0.5)(state)
  s_loop, m_loop = fl.make_round(update, data, client_fraction=0.5,
                                 vectorize=False)(state)
  assert m_vec["clients"] == m_loop["clients"]
  np.testing.assert_allclose(m_vec["loss"], m_loop["loss"], rtol=1e-5)
  jax.tree_util.tree_map(
      lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
      s_vec.params, s_loop.params)
  # By hand: the loop's clients, averaged by their example counts.
  ids = m_loop["clients"]
  results = [jax.jit(update)(params, data.images[c], data.labels[c],
                             data.sizes[c], fl.client_key(state.key, 0, c))[0]
             for c in ids]
  w = data.sizes[ids].astype(np.float64)
  by_hand = sum(wi * np.asarray(r["layer_1"]["kernel"], np.float64)
                for wi, r in zip(w, results)) / w.sum()
  np.testing.assert_allclose(s_loop.params["layer_1"]["kernel"], by_hand,
                             rtol=1e-5, atol=1e-6)


def test_backprop_clients_and_a_resumed_run_equal_an_uninterrupted_one(
    tmp_path):
  data = _digits_clients()
  model = MLP((8,), 4)
  params = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 16)))["params"]
  update = fl.make_client_update(
      objectives.backprop_loss(model), optax.sgd(0.1), batch_size=8,
      local_epochs=1)
  round_fn = fl.make_round(update, data, client_fraction=0.5)
  straight = fl.run_rounds(round_fn, fl.init_server(params, 5), 4)
  first = fl.run_rounds(round_fn, fl.init_server(params, 5), 2,
                        checkpoint_dir=str(tmp_path))
  assert int(first.round) == 2
  # A fresh process would start from init: the checkpoint wins.
  resumed = fl.run_rounds(round_fn, fl.init_server(params, 5), 4,
                          checkpoint_dir=str(tmp_path))
  assert int(resumed.round) == 4
  jax.tree_util.tree_map(np.testing.assert_array_equal, resumed.params,
                         straight.params)
  assert not np.array_equal(straight.params["head"]["kernel"],
                            params["head"]["kernel"])


def test_stack_clients_pads_and_rejects_empty_clients():
  images = np.arange(10, dtype=np.float32)[:, None]
  data = fl.stack_clients(images, np.arange(10) % 2,
                          [np.array([0, 1, 2]), np.array([5])])
  assert data.images.shape == (2, 3, 1)
  np.testing.assert_array_equal(data.sizes, [3, 1])
  np.testing.assert_array_equal(data.images[1, :, 0], [5, 0, 0])
  with pytest.raises(ValueError, match="client 1 has no example"):
    fl.stack_clients(images, np.arange(10), [np.array([0]), np.array([], int)])

