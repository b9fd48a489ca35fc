"""flatsparse: sparse and flat neural networks in JAX/Optax.

``import flatsparse as fs`` loads the optimizer core (``fs.sparsity``,
``fs.flatness``, ``fs.sam``, ``fs.safe``); the other subpackages load on
first use (``fs.federated.layerwise``, ``fs.train.restore_trained``, ...).
"""

import importlib
from typing import Any

from flatsparse import flatness
from flatsparse import safe
from flatsparse import sparsity
from flatsparse.flatness import sam

# Loaded on first attribute access (PEP 562): models, data and the training
# platform pull in Flax modules and dataset code a transform user never needs.
LAZY_SUBPACKAGES = ("cbm", "data", "distill", "federated", "models",
                    "oneshot", "study", "train", "zeroth_order")

__all__ = ["flatness", "safe", "sam", "sparsity", *LAZY_SUBPACKAGES]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
  if name in LAZY_SUBPACKAGES:
    return importlib.import_module(f"flatsparse.{name}")
  raise AttributeError(f"module 'flatsparse' has no attribute {name!r}")
