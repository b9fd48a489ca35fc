"""One-shot pruning of transformers from a little calibration data.

Layer-wise solvers on Flax ``(in, out)`` kernels (magnitude, Wanda,
SparseGPT) from the statistics of each linear layer's inputs, block-wise
reconstruction (BR, GP, CR), block-wise SAFE / SAFE+, self-generated
calibration, and the block loop that prunes a whole model with progress and
resume::

    import flatsparse.oneshot as oneshot
    from flatsparse.models import blockwise, hf_checkpoint

    model, params, hf_config = hf_checkpoint.load_hf_checkpoint("opt-125m/")
    method = oneshot.OneShotMethod(solver="sparsegpt", sparsity=0.5,
                                   reconstruction="br+gp")
    result = oneshot.prune(blockwise(model), params, tokens,
                           method=method, key=jax.random.PRNGKey(0),
                           workdir="/tmp/prune")
    hf_checkpoint.save_hf_checkpoint("opt-125m-50/", model, result.params,
                                     hf_config)

N:M patterns count the KEPT weights: ``'2:4'`` keeps 2 of every 4 inputs,
``'1:4'`` keeps 1 (the SparseGPT and Wanda repositories count the pruned
ones; the same for 2:4, the opposite for 1:4).
"""

from flatsparse.oneshot.block_safe import safe_block
from flatsparse.oneshot.calibration import generate
from flatsparse.oneshot.magnitude import magnitude_prune
from flatsparse.oneshot.method import OneShotMethod
from flatsparse.oneshot.method import RECONSTRUCTIONS
from flatsparse.oneshot.method import SafeBlockConfig
from flatsparse.oneshot.method import SOLVERS
from flatsparse.oneshot.pattern import parse_pattern
from flatsparse.oneshot.pattern import Pattern
from flatsparse.oneshot.pipeline import block_errors
from flatsparse.oneshot.pipeline import is_block_kernel
from flatsparse.oneshot.pipeline import OneShotResult
from flatsparse.oneshot.pipeline import prune
from flatsparse.oneshot.pipeline import sparsity_of
from flatsparse.oneshot.reconstruction import reconstruct
from flatsparse.oneshot.reconstruction import ReconstructionConfig
from flatsparse.oneshot.sparsegpt import sparsegpt_prune
from flatsparse.oneshot.statistics import hessian
from flatsparse.oneshot.statistics import LayerStatistics
from flatsparse.oneshot.statistics import statistics_during
from flatsparse.oneshot.wanda import wanda_prune
from flatsparse.oneshot.wanda import wanda_scores

__all__ = [
    "OneShotMethod", "SafeBlockConfig", "ReconstructionConfig", "SOLVERS",
    "RECONSTRUCTIONS", "prune", "OneShotResult", "block_errors",
    "sparsity_of", "is_block_kernel", "reconstruct", "safe_block", "generate",
    "magnitude_prune", "wanda_prune", "wanda_scores", "sparsegpt_prune",
    "LayerStatistics", "statistics_during", "hessian", "Pattern",
    "parse_pattern",
]
