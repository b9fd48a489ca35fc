r"""MaskedKD's saving: the teacher's forward pass on a subset of patches, and
the whole distillation step, against full knowledge distillation.

What is measured, in one process, on one batch of random images (the cost
of these programs does not depend on the values):

* ``teacher_full``: the teacher ViT's forward pass on every patch (fused
  attention, inference mode), and ``teacher_r<r>`` on ``floor(r * P)``
  patches gathered per example (``ViT(..., patch_indices=...)``), for each
  keep ratio; ``teacher_gflops_per_image`` from XLA's cost analysis of each;
* ``step_<variant>``: one jitted training step of the ``distillation`` task
  (``flatsparse.train.step.make_train_step``; AdamW) for ``no_kd`` (the
  teacher never runs), ``full_kd`` (teacher on every patch) and
  ``maskedkd_<r>`` (the student's last-layer class attention picks the
  patches), each step carrying its state forward (donated).

Ratios (medians of interleaved rounds, ``benchmarks.timing``):
``teacher_r0.5_over_teacher_full`` (target <= 0.55; the issue's anchor,
timm's PyTorch ViT-B/16 on an H100: 15.4 ms full, 8.5 ms at r = 0.5, ratio
0.553) and ``step_maskedkd_0.5_over_step_full_kd`` (target <= 0.8).

Workloads: ``study`` (the Fashion-MNIST study's ViTs: teacher width 64, 4
layers, student 32 / 2 layers, patch 4 on 28x28: 49 patches, float32, batch
128; the CPU figure) and ``vit_b16`` (a ViT-B/16 teacher and a ViT-S/16
student, DeiT's pair, 224x224, 196 patches, bfloat16 compute, batch 128:
the GPU figure; on a CPU it is skipped unless ``--force``); ``tiny`` is
what the tests run.

Run from the repo root (one JSON object on stdout, progress on stderr)::

    python -m benchmarks.maskedkd_teacher --workloads study \
        --out benchmarks/results/maskedkd_teacher_cpu.json
    python -m benchmarks.maskedkd_teacher --workloads vit_b16 \
        --out benchmarks/results/maskedkd_teacher_gpu.json   # on a GPU
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from benchmarks import common
from benchmarks import timing
from flatsparse import distill
from flatsparse.federated import costs
from flatsparse.models import ViT
from flatsparse.train import state as state_lib
from flatsparse.train import step as step_lib
from flatsparse.train import tasks

NAME = "maskedkd_teacher"
WORKLOADS = ("study", "vit_b16", "tiny")
RATIOS = (0.75, 0.5, 0.25)
TARGET_TEACHER_RATIO = 0.55
TARGET_STEP_RATIO = 0.8
ANCHOR_MS = {"full": 15.4, "r0.5": 8.5}  # timm ViT-B/16, H100, batch 128

log = common.make_log(NAME)


def models_of(name: str) -> tuple[ViT, ViT, tuple[int, int, int]]:
  """``(teacher, student, image shape)`` of a workload."""
  if name == "study":
    def vit(hidden, layers, heads):
      return ViT(num_classes=10, hidden_size=hidden, num_layers=layers,
                 num_heads=heads, mlp_dim=2 * hidden, patch_size=4)
    return vit(64, 4, 4), vit(32, 2, 2), (28, 28, 1)
  if name == "tiny":  # what the tests run
    def small(hidden):
      return ViT(num_classes=10, hidden_size=hidden, num_layers=1,
                 num_heads=2, mlp_dim=2 * hidden, patch_size=4)
    return small(16), small(8), (16, 16, 1)
  if name == "vit_b16":
    dtype = jnp.bfloat16
    teacher = ViT(num_classes=1000, hidden_size=768, num_layers=12,
                  num_heads=12, mlp_dim=3072, dtype=dtype)
    student = ViT(num_classes=1000, hidden_size=384, num_layers=12,
                  num_heads=6, mlp_dim=1536, dtype=dtype)
    return teacher, student, (224, 224, 3)
  raise ValueError(f"Unknown workload {name!r}; allowed: "
                   f"{', '.join(WORKLOADS)}.")


class TrainStepRunner(timing.Runner):
  """A loop train step ``(state, batch) -> (state, metrics)`` carrying its
  (donated) state forward."""

  def __init__(self, fn, state, batch):
    super().__init__(fn)
    self.state, self.batch = state, batch

  def args(self) -> tuple[Any, ...]:
    return (self.state, self.batch)

  def update(self, out: Any) -> None:
    self.state, metrics = out
    self.note_loss(metrics["loss"])


def teacher_runners(teacher: ViT, params: Any, images: jax.Array,
                    ratios: Sequence[float]) -> dict[str, timing.Runner]:
  """The full teacher and one on a gathered subset per ratio."""
  full = jax.jit(lambda p, x: teacher.apply({"params": p}, x))

  def masked():  # a new function per ratio: jit caches per function
    return jax.jit(lambda p, x, idx: teacher.apply({"params": p}, x,
                                                   patch_indices=idx))

  patches = (images.shape[1] // teacher.patch_size) * (
      images.shape[2] // teacher.patch_size)
  runners = {"teacher_full": timing.Runner(full, params, images)}
  for r in ratios:
    idx = distill.random_patches(jax.random.key(0), images.shape[0], patches,
                                 distill.keep_count(patches, r))
    # One jitted function per ratio (one compilation each).
    runners[f"teacher_r{r:g}"] = timing.Runner(masked(), params, images,
                                               idx)
  return runners


def step_runners(teacher: ViT, teacher_params: Any, student: ViT,
                 images: jax.Array, labels: jax.Array,
                 ratios: Sequence[float]) -> dict[str, timing.Runner]:
  """Distillation-task steps: no KD, full KD and MaskedKD per ratio."""
  variants = {"no_kd": dict(selection="all", keep_ratio=1.0, alpha=0.0),
              "full_kd": dict(selection="all", keep_ratio=1.0)}
  variants.update({f"maskedkd_{r:g}": dict(selection="student", keep_ratio=r)
                   for r in ratios})
  task = tasks.get_task("distillation")
  tx = optax.adamw(1e-3, weight_decay=0.05)
  batch = {"image": images, "label": labels}
  runners = {}
  for name, knobs in variants.items():
    model = distill.Distiller(student, teacher, **knobs)
    state = state_lib.create_train_state(
        model, tx, images, seed=0,
        frozen={} if knobs.get("alpha") == 0.0 else {
            # Its own copy: each step donates its state.
            "teacher": timing.copy_tree(teacher_params)})
    step = jax.jit(step_lib.make_train_step(model, tx, task=task),
                   donate_argnums=0)
    runners[f"step_{name}"] = TrainStepRunner(step, state, batch)
  return runners


def gflops_per_image(runner: timing.Runner, batch: int) -> float:
  """XLA's flop estimate of one call, per image."""
  flops = costs.analysis(runner.compile()).get("flops", 0.0)
  return float(f"{flops / 1e9 / batch:.6g}")


def measure(teacher: ViT, student: ViT, image_shape: Sequence[int], *,
            batch: int, ratios: Sequence[float] = RATIOS, rounds: int = 3,
            steps: int = 3, teacher_params: Any = None,
            steps_too: bool = True) -> dict[str, Any]:
  """Teacher GFLOPs and times per keep ratio, and the steps' times (the
  study and the script both report these)."""
  key = jax.random.key(0)
  images = jax.random.normal(key, (batch, *image_shape), jnp.float32)
  labels = jax.random.randint(key, (batch,), 0, teacher.num_classes)
  if teacher_params is None:
    teacher_params = jax.jit(teacher.init)(key, images[:1])["params"]
  runners = teacher_runners(teacher, teacher_params, images, ratios)
  flops = common.map_runners(lambda r: gflops_per_image(r, batch), runners)
  if steps_too:
    runners.update(step_runners(teacher, teacher_params, student, images,
                                labels, ratios))
  timing.warm_up(runners, log=log, threads=False)
  times = timing.time_interleaved(runners, steps, rounds, log=log)
  medians = {n: round(t.ms(), 3) for n, t in times.items()}
  specs = [f"teacher_r{r:g}/teacher_full" for r in ratios]
  specs += [f"step_maskedkd_{r:g}/step_full_kd" for r in ratios]
  specs += ["step_no_kd/step_full_kd"]
  return {
      "teacher_gflops_per_image": {
          n.removeprefix("teacher_"): v for n, v in flops.items()},
      "median_ms": medians,
      "ratios": {k: v["median"]
                 for k, v in timing.ratios(times, specs).items()},
      "per_round_teacher_r0.5_over_full": timing.per_round_ratios(
          times, "teacher_r0.5", "teacher_full"),
      "cache_sizes": {n: r.fn._cache_size() for n, r in runners.items()},
      "first_losses": {n: r.first_loss for n, r in runners.items()
                       if r.first_loss is not None},
  }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workloads", nargs="+", default=["study"],
                 choices=WORKLOADS)
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--ratios", default="0.75,0.5,0.25",
                 help="keep ratios, comma-separated (0.5 is always timed)")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--steps", type=int, default=None,
                 help="calls per runner per round (default 3 CPU, 20 GPU)")
  p.add_argument("--force", action="store_true",
                 help="run vit_b16 on a CPU too")
  p.add_argument("--out", default=None)
  return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs the benchmark; prints and returns the result object."""
  run = common.begin(parse_args(argv))
  args, on_cpu, steps = run.args, run.on_cpu, run.steps
  ratios = tuple(sorted({float(r) for r in args.ratios.split(",")} | {0.5},
                        reverse=True))
  workloads, skipped = {}, []
  for name in args.workloads:
    if name == "vit_b16" and on_cpu and not args.force:
      log("vit_b16 is the GPU workload; skipped on a CPU (--force runs it)")
      skipped.append(name)
      continue
    teacher, student, shape = models_of(name)
    log(f"{name}: batch {args.batch}, images {shape}")
    section = measure(teacher, student, shape, batch=args.batch,
                      ratios=ratios, rounds=args.rounds, steps=steps)
    section["no_recompilation"] = common.no_recompilation(
        section.pop("cache_sizes"))
    section["meets_targets"] = {
        "teacher_r0.5_over_full": section["ratios"][
            "teacher_r0.5_over_teacher_full"] <= TARGET_TEACHER_RATIO,
        "step_maskedkd_0.5_over_full_kd": section["ratios"][
            "step_maskedkd_0.5_over_step_full_kd"] <= TARGET_STEP_RATIO,
    }
    workloads[name] = section
  result = {
      "benchmark": NAME,
      "device": common.device_info(),
      "config": {"workloads": args.workloads, "skipped": skipped,
                 "batch": args.batch, "rounds": args.rounds,
                 "steps_per_round": steps, "ratios": list(ratios),
                 "warmup_steps": timing.WARMUP_STEPS,
                 "optimizer": "adamw(1e-3, weight_decay=0.05)"},
      "targets": {"teacher_r0.5_over_full": TARGET_TEACHER_RATIO,
                  "step_maskedkd_0.5_over_full_kd": TARGET_STEP_RATIO,
                  "gpu_teacher_r0.5_ms": ANCHOR_MS["r0.5"],
                  "anchor_ms_timm_h100": ANCHOR_MS},
      "load_average_1m": run.load_average(),
      "workloads": workloads,
  }
  return common.finish(result, run.time, args.out)


if __name__ == "__main__":
  main()
