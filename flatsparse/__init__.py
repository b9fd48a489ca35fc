"""flatsparse: sparse and flat neural networks in JAX/Optax."""

from flatsparse import flatness
from flatsparse import safe
from flatsparse import sparsity
from flatsparse.flatness import sam

__all__ = ["flatness", "safe", "sam", "sparsity"]
__version__ = "0.1.0"
