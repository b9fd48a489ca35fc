"""Checkpointer: exact round trips of sparse train states, gating, pruning."""

import ast
import functools
import os
import subprocess
import sys
import textwrap
from typing import Any

import flax
import jax
import jax.numpy as jnp
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax
import pytest

import flatsparse as fs
from flatsparse.train import checkpoint as ckpt_lib


@flax.struct.dataclass
class _State:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array


def _params(seed=0):
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  return {
      "Dense_0": {"kernel": jax.random.normal(k1, (8, 16), jnp.bfloat16),
                  "bias": jnp.zeros((16,), jnp.bfloat16)},
      "block": {"Conv_0": {"kernel": jax.random.normal(k2, (3, 3, 4, 8))},
                "LayerNorm_0": {"scale": jnp.ones((8,))}},
      "head": {"kernel": jax.random.normal(k3, (16, 4)),
               "bias": jnp.full((4,), 0.5)},
  }


_TX = fs.sparsity.magnitude_pruning(sparsity=0.5).wrap(optax.adam(1e-2))


@functools.partial(jax.jit, static_argnames="mask_update")
def _train_step(params, opt_state, mask_update):
  grads = jax.tree.map(lambda p: jnp.ones_like(p) * 0.1, params)
  updates, opt_state = _TX.update(grads, opt_state, params,
                                  mask_update=mask_update)
  return optax.apply_updates(params, updates), opt_state


@functools.cache
def make_state(seed=0, steps=2) -> _State:
  """A trained-for-``steps`` state: sparse masks, adam moments, counters."""
  params = _params(seed)
  opt_state = _TX.init(params)
  for t in range(steps):  # One-shot pruning at step 0, then steady steps.
    params, opt_state = _train_step(params, opt_state, mask_update=t == 0)
  return _State(step=jnp.asarray(steps, jnp.int32), params=params,
                batch_stats={}, opt_state=opt_state,
                rng=jax.random.PRNGKey(seed + 100))


def assert_trees_equal(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for (path, a), e in zip(jax.tree_util.tree_leaves_with_path(actual),
                          jax.tree.leaves(expected)):
    name = jax.tree_util.keystr(path)
    assert np.asarray(a).dtype == np.asarray(e).dtype, name
    assert np.shape(a) == np.shape(e), name
    np.testing.assert_array_equal(np.asarray(a), np.asarray(e), err_msg=name)


def test_fixture_has_what_must_round_trip():
  state = make_state()
  sparse = fs.sparsity.find_sparse_state(state.opt_state)
  assert sparse.masks["Dense_0"]["bias"] is None  # dense leaves: None.
  assert sparse.masks["Dense_0"]["kernel"].dtype == jnp.uint8
  assert 0 < int(sparse.masks["Dense_0"]["kernel"].sum()) < 8 * 16
  assert sparse.count.dtype == jnp.int32 and int(sparse.count) == 2
  assert sparse.key.dtype == jnp.uint32 and state.rng.dtype == jnp.uint32
  assert state.params["Dense_0"]["kernel"].dtype == jnp.bfloat16


def test_round_trip_exact_in_a_new_checkpointer(tmp_path):
  state = make_state()
  meta = {"data": {"epoch": 3, "position": 1234}, "seed": 7,
          "config_hash": "abc123", "lr": 0.1, "tags": ["a", None, True]}
  with ckpt_lib.Checkpointer(tmp_path, every_steps=1, keep=3) as ckpt:
    assert ckpt.latest_step() is None
    assert ckpt.save(5, state, meta)
    ckpt.wait()
  # A fresh Checkpointer (as after a restart) finds the checkpoint on disk.
  ckpt = ckpt_lib.Checkpointer(tmp_path, every_steps=1, keep=3)
  assert ckpt.latest_step() == 5
  for like in (state, jax.eval_shape(lambda: state), make_state(seed=1)):
    restored, restored_meta = ckpt.restore(like)
    assert_trees_equal(restored, state)
    assert restored_meta == meta
    assert isinstance(restored, _State)
    sparse = fs.sparsity.find_sparse_state(restored.opt_state)
    assert isinstance(sparse, fs.sparsity.SparseState)
    assert sparse.masks["Dense_0"]["bias"] is None
    assert isinstance(restored.params["head"]["kernel"], jax.Array)
  ckpt.close()


def test_metadata_defaults_to_empty_dict(tmp_path):
  with ckpt_lib.Checkpointer(tmp_path, every_steps=1, keep=1) as ckpt:
    ckpt.save(1, {"w": jnp.ones(3)})
    ckpt.wait()
    _, meta = ckpt.restore({"w": jnp.zeros(3)})
  assert meta == {}


def test_every_steps_gating_force_and_latest_step(tmp_path):
  with ckpt_lib.Checkpointer(tmp_path, every_steps=3, keep=10) as ckpt:
    state = {"w": jnp.zeros(2)}
    saved = [s for s in range(1, 11) if ckpt.save(s, state)]
    assert saved == [3, 6, 9]
    assert ckpt.latest_step() == 9
    assert ckpt.save(10, state, force=True)  # off-interval, forced.
    assert not ckpt.save(9, state, force=True)  # already saved: no-op.
    assert ckpt.save(np.int64(12), state)  # numpy steps are fine.
    ckpt.wait()
    assert ckpt.all_steps() == [3, 6, 9, 10, 12]
    assert ckpt.latest_step() == 12


def test_keep_prunes_old_checkpoints_and_restores_a_given_step(tmp_path):
  with ckpt_lib.Checkpointer(tmp_path, every_steps=2, keep=2) as ckpt:
    states = {s: {"w": jnp.full((4,), s, jnp.float32),
                  "n": jnp.asarray(s, jnp.int32)} for s in (2, 4, 6, 8)}
    for s, st in states.items():
      assert ckpt.save(s, st, {"at": s})
    ckpt.wait()
    assert ckpt.all_steps() == [6, 8]
    assert sorted(os.listdir(tmp_path)) == ["6", "8"]
    for s in (6, 8):
      restored, meta = ckpt.restore(states[2], step=s)
      assert_trees_equal(restored, states[s])
      assert meta == {"at": s}
    restored, meta = ckpt.restore(states[2])  # default: the latest.
    assert meta == {"at": 8}
    with pytest.raises(FileNotFoundError, match=r"step 2 .*available steps: "
                       r"\[6, 8\]"):
      ckpt.restore(states[2], step=2)


def test_restore_errors(tmp_path):
  with ckpt_lib.Checkpointer(tmp_path, every_steps=1, keep=1) as ckpt:
    like = {"a": jnp.zeros((2, 3)), "m": None}
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
      ckpt.restore(like)
    ckpt.save(1, like)
    ckpt.wait()
    # A dense leaf (None) where the checkpoint has an array and vice versa:
    # orbax would silently skip these subtrees.
    with pytest.raises(ValueError, match="does not match"):
      ckpt.restore({"a": None, "m": None})
    with pytest.raises(ValueError, match="does not match"):
      ckpt.restore({"a": jnp.zeros((2, 3)), "m": jnp.zeros(1)})
    with pytest.raises(ValueError, match="does not match"):
      ckpt.restore({"a": jnp.zeros((2, 4)), "m": None})
    with pytest.raises(ValueError, match="does not match"):
      ckpt.restore({"b": jnp.zeros((2, 3)), "m": None})


def test_argument_validation(tmp_path):
  with pytest.raises(ValueError, match="every_steps"):
    ckpt_lib.Checkpointer(tmp_path, every_steps=0, keep=1)
  with pytest.raises(ValueError, match="keep"):
    ckpt_lib.Checkpointer(tmp_path, every_steps=1, keep=0)
  with ckpt_lib.Checkpointer(tmp_path, every_steps=1, keep=1) as ckpt:
    with pytest.raises(TypeError, match="JSON-serializable"):
      ckpt.save(1, {"w": jnp.ones(2)}, {"x": np.float32(1.0)})
    with pytest.raises(TypeError, match="dict"):
      ckpt.save(1, {"w": jnp.ones(2)}, [1, 2])
    with pytest.raises(ValueError, match=">= 0"):
      ckpt.save(-1, {"w": jnp.ones(2)})
    with pytest.raises(TypeError, match="integer"):
      ckpt.save(1.5, {"w": jnp.ones(2)})
    assert ckpt.all_steps() == []


def test_async_save_is_safe_against_donation(tmp_path):
  """save() copies off the device before returning: donating is safe."""
  expected = jnp.arange(1 << 20, dtype=jnp.float32)
  state = {"w": expected * 1}
  with ckpt_lib.Checkpointer(tmp_path, every_steps=1, keep=1) as ckpt:
    ckpt.save(1, state)
    state["w"].delete()  # What a donating jitted step does to the buffer.
    ckpt.wait()
    restored, _ = ckpt.restore({"w": expected})
  np.testing.assert_array_equal(restored["w"], expected)


def test_restore_places_arrays_on_state_like_sharding(tmp_path):
  device = jax.devices()[0]
  sharding = jax.sharding.SingleDeviceSharding(device)
  with ckpt_lib.Checkpointer(tmp_path, every_steps=1, keep=1) as ckpt:
    ckpt.save(1, {"w": jnp.ones((4, 2))})
    ckpt.wait()
    like = {"w": jax.ShapeDtypeStruct((4, 2), jnp.float32, sharding=sharding)}
    restored, _ = ckpt.restore(like)
  assert restored["w"].sharding == sharding


_CRASH_SCRIPT = textwrap.dedent("""
    import os, sys
    import jax.numpy as jnp
    from flatsparse.train import checkpoint
    ckpt = checkpoint.Checkpointer(sys.argv[1], every_steps=2, keep=3)
    ckpt.save(2, {"w": jnp.ones((2048, 2048))}, {"at": 2})
    ckpt.wait()
    ckpt.save(4, {"w": jnp.full((2048, 2048), 4.0)}, {"at": 4})
    print(sorted(os.listdir(sys.argv[1])), flush=True)
    os._exit(1)  # Killed while the async save of step 4 is in flight.
""")


def test_crash_mid_save_keeps_latest_complete_checkpoint(tmp_path):
  proc = subprocess.run([sys.executable, "-c", _CRASH_SCRIPT, str(tmp_path)],
                        capture_output=True, text=True, timeout=120,
                        check=False)
  assert proc.returncode == 1, proc.stderr[-2000:]
  listing = ast.literal_eval(proc.stdout.strip().splitlines()[-1])
  assert "2" in listing
  ckpt = ckpt_lib.Checkpointer(tmp_path, every_steps=2, keep=3)
  # Step 4 counts only if its rename completed before the kill; either way
  # a temporary folder is never taken for a checkpoint.
  assert ckpt.all_steps() in ([2], [2, 4])
  restored, meta = ckpt.restore({"w": jnp.zeros((2048, 2048))}, step=2)
  assert meta == {"at": 2} and float(restored["w"].mean()) == 1.0
  # Leftover temporary folders are deleted (in the background, awaited by the
  # next save).
  assert ckpt.save(6, {"w": jnp.zeros(1)})
  ckpt.close()
  assert not [n for n in os.listdir(tmp_path) if "tmp" in n]


def test_incomplete_temporary_folder_is_ignored(tmp_path):
  with ckpt_lib.Checkpointer(tmp_path, every_steps=1, keep=3) as ckpt:
    ckpt.save(1, {"w": jnp.ones(3)})
    ckpt.wait()
  # What a crash leaves behind: a half-written step folder under a tmp name.
  tmp = tmp_path / "2.orbax-checkpoint-tmp"
  (tmp / "state").mkdir(parents=True)
  (tmp / "state" / "garbage").write_bytes(b"\0" * 10)
  with ckpt_lib.Checkpointer(tmp_path, every_steps=1, keep=3) as ckpt:
    assert ckpt.latest_step() == 1
    restored, _ = ckpt.restore({"w": jnp.zeros(3)})
    np.testing.assert_array_equal(restored["w"], np.ones(3))
    assert ckpt.save(2, {"w": jnp.full(3, 2.0)})  # Step 2 is free to save.
    ckpt.wait()
    assert ckpt.all_steps() == [1, 2]


# ---- multi-device: run with 8 simulated devices, in a separate process -----


@pytest.mark.multidevice
@pytest.mark.timeout(120, method="thread")
@pytest.mark.skipif(jax.device_count() < 8, reason=(
    "needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8"))
def test_restore_onto_a_different_sharded_layout(tmp_path):
  mesh = jax.make_mesh((2, 4), ("data", "model"),
                       axis_types=(AxisType.Auto, AxisType.Auto))
  state = make_state()
  saved_sharding = NamedSharding(mesh, P("data"))  # rows over 2 devices.
  state = jax.tree.map(
      lambda x: jax.device_put(x, saved_sharding if x.ndim and
                               x.shape[0] % 2 == 0 else
                               NamedSharding(mesh, P())), state)
  with ckpt_lib.Checkpointer(tmp_path, every_steps=1, keep=1) as ckpt:
    ckpt.save(1, state)
    ckpt.wait()

    def target(x):
      spec = P(None, "model") if x.ndim >= 2 and x.shape[1] % 4 == 0 else P()
      return jax.ShapeDtypeStruct(x.shape, x.dtype,
                                  sharding=NamedSharding(mesh, spec))

    like = jax.tree.map(target, state)
    restored, _ = ckpt.restore(like)
  assert_trees_equal(restored, state)
  kernel = restored.params["Dense_0"]["kernel"]
  assert kernel.sharding == NamedSharding(mesh, P(None, "model"))
  mask = fs.sparsity.find_sparse_state(restored.opt_state).masks
  assert mask["Dense_0"]["kernel"].sharding == kernel.sharding
  assert restored.rng.sharding.is_fully_replicated


# ---- damaged checkpoints: fall back to the newest readable step -------------


def _truncate(path, keep=0.5):
  data = path.read_bytes()
  path.write_bytes(data[:int(len(data) * keep)])


def _truncate_arrays(step_dir):
  files = [p for p in (step_dir / "state" / "d").iterdir() if p.is_file()]
  assert files, list(step_dir.rglob("*"))
  for path in files:
    _truncate(path)


_DAMAGE = {
    "truncated_array_file": _truncate_arrays,
    "truncated_state_metadata": lambda d: _truncate(d / "state" / "_METADATA"),
    "garbage_state_metadata": lambda d: (d / "state" / "_METADATA").write_text(
        "not json"),
    "truncated_metadata_json": lambda d: _truncate(d / "metadata" /
                                                   "metadata"),
}


def _save_steps(directory, steps):
  states = {s: make_state(steps=s) for s in steps}
  with ckpt_lib.Checkpointer(directory, every_steps=1, keep=5) as ckpt:
    for s in steps:
      assert ckpt.save(s, states[s], {"at": s})
  return states


def _skip_warnings(caplog):
  return [r.getMessage() for r in caplog.records
          if "unreadable checkpoint" in r.getMessage()]


@pytest.mark.parametrize("damage", sorted(_DAMAGE))
def test_damaged_latest_step_falls_back_to_the_newest_readable(
    tmp_path, caplog, damage):
  states = _save_steps(tmp_path, (1, 2, 3))
  _DAMAGE[damage](tmp_path / "3")
  caplog.set_level("WARNING")
  ckpt = ckpt_lib.Checkpointer(tmp_path, every_steps=1, keep=5)
  assert ckpt.latest_step() == 3  # still listed: only reading fails.
  restored, meta = ckpt.restore(states[1])
  assert meta == {"at": 2} and ckpt.restored_step == 2
  assert_trees_equal(restored, states[2])
  # One line that names the step, its path and why.
  (line,) = _skip_warnings(caplog)
  assert "step 3" in line and str(tmp_path / "3") in line
  assert "restored step 2" in line
  if "metadata" in damage:
    assert "not valid JSON" in line
  # A given step is never replaced by another.
  with pytest.raises(ckpt_lib.UnreadableCheckpointError,
                     match=rf"step 3 at {tmp_path / '3'} is unreadable"):
    ckpt.restore(states[1], step=3)
  # The run saves again from step 2 on: the damaged step is deleted first
  # (orbax saves no step older than the latest) and replaced.
  assert ckpt.save(3, states[3])
  ckpt.wait()
  assert ckpt.all_steps() == [1, 2, 3]
  restored, meta = ckpt.restore(states[1])
  assert_trees_equal(restored, states[3])
  ckpt.close()


def test_no_readable_step_is_a_clear_error(tmp_path):
  states = _save_steps(tmp_path, (1, 2))
  _truncate(tmp_path / "2" / "state" / "_METADATA")
  _truncate_arrays(tmp_path / "1")
  with ckpt_lib.Checkpointer(tmp_path, every_steps=1, keep=5) as ckpt:
    with pytest.raises(ckpt_lib.UnreadableCheckpointError) as info:
      ckpt.restore(states[1])
  message = str(info.value)
  assert message.startswith(f"No readable checkpoint in {tmp_path}")
  assert f"step 2 at {tmp_path / '2'}: state/_METADATA not valid JSON" in (
      message)
  assert f"step 1 at {tmp_path / '1'}: ValueError" in message
  assert sorted(info.value.reasons) == [1, 2]


def test_a_mismatch_is_not_taken_for_damage(tmp_path, caplog):
  _save_steps(tmp_path, (1, 2))
  caplog.set_level("WARNING")
  with ckpt_lib.Checkpointer(tmp_path, every_steps=1, keep=5) as ckpt:
    other = jax.tree.map(lambda x: jnp.zeros(x.shape + (1,), x.dtype)
                         if x.ndim == 2 else x, make_state())
    with pytest.raises(ValueError, match="step 2 .* does not match"):
      ckpt.restore(other)
  assert not _skip_warnings(caplog)
