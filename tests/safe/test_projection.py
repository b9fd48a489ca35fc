"""Projections against brute force (numpy sorts), every importance and scope."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flatsparse as fs
from flatsparse.safe import Projection


def _params(seed=0):
  rng = np.random.default_rng(seed)
  return {
      "conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 4, 5)),
                                     jnp.float32),
               "bias": jnp.asarray(rng.normal(size=5), jnp.float32)},
      "dense": {"kernel": jnp.asarray(rng.normal(size=(8, 6)), jnp.float32),
                "bias": jnp.asarray(rng.normal(size=6), jnp.float32)},
  }


def _importance(kind, params, seed=1):
  rng = np.random.default_rng(seed)
  if kind == "magnitude":
    return None
  out = {}
  for layer, leaves in params.items():
    k = leaves["kernel"]
    shape = (k.shape[-2],) if kind == "activation" else k.shape
    out[layer] = {"kernel": jnp.asarray(rng.uniform(0.1, 4, size=shape),
                                        jnp.float32), "bias": None}
  return out


def _scores_np(params, importance, kind):
  """sqrt(P) |w| per kernel, in numpy."""
  out = {}
  for layer, leaves in params.items():
    w = np.abs(np.asarray(leaves["kernel"]))
    if importance is not None:
      p = np.asarray(importance[layer]["kernel"])
      if kind == "activation":
        shape = [1] * w.ndim
        shape[-2] = p.shape[0]
        p = p.reshape(shape)
      w = w * np.sqrt(p)
    out[layer] = w
  return out


def _keep_top(scores, k):
  """Flat boolean of the k largest (stable: lower index first on ties)."""
  order = np.argsort(-scores, kind="stable")
  keep = np.zeros(scores.size, bool)
  keep[order[:k]] = True
  return keep


def _brute_force(params, importance, kind, scope, sparsity):
  scores = _scores_np(params, importance, kind)
  masks = {}
  if scope == "global":
    flat = np.concatenate([s.ravel() for s in scores.values()])
    keep = _keep_top(flat, flat.size - round(sparsity * flat.size))
    offset = 0
    for layer, s in scores.items():
      masks[layer] = keep[offset:offset + s.size].reshape(s.shape)
      offset += s.size
  elif scope == "layer":
    for layer, s in scores.items():
      masks[layer] = _keep_top(s.ravel(), s.size - round(sparsity * s.size)
                               ).reshape(s.shape)
  elif scope == "row":
    for layer, s in scores.items():
      cols = np.moveaxis(s, -1, 0).reshape(s.shape[-1], -1)
      keep = np.stack([_keep_top(c, c.size - round(sparsity * c.size))
                       for c in cols])
      masks[layer] = np.moveaxis(
          keep.reshape(s.shape[-1], *s.shape[:-1]), 0, -1)
  else:  # "n:m" along the input axis
    n, m = (int(x) for x in scope.split(":"))
    for layer, s in scores.items():
      moved = np.moveaxis(s, -2, -1)
      groups = moved.reshape(-1, m)
      keep = np.stack([_keep_top(g, n) for g in groups]).reshape(moved.shape)
      masks[layer] = np.moveaxis(keep, -1, -2)
  return masks


@pytest.mark.parametrize("kind", ["magnitude", "activation", "gradient",
                                  "hessian", "custom"])
@pytest.mark.parametrize("scope", ["global", "layer", "row", "2:4"])
def test_projection_matches_brute_force(kind, scope):
  params = _params()
  importance = _importance(kind, params)
  sparsity = None if ":" in scope else 0.6
  proj = Projection(sparsity=sparsity, scope=scope, importance=kind)

  @jax.jit  # one compilation instead of an eager dispatch of every op
  def project(params, importance):
    stored = (None if importance is None
              else proj.normalize_importance(importance, params))
    return proj.project(params, stored)

  projected, masks = project(params, importance)
  expected = _brute_force(params, importance, kind, scope,
                          0.5 if sparsity is None else sparsity)
  for layer in params:
    np.testing.assert_array_equal(np.asarray(masks[layer]["kernel"]),
                                  expected[layer])
    np.testing.assert_array_equal(
        np.asarray(projected[layer]["kernel"]),
        np.where(expected[layer], params[layer]["kernel"], 0))
    # Biases are not prunable: untouched, and have no mask.
    assert masks[layer]["bias"] is None
    np.testing.assert_array_equal(projected[layer]["bias"],
                                  params[layer]["bias"])


def test_hessian_importance_uses_the_diagonal():
  params = {"kernel": jnp.asarray([[1.0, 2.0], [3.0, 0.5]])}
  diag = {"kernel": jnp.asarray([[100.0, 1.0], [0.01, 64.0]])}
  proj = Projection(sparsity=0.5, importance="hessian")
  masks = proj.masks(params, proj.normalize_importance(diag, params))
  # scores: 10, 2, 0.3, 4 -> keep entries 0 and 3.
  np.testing.assert_array_equal(masks["kernel"],
                                [[True, False], [False, True]])


def test_exact_count_with_ties_and_erk():
  params = {"a": {"kernel": jnp.ones((16, 16))},
            "b": {"kernel": jnp.ones((4, 64))},
            "c": {"kernel": jnp.ones((2, 3))}}
  proj = Projection(sparsity=0.7, distribution="erk")
  masks = jax.jit(proj.masks)(params)
  sparsities = fs.sparsity.layer_sparsities(params, 0.7, "erk")
  for name, m in masks.items():
    kept = int(np.sum(m["kernel"]))
    assert kept == m["kernel"].size - round(
        sparsities[f"{name}/kernel"] * m["kernel"].size)
  total_kept = sum(int(np.sum(m)) for m in jax.tree.leaves(masks))
  glob = jax.jit(Projection(sparsity=0.7, scope="global").masks)(params)
  assert sum(int(np.sum(m)) for m in jax.tree.leaves(glob)) == 16 * 16 + \
      256 + 6 - round(0.7 * (16 * 16 + 256 + 6))
  assert abs(total_kept - 0.3 * 518) < 0.02 * 518


def test_projection_jits_with_a_traced_sparsity():
  params = _params()

  @jax.jit
  def kept(s):
    masks = Projection(sparsity=s).masks(params)
    return sum(jnp.sum(m) for m in jax.tree.leaves(masks))

  assert int(kept(0.5)) == 180 - 90 + 48 - 24
  assert int(kept(0.25)) == 180 - 45 + 48 - 12


@pytest.mark.parametrize("kwargs, msg", [
    (dict(sparsity=1.0), r"\[0, 1\)"),
    (dict(sparsity=-0.1), r"\[0, 1\)"),
    (dict(scope="blocks"), "allowed: 'global', 'layer', 'row', 'N:M'"),
    (dict(scope="2:x", sparsity=None), "Bad N:M scope"),
    (dict(scope="2:4", sparsity=0.9), "fixes sparsity at 0.5"),
    (dict(scope="layer", sparsity=None), "needs a sparsity"),
    (dict(importance="fisher"), "allowed: 'magnitude', 'activation'"),
    (dict(distribution="normal"), "allowed: 'uniform', 'erk'"),
    (dict(rounding="ceil"), "Unknown rounding 'ceil'; allowed: 'round', "
     "'floor'"),
    (dict(scope="global", distribution="erk"), "layer' and 'row' scopes"),
])
def test_bad_projection_arguments(kwargs, msg):
  with pytest.raises(ValueError, match=msg):
    Projection(**kwargs)


def test_shape_errors_name_the_leaf():
  params = _params()
  with pytest.raises(ValueError, match="m=3 does not divide"):
    Projection(sparsity=None, scope="2:3").check(params)
  proj = Projection(sparsity=0.5, importance="activation")
  bad = _importance("activation", params)
  bad["dense"]["kernel"] = jnp.ones(7)
  with pytest.raises(ValueError, match="'dense/kernel' has shape"):
    proj.normalize_importance(bad, params)
  with pytest.raises(ValueError, match="no prunable leaves"):
    Projection(sparsity=0.5).check({"b": jnp.ones(3)})


@pytest.mark.parametrize("rounding, kept", [
    # s n: layer 0.4 * 14 = 5.6, half 0.25 * 14 = 3.5 (ties to even: 4),
    # even half 0.5 * 5 = 2.5 (to 2), row 0.4 * 7 = 2.8 per output unit,
    # global 0.43 * 20 = 8.6.
    ("round", dict(layer=8, half=10, even_half=3, row=2 * 4, glob=11)),
    ("floor", dict(layer=9, half=11, even_half=3, row=2 * 5, glob=12)),
])
def test_rounding_keeps_the_hand_computed_counts(rounding, kept):
  a = jnp.asarray(np.random.default_rng(0).normal(size=(2, 7)), jnp.float32)

  def count(tree, **kwargs):
    masks = jax.jit(Projection(rounding=rounding, **kwargs).masks)(tree)
    return sum(int(jnp.sum(m)) for m in jax.tree.leaves(masks))

  assert count({"kernel": a}, sparsity=0.4) == kept["layer"]
  assert count({"kernel": a.T}, sparsity=0.4, scope="row") == kept["row"]
  assert count({"a": {"kernel": a}, "b": {"kernel": a[:, :3]}},
               sparsity=0.43, scope="global") == kept["glob"]
  proj = Projection(rounding=rounding)
  assert int(proj.num_to_keep(14, 0.25)) == kept["half"]
  assert int(proj.num_to_keep(5, 0.5)) == kept["even_half"]
  # The same count with a traced sparsity (float32 arithmetic).
  keep = jax.jit(lambda s: fs.safe.num_to_keep(14, s, rounding))
  assert int(keep(0.4)) == kept["layer"]


def test_floor_rounding_is_the_reference_threshold():
  # The reference code keeps scores >= sort(scores)[int(s n)].
  scores = np.random.default_rng(3).normal(size=(6, 9))
  for s in (0.45, 0.77, 0.9):  # s n = 24.3, 41.58, 48.6
    reference = np.abs(scores) >= np.sort(np.abs(scores).ravel())[
        int(s * scores.size)]
    masks = jax.jit(Projection(sparsity=s, rounding="floor").masks)(
        {"kernel": jnp.asarray(scores, jnp.float32)})
    np.testing.assert_array_equal(masks["kernel"], reference)
