"""Tests of the one-shot solvers: pattern, statistics, magnitude, Wanda,
SparseGPT.

The math is checked against closed forms and against a direct NumPy
transcription of the paper's algorithm in the PyTorch orientation
(``W_pt = W.T``: the paper's columns are our kernel's rows), in float64.
Layers are small (64 x 48) so the suite compiles in seconds.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flatsparse.oneshot import magnitude
from flatsparse.oneshot import pattern as pattern_lib
from flatsparse.oneshot import sparsegpt
from flatsparse.oneshot import statistics
from flatsparse.oneshot import wanda

IN, OUT, TOKENS = 64, 48, 256
parse = pattern_lib.parse_pattern


def _layer(seed=0, dtype=np.float64, correlated=True):
  """A kernel and correlated calibration inputs (so compensation matters)."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(TOKENS, IN))
  if correlated:
    x = x @ (np.eye(IN) + 0.5 * rng.normal(size=(IN, IN)) / np.sqrt(IN))
    x[:, :IN // 2] += x[:, IN // 2:]  # strongly correlated pairs
  w = rng.normal(size=(IN, OUT))
  return w.astype(dtype), x.astype(dtype)


def _hessian(x):
  return 2.0 * x.T @ x / x.shape[0]


def _keep_largest(scores, k):
  """Bool mask of the k largest of a 1-d array, ties: lower index kept."""
  order = np.argsort(-scores, kind="stable")
  mask = np.zeros(scores.shape, bool)
  mask[order[:k]] = True
  return mask


def _oracle_sparsegpt(w, h, sparsity, keep_n=0, m=0, block=128, damp=0.01,
                      ties="exact"):
  """The paper's Algorithm 1 on W_pt = w.T, one column at a time (NumPy)."""
  wt = w.T.copy()  # (out, in): the reference's orientation
  h = h.copy()
  cols = h.shape[0]
  dead = np.diag(h) == 0
  h[dead, dead] = 1.0
  wt[:, dead] = 0.0
  h += damp * np.mean(np.diag(h)) * np.eye(cols)
  u = np.linalg.cholesky(np.linalg.inv(h)).T
  pruned = np.zeros(wt.shape, bool)
  for i1 in range(0, cols, block):
    i2 = min(i1 + block, cols)
    w1 = wt[:, i1:i2].copy()
    u1 = u[i1:i2, i1:i2]
    d = np.diag(u1)
    q1, e1 = np.zeros_like(w1), np.zeros_like(w1)
    p1 = np.zeros(w1.shape, bool)
    if not m:
      score = w1 ** 2 / d[None, :] ** 2
      if ties == "reference":
        thresh = np.sort(score.ravel())[int(score.size * sparsity)]
        p1 = score <= thresh
      else:  # exact count, flat index of our (in, out) block, lower kept
        k = score.size - int(np.round(np.float32(sparsity)
                                      * np.float32(score.size)))
        p1 = ~_keep_largest(score.T.ravel(), k).reshape(score.T.shape).T
    for i in range(i2 - i1):
      if m and i % m == 0:
        score = w1[:, i:i + m] ** 2 / d[None, i:i + m] ** 2
        for r in range(w1.shape[0]):
          p1[r, i:i + m] = ~_keep_largest(score[r], keep_n)
      q = np.where(p1[:, i], 0.0, w1[:, i])
      err = (w1[:, i] - q) / u1[i, i]
      w1[:, i:] -= np.outer(err, u1[i, i:])
      q1[:, i], e1[:, i] = q, err
    wt[:, i1:i2] = q1
    wt[:, i2:] -= e1 @ u[i1:i2, i2:]
    pruned[:, i1:i2] = p1
  return wt.T, ~pruned.T


def _error(x, w, w_new):
  return float(np.sum((x @ w - x @ np.asarray(w_new, np.float64)) ** 2))


# ---- pattern -----------------------------------------------------------------


def test_pattern_n_counts_kept_weights():
  p = parse(None, "1:4")
  assert (p.kind, p.n, p.m, p.sparsity) == ("N:M", 1, 4, 0.75)
  assert parse(0.5, "2:4").sparsity == 0.5
  assert parse(0.3, "row") == pattern_lib.Pattern(
      "row", 0.3, parse(0.3).structure)
  hash(parse(None, "4:8"))  # static jit argument


@pytest.mark.parametrize("sparsity, scope, message", [
    (1.0, "layer", "sparsity must be a number in \\[0, 1\\), got 1.0"),
    (-0.1, "row", "got -0.1"),
    (float("nan"), "layer", "got nan"),
    (None, "layer", "needs a sparsity in \\[0, 1\\), got None"),
    (0.5, "diagonal", "Unknown scope 'diagonal'; allowed: 'layer', 'row'"),
    (0.5, "global", "'global' is not supported by one-shot pruning"),
    (0.6, "2:4", "sparsity 0.6 contradicts scope '2:4'"),
    (None, "5:4", "0 < n <= m"),
])
def test_parse_pattern_errors_name_the_value(sparsity, scope, message):
  with pytest.raises(ValueError, match=message):
    parse(sparsity, scope)


def test_solvers_check_shapes_before_work():
  w, x = _layer(dtype=np.float32)
  w6 = w[:60]  # 4 divides 60, 8 does not
  with pytest.raises(ValueError, match="m=8 does not divide axis -2 of size"):
    magnitude.magnitude_prune(w6, parse(None, "4:8"))
  with pytest.raises(ValueError, match="m=8 does not divide"):
    wanda.wanda_prune(w6, np.ones(60), parse(None, "4:8"))
  with pytest.raises(ValueError, match=r"sq_norms of shape \(48,\)"):
    wanda.wanda_prune(w, np.ones(OUT), parse(0.5, "row"))
  h = _hessian(x)
  with pytest.raises(ValueError, match=r"hessian of shape \(48, 48\) does "
                     r"not fit a kernel of shape \(64, 48\)"):
    sparsegpt.sparsegpt_prune(w, h[:OUT, :OUT], parse(0.5))
  with pytest.raises(ValueError, match="scope 'row' is not supported by "
                     "sparsegpt_prune; allowed: 'layer', 'N:M'"):
    sparsegpt.sparsegpt_prune(w, h, parse(0.5, "row"))
  with pytest.raises(ValueError, match="block_size 6 must be a multiple of "
                     "m=4"):
    sparsegpt.sparsegpt_prune(w, h, parse(None, "2:4"), block_size=6)
  with pytest.raises(ValueError, match="dampening must be finite and >= 0, "
                     "got -1"):
    sparsegpt.sparsegpt_prune(w, h, parse(0.5), dampening=-1)
  with pytest.raises(ValueError, match="Unknown ties 'floor'; allowed: "
                     "'exact', 'reference'"):
    sparsegpt.sparsegpt_prune(w, h, parse(0.5), ties="floor")
  with pytest.raises(ValueError, match=r"2-d \(in, out\) kernels, got shape "
                     r"\(64,\)"):
    magnitude.magnitude_prune(w[:, 0], parse(0.5))


# ---- statistics --------------------------------------------------------------


def test_accumulate_is_x_transpose_x_without_padding():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(3, 5, 6)).astype(np.float32)
  mask = np.ones((3, 5), np.int32)
  mask[0, 3:] = 0
  mask[2] = 0  # an all-padding sequence
  accumulate = jax.jit(statistics.accumulate)  # one compile, not one per op
  stats = statistics.init_statistics(6)
  stats = accumulate(stats, x[:2], mask[:2])
  stats = accumulate(stats, x[2:], mask[2:])
  real = x[mask.astype(bool)]
  np.testing.assert_allclose(stats.gram, real.T @ real, rtol=1e-5)
  np.testing.assert_allclose(stats.sq_norms, np.sum(real ** 2, 0), rtol=1e-5)
  assert (int(stats.tokens), int(stats.sequences)) == (8, 2)
  plain = accumulate(statistics.init_statistics(6), x)
  flat = x.reshape(-1, 6)
  np.testing.assert_allclose(plain.gram, flat.T @ flat, rtol=1e-5)
  assert (int(plain.tokens), int(plain.sequences)) == (15, 3)
  norms_only = accumulate(statistics.init_statistics(6, with_gram=False), x)
  assert norms_only.gram is None
  np.testing.assert_allclose(norms_only.sq_norms, plain.sq_norms)
  # Chunks of 2048 tokens (two and a rest), blocks of 256 features.
  wide = rng.normal(size=(3, 1500, 300)).astype(np.float32)
  wide_mask = rng.uniform(size=(3, 1500)) < 0.8
  got = accumulate(statistics.init_statistics(300), wide, wide_mask)
  real = wide[wide_mask]
  np.testing.assert_allclose(got.gram, real.T @ real, rtol=1e-4, atol=1e-2)
  np.testing.assert_array_equal(got.gram, got.gram.T)
  np.testing.assert_allclose(got.sq_norms, np.sum(real ** 2, 0), rtol=1e-4)
  assert int(got.tokens) == len(real)
  h = statistics.hessian(plain, normalize="sequences")
  np.testing.assert_allclose(h, 2 / 3 * flat.T @ flat, rtol=1e-5)
  with pytest.raises(ValueError, match=r"attention_mask of shape \(3,\)"):
    statistics.accumulate(stats, x, mask[:, 0])
  with pytest.raises(ValueError, match="Unknown normalize 'mean'"):
    statistics.hessian(stats, normalize="mean")
  with pytest.raises(ValueError, match="with_gram=True"):
    statistics.hessian(norms_only)
  with pytest.raises(ValueError, match="float32 or float64, got float16"):
    statistics.init_statistics(6, dtype=jnp.float16)


class _Block(nn.Module):
  """Dense layers of a transformer block: one Dense, a q-like DenseGeneral
  (in -> heads x dim) and an output-like one ((heads, dim) -> out)."""

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(8, name="up")(x)
    q = nn.DenseGeneral((2, 4), name="query")(h)
    return nn.DenseGeneral(5, axis=(-2, -1), name="out")(q), h, q


def test_statistics_during_records_every_dense_in_one_pass():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 3, 6)).astype(np.float32)
  mask = np.array([[1, 1, 0], [1, 0, 0]])
  shapes = {"up": ((6, 8), (8,)), "query": ((8, 2, 4), (2, 4)),
            "out": ((2, 4, 5), (5,))}
  params = {name: {"kernel": rng.normal(size=k).astype(np.float32),
                   "bias": rng.normal(size=b).astype(np.float32)}
            for name, (k, b) in shapes.items()}
  model = _Block()

  @jax.jit
  def capture(params, x, mask):
    outputs = []
    stats = statistics.statistics_during(
        lambda: outputs.append(model.apply({"params": params}, x)), params,
        attention_mask=mask)
    norms = statistics.statistics_during(
        lambda: model.apply({"params": params}, x), params, with_gram=False)
    return stats, norms, outputs[0]

  stats, norms, (_, h, q) = capture(params, x, mask)
  keep = mask.astype(bool)
  inputs = {"up": x, "query": h, "out": q.reshape(2, 3, 8)}
  for name, value in inputs.items():
    got = stats[name]["kernel"]
    real = np.asarray(value)[keep]
    np.testing.assert_allclose(got.gram, real.T @ real, rtol=1e-4, atol=1e-5)
    assert int(got.tokens) == 3 and int(got.sequences) == 2
    assert stats[name]["bias"] is None
    # The kernel's 2-d view (in, out) fits the statistics.
    assert params[name]["kernel"].reshape(real.shape[1], -1).shape[1] == (
        {"up": 8, "query": 8, "out": 5}[name])
    assert norms[name]["kernel"].gram is None
    all_tokens = np.asarray(value).reshape(-1, real.shape[1])
    np.testing.assert_allclose(norms[name]["kernel"].sq_norms,
                               np.sum(all_tokens ** 2, 0), rtol=1e-4)
  # Batches add up leaf by leaf (None stays None).
  twice = jax.tree.map(jnp.add, stats, stats)
  np.testing.assert_allclose(twice["up"]["kernel"].gram,
                             2 * stats["up"]["kernel"].gram)


# ---- magnitude and Wanda -----------------------------------------------------


@pytest.mark.parametrize("scope, keep", [("2:4", 2), ("4:8", 4), ("1:4", 1)])
def test_nm_keeps_n_of_every_group_of_inputs(scope, keep):
  w, x = _layer(dtype=np.float32)
  p = parse(None, scope)
  m = p.m
  sq = np.sum(x ** 2, 0)
  for pruned, mask in (magnitude.magnitude_prune(w, p),
                       wanda.wanda_prune(w, sq, p),
                       sparsegpt.sparsegpt_prune(w, _hessian(x), p,
                                                 block_size=16)):
    mask = np.asarray(mask)
    groups = mask.reshape(IN // m, m, OUT).sum(1)  # along the input axis
    assert (groups == keep).all(), scope
    assert (np.asarray(pruned)[~mask] == 0).all()
  expected = np.stack([_keep_largest(g, keep) for g in np.abs(
      w.T.reshape(OUT, IN // m, m)).reshape(-1, m)])
  np.testing.assert_array_equal(
      np.asarray(magnitude.magnitude_prune(w, p)[1]),
      expected.reshape(OUT, IN).T)


def test_magnitude_exact_counts():
  w, _ = _layer(dtype=np.float32)
  for sparsity in (0.0, 0.3, 0.5, 0.9):
    pruned, mask = magnitude.magnitude_prune(w, parse(sparsity))
    assert int(np.sum(~np.asarray(mask))) == round(sparsity * w.size)
    assert np.min(np.abs(w[np.asarray(mask)])) >= np.max(
        np.abs(w[~np.asarray(mask)]), initial=0)
    np.testing.assert_array_equal(pruned, np.where(mask, w, 0))
    _, rows = magnitude.magnitude_prune(w, parse(sparsity, "row"))
    assert (np.sum(~np.asarray(rows), 0) == round(sparsity * IN)).all()


def test_wanda_compares_within_output_units_flax_orientation():
  rng = np.random.default_rng(3)
  w = rng.normal(size=(8, 8)).astype(np.float32)  # square: a transpose fits
  sq = rng.uniform(0.01, 4.0, size=8).astype(np.float32)
  scores = np.abs(w) * np.sqrt(sq)[:, None]  # input i, output j
  np.testing.assert_allclose(wanda.wanda_scores(w, sq), scores, rtol=1e-6)
  _, mask = wanda.wanda_prune(w, sq, parse(0.5, "row"))
  expected = np.stack([_keep_largest(scores[:, j], 4) for j in range(8)], 1)
  np.testing.assert_array_equal(mask, expected)
  # Comparing within inputs (a transposed implementation), scaling outputs
  # by the norms (another one), or over the whole matrix all differ.
  within_inputs = np.stack([_keep_largest(scores[i], 4) for i in range(8)])
  other = np.abs(w) * np.sqrt(sq)[None, :]
  norms_on_outputs = np.stack(
      [_keep_largest(other[:, j], 4) for j in range(8)], 1)
  _, layer = wanda.wanda_prune(w, sq, parse(0.5, "layer"))
  for wrong in (within_inputs, norms_on_outputs, np.asarray(layer)):
    assert (wrong != expected).any()
  assert (np.asarray(mask).sum(0) == 4).all()
  assert int(np.asarray(layer).sum()) == 32


def test_wanda_with_equal_norms_is_per_output_magnitude():
  w, _ = _layer(dtype=np.float32)
  ours = wanda.wanda_prune(w, np.full(IN, 3.0), parse(0.6, "row"))
  theirs = magnitude.magnitude_prune(w, parse(0.6, "row"))
  for a, b in zip(ours, theirs):
    np.testing.assert_array_equal(a, b)


# ---- SparseGPT ---------------------------------------------------------------


# Uneven blocks (64 = 24 + 24 + 16: a padded last block) for 'layer'.
@pytest.mark.parametrize("scope, block", [
    ("layer", 24), ("2:4", 16),
    pytest.param("1:4", 16, marks=pytest.mark.slow),
])
def test_sparsegpt_matches_the_algorithm_in_pytorch_orientation(scope, block):
  with jax.enable_x64(True):
    w, x = _layer()
    h = _hessian(x)
    h[5] = h[:, 5] = 0.0  # a dead input: row 5 of our kernel
    p = parse(0.5 if scope == "layer" else None, scope)
    pruned, mask = sparsegpt.sparsegpt_prune(w, h, p, block_size=block)
    assert pruned.dtype == jnp.float64
    want, want_mask = _oracle_sparsegpt(w, h, p.sparsity, p.n or 0,
                                        p.m or 0, block)
    np.testing.assert_array_equal(mask, want_mask)
    np.testing.assert_allclose(pruned, want, rtol=1e-9, atol=1e-9)
    assert (np.asarray(pruned)[5] == 0).all()
    if scope == "layer":  # exact counts per block, the last one shorter
      for start in range(0, IN, block):
        rows = min(block, IN - start)
        assert np.sum(~np.asarray(mask)[start:start + block]) == round(
            0.5 * rows * OUT)


def test_sparsegpt_with_identity_hessian_is_blockwise_magnitude():
  w, _ = _layer(dtype=np.float32)
  eye = np.eye(IN, dtype=np.float32)
  pruned, mask = sparsegpt.sparsegpt_prune(w, eye, parse(0.5), block_size=16)
  for start in range(0, IN, 16):  # joint counts per block of 16 inputs
    block = np.abs(w[start:start + 16])
    want = _keep_largest(block.ravel(), block.size // 2).reshape(block.shape)
    np.testing.assert_array_equal(mask[start:start + 16], want)
  np.testing.assert_allclose(pruned, np.where(mask, w, 0), rtol=1e-6)
  # Not the per-matrix magnitude mask: the counts are per block.
  assert (np.asarray(mask) != np.asarray(
      magnitude.magnitude_prune(w, parse(0.5))[1])).any()
  pruned, mask = sparsegpt.sparsegpt_prune(w, eye, parse(None, "2:4"),
                                           block_size=16)
  want = magnitude.magnitude_prune(w, parse(None, "2:4"))
  np.testing.assert_array_equal(mask, want[1])
  np.testing.assert_allclose(pruned, want[0], rtol=1e-6)


@pytest.mark.parametrize("scope", ["layer", "2:4"])
def test_compensation_lowers_the_layer_error(scope):
  w, x = _layer(dtype=np.float32)
  p = parse(0.5 if scope == "layer" else None, scope)
  pruned, mask = sparsegpt.sparsegpt_prune(w, _hessian(x), p, block_size=16)
  compensated = _error(x, w, pruned)
  masked_only = _error(x, w, w * np.asarray(mask))
  assert compensated < 0.8 * masked_only, (compensated, masked_only)
  _, magnitude_mask = magnitude.magnitude_prune(w, p)
  assert compensated < _error(x, w, w * np.asarray(magnitude_mask))


def test_sparsegpt_exact_counts_per_block_and_reference_ties():
  w, x = _layer(dtype=np.float32)
  h = _hessian(x)
  for sparsity in (0.25, 0.5, 0.7):
    _, mask = sparsegpt.sparsegpt_prune(w, h, parse(sparsity), block_size=16)
    per_block = np.sum(~np.asarray(mask).reshape(4, 16 * OUT), 1)
    assert (per_block == round(sparsity * 16 * OUT)).all()
  # The reference's `score <= sorted[int(s * size)]` prunes one more per
  # block when s * size is an integer (16 * 48 / 2 = 384).
  _, ref = sparsegpt.sparsegpt_prune(w, h, parse(0.5), block_size=16,
                                     ties="reference")
  per_block = np.sum(~np.asarray(ref).reshape(4, 16 * OUT), 1)
  assert (per_block == 16 * OUT // 2 + 1).all()


@pytest.mark.slow
def test_sparsegpt_reference_ties_match_the_algorithm():
  with jax.enable_x64(True):
    w, x = _layer()
    h = _hessian(x)
    got, got_mask = sparsegpt.sparsegpt_prune(w, h, parse(0.5),
                                              block_size=16, ties="reference")
    want, want_mask = _oracle_sparsegpt(w, h, 0.5, block=16,
                                        ties="reference")
    np.testing.assert_array_equal(got_mask, want_mask)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_dead_inputs_are_zeroed_and_pruned_first():
  w, x = _layer(dtype=np.float32)
  x[:, [3, 40]] = 0.0
  stats = statistics.accumulate(statistics.init_statistics(IN), x)
  pruned, mask = sparsegpt.sparsegpt_prune(w, statistics.hessian(stats),
                                           parse(0.25), block_size=16)
  assert (np.asarray(pruned)[[3, 40]] == 0).all()
  assert not np.asarray(mask)[[3, 40]].any()
  assert np.isfinite(np.asarray(pruned)).all()


def test_hessian_normalization_does_not_change_sparsegpt():
  with jax.enable_x64(True):
    w, x = _layer()
    stats = statistics.init_statistics(IN, dtype=jnp.float64)
    stats = statistics.accumulate(stats, x.reshape(8, TOKENS // 8, IN))
    results = [sparsegpt.sparsegpt_prune(
        w, statistics.hessian(stats, normalize=n), parse(0.5), block_size=24)
        for n in statistics.NORMALIZATIONS]
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-10,
                               atol=1e-12)


def test_dtypes_bf16_in_bf16_out():
  w, x = _layer(dtype=np.float32)
  h = _hessian(x)
  w16 = jnp.asarray(w, jnp.bfloat16)
  pruned, mask = sparsegpt.sparsegpt_prune(w16, h, parse(None, "2:4"),
                                           block_size=16)
  assert pruned.dtype == jnp.bfloat16 and mask.dtype == jnp.bool_
  assert magnitude.magnitude_prune(w16, parse(0.5))[0].dtype == jnp.bfloat16
  assert wanda.wanda_prune(w16, np.ones(IN), parse(0.5, "row"))[0].dtype == (
      jnp.bfloat16)
  assert wanda.wanda_scores(w16, np.ones(IN, np.float32)).dtype == jnp.float32


def test_one_compilation_per_shape_for_every_sparsity(caplog):
  w, x = _layer(seed=4, dtype=np.float32)
  h = _hessian(x)
  sparsegpt.sparsegpt_prune(w, h, parse(0.5), block_size=16)
  magnitude.magnitude_prune(w, parse(0.5))
  with jax.log_compiles(), caplog.at_level("WARNING"):
    sparsegpt.sparsegpt_prune(w * 2, h, parse(0.3), block_size=16,
                              dampening=0.02)
    magnitude.magnitude_prune(w, parse(0.3))
  compiled = [r.getMessage() for r in caplog.records
              if "Compiling" in r.getMessage()]
  assert not [c for c in compiled if "sparsegpt" in c or "magnitude" in c], (
      compiled)
