"""Mean and std over seeds, and markdown tables of them.

A statistic is ``{'mean', 'std', 'n'}`` over the values that exist (None
values are left out), or None when there is none. ``std`` takes ``ddof``:
1 (default) is the sample standard deviation; the recorded studies of
``experiments/`` pass 0 (numpy's default, the population std), which every
table they have printed used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["aggregate", "summarize", "cell", "markdown_table"]

Field = str | Callable[[Mapping[str, Any]], Any]


def aggregate(values: Iterable[float | None], *, ddof: int = 1
              ) -> dict[str, float] | None:
  """``{'mean', 'std', 'n'}`` of the values that are not None.

  Args:
    values: one number (or None: missing) per seed.
    ddof: delta degrees of freedom of the std: 1 the sample std, 0 the
      population std. With one value and ``ddof=1`` the std is 0.0 (not
      NaN), so tables of single-seed runs stay readable.

  Returns:
    The statistic, or None if every value is None.

  Raises:
    ValueError: if ``ddof`` is not 0 or 1.
  """
  if ddof not in (0, 1):
    raise ValueError(f"ddof must be 0 (population std) or 1 (sample std), "
                     f"got {ddof!r}.")
  values = [v for v in values if v is not None]
  if not values:
    return None
  std = float(np.std(values, ddof=ddof)) if len(values) > ddof else 0.0
  return {"mean": float(np.mean(values)), "std": std, "n": len(values)}


def _getter(field: Field) -> Callable[[Mapping[str, Any]], Any]:
  if callable(field):
    return field
  return lambda record: record.get(field)


def summarize(records: Sequence[Mapping[str, Any]], by: Sequence[str],
              fields: Sequence[str] | Mapping[str, Field], *,
              ddof: int = 1) -> list[dict[str, Any]]:
  """One row per group of records, the groups in order of first appearance.

  Args:
    records: one per run, e.g. from :func:`flatsparse.study.run_or_load`.
    by: the keys whose values define a group (e.g. ``('method',
      'sparsity')``); a missing key counts as None.
    fields: the record keys to aggregate, or ``{name: key or function of
      the record}`` (the function may return None: missing).
    ddof: of the std (:func:`aggregate`).

  Returns:
    Rows ``{<by keys>..., 'seeds': [the records' 'seed', in order],
    <field>: aggregate or None, ...}``.
  """
  if not isinstance(fields, Mapping):
    fields = {name: name for name in fields}
  groups: dict[tuple, list] = {}
  for record in records:
    groups.setdefault(tuple(record.get(k) for k in by), []).append(record)
  rows = []
  for key, group in groups.items():
    row = dict(zip(by, key))
    row["seeds"] = [r.get("seed") for r in group]
    for name, field in fields.items():
      get = _getter(field)
      row[name] = aggregate((get(r) for r in group), ddof=ddof)
    rows.append(row)
  return rows


def cell(stats: Mapping[str, float] | None, *, scale: float = 1.0,
         fmt: str = ".2f", signed: bool = False) -> str:
  """``'mean ± std'`` (times ``scale``, in format ``fmt``), or ``'-'``.

  Args:
    stats: from :func:`aggregate` (or any ``{'mean', 'std'}``), or None.
    scale: e.g. 100 for accuracies in percent.
    fmt: a format spec, ``'.2f'`` or ``'.3g'``.
    signed: print the mean's sign (``+0.25 ± 0.10``), for differences.
  """
  if stats is None:
    return "-"
  mean_fmt = "+" + fmt if signed else fmt
  return (f"{scale * stats['mean']:{mean_fmt}} ± "
          f"{scale * stats['std']:{fmt}}")


def markdown_table(header: Sequence[str],
                   rows: Iterable[Sequence[Any]]) -> str:
  """A markdown table (no trailing newline).

  Args:
    header: the column titles.
    rows: one sequence of cells per row, as many as ``header`` (``str`` of
      each is printed).

  Raises:
    ValueError: naming the row whose length differs from the header's.
  """
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for i, row in enumerate(rows):
    if len(row) != len(header):
      raise ValueError(f"Row {i} has {len(row)} cells, the header "
                       f"{len(header)}: {list(row)!r}.")
    lines.append("| " + " | ".join(str(c) for c in row) + " |")
  return "\n".join(lines)
