"""The block loop: every block pruned, reconstruction, CR, SAFE, resume."""

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flatsparse import oneshot
from flatsparse.models import bert
from flatsparse.models import llama
from flatsparse.models.split import blockwise
from flatsparse.oneshot import reconstruction

VOCAB, SEQ, N = 20, 8, 8


def _model(num_layers):
  config = llama.LlamaConfig(vocab_size=VOCAB, hidden_size=16,
                             intermediate_size=32, num_layers=num_layers,
                             num_heads=2, num_kv_heads=1,
                             max_position_embeddings=SEQ)
  model = llama.Llama(config)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (N, SEQ), 0, VOCAB)
  params = model.init(jax.random.PRNGKey(0), tokens)["params"]
  # One Blockwise per model: the pipeline's compilations are cached on it.
  return blockwise(model), params, tokens


@pytest.fixture(scope="module")
def four_blocks():
  return _model(4)


@pytest.fixture(scope="module")
def two_blocks():
  return _model(2)


def _kernels(block_params):
  flat = flax.traverse_util.flatten_dict(block_params)
  return {k: v for k, v in flat.items() if oneshot.is_block_kernel(k, v)}


def _method(**kw):
  kw.setdefault("reconstruction_config",
                oneshot.ReconstructionConfig(epochs=1, batch_size=4,
                                             learning_rate=1e-3))
  kw.setdefault("safe", oneshot.SafeBlockConfig(epochs=1, batch_size=4,
                                                dual_period=1))
  return oneshot.OneShotMethod(**kw)


@pytest.mark.parametrize("solver,scope,reconstruction", [
    ("magnitude", None, "lr"), ("wanda", "2:4", "br"),
    ("sparsegpt", None, "br+gp+cr"), ("safe+", None, "lr")])
def test_every_block_is_pruned(four_blocks, solver, scope, reconstruction):
  bw, params, tokens = four_blocks
  sparsity = None if scope else 0.5
  result = oneshot.prune(
      bw, params, tokens,
      method=_method(solver=solver, sparsity=sparsity, scope=scope,
                     reconstruction=reconstruction),
      key=jax.random.PRNGKey(0), batch_size=4, log=lambda s: None)
  assert len(result.blocks) == 4
  for name in bw.block_names:
    masks = flax.traverse_util.flatten_dict(result.masks[name],
                                            is_leaf=lambda p, v: v is None)
    for path, kernel in _kernels(result.params[name]).items():
      mask = masks[path]
      assert int(jnp.sum(mask)) == kernel.size // 2, (name, path)
      assert bool(jnp.all(jnp.where(mask, True, kernel == 0))), (name, path)
      if scope == "2:4":  # exactly 2 kept in every group of 4 inputs
        groups = np.asarray(mask).reshape(-1, 4, kernel.shape[1])
        assert (groups.sum(1) == 2).all()
  # Embeddings and head untouched.
  np.testing.assert_array_equal(result.params["embed_tokens"]["embedding"],
                                params["embed_tokens"]["embedding"])


def test_reconstruction_lowers_the_error(two_blocks):
  bw, params, tokens = two_blocks
  errors = {}
  for rec in ("lr", "br+gp"):
    method = _method(solver="magnitude", sparsity=0.6, reconstruction=rec,
                     reconstruction_config=oneshot.ReconstructionConfig(
                         epochs=10, batch_size=4, learning_rate=3e-3))
    result = oneshot.prune(bw, params, tokens, method=method,
                           key=jax.random.PRNGKey(0), batch_size=4,
                           log=lambda s: None)
    errors[rec] = sum(e["mse"] for e in oneshot.block_errors(
        bw, params, result.params, tokens))
    if rec != "lr":
      for block in result.blocks:
        assert block["losses"][-1] < block["losses"][0]
  assert errors["br+gp"] < 0.7 * errors["lr"], errors


def test_reconstruct_keeps_masks_and_fits_a_linear_target():
  # A linear "block" y = x W: with W's mask fixed, training reaches the
  # least-squares fit restricted to the kept entries.
  key = jax.random.PRNGKey(0)
  x = jax.random.normal(key, (16, 4, 6))
  w_true = jax.random.normal(jax.random.PRNGKey(1), (6, 3))
  mask = jnp.array(np.random.default_rng(0).random((6, 3)) < 0.5)
  y = x @ jnp.where(mask, w_true, 0.0)
  apply = lambda p, h, m: h @ p[0]["kernel"]  # noqa: E731
  params = ({"kernel": jnp.zeros((6, 3))},)
  out, losses = reconstruction.reconstruct(
      apply, params, ({"kernel": mask},), x, y,
      config=oneshot.ReconstructionConfig(epochs=200, batch_size=16,
                                          learning_rate=5e-2),
      key=key)
  assert losses[-1] < 1e-3 * losses[0]
  np.testing.assert_allclose(out[0]["kernel"], jnp.where(mask, w_true, 0.0),
                             atol=2e-2)
  assert bool(jnp.all(jnp.where(mask, True, out[0]["kernel"] == 0)))


def test_resume_after_an_interruption(four_blocks, tmp_path):
  bw, params, tokens = four_blocks
  method = _method(solver="sparsegpt", sparsity=0.5,
                   reconstruction="br+gp+cr")
  full = oneshot.prune(bw, params, tokens, method=method,
                       key=jax.random.PRNGKey(0), batch_size=4,
                       log=lambda s: None)

  class Stop(Exception):
    pass

  def stop_after_two(line):
    if line.startswith("block 2/"):
      raise Stop

  with pytest.raises(Stop):
    oneshot.prune(bw, params, tokens, method=method,
                  key=jax.random.PRNGKey(0), batch_size=4,
                  workdir=str(tmp_path), log=stop_after_two)
  lines = []
  resumed = oneshot.prune(bw, params, tokens, method=method,
                          key=jax.random.PRNGKey(0), batch_size=4,
                          workdir=str(tmp_path), log=lines.append)
  assert lines[0].startswith("resumed after 2 of 4 blocks")
  for a, b in zip(jax.tree_util.tree_leaves(full.params),
                  jax.tree_util.tree_leaves(resumed.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="another one-shot run"):
    oneshot.prune(bw, params, tokens,
                  method=_method(solver="wanda", sparsity=0.5),
                  key=jax.random.PRNGKey(0), workdir=str(tmp_path))


def test_bad_input_is_refused_before_work(two_blocks):
  bw, params, tokens = two_blocks
  with pytest.raises(ValueError, match="does not divide"):
    oneshot.prune(bw, params, tokens,
                  method=_method(solver="wanda", sparsity=None, scope="3:5"),
                  key=jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="sparsity must be in"):
    _method(solver="wanda", sparsity=1.0)
  with pytest.raises(ValueError, match="Unknown solver 'obs'"):
    _method(solver="obs")
  with pytest.raises(ValueError, match="reconstruction must be 'lr'"):
    _method(solver="safe", reconstruction="br")


def test_generate_follows_a_known_model():
  # A "model" whose next token is always (previous + 1) mod V: greedy and
  # near-zero-temperature sampling both count up from the random start.
  vocab = 7

  def logits_fn(tokens):
    return 50.0 * jax.nn.one_hot((tokens + 1) % vocab, vocab)

  out = oneshot.generate(logits_fn, jax.random.PRNGKey(3), num_sequences=5,
                         seq_len=9, vocab_size=vocab, greedy_tokens=2,
                         first_tokens=[2, 4], batch_size=4)
  assert out.shape == (5, 9) and out.dtype == jnp.int32
  assert set(np.asarray(out[:, 0]).tolist()) <= {2, 4}
  np.testing.assert_array_equal(
      out, (out[:, :1] + jnp.arange(9)[None]) % vocab)


def test_padding_does_not_reach_the_statistics_of_an_encoder():
  # BERT with padded sequences: what sits at the padded positions must not
  # change Wanda's or SparseGPT's masks.
  config = bert.BertConfig(vocab_size=VOCAB, hidden_size=16,
                           intermediate_size=32, num_layers=2, num_heads=2,
                           max_position_embeddings=SEQ)
  model = bert.Bert(config)
  bw = blockwise(model)
  tokens = jax.random.randint(jax.random.PRNGKey(1), (N, SEQ), 0, VOCAB)
  mask = (jnp.arange(SEQ)[None] < jnp.array([8, 5, 3, 8, 6, 2, 7, 4])[:, None]
          ).astype(jnp.int32)
  params = model.init(jax.random.PRNGKey(0), tokens, mask)["params"]
  other = jnp.where(mask > 0, tokens, (tokens + 7) % VOCAB)
  for solver in ("wanda", "sparsegpt"):
    method = _method(solver=solver, sparsity=0.5)
    a, b = (oneshot.prune(bw, params, t, method=method, attention_mask=mask,
                          key=jax.random.PRNGKey(0), batch_size=4,
                          log=lambda s: None) for t in (tokens, other))
    for x, y in zip(jax.tree_util.tree_leaves(a.params),
                    jax.tree_util.tree_leaves(b.params)):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
