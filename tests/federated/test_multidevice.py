"""The vmapped clients sharded over 8 simulated CPU devices give the
one-device result (run in its own process: see tests/sparsity/
test_multidevice.py for the rules)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flatsparse import federated as fl
from flatsparse.federated import objectives
from flatsparse.models import FFMLP

pytestmark = [pytest.mark.multidevice,
              pytest.mark.timeout(240, method="thread")]

if jax.device_count() < 8:
  pytest.skip("needs 8 devices: run with "
              "XLA_FLAGS=--xla_force_host_platform_device_count=8 in its own "
              "process", allow_module_level=True)


def test_clients_sharded_over_8_devices_equal_one_device():
  fraction = 0.3  # 4 of 16 clients, padded to the mesh's 8 lanes
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(160, 16)).astype(np.float32)
  labels = (images[:, 12] > 0.5).astype(np.int32) + 2 * (images[:, 13] > 0.5)
  data = fl.stack_clients(images, labels,
                          fl.partition.dirichlet(labels, 16, 0, alpha=1.0,
                                                 min_size=3))
  model = FFMLP((8, 6), num_labels=4, threshold=2.0)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16)))["params"]
  update = fl.make_client_update(
      objectives.forward_forward_loss(model), optax.adam(0.05),
      batch_size=8, local_epochs=1)
  mesh = jax.make_mesh((8,), ("clients",))
  state = fl.init_server(params, 4)
  sharded = fl.run_rounds(
      fl.make_round(update, data, client_fraction=fraction, mesh=mesh),
      state, 2)
  single = fl.run_rounds(
      fl.make_round(update, data, client_fraction=fraction), state, 2)
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      jax.device_get(sharded.params), jax.device_get(single.params))
  assert not np.allclose(sharded.params["layer_0"]["kernel"],
                         params["layer_0"]["kernel"])
