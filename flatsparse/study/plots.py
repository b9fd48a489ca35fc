"""Plot helpers of the studies (matplotlib, imported on first use).

Figures are ``matplotlib.figure.Figure`` objects, not pyplot's: nothing
changes the caller's backend or pyplot state, and nothing has to be closed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["figure", "save_figure", "errorbar"]


def figure(panels: int = 1, size: tuple[float, float] = (5.0, 4.0)
           ) -> tuple[Any, list[Any]]:
  """A figure with ``panels`` axes side by side.

  Args:
    panels: the number of panels (axes), >= 1.
    size: ``(width, height)`` of the whole figure in inches.

  Returns:
    ``(figure, [axes, ...])``.
  """
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  if not isinstance(panels, int) or panels < 1:
    raise ValueError(f"panels must be an int >= 1, got {panels!r}.")
  fig = Figure(figsize=size)
  axes = fig.subplots(1, panels, squeeze=False)[0]
  return fig, list(axes)


def save_figure(fig: Any, axes: Sequence[Any], path: str, *,
                legend_size: float | None = 8) -> str:
  """A grid and (where something is labelled) a legend on every panel, a
  tight layout, then the PNG at 120 dpi; returns ``path``."""
  for ax in axes:
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=legend_size)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  return path


def errorbar(ax: Any, xs: Sequence[float],
             stats: Sequence[Mapping[str, float] | None], *,
             scale: float = 1.0, **kwargs: Any) -> None:
  """Means with std error bars at ``xs``; points whose stats are None are
  left out (nothing is drawn if all are).

  Args:
    ax: matplotlib axes.
    xs: one x per statistic.
    stats: ``{'mean', 'std'}`` (e.g. from ``aggregate``) or None, per x.
    scale: multiplies means and stds (100: percent).
    **kwargs: for ``ax.errorbar`` (``label``, ``marker``, ``color``, ...);
      default marker ``'o'``, cap size 3.
  """
  points = [(x, s) for x, s in zip(xs, stats) if s is not None]
  if not points:
    return
  kwargs = {"marker": "o", "capsize": 3, **kwargs}
  ax.errorbar([p[0] for p in points], [scale * p[1]["mean"] for p in points],
              yerr=[scale * p[1]["std"] for p in points], **kwargs)
