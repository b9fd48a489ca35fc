"""SAFE and SAFE+: sparse and flat pruning by an augmented Lagrangian.

Example (SAFE at 90% sparsity around SGD; ``value_fn`` as in
``flatsparse.sam``)::

    import optax, flatsparse as fs
    proj = fs.safe.Projection(sparsity=0.9, scope="layer")
    tx = fs.safe.safe(optax.sgd(0.1, 0.9), proj, lam=1e-3, rho=0.1,
                      dual_period=32, total_steps=steps)
    updates, state = tx.update(grads, state, params, value_fn=value_fn)
    ...
    sparse_params = fs.safe.finalize(params, state, proj)  # Proj(w_T)

Baselines with the same interface: :func:`admm` (rho = 0, constant penalty)
and :func:`iht` (project every step); gradual magnitude pruning is
``flatsparse.sparsity.magnitude_pruning``.

The reference SAFE code's kept count and penalty after ``total_steps`` are
``Projection(rounding='floor')`` and ``safe(...,
penalty_after_total='continue')`` (see :mod:`flatsparse.safe.safe`).
"""

from flatsparse.safe.activations import input_feature_norms
from flatsparse.safe.config import CONFIG_KEYS
from flatsparse.safe.config import create_from_config
from flatsparse.safe.config import METHODS
from flatsparse.safe.config import projection_from_config
from flatsparse.safe.finalize import finalize
from flatsparse.safe.finalize import find_state
from flatsparse.safe.iht import iht
from flatsparse.safe.iht import IHTState
from flatsparse.safe.projection import importance_shape
from flatsparse.safe.projection import IMPORTANCES
from flatsparse.safe.projection import num_to_keep
from flatsparse.safe.projection import Projection
from flatsparse.safe.projection import ROUNDINGS
from flatsparse.safe.projection import SCOPES
from flatsparse.safe.safe import admm
from flatsparse.safe.safe import penalty
from flatsparse.safe.safe import PENALTY_AFTER_TOTAL
from flatsparse.safe.safe import PENALTY_SCHEDULES
from flatsparse.safe.safe import safe
from flatsparse.safe.safe import SafeState
from flatsparse.safe.safe import sharp_gradient

__all__ = [
    "input_feature_norms", "CONFIG_KEYS", "create_from_config", "METHODS",
    "projection_from_config", "finalize", "find_state", "iht", "IHTState",
    "IMPORTANCES", "importance_shape", "num_to_keep", "Projection",
    "ROUNDINGS", "SCOPES", "admm", "PENALTY_AFTER_TOTAL", "PENALTY_SCHEDULES",
    "penalty", "safe", "SafeState", "sharp_gradient",
]
