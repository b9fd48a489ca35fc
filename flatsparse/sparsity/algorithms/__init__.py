"""Sparse-training algorithms, one module per family."""

from flatsparse.sparsity.algorithms.acdc import ACDC
from flatsparse.sparsity.algorithms.acdc import acdc
from flatsparse.sparsity.algorithms.dynamic import DynamicSparse
from flatsparse.sparsity.algorithms.dynamic import rigl
from flatsparse.sparsity.algorithms.dynamic import set_sparse
from flatsparse.sparsity.algorithms.dynamic import static_sparse
from flatsparse.sparsity.algorithms.dynamic import StaticSparse
from flatsparse.sparsity.algorithms.global_pruners import (
    global_magnitude_pruning,
)
from flatsparse.sparsity.algorithms.global_pruners import (
    global_saliency_pruning,
)
from flatsparse.sparsity.algorithms.global_pruners import GlobalPruning
from flatsparse.sparsity.algorithms.pruners import magnitude_pruning
from flatsparse.sparsity.algorithms.pruners import magnitude_ste
from flatsparse.sparsity.algorithms.pruners import no_pruning
from flatsparse.sparsity.algorithms.pruners import random_pruning
from flatsparse.sparsity.algorithms.pruners import random_ste
from flatsparse.sparsity.algorithms.pruners import saliency_pruning

__all__ = [
    "ACDC", "acdc", "DynamicSparse", "rigl", "set_sparse", "static_sparse",
    "StaticSparse", "global_magnitude_pruning", "global_saliency_pruning",
    "GlobalPruning", "magnitude_pruning", "magnitude_ste", "no_pruning",
    "random_pruning", "random_ste", "saliency_pruning",
]
