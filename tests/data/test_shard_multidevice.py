"""shard_batch on a mesh of 8 simulated CPU devices.

Run in its own process, with the flag set before jax is imported::

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python -m pytest -q -m multidevice tests/data/test_shard_multidevice.py

Follows WORKSPACE.md's multi-device rules: inputs placed before the step,
every result blocked on, and a hard timeout (thread method: a hang sits in
XLA's C++).
"""

import jax
import jax.numpy as jnp
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from flatsparse.data import data_sharding
from flatsparse.data import Dataset
from flatsparse.data import Loader
from flatsparse.data import pipeline
from flatsparse.data import shard_batch

pytestmark = [pytest.mark.multidevice,
              pytest.mark.timeout(120, method="thread")]

if jax.device_count() < 8:
  pytest.skip(
      "needs 8 devices: run with "
      "XLA_FLAGS=--xla_force_host_platform_device_count=8 in its own process",
      allow_module_level=True,
  )


def _loader(n=37):
  rng = np.random.default_rng(0)
  ds = Dataset(rng.random((n, 4, 4, 3), dtype=np.float32),
               rng.integers(0, 5, n).astype(np.int32), 5)
  return Loader(ds, ds, batch_size=16, augment=True, normalize=True)


def test_train_batch_is_split_over_data_axis():
  mesh = jax.make_mesh((4, 2), ("data", "model"),
                       axis_types=(AxisType.Auto,) * 2)
  sharding = data_sharding(mesh)
  batch = _loader().train_batch(0, 5)
  placed = shard_batch(batch, sharding)
  for key, value in placed.items():
    assert value.sharding == sharding
    # 4 data shards of 4 examples, each replicated over the 2 'model' devices.
    assert {s.data.shape[0] for s in value.addressable_shards} == {4}
    np.testing.assert_array_equal(np.asarray(value), batch[key])


def test_exact_masked_eval_on_mesh():
  mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
  sharding = data_sharding(mesh)
  loader = _loader()

  @jax.jit
  def sums(batch):
    correct = (batch["label"] % 2 == 0).astype(jnp.float32)
    return jnp.sum(correct * batch["mask"]), jnp.sum(batch["mask"])

  correct = count = 0.0
  for batch in loader.eval_batches(16):
    c, n = jax.block_until_ready(sums(shard_batch(batch, sharding)))
    correct, count = correct + float(c), count + float(n)
  labels = np.concatenate(
      [b["label"][b["mask"] > 0] for b in loader.eval_batches(16)])
  assert count == 37 and correct == np.sum(labels % 2 == 0)


def test_multihost_path_and_divisibility():
  mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
  sharding = NamedSharding(mesh, P("data"))
  x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
  # The multi-process branch of shard_batch, run in one process.
  y = jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  np.testing.assert_array_equal(np.asarray(y), x)
  assert pipeline.put_global(x, sharding).sharding == sharding
  with pytest.raises(ValueError, match=r"shape \(12, 3\) cannot be split"):
    shard_batch({"image": x[:12]}, sharding)
