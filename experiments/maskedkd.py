r"""MaskedKD study: a ViT student distilled from a ViT teacher that sees only
the patches the student attends to.

  python -m experiments.maskedkd --config=configs/maskedkd_fashion_mnist.py \
      --workdir=workdirs/maskedkd

1. The teacher (``config.teacher``, task ``classification``) is trained once
   with the platform's loop into ``<workdir>/teacher/seed_<s>`` (a run
   workdir with orbax checkpoints).
2. Each student variant (``config.students``, names of
   ``configs/maskedkd_fashion_mnist.STUDENTS``: no KD, full KD, MaskedKD at
   several keep ratios, random patches) trains at each seed with the
   ``distillation`` task, the teacher restored from that workdir
   (``model.teacher_workdir``).
3. Costs, measured once in this process (``benchmarks.maskedkd_teacher``):
   the teacher's GFLOPs per image at each keep ratio (XLA's cost analysis),
   its forward time, and the time of each variant's whole training step.

The report gives the student's test accuracy (mean ± std over seeds) beside
the costs, and whether MaskedKD at r = 0.5 stays within one standard
deviation of full KD (the paper's claim: no loss in accuracy at half the
teacher's cost). Writes ``report.md``, ``results.json`` and a PNG.

References:
  Son et al., "The role of masking for efficient supervised knowledge
  distillation of vision transformers" (MaskedKD), ECCV 2024,
  arXiv:2302.10494.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import maskedkd_teacher
from configs import maskedkd_fashion_mnist
from experiments import cli
from flatsparse import distill
from flatsparse import study
from flatsparse.train import builders
from flatsparse.train import loop
from flatsparse.train import restore

__all__ = ["student_variants", "run_study"]


def student_variants(config: Any, teacher_dir: str) -> list[study.Variant]:
  """The students of ``config.students``, distilled from ``teacher_dir``."""
  out = []
  for name in config.students:
    if name not in maskedkd_fashion_mnist.STUDENTS:
      raise ValueError(
          f"Unknown student {name!r}; allowed: "
          f"{', '.join(maskedkd_fashion_mnist.STUDENTS)}.")
    selection, ratio, alpha = maskedkd_fashion_mnist.STUDENTS[name]
    out.append(study.Variant(name, {
        "model.selection": selection, "model.keep_ratio": ratio,
        "model.alpha": alpha, "model.teacher_workdir": teacher_dir},
                             tags={"student": name, "selection": selection,
                                   "keep_ratio": ratio, "alpha": alpha}))
  return out


def teacher_accuracy_on_kept(config: Any, state: Any) -> float:
  """The teacher's test accuracy on the patches the trained student's
  selection keeps (its attention in inference mode; random patches for
  ``'random'``; every patch for ``'all'``): how much of the teacher the
  masked distillation target keeps."""
  cfg = loop.validate_config(config)
  loader, _ = loop.make_loader(cfg["dataset"], cfg["batch_size"])
  # The teacher's model: its dataset's facts are those the run just read
  # (restore.run_data), not loaded again.
  model = builders.build_model(cfg["model"], loader.num_classes)

  @jax.jit
  def correct(params, teacher_params, images, labels, mask, key):
    out = distill.masked_kd_outputs(
        lambda x, **kw: model.apply({"params": params}, x, train=False, **kw),
        model.student, model.teacher, teacher_params, images,
        keep_ratio=model.keep_ratio, selection=model.selection, key=key)
    hits = jnp.argmax(out["teacher"], -1) == labels
    return jnp.sum(jnp.where(mask > 0, hits, False))

  hits = count = 0
  for i, batch in enumerate(loader.eval_batches(cfg["eval_batch_size"])):
    hits += int(correct(state.params, state.frozen["teacher"],
                        jnp.asarray(batch["image"]),
                        jnp.asarray(batch["label"]),
                        jnp.asarray(batch["mask"]), jax.random.key(i)))
    count += int(np.sum(batch["mask"]))
  return hits / count


def _record(run: study.Run, run_dir: str, stale: Any) -> dict[str, Any]:
  del stale
  start = time.time()
  metrics, state = loop.train_and_evaluate(run.config, run_dir,
                                           return_state=True)
  record = {**run.tags, **metrics, "train_s": round(time.time() - start, 2)}
  if run.tags["alpha"] > 0:
    record["teacher_accuracy_on_kept"] = teacher_accuracy_on_kept(
        run.config, state)
  return record


def _costs(config: Any, teacher_dir: str) -> dict[str, Any]:
  # The teacher's dataset is read once (restore.run_data) for all three.
  teacher, state = restore.restore_trained(teacher_dir)
  model_section = loop.validate_config(config.base)["model"]
  distiller = builders.build_model(
      {**model_section, "teacher_workdir": teacher_dir}, teacher.num_classes)
  shape = tuple(restore.run_data(teacher_dir).sample_input.shape[1:])
  return maskedkd_teacher.measure(
      teacher, distiller.student, shape, batch=config.timing_batch,
      ratios=tuple(config.timing_ratios), rounds=3,
      steps=config.timing_repeats, teacher_params=state.params)


def _report(config, teacher_record, records, costs) -> list[str]:
  summary = study.summarize(
      records, by=("student",),
      fields=("accuracy", "teacher_accuracy_on_kept"), ddof=0)
  by_name = {row["student"]: row["accuracy"] for row in summary}
  kept = {row["student"]: row["teacher_accuracy_on_kept"] for row in summary}
  medians, flops = costs["median_ms"], costs["teacher_gflops_per_image"]
  full_step = medians.get("step_full_kd")
  rows = []
  for name in config.students:
    selection, ratio, alpha = maskedkd_fashion_mnist.STUDENTS[name]
    teacher_key = ("full" if selection == "all" else f"r{ratio:g}")
    step_key = {"no_kd": "step_no_kd", "full_kd": "step_full_kd"}.get(
        name, f"step_maskedkd_{ratio:g}" if selection == "student" else None)
    step = medians.get(step_key)
    teacher_ms = medians.get(f"teacher_{teacher_key}")
    gflops = flops.get(teacher_key)
    rows.append([
        name, "-" if alpha == 0 else f"{ratio:g} ({selection})",
        "0" if alpha == 0 else "-" if gflops is None else f"{gflops:.4f}",
        "-" if alpha == 0 or teacher_ms is None else f"{teacher_ms:.2f}",
        "-" if step is None else
        f"{step:.1f} ({step / full_step:.2f}x)" if full_step else f"{step:.1f}",
        study.cell(kept.get(name), scale=100, fmt=".1f"),
        study.cell(by_name.get(name), scale=100, fmt=".2f")])
  lines = [
      "# MaskedKD study", "",
      f"Teacher test accuracy {100 * teacher_record['accuracy']:.2f}% "
      f"({teacher_record['train_s']:.0f} s to train); students: seeds "
      f"{list(config.seeds)}, mean ± std (population). Costs measured in "
      f"one process at batch {config.timing_batch} (medians of interleaved "
      "rounds; '-': not timed; a random-selection step costs MaskedKD's at "
      "the same ratio minus the top-k).", "",
      study.markdown_table(
          ["student", "teacher sees (keep ratio)", "teacher GFLOPs / image",
           "teacher forward (ms)", "train step (ms; / full KD)",
           "teacher's accuracy on what it sees (%)",
           "student test accuracy (%)"], rows)]
  full, half = by_name.get("full_kd"), by_name.get("maskedkd_0.5")
  if full and half:
    gap = half["mean"] - full["mean"]
    within = abs(gap) <= full["std"]
    lines += ["", f"MaskedKD at r = 0.5 minus full KD: {100 * gap:+.2f} "
              f"points; full KD's std {100 * full['std']:.2f}: "
              f"{'within' if within else 'outside'} one standard deviation."]
  return lines


def _plot(config, records, costs, path):
  fig, axes = study.figure(1, (5.5, 4.0))
  flops = costs["teacher_gflops_per_image"]
  for name in config.students:
    selection, ratio, alpha = maskedkd_fashion_mnist.STUDENTS[name]
    x = 0.0 if alpha == 0 else flops.get(
        "full" if selection == "all" else f"r{ratio:g}")
    if x is None:
      continue
    stats = study.aggregate([r["accuracy"] for r in records
                             if r["student"] == name], ddof=0)
    study.errorbar(axes[0], [x], [stats], scale=100, label=name)
  axes[0].set_xlabel("teacher GFLOPs per image")
  axes[0].set_ylabel("student test accuracy (%)")
  return study.save_figure(fig, axes, path, legend_size=7)


def run_study(config: Any, workdir: str) -> dict[str, Any]:
  """Teacher, then every student x seed, then the costs; the report."""
  teacher_run = study.plan(config.teacher, [study.Variant("teacher")],
                           (config.teacher.seed,))
  teacher_record = study.run_or_load(teacher_run, workdir)[0]
  teacher_dir = os.path.join(workdir, teacher_run[0].path)
  runs = study.plan(config.base, student_variants(config, teacher_dir),
                    config.seeds)

  def progress(i, run, record, seconds):
    print(f"{i + 1}/{len(runs)} {run.path}: accuracy "
          f"{record['accuracy']:.4f} ({seconds:.0f} s)", flush=True)

  records = study.run_or_load(runs, workdir, fn=_record,
                              on_record=progress)
  costs = _costs(config, teacher_dir)
  report = _report(config, teacher_record, records, costs)
  plot = _plot(config, records, costs, os.path.join(workdir, "accuracy.png"))
  report += ["", f"![accuracy vs teacher cost]({os.path.basename(plot)})"]
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write("\n".join(report) + "\n")
  results = {"teacher": teacher_record, "runs": records, "costs": costs}
  study.save_record(os.path.join(workdir, "results.json"), results)
  return {**results, "report": "\n".join(report)}


if __name__ == "__main__":
  cli.define_flags("MaskedKD study config.", workdir="Where it writes.")
  cli.run(cli.report_main(run_study))
