r"""SAFE vs its baselines: accuracy and sharpness vs sparsity on the digits.

Dense, GMP (gradual magnitude pruning), IHT, ADMM, SAM+GMP, SAFE and SAFE+
(importance 'activation': Wanda-style input-feature norms) at 90, 95, 98, 99
and 99.5% sparsity (uniform per layer), 3 seeds, MLP 64-256-256-10 on the
embedded digits; the sharpness (top Hessian eigenvalue and trace) of each
final sparse solution on 512 training examples. Every method trains with
the same base optimizer and steps: SGD momentum 0.9, lr 0.1 with cosine
decay, coupled L2 1e-4 (the SAFE paper's recipe), batch 128, 1,500 steps.
SAFE/SAFE+/ADMM/IHT are evaluated at ``Proj(w_T)``. SAFE+ needs the
trainer's step to pass ``activations_fn`` (flatsparse/train/step.py).

Each method's main knobs were tuned on a stratified 20% of the training
split held out as validation (variants ``tune_*``: seeds 0 and 1, sparsity
95% and 99%; the value with the best mean validation accuracy over those 4
runs wins): GMP's last pruning step {500, 750, 1000, 1250}; SAM+GMP's rho
{0.02, 0.05, 0.1, 0.2} (at the chosen GMP schedule); IHT's start step {0,
300, 750} x period {1, 32}; ADMM's lambda {1e-3, 1e-2, 3e-2, 0.1, 0.3} x K
{8, 32}; SAFE's lambda {1e-3, 1e-2, 3e-2, 0.1, 0.3, 1} x K {8, 32, 128} at
rho 0.1, then rho {0.02, 0.05, 0.1, 0.2, 0.5}. SAFE+ uses SAFE's values
(not tuned separately). The chosen values are the constants below.

Run (measured: 7 min 28 s wall for the 93 runs on 2 CPU cores shared with
other jobs, no network; the tuning grids together about 20 min):
  python -m experiments.sparsity_sweep --config=configs/safe_digits.py \
      --workdir=workdirs/safe_digits
Variants (``:variant`` after the path):
  ''          the study above
  tiny        every method at 90%, one seed, 40 steps of a 64-32-10
              MLP (what the tests run)
  tune_gmp, tune_sam_gmp, tune_iht, tune_admm, tune_safe, tune_safe_rho
              the tuning grids above
"""

from __future__ import annotations

from typing import Any

import ml_collections

from configs import digits_mlp
from flatsparse import study
from flatsparse.train import config_schema

STEPS = 1500

# Tuned on the validation split (variants tune_*).
GMP_END = 500  # last pruning step of GMP (starts at 0, every 50 steps)
SAM_RHO = 0.2  # SAM radius of SAM+GMP
IHT = {"start_step": 0, "period": 32}
ADMM = {"lam": 3e-2, "dual_period": 32}
SAFE = {"lam": 0.3, "rho": 0.2, "dual_period": 32}


ORDER = ("dense", "gmp", "iht", "admm", "sam_gmp", "safe", "safe_plus")


def base() -> ml_collections.ConfigDict:
  """The dense train config every method starts from."""
  c = digits_mlp.get_config("dense")
  c.optimizer = ml_collections.ConfigDict({
      "name": "sgd", "learning_rate": 0.1, "momentum": 0.9,
      "weight_decay": 1e-4, "schedule": "cosine"})
  c.steps = STEPS
  c.log_every = 250
  c.eval_every = STEPS
  c.checkpoint_every = STEPS
  return c


def gmp(end: int = GMP_END, freq: int = 50) -> dict[str, Any]:
  """GMP (to each run's sparsity): polynomial from step 0 to ``end``."""
  return {"algorithm": "magnitude", "schedule": "polynomial",
          "update_freq": freq, "update_start_step": 0,
          "update_end_step": end}


def methods(gmp_end: int = GMP_END, sam_rho: float = SAM_RHO,
            iht: dict[str, Any] | None = None,
            admm: dict[str, Any] | None = None,
            safe: dict[str, Any] | None = None) -> dict[str, Any]:
  """``{name: top-level overrides}`` of the seven methods (SAFE+ shares
  SAFE's hyperparameters); :func:`variants` sets each run's sparsity."""
  return {
      "dense": {},
      "gmp": {"sparsity": gmp(gmp_end)},
      "iht": {"safe": dict(name="iht", **(iht or IHT))},
      "admm": {"safe": dict(name="admm", **(admm or ADMM))},
      "sam_gmp": {"sparsity": gmp(gmp_end),
                  "flatness": {"name": "sam", "rho": sam_rho}},
      "safe": {"safe": dict(name="safe", **(safe or SAFE))},
      "safe_plus": {"safe": dict(name="safe_plus", importance="activation",
                                 **(safe or SAFE))},
  }


def variants(c: ml_collections.ConfigDict) -> list[study.Variant]:
  """The sweep (what ``experiments/sparsity_sweep.py`` runs): per level of
  ``c.label_noise`` (if any), the methods of ``c.methods`` in ``c.order``,
  each pruning one at every target of ``c.sparsities`` (as its pruning
  section's ``sparsity``), the dense one once."""
  return study.product(
      study.label_noise_axis(c.get("label_noise") or (),
                             c.get("noise_kind") or "symmetric",
                             c.get("noise_seed") or 0),
      study.sparsity_axis(c.methods, c.sparsities, c.get("order")))


def grid_name(prefix: str, **values: Any) -> str:
  """A grid point's method name: ``grid_name("safe", lam=0.1)`` is
  ``safe_lam0p1``."""
  parts = [prefix] + [f"{k}{v:g}" for k, v in values.items()]
  return "_".join(parts).replace(".", "p").replace("-", "m")


def tuning_methods(variant: str) -> dict[str, Any]:
  """The grid of one ``tune_*`` variant."""
  if variant == "tune_gmp":
    return {grid_name("gmp", end=e): {"sparsity": gmp(e)}
            for e in (500, 750, 1000, 1250)}
  if variant == "tune_sam_gmp":
    return {grid_name("sam_gmp", rho=r): {"sparsity": gmp(),
                                      "flatness": {"name": "sam", "rho": r}}
            for r in (0.02, 0.05, 0.1, 0.2)}
  if variant == "tune_iht":
    return {grid_name("iht", start=s, period=p): {"safe": {
        "name": "iht", "start_step": s, "period": p}}
            for s in (0, 300, 750) for p in (1, 32)}
  if variant == "tune_admm":
    return {grid_name("admm", lam=lam, K=k): {"safe": {
        "name": "admm", "lam": lam, "dual_period": k}}
            for lam in (1e-3, 1e-2, 3e-2, 1e-1, 3e-1) for k in (8, 32)}
  if variant == "tune_safe":
    return {grid_name("safe", lam=lam, K=k): {"safe": {
        "name": "safe", "lam": lam, "rho": 0.1,
        "dual_period": k}}
            for lam in (1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
            for k in (8, 32, 128)}
  if variant == "tune_safe_rho":
    return {grid_name("safe", rho=r): {"safe": {
        "name": "safe", **SAFE, "rho": r}}
            for r in (0.02, 0.05, 0.1, 0.2, 0.5)}
  raise ValueError(f"Unknown variant {variant!r}; allowed: '', tiny, "
                   f"{', '.join(TUNING_VARIANTS)}.")


TUNING_VARIANTS = ("tune_gmp", "tune_sam_gmp", "tune_iht", "tune_admm",
                   "tune_safe", "tune_safe_rho")
VARIANTS = ("", "tiny", *TUNING_VARIANTS)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.base = base()
  c.methods = methods()
  c.order = ORDER
  c.sparsities = (0.9, 0.95, 0.98, 0.99, 0.995)
  c.seeds = (0, 1, 2)
  c.sharpness = ml_collections.ConfigDict({
      "examples": 512, "num_probes": 20, "iters": 30, "moments": (1,),
      "seed": 0})
  if variant == "tiny":
    c.base.model.hidden = (32,)
    c.base.steps = 40
    c.base.log_every = 20
    c.base.eval_every = 40
    c.base.checkpoint_every = 40
    c.methods = methods(gmp_end=30, iht={"start_step": 10, "period": 5},
                        admm={"lam": 1e-1, "dual_period": 5},
                        safe={"lam": 1e-1, "rho": 0.1, "dual_period": 5})
    for name in ("gmp", "sam_gmp"):
      c.methods[name].sparsity.update_freq = 10
    c.sparsities = (0.9,)
    c.seeds = (0,)
    c.sharpness = ml_collections.ConfigDict({
        "examples": 64, "num_probes": 2, "iters": 3, "moments": (1,),
        "seed": 0})
  elif variant in TUNING_VARIANTS:
    c.methods = tuning_methods(variant)
    c.order = None
    c.sparsities = (0.95, 0.99)
    c.seeds = (0, 1)
    c.validation_fraction = 0.2
    c.sharpness = None
  elif variant:
    raise ValueError(f"Unknown variant {variant!r}; allowed: "
                     f"{', '.join(map(repr, VARIANTS))}.")
  return config_schema.complete(c)
