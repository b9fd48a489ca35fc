"""Masks: exact counts, hand-computed structures, packing, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flatsparse.sparsity import masks


def brute_topk(scores, k):
  """Reference: stable descending order, lower index first among ties."""
  flat = np.asarray(scores, np.float32).ravel()
  order = np.lexsort((np.arange(flat.size), -flat))
  mask = np.zeros(flat.size, bool)
  mask[order[:k]] = True
  return mask.reshape(np.shape(scores))


def test_ordered_key_preserves_float_order():
  x = np.array([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, 7.25, np.inf],
               np.float32)
  keys = np.asarray(masks.ordered_key(jnp.asarray(x)))
  assert np.all(np.diff(keys.astype(np.int64)) > 0)


def test_topk_hand_computed():
  x = jnp.array([3., 1., 2., 2., -5., 0.])
  np.testing.assert_array_equal(masks.topk_mask(x, 3),
                                [True, False, True, True, False, False])
  # Ties at the threshold: lower index wins.
  np.testing.assert_array_equal(masks.topk_mask(jnp.ones(4), 2),
                                [True, True, False, False])
  assert not masks.topk_mask(x, 0).any()
  assert masks.topk_mask(x, 6).all()


@pytest.mark.parametrize("seed", range(5))
def test_topk_matches_brute_force_with_ties(seed):
  rng = np.random.default_rng(seed)
  x = rng.integers(-4, 5, size=(37, 11)).astype(np.float32)  # many ties
  for k in (0, 1, 50, 200, 407):
    got = np.asarray(jax.jit(masks.topk_mask)(jnp.asarray(x), k))
    np.testing.assert_array_equal(got, brute_topk(x, k))
    assert got.sum() == k


def test_topk_bf16_and_traced_k():
  x = jax.random.normal(jax.random.PRNGKey(0), (64, 64)).astype(jnp.bfloat16)
  f = jax.jit(lambda x, k: masks.topk_mask(jnp.abs(x), k))
  for k in (10, 1000, 4095):
    got = np.asarray(f(x, k))
    assert got.sum() == k
    np.testing.assert_array_equal(got, brute_topk(np.abs(np.asarray(
        x, np.float32)), k))


def test_global_topk_matches_concatenation():
  rng = np.random.default_rng(0)
  a = rng.integers(0, 6, size=(5, 7)).astype(np.float32)
  b = rng.integers(0, 6, size=(9,)).astype(np.float32)
  got = masks.topk_masks_global([jnp.asarray(a), jnp.asarray(b)], 20)
  ref = brute_topk(np.concatenate([a.ravel(), b]), 20)
  np.testing.assert_array_equal(
      np.concatenate([np.asarray(g).ravel() for g in got]), ref)


# The documented rule keeps ``n - round(s * n)``, with Python's round (half to
# even). Each case names the rule it tells apart from the documented one.
NUM_TO_KEEP_CASES = [
    (10, 0.27, 7),     # pruned 2.7 -> 3; floor of the pruned count keeps 8
    (10, 0.33, 7),     # kept 6.7; floor of the kept count keeps 6
    (100, 0.994, 1),   # pruned 99.4 -> 99; ceil of the pruned count keeps 0
    (10, 0.25, 8),     # pruned 2.5 -> 2 (half to even); half up keeps 7
    (14, 0.25, 10),    # pruned 3.5 -> 4 (half to even); floor keeps 11
    (6, 0.5, 3),
    (1000, 0.9, 100),
    (7, 0.0, 7),
]


@pytest.mark.parametrize("size, sparsity, keep", NUM_TO_KEEP_CASES)
def test_num_to_keep_rounds_pruned_count(size, sparsity, keep):
  assert keep == size - round(sparsity * size)  # the documented rule
  assert int(masks.num_to_keep(size, sparsity)) == keep
  # Traced sparsity (injected hyperparameters) follows the same rule.
  assert int(jax.jit(masks.num_to_keep, static_argnums=0)(
      size, jnp.float32(sparsity))) == keep


def test_masks_keep_the_documented_count():
  # All cases as leaves of one joint top-k: one compilation.
  rng = np.random.default_rng(0)
  scores = [rng.random(size, np.float32) for size, _, _ in NUM_TO_KEEP_CASES]
  got = jax.jit(masks.masks_for_leaves, static_argnums=(0, 2))(
      masks.Unstructured(), [jnp.asarray(s) for s in scores],
      tuple(sparsity for _, sparsity, _ in NUM_TO_KEEP_CASES))
  for s, m, (_, _, keep) in zip(scores, got, NUM_TO_KEEP_CASES):
    np.testing.assert_array_equal(np.asarray(m), brute_topk(s, keep))


def test_nm_hand_computed_along_each_axis():
  x = jnp.array([[4., 1., 3., 2., 0., 9., 8., 7.],
                 [1., 1., 1., 1., 5., 6., 7., 8.]])
  got = masks.NM(2, 4, axis=-1).mask(x, 0.5)
  want = [[1, 0, 1, 0, 0, 1, 1, 0],
          [1, 1, 0, 0, 0, 0, 1, 1]]
  np.testing.assert_array_equal(got, np.array(want, bool))
  # Along axis 0 of the transpose: the same groups.
  np.testing.assert_array_equal(masks.NM(2, 4, axis=0).mask(x.T, 0.5),
                                np.array(want, bool).T)


@pytest.mark.parametrize("n,m,axis", [(1, 4, 0), (2, 4, 1), (3, 8, -2),
                                      (2, 4, 2)])
def test_nm_every_group_valid(n, m, axis):
  x = jax.random.normal(jax.random.PRNGKey(1), (16, 24, 8))
  mask = np.asarray(masks.NM(n, m, axis).mask(jnp.abs(x), 1 - n / m))
  groups = np.moveaxis(mask, axis, -1).reshape(-1, m)
  assert np.all(groups.sum(-1) == n)


def test_nm_gradual_prunes_per_group():
  x = jnp.abs(jax.random.normal(jax.random.PRNGKey(2), (8, 16)))
  mask = np.asarray(masks.NM(2, 8, axis=-1).mask(x, 0.25))  # 2 of 8 pruned
  assert np.all(mask.reshape(-1, 8).sum(-1) == 6)


def test_nm_errors_name_the_problem():
  with pytest.raises(ValueError, match="m=4 does not divide axis -2 of size 6"):
    masks.NM(2, 4).check((6, 8), "w")
  with pytest.raises(ValueError, match="0 < n <= m"):
    masks.NM(5, 4)


def test_block_hand_computed():
  x = jnp.array([[1., 1., 0., 0.],
                 [1., 1., 0., 0.],
                 [0., 0., 5., 0.],
                 [0., 3., 0., 5.]])
  got = masks.Block((2, 2)).mask(x, 0.5)  # keep the 2 of 4 blocks with top sum
  want = np.zeros((4, 4), bool)
  want[:2, :2] = True   # sum 4
  want[2:, 2:] = True   # sum 10
  np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match="does not tile"):
    masks.Block((3, 3)).check((4, 4), "w")


def test_channel_hand_computed():
  x = jnp.array([[1., 5., 0.], [1., 5., 3.]])
  np.testing.assert_array_equal(
      masks.Channel(axis=-1).mask(x, 1 / 3),
      np.array([[False, True, True], [False, True, True]]))
  np.testing.assert_array_equal(
      masks.Channel(axis=0).mask(x, 0.5),
      np.array([[False] * 3, [True] * 3]))


@pytest.mark.parametrize("shape", [(13,), (5, 13), (3, 4, 16)])
def test_pack_roundtrip(shape):
  m = jax.random.bernoulli(jax.random.PRNGKey(0), 0.3, shape)
  packed = masks.pack_mask(m)
  assert packed.dtype == jnp.uint8
  assert packed.shape == masks.packed_shape(shape)
  np.testing.assert_array_equal(masks.unpack_mask(packed, shape), m)


def test_parse_structure():
  assert masks.parse_structure("2:4") == masks.NM(2, 4)
  assert masks.parse_structure("block:2x8") == masks.Block((2, 8))
  assert masks.parse_structure("channel") == masks.Channel()
  assert masks.parse_structure(None) == masks.Unstructured()
  with pytest.raises(ValueError, match="Unknown structure 'diagonal'"):
    masks.parse_structure("diagonal")
  with pytest.raises(ValueError, match="Bad structure 'a:b'"):
    masks.parse_structure("a:b")
