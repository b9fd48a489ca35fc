"""Federated averaging as pure functions: client update, aggregation, rounds.

One round of FedAvg (McMahan et al., Algorithm 1)::

  S_t  = m clients sampled without replacement, m = max(floor(C K), 1)
  w_k  = ClientUpdate(k, w_t)         for k in S_t (E local epochs)
  w_t+1 = sum_{k in S_t} n_k w_k / sum_{k in S_t} n_k

:func:`make_client_update` builds ``ClientUpdate`` from any loss (Forward-
Forward's layer-local losses or backprop's cross-entropy) and any optax
transformation; the client's optimizer starts fresh every round. Each local
epoch visits the client's ``n_k`` examples once in a fresh order, in
``ceil(n_k / B)`` batches (the last one partial, weighted exactly). Clients
hold different numbers of examples, so the data is padded to the largest
client and the steps past a client's own count leave its state unchanged:
every client's result is what it would compute alone, which is what lets
:func:`make_round` run all sampled clients as one ``vmap`` (sharded over a
device mesh) or as a Python loop over the same jitted update (the two agree
to float rounding; the Flower adapter runs the loop's per-client function).

Randomness: round ``t`` samples with ``fold_in(fold_in(key, t), 0)`` and
client ``k`` trains with :func:`client_key` ``(key, t, k)``, so a resumed run
repeats an uninterrupted one and a client can derive its key alone.

References:
  McMahan et al., "Communication-efficient learning of deep networks from
  decentralized data", AISTATS 2017.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flatsparse import rng
from flatsparse import validation

__all__ = ["ClientData", "ServerState", "stack_clients", "clients_per_round",
           "sample_clients", "client_key", "aggregate", "init_server",
           "make_local_step", "make_client_update", "make_round",
           "check_fraction"]

# (params, images, labels, weights, key) -> scalar loss (a weighted mean).
LossFn = Callable[[Any, jax.Array, jax.Array, jax.Array, jax.Array],
                  jax.Array]


class ClientData(NamedTuple):
  """Every client's examples, padded to the largest client.

  Attributes:
    images: ``(K, N_max, ...)``.
    labels: ``(K, N_max)`` int32.
    sizes: ``(K,)`` int32, each client's real count ``n_k`` (its first
      ``n_k`` rows are real, the rest zeros).
  """

  images: np.ndarray
  labels: np.ndarray
  sizes: np.ndarray


class ServerState(NamedTuple):
  """What the server keeps between rounds (checkpointed).

  Attributes:
    params: the global model.
    round: the number of finished rounds (int32).
    key: the run's base PRNG key.
  """

  params: Any
  round: jax.Array
  key: jax.Array


def stack_clients(images: np.ndarray, labels: np.ndarray,
                  parts: Sequence[np.ndarray]) -> ClientData:
  """Gathers each client's examples (``parts`` from
  :mod:`flatsparse.federated.partition`) into padded arrays."""
  if not parts:
    raise ValueError("parts is empty: no client.")
  sizes = np.array([len(p) for p in parts], np.int32)
  if sizes.min() < 1:
    raise ValueError(f"client {int(sizes.argmin())} has no example.")
  n_max = int(sizes.max())
  out_images = np.zeros((len(parts), n_max) + images.shape[1:], images.dtype)
  out_labels = np.zeros((len(parts), n_max), np.int32)
  for k, p in enumerate(parts):
    out_images[k, :len(p)] = images[p]
    out_labels[k, :len(p)] = labels[p]
  return ClientData(out_images, out_labels, sizes)


def check_fraction(fraction: Any) -> float:
  """The client fraction ``C`` in ``(0, 1]``."""
  validation.check("client_fraction", fraction, lambda v: 0 < v <= 1,
                   "in (0, 1]")
  return float(fraction)


def clients_per_round(num_clients: int, fraction: float) -> int:
  """``m = max(floor(C K), 1)`` (McMahan et al.)."""
  validation.check_count("num_clients", num_clients)
  # The epsilon keeps 0.3 * 10 at 3, not 2.
  return max(int(math.floor(check_fraction(fraction) * num_clients + 1e-9)),
             1)


def sample_clients(key: jax.Array, num_clients: int, m: int) -> jax.Array:
  """``m`` distinct client ids in ``[0, num_clients)``, ascending."""
  if m > num_clients:
    raise ValueError(f"Cannot sample {m} of {num_clients} clients.")
  ids = jax.random.choice(key, num_clients, (m,), replace=False)
  return jnp.sort(ids).astype(jnp.int32)


def _round_key(key: jax.Array, round_index: Any) -> jax.Array:
  return jax.random.fold_in(rng.base_key(key), round_index)


def client_key(key: jax.Array, round_index: Any, client_id: Any
               ) -> jax.Array:
  """The key client ``client_id`` trains with in round ``round_index``."""
  return jax.random.fold_in(
      jax.random.fold_in(_round_key(key, round_index), 1), client_id)


def aggregate(client_params: Any, weights: jax.Array) -> Any:
  """The weighted mean ``sum_k n_k w_k / sum_k n_k`` over the leading axis.

  Args:
    client_params: the clients' params stacked on a leading axis.
    weights: ``(m,)`` non-negative, not all zero (sample counts).

  Returns:
    A tree like one client's params (dtypes kept; summed in float32 or
    wider).
  """
  weights = jnp.asarray(weights, jnp.float32)
  share = weights / jnp.sum(weights)

  def mean(leaf: jax.Array) -> jax.Array:
    acc = jnp.promote_types(leaf.dtype, jnp.float32)
    return jnp.tensordot(share.astype(acc), leaf.astype(acc),
                         axes=1).astype(leaf.dtype)

  return jax.tree_util.tree_map(mean, client_params)


def init_server(params: Any, seed: Any) -> ServerState:
  """Round 0 with the global ``params`` and the run's seed (int or key)."""
  return ServerState(params, jnp.zeros((), jnp.int32), rng.base_key(seed))


def make_local_step(loss_fn: LossFn, tx: optax.GradientTransformation
                    ) -> Callable[..., tuple[Any, Any, jax.Array]]:
  """One local step: ``step(params, opt_state, images, labels, weights, key)
  -> (params, opt_state, loss)``, ``tx`` given ``value_fn`` (the batch
  loss) as its extra argument."""
  tx = optax.with_extra_args_support(tx)

  def step(params, opt_state, images, labels, weights, key):
    value_fn = lambda p: loss_fn(p, images, labels, weights, key)  # noqa: E731
    loss, grads = jax.value_and_grad(value_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params,
                                   value_fn=value_fn)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


def make_client_update(loss_fn: LossFn, tx: optax.GradientTransformation, *,
                       batch_size: int, local_epochs: int
                       ) -> Callable[..., tuple[Any, dict[str, jax.Array]]]:
  """``ClientUpdate``: ``E`` epochs of ``tx`` on one client's padded data.

  Args:
    loss_fn: ``(params, images, labels, weights, key) -> loss``, the weighted
      mean over a batch (weights 0 mark padding); it is also the
      ``value_fn`` passed to ``tx`` (SAM, SAFE, second-order methods).
    tx: the client's optimizer (fresh state every round).
    batch_size: ``B``.
    local_epochs: ``E``.

  Returns:
    ``update(params, images, labels, size, key) -> (params, metrics)``, pure
    and jittable; ``images`` and ``labels`` hold the client's ``size``
    examples first, padded to any length (the result does not depend on
    it; one compilation per padded length); ``metrics``: ``loss`` (mean
    over the client's real steps) and ``steps``.
  """
  batch_size = validation.check_count("batch_size", batch_size)
  local_epochs = validation.check_count("local_epochs", local_epochs)
  tx = optax.with_extra_args_support(tx)
  local_step = make_local_step(loss_fn, tx)

  def update(params, images, labels, size, key):
    max_examples = images.shape[0]
    steps_max = -(-max_examples // batch_size)
    padded = steps_max * batch_size
    size = jnp.asarray(size, jnp.int32)
    order_key, step_key = jax.random.split(key)
    slots = jnp.arange(padded)

    def epoch_order(k):
      # Real examples first, in a fresh random order; then the padding. A
      # slot's score depends on its index only, so the order of a client's
      # examples does not depend on how far the data is padded.
      scores = jax.vmap(lambda i: jax.random.uniform(
          jax.random.fold_in(k, i)))(slots)
      return jnp.argsort(jnp.where(slots < size, scores, 2.0 + slots))

    orders = jax.vmap(lambda e: epoch_order(jax.random.fold_in(
        order_key, e)))(jnp.arange(local_epochs))
    orders = jnp.minimum(orders, max_examples - 1)
    steps = -(-size // batch_size)
    opt_state = tx.init(params)

    def step(carry, t):
      params, opt_state, loss_sum = carry
      epoch, j = t // steps_max, t % steps_max
      idx = jax.lax.dynamic_slice(orders[epoch], (j * batch_size,),
                                  (batch_size,))
      weights = (j * batch_size + jnp.arange(batch_size) < size).astype(
          jnp.float32)
      k = jax.random.fold_in(jax.random.fold_in(step_key, epoch), j)
      new_params, new_opt_state, loss = local_step(
          params, opt_state, images[idx], labels[idx], weights, k)
      real = j < steps
      keep = lambda new, old: jax.tree_util.tree_map(  # noqa: E731
          lambda a, b: jnp.where(real, a, b), new, old)
      return (keep(new_params, params), keep(new_opt_state, opt_state),
              loss_sum + jnp.where(real, loss, 0.0)), None

    (params, _, loss_sum), _ = jax.lax.scan(
        step, (params, opt_state, jnp.zeros((), jnp.float32)),
        jnp.arange(local_epochs * steps_max))
    real_steps = local_epochs * steps
    return params, {"loss": loss_sum / real_steps, "steps": real_steps}

  return update


def make_round(client_update: Callable[..., Any], data: ClientData, *,
               client_fraction: float, vectorize: bool = True,
               mesh: jax.sharding.Mesh | None = None, axis: str = "clients"
               ) -> Callable[[ServerState], tuple[ServerState, dict]]:
  """One FedAvg round as ``round_fn(state) -> (state, metrics)``.

  Args:
    client_update: from :func:`make_client_update`.
    data: every client's data (:func:`stack_clients`), kept on the host;
      each round sends only the sampled clients' rows.
    client_fraction: ``C`` in ``(0, 1]``.
    vectorize: one ``vmap`` over the sampled clients (default) or a Python
      loop calling the jitted ``client_update`` per client.
    mesh: shard the vmapped client axis over this mesh's ``axis`` (the
      sampled clients are padded with weight-0 copies to a multiple of its
      size).
    axis: the mesh axis of the clients.

  Returns:
    ``round_fn``; its metrics: ``clients`` (ids), ``loss`` (the clients'
    mean loss weighted by ``n_k``), ``examples``.
  """
  num_clients = int(data.sizes.shape[0])
  m = clients_per_round(num_clients, client_fraction)
  lanes = m
  if mesh is not None and vectorize:
    size = mesh.shape[axis]
    lanes = -(-m // size) * size
  @jax.jit
  def sample(key, r):
    ids = sample_clients(jax.random.fold_in(_round_key(key, r), 0),
                         num_clients, m)
    return ids, jax.vmap(lambda c: client_key(key, r, c))(ids)

  one_client = jax.jit(client_update)
  mean = jax.jit(aggregate)

  def train_vmapped(params, images, labels, sizes, keys, weights):
    in_axes = (None, 0, 0, 0, 0)
    new, metrics = jax.vmap(client_update, in_axes=in_axes)(
        params, images, labels, sizes, keys)
    return aggregate(new, weights), metrics

  if mesh is not None:
    # The client axis is laid out by jit's shardings (Auto axes); a mesh of
    # Explicit axes (jax.make_mesh's default) is re-made with Auto ones.
    mesh = jax.sharding.Mesh(
        mesh.devices, mesh.axis_names,
        axis_types=(jax.sharding.AxisType.Auto,) * len(mesh.axis_names))
    spread = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
        axis))
    same = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    train_all = jax.jit(train_vmapped, in_shardings=(
        same, spread, spread, spread, spread, spread), out_shardings=(
            same, spread))
  else:
    train_all = jax.jit(train_vmapped)

  n_max = int(data.images.shape[1])

  def rows(ids):
    # The sampled clients' rows, padded to the power of two above their
    # largest client (capped at the data's padding): few compilations, and
    # a round costs what its own largest client needs.
    length = min(n_max, 1 << int(np.ceil(np.log2(data.sizes[ids].max()))))
    return data.images[ids, :length], data.labels[ids, :length]

  def round_fn(state: ServerState) -> tuple[ServerState, dict[str, Any]]:
    r = int(state.round)
    ids, keys = sample(state.key, r)
    ids = np.asarray(ids)
    weights = data.sizes[ids].astype(np.float32)
    if vectorize:
      pad = lanes - m
      lane_ids = np.concatenate([ids, np.repeat(ids[:1], pad)])
      lane_weights = np.concatenate([weights, np.zeros(pad, np.float32)])
      lane_keys = jnp.concatenate([keys, jnp.repeat(keys[:1], pad, 0)])
      args = (state.params, *rows(lane_ids), data.sizes[lane_ids],
              lane_keys, lane_weights)
      if mesh is not None:  # placed before the call (WORKSPACE.md)
        args = (jax.device_put(args[0], same),) + tuple(
            jax.device_put(a, spread) for a in args[1:])
      params, metrics = jax.block_until_ready(train_all(*args))
      losses = np.asarray(metrics["loss"])[:m]
    else:
      results = []
      for i, c in enumerate(ids):
        images, labels = rows(ids[i:i + 1])
        results.append(one_client(state.params, images[0], labels[0],
                                  data.sizes[c], keys[i]))
      stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a),
                                       *[p for p, _ in results])
      params = mean(stacked, weights)
      losses = np.array([float(mt["loss"]) for _, mt in results])
    metrics = {"clients": ids.tolist(),
               "loss": float(np.sum(losses * weights) / np.sum(weights)),
               "examples": int(np.sum(weights))}
    return ServerState(params, state.round + 1, state.key), metrics

  return round_fn
