"""Config factory and registry."""

import ml_collections
import pytest

import flatsparse as fs


@pytest.mark.parametrize("name", sorted(fs.sparsity.ALGORITHMS))
def test_every_algorithm_builds_from_config(name):
  cfg = ml_collections.ConfigDict({"algorithm": name, "sparsity": 0.5})
  if name == "no_prune":
    del cfg["sparsity"]
  assert isinstance(fs.sparsity.create_updater_from_config(cfg),
                    fs.sparsity.SparseUpdater)


def test_config_fields_reach_the_updater():
  cfg = ml_collections.ConfigDict(dict(
      algorithm="magnitude", sparsity=0.9, distribution="erk",
      scope="2:4", schedule="polynomial", update_freq=5,
      update_start_step=10, update_end_step=100, mask_storage="packed"))
  up = fs.sparsity.create_updater_from_config(cfg)
  assert up.distribution == "erk" and up.structure == fs.sparsity.NM(2, 4)
  assert up.schedule == fs.sparsity.Polynomial(5, 10, 100)
  assert up.mask_storage == "packed"
  rigl = fs.sparsity.create_updater_from_config(
      {"algorithm": "rigl", "sparsity": 0.8, "drop_fraction": 0.1,
       "schedule": "periodic", "update_freq": 50})
  assert rigl.grow == "gradient" and rigl.drop_fraction == 0.1
  assert rigl.schedule == fs.sparsity.Periodic(50)


@pytest.mark.parametrize("cfg,msg", [
    ({}, "needs 'algorithm'; allowed: no_prune, magnitude"),
    ({"algorithm": "lottery"},
     "Unknown sparsity algorithm 'lottery'; allowed:"),
    ({"algorithm": "magnitude", "sparsty": 0.5},
     r"Unknown sparsity config keys \['sparsty'\]"),
    ({"algorithm": "magnitude", "schedule": "cubic"},
     "Unknown schedule 'cubic'; allowed: no_update"),
    ({"algorithm": "magnitude", "update_freq": 3}, "need a 'schedule'"),
    ({"algorithm": "magnitude", "distribution": "normal"},
     "Unknown distribution 'normal'"),
    ({"algorithm": "magnitude", "sparsity": 1.2}, r"must be in \[0, 1\)"),
])
def test_config_errors(cfg, msg):
  with pytest.raises(ValueError, match=msg):
    fs.sparsity.create_updater_from_config(cfg)


def test_register_algorithm():
  factory = lambda **kw: fs.sparsity.magnitude_pruning(**kw)  # noqa: E731
  fs.sparsity.register_algorithm("my_magnitude", factory)
  try:
    up = fs.sparsity.create_updater_from_config(
        {"algorithm": "my_magnitude", "sparsity": 0.3})
    assert up.sparsity == 0.3
    with pytest.raises(ValueError, match="already registered"):
      fs.sparsity.register_algorithm("my_magnitude", factory)
  finally:
    fs.sparsity.ALGORITHMS.pop("my_magnitude")
