"""Distributions: uniform, ERK against hand calculations, overrides, errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from flatsparse.sparsity import distributions
from flatsparse.sparsity.updater import SparseUpdater


def _params(*shapes):
  return {f"l{i}": {"kernel": jnp.zeros(s), "bias": jnp.zeros(s[-1])}
          for i, s in enumerate(shapes)}


def test_uniform_skips_biases():
  got = distributions.layer_sparsities(_params((4, 3), (3, 2)), 0.7)
  assert got == {"l0/kernel": 0.7, "l1/kernel": 0.7}


def test_erk_hand_computed():
  # raw densities (10+20)/200 = 0.15, (20+5)/100 = 0.25; kept budget 150.
  # eps = 150 / (0.15*200 + 0.25*100) = 150/55.
  got = distributions.layer_sparsities(_params((10, 20), (20, 5)), 0.5, "erk")
  eps = 150 / 55
  assert got["l0/kernel"] == pytest.approx(1 - 0.15 * eps)
  assert got["l1/kernel"] == pytest.approx(1 - 0.25 * eps)
  kept = 200 * (1 - got["l0/kernel"]) + 100 * (1 - got["l1/kernel"])
  assert kept == pytest.approx(150)


@pytest.mark.parametrize("power", [0.5, 2.0])
def test_erk_power_hand_computed(power):
  # raw densities 0.15 ** power and 0.25 ** power; kept budget 150.
  raw = {"l0/kernel": 0.15 ** power, "l1/kernel": 0.25 ** power}
  eps = 150 / (raw["l0/kernel"] * 200 + raw["l1/kernel"] * 100)
  want = {k: pytest.approx(1 - r * eps) for k, r in raw.items()}
  params = _params((10, 20), (20, 5))
  got = distributions.layer_sparsities(params, 0.5, "erk", erk_power=power)
  assert got == want
  # Far from the paper's power 1 (l0: 0.5909), so the power is not ignored.
  assert abs(got["l0/kernel"] - (1 - 0.15 * 150 / 55)) > 0.04
  shapes = {"l0/kernel": (10, 20), "l1/kernel": (20, 5)}
  assert distributions.erk_sparsities(shapes, 0.5, power) == want
  # The updater passes its erk_power through.
  updater = SparseUpdater(sparsity=0.5, distribution="erk", erk_power=power)
  assert updater.layer_sparsities(params) == want


def test_erk_power_zero_is_uniform():
  got = distributions.layer_sparsities(_params((10, 20), (20, 5)), 0.5, "erk",
                                       erk_power=0.0)
  assert got == {"l0/kernel": pytest.approx(0.5),
                 "l1/kernel": pytest.approx(0.5)}


def test_erk_makes_overfull_layers_dense_and_rescales():
  # (2,2) would get density 24.5 > 1: dense; the rest re-solved:
  # kept 4 + (1 - s) * 10000 = 0.5 * 10004 -> s = 0.5002.
  got = distributions.layer_sparsities(_params((2, 2), (100, 100)), 0.5, "erk")
  assert got["l0/kernel"] == 0.0
  assert got["l1/kernel"] == pytest.approx(0.5002)


def test_erk_conv_kernel_uses_all_dims():
  shapes = {"conv": (3, 3, 16, 32), "dense": (512, 10)}
  got = distributions.erk_sparsities(shapes, 0.9)
  raw = {"conv": (3 + 3 + 16 + 32) / (9 * 16 * 32), "dense": 522 / 5120}
  ratio = (1 - got["conv"]) / (1 - got["dense"])
  assert ratio == pytest.approx(raw["conv"] / raw["dense"])
  total = 9 * 16 * 32 * (1 - got["conv"]) + 5120 * (1 - got["dense"])
  assert total == pytest.approx(0.1 * (9 * 16 * 32 + 5120))


def test_overrides_fixed_and_excluded_from_erk():
  params = _params((10, 20), (20, 5))
  got = distributions.layer_sparsities(params, 0.5, "erk",
                                       overrides={"l1/kernel": 0.0})
  assert got["l1/kernel"] == 0.0
  assert got["l0/kernel"] == pytest.approx(0.5)  # the only free leaf


def test_custom_predicate():
  got = distributions.layer_sparsities(
      _params((4, 3), (3, 2)), 0.5,
      is_prunable=lambda path, leaf: path.startswith("l1/"))
  assert got == {"l1/kernel": 0.5, "l1/bias": 0.5}


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_bad_sparsity(bad):
  with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\), got"):
    distributions.layer_sparsities(_params((4, 3)), bad)


def test_errors_name_bad_values():
  with pytest.raises(ValueError, match="Unknown distribution 'gaussian'; "
                     "allowed: uniform, erk"):
    distributions.layer_sparsities(_params((4, 3)), 0.5, "gaussian")
  with pytest.raises(ValueError, match="'l9/kernel'.*not a leaf.*l0/kernel"):
    distributions.layer_sparsities(_params((4, 3)), 0.5,
                                   overrides={"l9/kernel": 0.5})


def test_path_str_handles_all_key_kinds():
  import jax
  tree = {"a": [np.zeros(2), (np.zeros(1),)]}
  paths = [distributions.path_str(p) for p, _ in
           jax.tree_util.tree_flatten_with_path(tree)[0]]
  assert paths == ["a/0", "a/1/0"]
