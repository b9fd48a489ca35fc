"""Federated learning whose clients train with Forward-Forward or backprop.

* :mod:`~flatsparse.federated.forward_forward`: goodness, the layer-local
  loss, labels in the input, prediction (with :class:`flatsparse.models.
  FFMLP`).
* :mod:`~flatsparse.federated.layerwise`: one optax transformation per
  layer (SAM or pruning per layer).
* :mod:`~flatsparse.federated.partition`: IID, Dirichlet and shard splits.
* :mod:`~flatsparse.federated.fedavg`: the client update, FedAvg's
  aggregation and rounds (one ``vmap`` over clients, sharded over a mesh,
  or a loop).
* :mod:`~flatsparse.federated.server`: rounds with the server state
  checkpointed and resumed (orbax).
* :mod:`~flatsparse.federated.flower`: the same functions as Flower
  clients and strategy (optional ``flwr``; imported only there).
* :mod:`~flatsparse.federated.objectives`: the clients' losses (FF and
  backprop) and their evaluation; :mod:`~flatsparse.federated.costs`: XLA's
  flops and memory of a client's step.
"""

from flatsparse.federated import costs
from flatsparse.federated import fedavg
from flatsparse.federated import forward_forward
from flatsparse.federated import partition
from flatsparse.federated.fedavg import aggregate
from flatsparse.federated.fedavg import client_key
from flatsparse.federated.fedavg import ClientData
from flatsparse.federated.fedavg import clients_per_round
from flatsparse.federated.fedavg import init_server
from flatsparse.federated.fedavg import make_client_update
from flatsparse.federated.fedavg import make_local_step
from flatsparse.federated.fedavg import make_round
from flatsparse.federated.fedavg import sample_clients
from flatsparse.federated.fedavg import ServerState
from flatsparse.federated.fedavg import stack_clients
from flatsparse.federated.forward_forward import embed_label
from flatsparse.federated.forward_forward import ff_forward
from flatsparse.federated.forward_forward import ff_loss
from flatsparse.federated.forward_forward import goodness
from flatsparse.federated.forward_forward import goodness_scores
from flatsparse.federated.forward_forward import layer_loss
from flatsparse.federated.forward_forward import predict
from flatsparse.federated.forward_forward import wrong_labels
from flatsparse.federated.layerwise import layerwise
from flatsparse.federated.layerwise import LayerwiseState
from flatsparse.federated.partition import make_partition
from flatsparse.federated.server import run_rounds

__all__ = [
    "costs", "fedavg", "forward_forward", "partition", "aggregate",
    "client_key", "ClientData", "clients_per_round", "init_server",
    "make_client_update", "make_local_step", "make_round", "sample_clients",
    "ServerState", "stack_clients", "embed_label", "ff_forward", "ff_loss",
    "goodness", "goodness_scores", "layer_loss", "predict", "wrong_labels",
    "layerwise", "LayerwiseState", "make_partition", "run_rounds",
]
