"""Helpers shared by the resume and preemption tests."""

import jax
import numpy as np

from flatsparse.train import checkpoint as checkpoint_lib


def checkpoint_steps(workdir):
  """The steps saved under ``workdir/checkpoints``."""
  with checkpoint_lib.Checkpointer(str(workdir / "checkpoints"),
                                   every_steps=1, keep=2) as ckpt:
    return ckpt.all_steps()


def assert_trees_equal(a, b):
  """Bit-identical pytrees (fetched to the host)."""
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(a),
               jax.device_get(b))
