"""The run's seed reaches every random choice (``flatsparse.rng``).

Two seeds give different random masks, SET regrowth, Hutchinson probes and
SAFE+ Hessian probes; one seed twice gives identical runs; vmapped seeds
differ lane by lane.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import flatsparse as fs
from flatsparse import rng
from flatsparse.train import builders
from flatsparse.train import loop


def _params(seed=0):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  return {"a": {"kernel": jax.random.normal(k1, (16, 12)),
                "bias": jnp.zeros(12)},
          "b": {"kernel": jax.random.normal(k2, (12, 4))}}


def _loss(p, x):
  h = jax.nn.relu(x @ p["a"]["kernel"] + p["a"]["bias"])
  return jnp.mean((h @ p["b"]["kernel"]) ** 2)


X = jax.random.normal(jax.random.PRNGKey(9), (8, 16))


def _masks(opt_state, params):
  return jax.tree.leaves(fs.sparsity.get_masks(opt_state, params))


def _run(tx, steps, states):
  """``steps`` updates of ``tx`` from each of ``states`` (one compile).

  The update reads randomness only from the key in its state, so running the
  states that other seeds' transforms initialized shows what their keys do.
  """
  @jax.jit
  def step(p, s):
    value_fn = lambda q: _loss(q, X)  # noqa: E731
    u, s = tx.update(jax.grad(value_fn)(p), s, p, value_fn=value_fn)
    return optax.apply_updates(p, u), s
  out = []
  for state in states:
    params = _params()
    for _ in range(steps):
      params, state = step(params, state)
    out.append((params, state))
  return out


# ---- the rule ----------------------------------------------------------------


def test_base_key_accepts_ints_and_keys():
  np.testing.assert_array_equal(rng.base_key(3), jax.random.PRNGKey(3))
  np.testing.assert_array_equal(rng.base_key(np.int64(3)),
                                jax.random.PRNGKey(3))
  np.testing.assert_array_equal(rng.base_key(jnp.int32(3)),
                                jax.random.PRNGKey(3))
  raw = jax.random.PRNGKey(7)
  np.testing.assert_array_equal(rng.base_key(raw), raw)
  typed = jax.random.key(7)
  np.testing.assert_array_equal(rng.base_key(typed), raw)
  traced = jax.jit(rng.base_key)(jnp.int32(5))
  np.testing.assert_array_equal(traced, jax.random.PRNGKey(5))


@pytest.mark.parametrize("bad", [True, 1.5, np.zeros(3, np.uint32), "0"])
def test_base_key_rejects_other_values(bad):
  with pytest.raises(ValueError, match="seed must be"):
    rng.base_key(bad)


def test_transform_key_is_fold_in_of_the_name_crc():
  import zlib  # pylint: disable=g-import-not-at-top
  want = jax.random.fold_in(jax.random.PRNGKey(4),
                            zlib.crc32(b"sparsity") & 0x7FFFFFFF)
  np.testing.assert_array_equal(rng.transform_key(4, "sparsity"), want)
  keys = {tuple(np.asarray(rng.transform_key(s, n)))
          for s in (0, 1) for n in rng.STREAMS}
  assert len(keys) == 2 * len(rng.STREAMS)  # seeds and roles independent
  with pytest.raises(ValueError, match="non-empty string"):
    rng.transform_key(0, "")


# ---- the builders derive every transform's key from the run's seed ----------


def _sparse_tx(run_seed, algorithm="static_sparse", **extra):
  config = {"algorithm": algorithm, "sparsity": 0.75, **extra}
  return builders.build_optimizer({"name": "sgd", "learning_rate": 0.1}, 100,
                                  sparsity_config=config, seed=run_seed)


def test_builders_derive_the_sparsity_key_from_the_run_seed():
  def key(run_seed, **config):
    tx = _sparse_tx(run_seed, "magnitude", **config)
    return np.asarray(fs.sparsity.find_sparse_state(tx.init(_params())).key)
  np.testing.assert_array_equal(key(0), rng.transform_key(0, "sparsity"))
  np.testing.assert_array_equal(key(0), key(0))
  assert (key(0) != key(1)).any()
  # An explicit config seed overrides the derived key.
  np.testing.assert_array_equal(key(0, seed=5), jax.random.PRNGKey(5))
  np.testing.assert_array_equal(key(1, seed=5), key(0, seed=5))


def test_random_static_masks_follow_the_key():
  updater = fs.sparsity.static_sparse(sparsity=0.75)
  init = jax.jit(updater.init_masks)
  params = _params()
  m0, m0_again, m1 = (jax.tree.leaves(init(params, rng.transform_key(
      s, "sparsity"))) for s in (0, 0, 1))
  for a, b in zip(m0, m0_again):
    np.testing.assert_array_equal(a, b)
  assert any((a != b).any() for a, b in zip(m0, m1))


def _masks_after(steps, algorithm, **config):
  """Masks after ``steps`` updates from the inits of run seeds 0, 0 and 1."""
  txs = [_sparse_tx(s, algorithm, **config) for s in (0, 0, 1)]
  runs = _run(txs[0], steps, [tx.init(_params()) for tx in txs])
  return [_masks(state, params) for params, state in runs]


def test_random_pruning_scores_follow_the_run_seed():
  a, a2, b = _masks_after(1, "random", schedule="one_shot",
                                    update_start_step=0)
  for x, y in zip(a, a2):
    np.testing.assert_array_equal(x, y)
  assert any((x != y).any() for x, y in zip(a, b))


def test_set_regrowth_follows_the_run_seed():
  # SET's initial random masks are seed-dependent as well; the final masks
  # differ by both, and agree for one seed twice.
  a, a2, b = _masks_after(2, "set", schedule="periodic", update_freq=1,
                          drop_fraction=0.5)
  for x, y in zip(a, a2):
    np.testing.assert_array_equal(x, y)
  assert any((x != y).any() for x, y in zip(a, b))


@pytest.mark.parametrize("name", ["sassha", "adahessian", "sophia_h"])
def test_hutchinson_probes_follow_the_run_seed(name):
  txs = [builders.build_optimizer({"name": name, "learning_rate": 0.01}, 10,
                                  seed=s) for s in (0, 0, 1)]
  runs = _run(txs[0], 1, [tx.init(_params()) for tx in txs])
  # The curvature estimate in the state (D, v or h) after one refresh.
  s0, s0_again, s1 = ([x for x in jax.tree.leaves(state)
                       if jnp.issubdtype(x.dtype, jnp.floating)]
                      for _, state in runs)
  for x, y in zip(s0, s0_again):
    np.testing.assert_array_equal(x, y)
  assert any((np.asarray(x) != np.asarray(y)).any() for x, y in zip(s0, s1))


def test_safe_hessian_importance_probes_follow_the_run_seed():
  def key(seed):
    tx = builders.build_optimizer(
        {"name": "sgd", "learning_rate": 0.1}, 10, seed=seed,
        safe_config={"name": "safe", "sparsity": 0.5,
                     "importance": "hessian"})
    return np.asarray(fs.safe.find_state(tx.init(_params())).key)
  assert (key(0) != key(1)).any()
  np.testing.assert_array_equal(key(0), key(0))


def test_without_a_run_seed_transforms_keep_seed_zero():
  tx = builders.build_optimizer({"name": "sgd", "learning_rate": 0.1}, 10,
                                sparsity_config={"algorithm": "magnitude",
                                                 "sparsity": 0.5})
  state = fs.sparsity.find_sparse_state(tx.init(_params()))
  np.testing.assert_array_equal(state.key, jax.random.PRNGKey(0))


# ---- vmap over seeds ---------------------------------------------------------


def test_vmapped_seeds_get_their_own_keys_and_masks():
  def make_tx(seed):
    return fs.sparsity.static_sparse(sparsity=0.75, seed=seed).wrap(
        optax.sgd(0.1))
  params = _params()
  stacked = jax.tree.map(lambda x: jnp.stack([x] * 2), params)
  states = jax.vmap(lambda p, s: make_tx(s).init(p))(stacked, jnp.arange(2))
  keys = np.asarray(fs.sparsity.find_sparse_state(states).key)
  for lane in range(2):
    np.testing.assert_array_equal(keys[lane], jax.random.PRNGKey(lane))
  batched = jax.tree.leaves(fs.sparsity.find_sparse_state(states).masks)
  assert any((m[0] != m[1]).any() for m in batched)
  alone = _masks(make_tx(1).init(params), params)  # lane 1 is seed 1's run
  for a, b in zip(alone, batched):
    np.testing.assert_array_equal(a, b[1])


# ---- the trainer: two seeds differ, one seed reproduces bit for bit ----------


def _config(seed):
  c = ml_collections.ConfigDict()
  c.seed = seed
  c.dataset = {"name": "digits"}
  c.model = {"name": "mlp", "hidden": (16,)}
  c.optimizer = {"name": "sgd", "learning_rate": 0.1}
  c.sparsity = {"algorithm": "static_sparse", "sparsity": 0.5}
  c.steps = 2
  c.batch_size = 32
  c.log_every = 2
  c.eval_every = 2
  c.checkpoint_every = 2
  return c


def test_trainer_runs_reproduce_and_differ_by_seed(tmp_path):
  runs = {}
  for name, seed in (("a", 0), ("a_again", 0), ("b", 1)):
    _, state = loop.train_and_evaluate(_config(seed), str(tmp_path / name),
                                       return_state=True)
    runs[name] = state
  same = jax.tree.leaves(runs["a"].params), jax.tree.leaves(
      runs["a_again"].params)
  for x, y in zip(*same):
    np.testing.assert_array_equal(x, y)
  ka = fs.sparsity.find_sparse_state(runs["a"].opt_state).key
  kb = fs.sparsity.find_sparse_state(runs["b"].opt_state).key
  np.testing.assert_array_equal(ka, rng.transform_key(0, "sparsity"))
  assert (np.asarray(ka) != np.asarray(kb)).any()
  ma = _masks(runs["a"].opt_state, runs["a"].params)
  mb = _masks(runs["b"].opt_state, runs["b"].params)
  assert any((x != y).any() for x, y in zip(ma, mb))
