"""Sparse training and pruning: masks live in the optimizer state.

Example::

    import optax, flatsparse as fs
    pruner = fs.sparsity.magnitude_pruning(
        sparsity=0.9, distribution="erk",   # scope="layer", min_kept=1
        schedule=fs.sparsity.Polynomial(update_freq=10, update_end_step=1000))
    tx = pruner.wrap(optax.adam(1e-3))   # the wrapper goes outermost
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)   # stays exactly sparse
    fs.sparsity.check_sparse(params, state)   # e.g. at eval: raises if not
"""

from flatsparse.sparsity import distributions
from flatsparse.sparsity import importance
from flatsparse.sparsity import masks
from flatsparse.sparsity import schedules
from flatsparse.sparsity import spec
from flatsparse.sparsity.algorithms import ACDC
from flatsparse.sparsity.algorithms import acdc
from flatsparse.sparsity.algorithms import DynamicSparse
from flatsparse.sparsity.algorithms import global_magnitude_pruning
from flatsparse.sparsity.algorithms import global_saliency_pruning
from flatsparse.sparsity.algorithms import GlobalPruning
from flatsparse.sparsity.algorithms import magnitude_pruning
from flatsparse.sparsity.algorithms import magnitude_ste
from flatsparse.sparsity.algorithms import no_pruning
from flatsparse.sparsity.algorithms import random_pruning
from flatsparse.sparsity.algorithms import random_ste
from flatsparse.sparsity.algorithms import rigl
from flatsparse.sparsity.algorithms import saliency_pruning
from flatsparse.sparsity.algorithms import set_sparse
from flatsparse.sparsity.algorithms import static_sparse
from flatsparse.sparsity.algorithms import StaticSparse
from flatsparse.sparsity.config import ALGORITHMS
from flatsparse.sparsity.config import create_updater_from_config
from flatsparse.sparsity.config import register_algorithm
from flatsparse.sparsity.distributions import layer_sparsities
from flatsparse.sparsity.masks import Block
from flatsparse.sparsity.masks import Channel
from flatsparse.sparsity.masks import NM
from flatsparse.sparsity.masks import topk_mask
from flatsparse.sparsity.masks import Unstructured
from flatsparse.sparsity.schedules import cosine_drop_fraction
from flatsparse.sparsity.schedules import NoUpdate
from flatsparse.sparsity.schedules import OneShot
from flatsparse.sparsity.schedules import Periodic
from flatsparse.sparsity.schedules import Polynomial
from flatsparse.sparsity.spec import default_is_prunable
from flatsparse.sparsity.updater import apply_masks
from flatsparse.sparsity.updater import check_sparse
from flatsparse.sparsity.updater import find_sparse_state
from flatsparse.sparsity.updater import format_sparsity_table
from flatsparse.sparsity.updater import get_masks
from flatsparse.sparsity.updater import masked_params
from flatsparse.sparsity.updater import reset_where_grown
from flatsparse.sparsity.updater import SparseState
from flatsparse.sparsity.updater import SparseUpdater
from flatsparse.sparsity.updater import summarize_sparsity
from flatsparse.sparsity.updater import vmap_axes

__all__ = [
    "distributions", "importance", "masks", "schedules", "spec",
    "ACDC", "acdc", "DynamicSparse", "global_magnitude_pruning",
    "global_saliency_pruning", "GlobalPruning", "magnitude_pruning",
    "magnitude_ste", "no_pruning", "random_pruning", "random_ste", "rigl",
    "saliency_pruning", "set_sparse", "static_sparse", "StaticSparse",
    "ALGORITHMS", "create_updater_from_config", "register_algorithm",
    "default_is_prunable", "layer_sparsities",
    "Block", "Channel", "NM", "topk_mask", "Unstructured",
    "cosine_drop_fraction", "NoUpdate", "OneShot", "Periodic", "Polynomial",
    "apply_masks", "check_sparse", "find_sparse_state",
    "format_sparsity_table", "get_masks", "masked_params",
    "reset_where_grown", "SparseState", "SparseUpdater",
    "summarize_sparsity", "vmap_axes",
]
