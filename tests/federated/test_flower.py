"""The Flower adapter: a real server and clients on loopback give the
in-process FedAvg aggregate; bad or failing clients do not corrupt it."""

import socket
import threading

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flatsparse import federated as fl
from flatsparse.federated import objectives
from flatsparse.models import FFMLP

flower = pytest.importorskip("flatsparse.federated.flower")
pytest.importorskip("flwr")


def _free_address():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return f"127.0.0.1:{s.getsockname()[1]}"


def _setup(num_clients):
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(60, 16)).astype(np.float32)
  labels = (images[:, 12] > 0.5).astype(np.int32) + 2 * (images[:, 13] > 0.5)
  data = fl.stack_clients(images, labels,
                          fl.partition.iid(labels, num_clients, 0))
  model = FFMLP((8, 6), num_labels=4, threshold=2.0)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16)))["params"]
  update = fl.make_client_update(
      objectives.forward_forward_loss(model), optax.adam(0.05),
      batch_size=8, local_epochs=1)
  return data, params, update


def _client(k, data, update, params, seed):
  return flower.FlatsparseClient(
      k, (data.images[k], data.labels[k], int(data.sizes[k])), update, seed,
      params)


def _run_client(client, address):
  try:
    flower.run_client(client, address=address, max_wait=30)
  except ConnectionError:  # _DropsOut's, on purpose
    pass


def _serve(strategy, clients, rounds, address):
  threads = [threading.Thread(target=_run_client, args=(c, address),
                              daemon=True) for c in clients]
  for t in threads:
    t.start()
  try:
    return flower.run_server(strategy, num_rounds=rounds, address=address,
                             round_timeout=30, wait_timeout=30)
  finally:
    for t in threads:
      t.join(timeout=30)


def test_two_flower_clients_on_loopback_equal_in_process_fedavg(tmp_path):
  data, params, update = _setup(2)
  seed = 11
  clients = [_client(k, data, update, params, seed) for k in (0, 1)]
  strategy = flower.strategy(params, min_clients=2)
  _serve(strategy, clients, 2, _free_address())
  expected = fl.run_rounds(
      fl.make_round(update, data, client_fraction=1.0, vectorize=False),
      fl.init_server(params, seed), 2)
  jax.tree_util.tree_map(np.testing.assert_array_equal, strategy.params,
                         jax.device_get(expected.params))
  assert not np.array_equal(strategy.params["layer_0"]["kernel"],
                            params["layer_0"]["kernel"])
  # One round, a checkpoint, a new server resuming for the second round:
  # the strategy's docstring recipe gives the uninterrupted result.
  from flatsparse.train import Checkpointer  # pylint: disable=g-import-not-at-top
  for _ in range(2):
    with Checkpointer(str(tmp_path), every_steps=1, keep=2) as ckpt:
      state = fl.init_server(params, seed)
      if ckpt.latest_step() is not None:
        state, _ = ckpt.restore(jax.device_get(state))
      resumed = flower.strategy(
          state.params, min_clients=2, start_round=int(state.round),
          on_aggregate=lambda r, p, ckpt=ckpt, key=state.key: ckpt.save(
              r + 1, fl.ServerState(p, np.int32(r + 1), key)))
      _serve(resumed, clients, 1, _free_address())
      ckpt.wait()
  assert ckpt.latest_step() == 2
  jax.tree_util.tree_map(np.testing.assert_array_equal, resumed.params,
                         strategy.params)


class _Malformed(flower.FlatsparseClient):

  def fit(self, arrays, round_index):
    out, n, metrics = super().fit(arrays, round_index)
    return [a[..., :1] for a in out], n, metrics


class _DropsOut(flower.FlatsparseClient):

  def fit(self, arrays, round_index):
    raise ConnectionError("client lost its network mid-round")


def test_a_dropped_client_and_a_malformed_update_leave_the_others(caplog):
  data, params, update = _setup(4)
  seed = 3
  strategy = flower.strategy(params, min_clients=4)
  clients = [_client(0, data, update, params, seed),
             _client(1, data, update, params, seed),
             _Malformed(2, (data.images[2], data.labels[2], 15), update, seed,
                        params),
             _DropsOut(3, (data.images[3], data.labels[3], 15), update, seed,
                       params)]
  with caplog.at_level("WARNING"):
    _serve(strategy, clients, 1, _free_address())
  assert any("client 2" in r.getMessage() and "expected" in r.getMessage()
             for r in caplog.records), caplog.text
  # The aggregate of clients 0 and 1 alone, by hand.
  key = fl.init_server(params, seed).key
  results = [jax.jit(update)(params, data.images[k], data.labels[k],
                             data.sizes[k], fl.client_key(key, 0, k))[0]
             for k in (0, 1)]
  w = data.sizes[:2].astype(np.float32)
  by_hand = fl.aggregate(jax.tree_util.tree_map(
      lambda *a: jnp.stack(a), *results), w)
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
      strategy.params, jax.device_get(by_hand))


def test_a_round_without_a_usable_update_fails_with_the_reasons():
  from flwr.common import FitRes  # pylint: disable=g-import-not-at-top
  from flwr.common import ndarrays_to_parameters
  from flwr.common import Status
  _, params, _ = _setup(2)
  strategy = flower.strategy(params, min_clients=1)
  bad = [np.zeros((3,), np.float32)] * 4
  res = FitRes(Status(code=0, message=""), ndarrays_to_parameters(bad), 5,
               {"client_id": 7})

  class Proxy:
    cid = "x"

  out, _ = strategy.aggregate_fit(1, [(Proxy(), res)],
                                  [RuntimeError("timeout")])
  assert out is None
  assert strategy.errors and "client 7" in strategy.errors[0][1]
  assert "timeout" in strategy.errors[0][1]
  nan = [np.full_like(a, np.nan) for a in flower.to_ndarrays(params)]
  with pytest.raises(flower.UpdateError, match="non-finite"):
    flower.from_ndarrays(nan, params)
