"""Flatness: sharpness-aware optimizers and curvature diagnostics."""

from flatsparse.flatness.adahessian import adahessian
from flatsparse.flatness.adahessian import AdaHessianState
from flatsparse.flatness.adahessian import HESSIAN_EMAS
from flatsparse.flatness.adahessian import scale_by_adahessian
from flatsparse.flatness.adahessian import spatial_average
from flatsparse.flatness.curvature import grad_and_hvp
from flatsparse.flatness.curvature import hessian_moments
from flatsparse.flatness.curvature import hutchinson_diagonal
from flatsparse.flatness.curvature import hutchinson_diagonal_from_hvp
from flatsparse.flatness.curvature import hutchinson_trace
from flatsparse.flatness.curvature import hvp
from flatsparse.flatness.curvature import lanczos
from flatsparse.flatness.curvature import PROBES
from flatsparse.flatness.curvature import probes
from flatsparse.flatness.curvature import spectral_density
from flatsparse.flatness.curvature import top_eigenvalue
from flatsparse.flatness.curvature import top_eigenvalues
from flatsparse.flatness.hutchinson_ema import lazy_hutchinson_ema
from flatsparse.flatness.sam import checked_value_fn
from flatsparse.flatness.sam import perturbation
from flatsparse.flatness.sam import sam
from flatsparse.flatness.sam import SAMState
from flatsparse.flatness.sassha import BIAS_CORRECTIONS
from flatsparse.flatness.sassha import sassha
from flatsparse.flatness.sassha import SasshaState
from flatsparse.flatness.sassha import scale_by_sassha
from flatsparse.flatness.sophia import EPS_MODES
from flatsparse.flatness.sophia import scale_by_sophia_h
from flatsparse.flatness.sophia import sophia_h
from flatsparse.flatness.sophia import SophiaHState

__all__ = [
    "hessian_moments", "hutchinson_diagonal", "hutchinson_diagonal_from_hvp",
    "hutchinson_trace", "hvp", "grad_and_hvp", "lanczos", "checked_value_fn",
    "perturbation", "probes", "PROBES", "sam", "SAMState",
    "spectral_density", "top_eigenvalue", "top_eigenvalues",
    "lazy_hutchinson_ema", "adahessian", "AdaHessianState", "HESSIAN_EMAS",
    "scale_by_adahessian", "BIAS_CORRECTIONS", "sassha", "SasshaState",
    "scale_by_sassha", "sophia_h", "SophiaHState", "scale_by_sophia_h",
    "EPS_MODES", "spatial_average",
]
