r"""FedAvg rounds per second: one vmap over the clients against a Python loop
of the same jitted client update; and what an FF step needs in memory.

  python -m benchmarks.fedfwd_rounds [--workloads=digits,fashion_mnist]
      [--clients=100] [--rounds=5]

For each workload, ``--clients`` clients (IID split of the training set), all
of them in every round (fraction 1.0), one local epoch of Forward-Forward
(an FFMLP, Adam), batch 32:

* ``vmapped``: :func:`flatsparse.federated.make_round` (default): the
  sampled clients' update in one jitted ``vmap``, then the weighted mean.
* ``loop``: ``make_round(vectorize=False)``: the same jitted per-client
  update called once per client, then the same jitted mean.

A round is timed whole (host-side gathering and dispatch included), after
one untimed warm-up round each; the two variants alternate round by round,
so drifts in load hit both. Figures: median seconds per round, rounds per
second, ``speedup = loop / vmapped`` (medians; target >= 5 for 100
clients on the CPU). Both give the same model up to float rounding
(``same_result``: the largest difference of a weight is at most 1% of the
largest change the round made; both figures are printed: batched matmuls
round differently and Adam's normalized steps carry it on).

Memory (XLA's memory analysis of one local step of the workload's model,
nothing runs): ``ff_step`` (every layer's local loss in one step),
``ff_one_layer`` (the largest step that trains one layer from its own loss,
what a layer-at-a-time schedule keeps), ``bp_step`` (the same hidden layers
with a head, backprop), in MiB of scratch and of the peak estimate
(arguments + outputs + scratch - aliased); peak ratios against ``bp_step``
(XLA:CPU plans backprop's step with no scratch at these sizes, so scratch
has no ratio).

Workloads: ``digits`` (8x8 digits, 14 examples a client at 100 clients,
an FFMLP 64-256-256: dispatch-bound, the vmap's case) and
``fashion_mnist`` (Debian's Fashion-MNIST, 600 a client, 784-500-500:
compute-bound); ``tiny`` (digits, one layer of 32: the smoke test).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from flatsparse import federated as fl
from flatsparse.data import load_dataset
from flatsparse.federated import objectives
from flatsparse.models import FFMLP
from flatsparse.models import MLP

WORKLOADS = {"digits": ("digits", (256, 256)),
             "fashion_mnist": ("fashion_mnist_debian", (500, 500)),
             "tiny": ("digits", (32,))}  # the smoke test's
BATCH = 32


def _data(name: str) -> tuple[np.ndarray, np.ndarray]:
  dataset, _ = WORKLOADS[name]
  kwargs = {"flatten": True} if dataset == "digits" else {}
  train = load_dataset(dataset, "train", **kwargs)
  return (np.asarray(train.images, np.float32).reshape(
      train.images.shape[0], -1), np.asarray(train.labels, np.int32))


def memory(hidden: tuple[int, ...], dim: int) -> dict[str, Any]:
  """The three steps' memory plans (MiB) and their peaks over backprop's."""
  costs = fl.costs.ff_step_costs(FFMLP(hidden, num_labels=10),
                                 MLP(hidden, 10), optax.adam(1e-3), BATCH,
                                 dim)
  plans = {"ff_step": costs["ff_step"], "bp_step": costs["bp_step"],
           "ff_one_layer": max(costs["ff_layers"],
                               key=lambda c: c["peak_bytes"])}
  mib = {k: {"temp_mib": round(v["temp_bytes"] / 2**20, 3),
             "peak_mib": round(v["peak_bytes"] / 2**20, 3),
             "gflop_per_step": round(v["flops"] / 1e9, 4)}
         for k, v in plans.items()}
  base = plans["bp_step"]
  ratios = {f"{k}_peak_over_bp": round(v["peak_bytes"] / base["peak_bytes"],
                                       3) for k, v in plans.items()
            if k != "bp_step"}
  return {"plans": mib, "ratios": ratios}


def rounds(name: str, clients: int, num_rounds: int) -> dict[str, Any]:
  """Seconds per round of the vmapped and the looped simulation."""
  images, labels = _data(name)
  _, hidden = WORKLOADS[name]
  data = fl.stack_clients(images, labels, fl.partition.iid(labels, clients,
                                                           0))
  model = FFMLP(hidden, num_labels=10, threshold=2.0)
  params = model.init(jax.random.PRNGKey(0),
                      jnp.zeros((1, images.shape[1])))["params"]
  update = fl.make_client_update(objectives.forward_forward_loss(model),
                                 optax.adam(0.01), batch_size=BATCH,
                                 local_epochs=1)
  variants = {"vmapped": fl.make_round(update, data, client_fraction=1.0),
              "loop": fl.make_round(update, data, client_fraction=1.0,
                                    vectorize=False)}
  state = fl.init_server(params, 0)
  warm = {k: fn(state)[0] for k, fn in variants.items()}  # compile
  # Batched and single matmuls round differently and Adam's normalized
  # steps carry that on: compare the difference with the round's update.
  leaves = [jax.tree_util.tree_leaves(t) for t in (
      warm["vmapped"].params, warm["loop"].params, params)]
  difference = max(float(np.abs(a - b).max()) for a, b, _ in zip(*leaves))
  update = max(float(np.abs(a - p).max()) for a, _, p in zip(*leaves))
  seconds = {k: [] for k in variants}
  for _ in range(num_rounds):
    for k, fn in variants.items():
      start = time.perf_counter()
      out, _ = fn(state)
      jax.block_until_ready(out.params)
      seconds[k].append(time.perf_counter() - start)
  med = {k: statistics.median(v) for k, v in seconds.items()}
  return {"clients": clients,
          "examples_per_client": float(data.sizes.mean()),
          "hidden": list(hidden),
          "max_abs_difference": difference,
          "difference_over_update": difference / update,
          "same_result": difference <= 1e-2 * update,
          "seconds_per_round": {k: round(v, 4) for k, v in med.items()},
          "rounds_per_second": {k: round(1 / v, 3) for k, v in med.items()},
          "speedup": round(med["loop"] / med["vmapped"], 2),
          "per_round_speedups": [round(a / b, 2) for a, b in zip(
              seconds["loop"], seconds["vmapped"])],
          "meets_target": med["loop"] / med["vmapped"] >= 5.0,
          "memory": memory(hidden, images.shape[1])}


def main(argv: list[str]) -> dict[str, Any]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workloads", default="digits,fashion_mnist")
  parser.add_argument("--clients", type=int, default=100)
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--out", default=None, help="Also write the JSON here.")
  args = parser.parse_args(argv)
  names = common.parse_names(args.workloads, tuple(WORKLOADS), "workload")
  result = {"benchmark": "fedfwd_rounds", "device": common.device_info(),
            "workloads": {n: rounds(n, args.clients, args.rounds)
                          for n in names}}
  text = json.dumps(result, indent=1)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")
  return result


if __name__ == "__main__":
  main(sys.argv[1:])
