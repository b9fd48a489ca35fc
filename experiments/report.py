"""Collects run workdirs into a markdown table and PNG plots.

  python -m experiments.report --runs=/tmp/study/*/seed_* --out=/tmp/study/report

Groups runs by the parent folder of ``seed_<s>`` (the variant), reports the
final eval accuracy as mean +- std over seeds and the final sparsity, and
plots eval accuracy and train loss against steps (one line per variant,
averaged over seeds).
"""

from __future__ import annotations

import collections
import glob
import os
from typing import Any, Sequence

from absl import app
from absl import flags
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from flatsparse.train import metrics as metrics_lib

_RUNS = flags.DEFINE_list("runs", None, "Workdirs or globs of workdirs.")
_OUT = flags.DEFINE_string("out", None, "Folder for report.md and plots.")


def _series(rows: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
  points = [(r["step"], r[key]) for r in rows if key in r]
  if not points:
    return np.zeros(0), np.zeros(0)
  steps, values = zip(*points)
  return np.asarray(steps), np.asarray(values, np.float64)


def collect(workdirs: Sequence[str]) -> dict[str, list[list[dict]]]:
  """``{variant: [metrics rows of each seed]}``, variant = parent folder."""
  groups: dict[str, list[list[dict]]] = collections.defaultdict(list)
  for workdir in sorted(workdirs):
    rows = metrics_lib.read_metrics(workdir)
    if rows:
      groups[os.path.basename(os.path.dirname(os.path.abspath(workdir)))
             ].append(rows)
  return dict(groups)


def summarize(groups: dict[str, list[list[dict]]]) -> list[dict[str, Any]]:
  """One row per variant: final accuracy mean/std over seeds, sparsity."""
  table = []
  for variant, runs in groups.items():
    accs = [_series(r, "eval/accuracy")[1][-1] for r in runs
            if _series(r, "eval/accuracy")[1].size]
    sparsity = [_series(r, "sparsity/prunable")[1][-1] for r in runs
                if _series(r, "sparsity/prunable")[1].size]
    table.append({
        "variant": variant, "seeds": len(runs),
        "accuracy_mean": float(np.mean(accs)) if accs else float("nan"),
        "accuracy_std": float(np.std(accs)) if accs else float("nan"),
        "sparsity": float(np.mean(sparsity)) if sparsity else float("nan"),
    })
  return table


def markdown(table: Sequence[dict[str, Any]]) -> str:
  lines = ["| variant | seeds | test accuracy (%) | sparsity |",
           "|---|---|---|---|"]
  for row in table:
    lines.append(f"| {row['variant']} | {row['seeds']} | "
                 f"{100 * row['accuracy_mean']:.2f} ± "
                 f"{100 * row['accuracy_std']:.2f} | {row['sparsity']:.3f} |")
  return "\n".join(lines)


def plot(groups: dict[str, list[list[dict]]], path: str) -> str:
  """Eval accuracy and train loss against steps, mean over seeds."""
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for variant, runs in groups.items():
    for ax, key in zip(axes, ("eval/accuracy", "train/loss")):
      curves = [_series(r, key) for r in runs]
      curves = [c for c in curves if c[0].size]
      if not curves:
        continue
      n = min(c[0].size for c in curves)
      mean = np.mean([c[1][:n] for c in curves], axis=0)
      ax.plot(curves[0][0][:n], mean, marker="o", ms=3, label=variant)
  for ax, title in zip(axes, ("test accuracy", "train loss")):
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
  axes[0].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def write_report(workdirs: Sequence[str], out: str) -> tuple[str, str]:
  """Writes ``report.md`` and ``curves.png`` in ``out``; returns both paths."""
  groups = collect(workdirs)
  if not groups:
    raise ValueError(f"No metrics.jsonl found under {list(workdirs)}.")
  os.makedirs(out, exist_ok=True)
  text = markdown(summarize(groups))
  md_path = os.path.join(out, "report.md")
  with open(md_path, "w") as f:
    f.write(text + "\n")
  return md_path, plot(groups, os.path.join(out, "curves.png"))


def main(argv):
  del argv
  workdirs = [d for pattern in _RUNS.value for d in sorted(glob.glob(pattern))]
  md_path, png_path = write_report(workdirs, _OUT.value)
  print(open(md_path).read())
  print(f"plot: {png_path}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["runs", "out"])
  app.run(main)
