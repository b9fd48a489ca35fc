"""Flatness: sharpness-aware optimizers (more arrive with the flatness issue)."""

from flatsparse.flatness.sam import perturbation
from flatsparse.flatness.sam import sam
from flatsparse.flatness.sam import SAMState

__all__ = ["perturbation", "sam", "SAMState"]
