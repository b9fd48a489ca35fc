"""One rule for the PRNG keys of every transform.

Transforms with random choices (the sparsity wrappers' random scores, random
static masks and SET regrowth; the Hutchinson probes of Sassha, AdaHessian,
Sophia-H and SAFE+'s Hessian importance) take a ``seed``: a Python int, an
integer array, or a PRNG key (raw ``uint32[2]`` or typed). Their state keeps
the base key :func:`base_key` of it, and step ``t`` uses ``fold_in(key, t)``.

A training run has one seed. ``flatsparse.train`` derives the seed of each
transform from it with :func:`transform_key`::

    key(name) = fold_in(PRNGKey(run_seed), crc32(name))

with ``name`` the transform's role (``'sparsity'``, ``'optimizer'``,
``'safe'``; see :data:`STREAMS`). So two run seeds give different masks,
regrowth and probes, one run seed reproduces bit for bit, and the streams of
two transforms in one run are independent. A config that sets a transform's
``seed`` explicitly overrides the derived key.

Using the transforms directly, pass ``seed=``. Under ``jax.vmap`` over seeds,
build the transform inside the vmapped ``init`` from the traced seed, so each
seed gets its own key::

    def init(params, seed):
      return make_tx(seed=seed).init(params)      # seed: a traced int or key
    opt_state = jax.vmap(init)(stacked_params, jnp.arange(4))

(with ``in_axes``/``out_axes`` from ``flatsparse.sparsity.vmap_axes`` for the
steps, whose key leaves are batched). A seed closed over as a Python int is
the same for every vmapped lane.
"""

from __future__ import annotations

from typing import Any
import zlib

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["STREAMS", "base_key", "transform_key"]

# Roles whose keys flatsparse.train derives from the run's seed.
STREAMS = ("sparsity", "optimizer", "safe")


def base_key(seed: Any) -> jax.Array:
  """A raw ``uint32[2]`` PRNG key from an int seed or a key (traceable).

  Args:
    seed: a Python/NumPy int, an integer scalar array (traced under ``vmap``
      too), a raw key ``uint32[2]`` or a typed key (``jax.random.key``).

  Returns:
    ``PRNGKey(seed)`` for an integer, the key data for a key.
  """
  if isinstance(seed, bool):
    raise ValueError(f"seed must be an int or a PRNG key, got {seed!r}.")
  if isinstance(seed, (int, np.integer)):
    return jax.random.PRNGKey(seed)
  arr = seed if isinstance(seed, jax.Array) else np.asarray(seed)
  if jnp.issubdtype(arr.dtype, jax.dtypes.prng_key):
    if arr.shape:
      raise ValueError(f"seed must be one typed key, got shape {arr.shape}.")
    return jax.random.key_data(arr)
  if arr.shape == (2,) and arr.dtype == jnp.uint32:
    return jnp.asarray(arr)
  if arr.shape == () and jnp.issubdtype(arr.dtype, jnp.integer):
    return jax.random.PRNGKey(arr)
  raise ValueError(
      f"seed must be an int, an integer scalar or a PRNG key (uint32[2] or "
      f"typed), got dtype {arr.dtype} shape {arr.shape}.")


def transform_key(run_seed: Any, name: str) -> jax.Array:
  """``fold_in(base_key(run_seed), crc32(name))``: the key of one role."""
  if not isinstance(name, str) or not name:
    raise ValueError(f"name must be a non-empty string, got {name!r}.")
  return jax.random.fold_in(base_key(run_seed),
                            zlib.crc32(name.encode()) & 0x7FFFFFFF)
