"""FedFwd learns the embedded digits: 10 clients, 5 per round, Forward-
Forward only (no backprop anywhere in the clients)."""

import jax
import jax.numpy as jnp
import optax

from flatsparse import federated as fl
from flatsparse.data import load_dataset
from flatsparse.federated import objectives
from flatsparse.models import FFMLP


def test_fedfwd_on_digits_beats_80_percent():
  train = load_dataset("digits", "train", flatten=True)
  test = load_dataset("digits", "test", flatten=True)
  data = fl.stack_clients(train.images, train.labels,
                          fl.partition.iid(train.labels, 10, 0))
  model = FFMLP((128, 128), num_labels=10, threshold=2.0)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64)))["params"]
  update = fl.make_client_update(objectives.forward_forward_loss(model),
                                 optax.adam(0.01), batch_size=32,
                                 local_epochs=2)
  predict = objectives.make_predict(model, "ff")
  before = objectives.accuracy(predict, params, test.images, test.labels)
  state = fl.run_rounds(fl.make_round(update, data, client_fraction=0.5),
                        fl.init_server(params, 0), 15)
  after = objectives.accuracy(predict, state.params, test.images,
                              test.labels)
  assert before < 0.3 and after > 0.8, (before, after)
