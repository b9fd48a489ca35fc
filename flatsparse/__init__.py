"""flatsparse: sparse and flat neural networks in JAX/Optax."""

from flatsparse import sparsity

__all__ = ["sparsity"]
__version__ = "0.1.0"
