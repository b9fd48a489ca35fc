"""The same client update and aggregation as Flower clients and strategy.

``flwr`` is an optional extra (``pip install 'flatsparse[flower]'``); only
this module imports it, lazily. Our pure functions do the work:

* :class:`FlatsparseClient` (a ``flwr`` ``NumPyClient`` via :func:`client`)
  holds one client's padded data and runs the jitted
  :func:`flatsparse.federated.make_client_update` function with
  :func:`flatsparse.federated.client_key` ``(seed, round, client_id)``:
  the update the in-process simulation computes for that client.
* :func:`strategy` is Flower's ``FedAvg`` whose ``aggregate_fit`` checks
  every update (leaf count, shapes, dtypes, finite values, a positive
  example count), drops the bad ones with a warning naming the client and
  the fault, orders the rest by client id and averages them with
  :func:`flatsparse.federated.aggregate`. Failed clients (dropped
  connections, exceptions) are left out by Flower; a round where no client
  is left keeps the old model and :func:`run_server` raises afterwards with
  every reason.

Which clients take part is Flower's choice (its own sampling, not our
seeded one): with the same participants the aggregate equals the in-process
round's (``tests/federated/test_flower.py``).

Flower is told not to call home (``FLWR_TELEMETRY_ENABLED=0``,
``FLWR_DISABLE_UPDATE_CHECK=1``) unless the environment says otherwise.
:func:`run_server` starts the legacy gRPC server in the calling (main)
thread with a bounded wait for clients and puts back the signal handlers it
installs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flatsparse import rng
from flatsparse import validation
from flatsparse.federated import fedavg

__all__ = ["to_ndarrays", "from_ndarrays", "client", "strategy",
           "run_server", "run_client", "UpdateError"]

_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


def _flwr():
  for name, value in _ENV.items():
    os.environ.setdefault(name, value)
  try:
    import flwr  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("flatsparse.federated.flower needs Flower: "
                      "pip install 'flatsparse[flower]'.") from e
  return flwr


class UpdateError(ValueError):
  """A client's update that cannot be averaged (names the client and why)."""


def to_ndarrays(params: Any) -> list[np.ndarray]:
  """The params' leaves as NumPy arrays, in ``tree_leaves`` order."""
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(params)]


def from_ndarrays(arrays: Sequence[np.ndarray], like: Any) -> Any:
  """``arrays`` back into the structure of ``like``.

  Raises:
    UpdateError: a different leaf count, or a leaf whose shape or dtype
      differs (named by its path), or a non-finite value.
  """
  with_paths, treedef = jax.tree_util.tree_flatten_with_path(like)
  if len(arrays) != len(with_paths):
    raise UpdateError(f"{len(arrays)} arrays for a model of "
                      f"{len(with_paths)} leaves.")
  leaves = []
  for (path, leaf), array in zip(with_paths, arrays):
    name = jax.tree_util.keystr(path)
    array = np.asarray(array)
    if array.shape != np.shape(leaf) or array.dtype != np.asarray(
        leaf).dtype:
      raise UpdateError(f"leaf {name} is {array.dtype}{list(array.shape)}, "
                        f"expected {np.asarray(leaf).dtype}"
                        f"{list(np.shape(leaf))}.")
    if np.issubdtype(array.dtype, np.floating) and not np.all(
        np.isfinite(array)):
      raise UpdateError(f"leaf {name} holds non-finite values.")
    leaves.append(array)
  return jax.tree_util.tree_unflatten(treedef, leaves)


class FlatsparseClient:
  """One client's data and update; :func:`client` makes it a Flower client.

  Attributes:
    client_id: the client's index (its data and its key).
    data: ``(images, labels, size)``: the client's padded rows.
    update: the client update (jitted here).
    seed: the run's seed or key.
    like: a params tree of the model (structure, shapes, dtypes).
  """

  def __init__(self, client_id: int, data: tuple[Any, Any, int],
               update: Callable[..., Any], seed: Any, like: Any):
    self.client_id = int(client_id)
    self.data = data
    self.update = jax.jit(update)
    self.key = rng.base_key(seed)
    self.like = like

  def fit(self, arrays: Sequence[np.ndarray], round_index: int
          ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
    """Trains from the broadcast ``arrays`` in round ``round_index``."""
    params = from_ndarrays(arrays, self.like)
    images, labels, size = self.data
    key = fedavg.client_key(self.key, round_index, self.client_id)
    new, metrics = self.update(params, images, labels, size, key)
    return to_ndarrays(new), int(size), {
        "client_id": self.client_id, "loss": float(metrics["loss"])}


def client(flatsparse_client: FlatsparseClient) -> Any:
  """A ``flwr.client.Client`` running ``flatsparse_client``'s update; the
  round comes in the fit config's ``round`` (0 for the first)."""
  flwr = _flwr()

  class _NumPyClient(flwr.client.NumPyClient):

    def get_parameters(self, config):
      del config
      return to_ndarrays(flatsparse_client.like)

    def fit(self, parameters, config):
      return flatsparse_client.fit(parameters, int(config["round"]))

    def evaluate(self, parameters, config):
      del parameters, config
      return 0.0, int(flatsparse_client.data[2]), {}

  return _NumPyClient().to_client()


def strategy(initial_params: Any, *, min_clients: int,
             client_fraction: float = 1.0, start_round: int = 0,
             on_aggregate: Callable[[int, Any], None] | None = None,
             logger: logging.Logger | None = None) -> Any:
  """Flower's FedAvg with our checks and :func:`fedavg.aggregate`.

  To resume a run: restore the :class:`~flatsparse.federated.ServerState`
  that ``on_aggregate`` saved, start from its params at ``start_round =
  state.round`` and run the remaining rounds (the clients' keys follow the
  round index, so the result equals an uninterrupted run)::

    ckpt = flatsparse.train.Checkpointer(path, every_steps=1, keep=2)
    state = fl.init_server(params, seed)
    if ckpt.latest_step() is not None:
      state, _ = ckpt.restore(state)
    fl_strategy = strategy(state.params, start_round=int(state.round), ...,
        on_aggregate=lambda r, p: ckpt.save(
            r + 1, fl.ServerState(p, r + 1, state.key)))
    run_server(fl_strategy, num_rounds=total - int(state.round))

  Args:
    initial_params: the global model at ``start_round`` (also the reference
      structure of every update).
    min_clients: clients to wait for before each round (and to sample at
      least).
    client_fraction: Flower's ``fraction_fit``.
    start_round: the index of the first round this server runs (0 for a
      new run; Flower counts its own rounds from 1 each time).
    on_aggregate: called with ``(round_index, params)`` after each round
      (e.g. to checkpoint; ``round_index`` from 0).
    logger: where dropped updates are reported.

  Returns:
    The strategy; its ``errors`` lists ``(round_index, reason)`` of rounds
    that kept the old model, ``params`` the latest aggregate.
  """
  flwr = _flwr()
  log = logger or logging.getLogger(__name__)
  fedavg.check_fraction(client_fraction)
  start_round = validation.check_count("start_round", start_round, minimum=0)
  mean = jax.jit(fedavg.aggregate)
  to_parameters = flwr.common.ndarrays_to_parameters
  to_arrays = flwr.common.parameters_to_ndarrays

  class _Strategy(flwr.server.strategy.FedAvg):

    def __init__(self):
      super().__init__(
          fraction_fit=client_fraction, fraction_evaluate=0.0,
          min_fit_clients=min_clients, min_available_clients=min_clients,
          min_evaluate_clients=0, accept_failures=True,
          initial_parameters=to_parameters(to_ndarrays(initial_params)),
          on_fit_config_fn=lambda server_round: {
              "round": start_round + server_round - 1})
      self.errors: list[tuple[int, str]] = []
      self.params = initial_params

    def aggregate_fit(self, server_round, results, failures):
      round_index = start_round + server_round - 1
      reasons = [f"a client failed: {f!r}" if isinstance(f, BaseException)
                 else "a client failed" for f in failures]
      good = []
      for proxy, fit_res in results:
        who = fit_res.metrics.get("client_id", f"cid {proxy.cid}")
        try:
          if not isinstance(who, int):
            raise UpdateError("no integer client_id in its metrics.")
          if fit_res.num_examples <= 0:
            raise UpdateError(f"num_examples={fit_res.num_examples}.")
          tree = from_ndarrays(to_arrays(fit_res.parameters), initial_params)
        except UpdateError as e:
          log.warning("Round %d: dropped the update of client %s: %s",
                      round_index, who, e)
          reasons.append(f"client {who}: {e}")
          continue
        good.append((who, fit_res.num_examples, tree))
      if not good:
        self.errors.append((round_index, "; ".join(reasons) or "no result"))
        return None, {}
      good.sort(key=lambda item: item[0])  # the simulation's order
      stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a),
                                       *[t for _, _, t in good])
      self.params = jax.device_get(mean(stacked, np.array(
          [n for _, n, _ in good], np.float32)))
      if on_aggregate is not None:
        on_aggregate(round_index, self.params)
      return to_parameters(to_ndarrays(self.params)), {
          "clients": len(good), "dropped": len(reasons)}

  return _Strategy()


def run_server(fl_strategy: Any, *, num_rounds: int,
               address: str = "127.0.0.1:8080", round_timeout: float = 60.0,
               wait_timeout: float = 60.0) -> Any:
  """Runs Flower's legacy gRPC server for ``num_rounds`` in this thread.

  Args:
    fl_strategy: from :func:`strategy`.
    num_rounds: rounds to run.
    address: ``host:port`` to listen on.
    round_timeout: seconds a round waits for its clients' results.
    wait_timeout: seconds to wait for ``min_clients`` to connect (Flower's
      default is a day).

  Returns:
    Flower's ``History``.

  Raises:
    RuntimeError: when some round had no usable update (its reasons), or
      the clients did not connect in time.
  """
  if threading.current_thread() is not threading.main_thread():
    raise RuntimeError("run_server must run in the main thread (Flower "
                       "installs signal handlers); run clients in threads "
                       "or processes.")
  flwr = _flwr()

  class _BoundedWait(flwr.server.SimpleClientManager):

    def wait_for(self, num_clients, timeout=86400):
      del timeout
      if not super().wait_for(num_clients, timeout=wait_timeout):
        raise RuntimeError(f"{num_clients} Flower clients did not connect "
                           f"to {address} within {wait_timeout} s.")
      return True

  saved = {s: signal.getsignal(s)
           for s in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)}
  try:
    history = flwr.server.start_server(
        server_address=address, strategy=fl_strategy,
        client_manager=_BoundedWait(),
        config=flwr.server.ServerConfig(num_rounds=num_rounds,
                                        round_timeout=round_timeout))
  finally:
    for s, handler in saved.items():
      signal.signal(s, handler)
  if fl_strategy.errors:
    raise RuntimeError("Federated rounds without a usable update: "
                       + " | ".join(f"round {r}: {why}"
                                    for r, why in fl_strategy.errors))
  return history


def run_client(flatsparse_client: FlatsparseClient, *,
               address: str = "127.0.0.1:8080", max_wait: float = 60.0
               ) -> None:
  """Connects one client to the server at ``address`` until it finishes.

  Waits up to ``max_wait`` seconds for the server to listen first (Flower's
  legacy client gives up on a refused first connection).

  Raises:
    TimeoutError: nothing listens at ``address`` within ``max_wait``.
  """
  flwr = _flwr()
  host, port = address.rsplit(":", 1)
  deadline = time.monotonic() + max_wait
  while True:
    try:
      with socket.create_connection((host.strip("[]"), int(port)),
                                    timeout=1.0):
        break
    except OSError as e:
      if time.monotonic() > deadline:
        raise TimeoutError(f"No Flower server listens at {address} after "
                           f"{max_wait} s.") from e
      time.sleep(0.05)
  flwr.client.start_client(server_address=address,
                           client=client(flatsparse_client), insecure=True,
                           max_wait_time=max_wait)
