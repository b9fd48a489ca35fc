"""The extra-argument protocol as a trainer without it meets it.

Scenic, big_vision and t5x call ``tx.update(grads, state, params)`` with no
extra arguments. The README's reuse table says which transforms work there
unchanged and which need the train step to pass ``value_fn`` (or another
extra argument); this checks both halves of that table for every transform.
"""

import jax.numpy as jnp
import optax
import pytest

import flatsparse as fs
from flatsparse import protocol

PARAMS = {"dense": {"kernel": jnp.arange(12.0).reshape(3, 4) / 10 - 0.5,
                    "bias": jnp.ones(4)}}
GRADS = {"dense": {"kernel": jnp.ones((3, 4)) / 7, "bias": jnp.ones(4) / 3}}


def _safe(name, **extra):
  period = {"period": 1} if name == "iht" else {"dual_period": 1}
  config = {"name": name, "sparsity": 0.5, **period, **extra}
  return fs.safe.create_from_config(config, optax.sgd(0.1), 10)


# Transforms whose update needs only (grads, state, params).
WORKS_UNCHANGED = {
    "magnitude_pruning": lambda: fs.sparsity.magnitude_pruning(
        sparsity=0.5).wrap(optax.sgd(0.1)),
    "rigl": lambda: fs.sparsity.rigl(sparsity=0.5).wrap(optax.sgd(0.1)),
    "iht": lambda: _safe("iht"),
    "admm": lambda: _safe("admm"),
    "safe(rho=0)": lambda: _safe("safe", rho=0.0),
}

# Transforms that need an extra argument, with the argument's name.
NEEDS_EXTRA = {
    "sam": (lambda: fs.sam(0.05), "value_fn"),
    "sam(sub_batches=2)": (lambda: fs.sam(0.05, sub_batches=2),
                           "sub_batch_value_fn"),
    "sassha": (lambda: fs.flatness.sassha(0.1), "value_fn"),
    "adahessian": (lambda: fs.flatness.adahessian(0.1), "value_fn"),
    "sophia_h": (lambda: fs.flatness.sophia_h(0.1), "value_fn"),
    "safe": (lambda: _safe("safe", rho=0.1), "value_fn"),
    "safe_plus": (lambda: _safe("safe_plus", rho=0.0), "activations"),
}


@pytest.mark.parametrize("name", sorted(WORKS_UNCHANGED))
def test_works_with_plain_update(name):
  tx = WORKS_UNCHANGED[name]()
  state = tx.init(PARAMS)
  for _ in range(2):
    updates, state = tx.update(GRADS, state, PARAMS)
  assert optax.tree.norm(updates) > 0


@pytest.mark.parametrize("name", sorted(NEEDS_EXTRA))
def test_missing_extra_argument_is_named(name):
  make, argument = NEEDS_EXTRA[name]
  assert argument in protocol.EXTRA_ARGS or argument == "activations"
  tx = make()
  state = tx.init(PARAMS)
  with pytest.raises(ValueError, match=f"needs .*extra argument {argument}"):
    tx.update(GRADS, state, PARAMS)


def test_every_extra_argument_is_documented():
  for name, arg in protocol.EXTRA_ARGS.items():
    assert arg.name == name and arg.signature and arg.meaning
    assert arg.provider and arg.consumers
  assert protocol.__doc__.count("``") > 10  # the table in the docstring
  for name in protocol.EXTRA_ARGS:
    assert f"``{name}``" in protocol.__doc__


def test_require_names_the_argument_its_type_and_how_to_pass_it():
  assert protocol.require("sam", "value_fn", len, params={}) is len
  with pytest.raises(ValueError) as error:
    protocol.require("sam", "value_fn", None, params={})
  message = str(error.value)
  assert message.startswith("sam needs params and the extra argument value_fn")
  assert "params -> scalar loss" in message
  assert "tx.update(grads, state, params, value_fn=...)" in message
  with pytest.raises(ValueError, match="^x needs the extra argument masks"):
    protocol.require("x", "masks", None)
