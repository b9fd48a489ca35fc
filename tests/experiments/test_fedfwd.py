"""The FedFwd study end to end on digits (tiny variant): records, report,
plots, costs and a cached rerun (resuming is tests/federated/test_fedavg.py's);
the partition names."""

import json
import os

import numpy as np
import pytest

from configs import fedfwd_fashion_mnist
from experiments import fedfwd


def test_fedfwd_study_records_reports_and_caches(tmp_path):
  config = fedfwd_fashion_mnist.get_config("tiny")
  result = fedfwd.run_study(config, str(tmp_path))
  runs = {r["method"]: r for r in result["runs"]}
  assert set(runs) == {"fedfwd", "fedavg_bp"}
  for record in runs.values():
    assert [r for r, _ in record["curve"]] == [0, 1, 2]
    assert record["client_sizes"]["min"] >= config.min_client_size
  assert "| iid |" in result["report"] and "(one seed)" in result["report"]
  costs = result["costs"]
  assert set(costs) == {"fedfwd", "fedfwd_one_layer", "fedavg_bp"}
  assert all(c["gflops_per_epoch"] > 0 for c in costs.values())
  assert os.path.exists(tmp_path / "accuracy_iid.png")
  with open(tmp_path / "results.json") as f:
    assert len(json.load(f)["runs"]) == 2
  # Cached: a second call trains nothing and gives the same records.
  again = fedfwd.run_study(config, str(tmp_path))
  assert again["runs"] == result["runs"]


def test_partition_names():
  config = fedfwd_fashion_mnist.get_config("tiny")
  labels = np.repeat(np.arange(10), 20)
  assert len(fedfwd.partition_of("dirichlet_0.5", labels, config, 0)) == 10
  parts = fedfwd.partition_of("shards_2", labels, config, 0)
  assert all(len(np.unique(labels[p])) <= 2 for p in parts)
  with pytest.raises(ValueError, match="Unknown partition 'iid_3'"):
    fedfwd.partition_of("iid_3", labels, config, 0)
