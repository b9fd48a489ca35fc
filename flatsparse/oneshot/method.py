"""What a one-shot pruning run does: solver, pattern, reconstruction.

A :class:`OneShotMethod` names the layer-wise solver (``magnitude``, ``wanda``,
``sparsegpt``) or the block-wise SAFE training (``safe``, ``safe+``), the mask
pattern in the mask vocabulary (a sparsity with the solver's comparison
group, or ``'N:M'`` along the input axis, N = weights KEPT per group of M),
and the reconstruction after the solver:

==========  ==================================================================
``lr``      the solver alone (layer-wise reconstruction: the baseline)
``br``      + each pruned block trained to the dense block's output on the
            pruned model's inputs
``br+gp``   + the target is the dense model's own activation (global
            propagation)
``br+gp+cr``  + windows of two consecutive blocks trained jointly against the
            dense activation after the second (cross-block)
==========  ==================================================================

Comparison groups of an unstructured sparsity (``scope=None`` picks the
solver's own): magnitude ``'layer'`` (each matrix), Wanda ``'row'`` (each
output unit), SparseGPT ``'layer'`` (jointly over the outputs within each
block of ``block_size`` inputs, the paper's rule), SAFE ``'row'``.

References:
  Shin, Park, Kim, Lee, "Rethinking Pruning Large Language Models: Benefits
  and Pitfalls of Reconstruction Error Minimization", EMNLP 2024.
  Lee, Lee, Chung, Lee, "SAFE: Finding Sparse and Flat Minima to Improve
  Pruning", ICML 2025.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flatsparse import validation
from flatsparse.oneshot.reconstruction import ReconstructionConfig

__all__ = ["SOLVERS", "RECONSTRUCTIONS", "DEFAULT_SCOPES", "SafeBlockConfig",
           "OneShotMethod"]

SOLVERS = ("magnitude", "wanda", "sparsegpt", "safe", "safe+")
RECONSTRUCTIONS = ("lr", "br", "br+gp", "br+gp+cr")
DEFAULT_SCOPES = {"magnitude": "layer", "wanda": "row", "sparsegpt": "layer",
                  "safe": "row", "safe+": "row"}
HESSIAN_NORMALIZATIONS = ("tokens", "sequences")
TIES = ("exact", "reference")


@dataclasses.dataclass(frozen=True)
class SafeBlockConfig:
  """Block-wise SAFE / SAFE+ (the SAFE paper's language-model recipe).

  Each block is trained with SAFE around Adam (betas ``b1``, ``b2``) on the
  mean squared error to the dense block's output, then projected exactly.

  Attributes:
    learning_rate, b1, b2: Adam's (reference: 2e-4, 0.9, 0.95).
    lam: the penalty lambda (reference 1e-3).
    rho: the SAM radius (reference 2e-4).
    dual_period: K, steps between projections (reference 32).
    epochs, batch_size: passes over the calibration set and sequences per
      step.
    target: ``'block'`` (the dense block on the pruned inputs, the
      reference) or ``'dense'`` (the dense model's activation, as GP).
  """

  learning_rate: float = 2e-4
  b1: float = 0.9
  b2: float = 0.95
  lam: float = 1e-3
  rho: float = 2e-4
  dual_period: int = 32
  epochs: int = 10
  batch_size: int = 8
  target: str = "block"

  def check(self) -> None:
    validation.check("learning_rate", self.learning_rate, lambda v: v > 0,
                     "> 0")
    validation.check_betas(b1=self.b1, b2=self.b2)
    validation.check("lam", self.lam, lambda v: v >= 0, ">= 0")
    validation.check("rho", self.rho, lambda v: v >= 0, ">= 0")
    validation.check_count("dual_period", self.dual_period)
    validation.check_count("epochs", self.epochs)
    validation.check_count("batch_size", self.batch_size)
    validation.check_choice("safe target", self.target, ("block", "dense"))


@dataclasses.dataclass(frozen=True)
class OneShotMethod:
  """A one-shot pruning method (see the module docstring).

  Attributes:
    solver: one of ``SOLVERS``.
    sparsity: target in [0, 1) for unstructured patterns; ``None`` with an
      N:M scope.
    scope: ``None`` (the solver's comparison group), ``'layer'``, ``'row'``
      or ``'N:M'`` (e.g. ``'2:4'``).
    reconstruction: one of ``RECONSTRUCTIONS`` (layer-wise solvers only).
    reconstruction_config: BR / GP / CR training.
    block_size: SparseGPT's inputs per mask block (reference 128).
    dampening: SparseGPT's relative dampening (reference 0.01).
    hessian_normalization: ``'tokens'`` (H = 2/n X X^T over n tokens, the
      paper's mean) or ``'sequences'`` (the reference code's divisor; the
      result is the same up to rounding: the dampening is relative).
    ties: SparseGPT's count rule: ``'exact'`` or ``'reference'`` (its ``<=``
      threshold, which can prune one weight too many per block).
    safe: the block-wise SAFE hyperparameters.
  """

  solver: str = "sparsegpt"
  sparsity: float | None = 0.5
  scope: str | None = None
  reconstruction: str = "lr"
  reconstruction_config: ReconstructionConfig = ReconstructionConfig()
  block_size: int = 128
  dampening: float = 0.01
  hessian_normalization: str = "tokens"
  ties: str = "exact"
  safe: SafeBlockConfig = SafeBlockConfig()

  def __post_init__(self):
    validation.check_choice("solver", self.solver, SOLVERS)
    validation.check_choice("reconstruction", self.reconstruction,
                            RECONSTRUCTIONS)
    validation.check_choice("hessian_normalization",
                            self.hessian_normalization,
                            HESSIAN_NORMALIZATIONS)
    validation.check_choice("ties", self.ties, TIES)
    validation.check_count("block_size", self.block_size)
    validation.check("dampening", self.dampening, lambda v: v >= 0, ">= 0")
    if self.is_safe and self.reconstruction != "lr":
      raise ValueError(
          f"solver {self.solver!r} trains each block itself; reconstruction "
          f"must be 'lr', got {self.reconstruction!r}.")
    self.reconstruction_config.check()
    self.safe.check()
    if self.is_nm:
      if self.sparsity is not None:
        raise ValueError(f"scope {self.scope!r} fixes the sparsity; pass "
                         f"sparsity=None, got {self.sparsity!r}.")
    elif self.sparsity is None or not 0.0 <= float(self.sparsity) < 1.0:
      raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity!r}.")

  @property
  def is_safe(self) -> bool:
    return self.solver in ("safe", "safe+")

  @property
  def is_nm(self) -> bool:
    return isinstance(self.scope, str) and ":" in self.scope

  @property
  def effective_scope(self) -> str:
    return self.scope or DEFAULT_SCOPES[self.solver]

  @property
  def trains_blocks(self) -> bool:
    return self.reconstruction != "lr"

  @property
  def global_propagation(self) -> bool:
    return "gp" in self.reconstruction.split("+")

  @property
  def cross_block(self) -> bool:
    return "cr" in self.reconstruction.split("+")

  @property
  def needs_gram(self) -> bool:
    return self.solver == "sparsegpt"

  @property
  def needs_statistics(self) -> bool:
    return self.solver in ("wanda", "sparsegpt", "safe+")

  def describe(self) -> dict[str, Any]:
    """Plain values (JSON) that identify the method, e.g. for resuming."""
    return _plain(dataclasses.asdict(self))

  @property
  def name(self) -> str:
    """``'sparsegpt/2:4/br+gp'``-style label."""
    pattern = self.scope if self.is_nm else f"{self.sparsity:g}"
    return f"{self.solver}/{pattern}/{self.reconstruction}"


def _plain(value: Any) -> Any:
  if isinstance(value, dict):
    return {k: _plain(v) for k, v in value.items()}
  if isinstance(value, tuple) and hasattr(value, "_asdict"):
    return _plain(value._asdict())
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  return value
