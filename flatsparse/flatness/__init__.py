"""Flatness: sharpness-aware optimizers and curvature diagnostics."""

from flatsparse.flatness.adahessian import adahessian
from flatsparse.flatness.adahessian import AdaHessianState
from flatsparse.flatness.adahessian import spatial_average
from flatsparse.flatness.curvature import hessian_moments
from flatsparse.flatness.curvature import hutchinson_diagonal
from flatsparse.flatness.curvature import hutchinson_trace
from flatsparse.flatness.curvature import hvp
from flatsparse.flatness.curvature import lanczos
from flatsparse.flatness.curvature import probes
from flatsparse.flatness.curvature import PROBES
from flatsparse.flatness.curvature import spectral_density
from flatsparse.flatness.curvature import top_eigenvalue
from flatsparse.flatness.curvature import top_eigenvalues
from flatsparse.flatness.sam import checked_value_fn
from flatsparse.flatness.sam import perturbation
from flatsparse.flatness.sam import sam
from flatsparse.flatness.sam import SAMState
from flatsparse.flatness.sassha import BIAS_CORRECTIONS
from flatsparse.flatness.sassha import sassha
from flatsparse.flatness.sassha import SasshaState
from flatsparse.flatness.sophia import sophia_h
from flatsparse.flatness.sophia import SophiaHState

__all__ = [
    "hessian_moments", "hutchinson_diagonal", "hutchinson_trace", "hvp",
    "lanczos", "checked_value_fn", "perturbation", "probes", "PROBES", "sam", "SAMState",
    "spectral_density", "top_eigenvalue", "top_eigenvalues",
    "adahessian", "AdaHessianState", "BIAS_CORRECTIONS", "sassha",
    "SasshaState", "sophia_h", "SophiaHState", "spatial_average",
]
