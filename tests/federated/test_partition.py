"""Client partitions: disjoint, complete, seeded, the requested skew."""

import numpy as np
import pytest

from flatsparse.federated import partition

LABELS = np.repeat(np.arange(10), 1000)  # 10 classes x 1000


def _check_disjoint_and_complete(parts, n):
  joined = np.concatenate(parts)
  assert joined.shape[0] == n
  np.testing.assert_array_equal(np.sort(joined), np.arange(n))


@pytest.mark.parametrize("kind,kwargs", [
    ("iid", {}), ("dirichlet", {"alpha": 0.5}),
    ("shards", {"shards_per_client": 2})])
def test_partitions_cover_every_example_once_and_repeat_by_seed(kind, kwargs):
  parts = partition.make_partition(kind, LABELS, 20, 3, **kwargs)
  _check_disjoint_and_complete(parts, LABELS.shape[0])
  again = partition.make_partition(kind, LABELS, 20, 3, **kwargs)
  assert all(np.array_equal(a, b) for a, b in zip(parts, again))
  other = partition.make_partition(kind, LABELS, 20, 4, **kwargs)
  assert not all(np.array_equal(a, b) for a, b in zip(parts, other))


def test_iid_sizes_are_near_equal_and_classes_balanced():
  parts = partition.iid(LABELS, 7, 0)
  sizes = [len(p) for p in parts]
  assert max(sizes) - min(sizes) <= 1
  counts = partition.label_counts(LABELS, parts, 10)
  # Hypergeometric: each count ~1428.6 / 10 with sd ~ 11.
  assert np.all(np.abs(counts - counts.sum(1, keepdims=True) / 10) < 60)


@pytest.mark.parametrize("alpha", [0.1, 1.0, 10.0])
def test_dirichlet_shares_have_the_dirichlet_variance(alpha):
  """Client k's share of class c is q_c[k] ~ Dir(alpha 1_K)[k]: mean 1/K,
  variance (1/K)(1 - 1/K) / (K alpha + 1)."""
  k = 10
  labels = np.repeat(np.arange(50), 2000)  # 50 classes: 500 draws of q
  parts = partition.dirichlet(labels, k, 0, alpha=alpha, min_size=0)
  shares = partition.label_counts(labels, parts, 50).T / 2000.0  # (C, K)
  expected = (1 / k) * (1 - 1 / k) / (k * alpha + 1)
  assert abs(shares.mean() - 1 / k) < 1e-9
  # 500 samples of a variance: relative standard error well under 20%.
  assert abs(shares.var() / expected - 1) < 0.2, (shares.var(), expected)


def test_shards_give_each_client_at_most_its_shard_count_of_classes():
  parts = partition.shards(LABELS, 50, 0, shards_per_client=2)
  counts = partition.label_counts(LABELS, parts, 10)
  assert np.all((counts > 0).sum(1) <= 2)
  assert {len(p) for p in parts} == {200}


def test_bad_partition_arguments_name_the_value():
  with pytest.raises(ValueError, match="num_clients=11 is more than the 10"):
    partition.iid(np.arange(10), 11, 0)
  with pytest.raises(ValueError, match="alpha must be > 0, got 0"):
    partition.dirichlet(LABELS, 5, 0, alpha=0)
  with pytest.raises(ValueError, match="alpha must be > 0, got -1"):
    partition.dirichlet(LABELS, 5, 0, alpha=-1.0)
  with pytest.raises(ValueError, match="Unknown partition 'skew'"):
    partition.make_partition("skew", LABELS, 5, 0)
  with pytest.raises(ValueError, match="shards"):
    partition.shards(np.arange(10) % 2, 5, 0, shards_per_client=3)
  with pytest.raises(ValueError, match="fewer than min_size=40"):
    partition.dirichlet(np.repeat(np.arange(2), 60), 3, 0, alpha=0.01,
                        min_size=40, max_tries=5)
