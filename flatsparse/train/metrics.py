"""Metrics, config and progress output of a run's workdir.

A run writes into its workdir:

- ``metrics.jsonl``: one JSON object per :meth:`MetricWriter.write_scalars`
  call, ``{"step": ..., **scalars}``, flushed at once (``read_metrics`` reads
  it back);
- ``tensorboard/events.out.tfevents.*``: the same scalars as TensorBoard
  events, written with ``tensorboardX`` (no TensorFlow or PyTorch needed;
  ``read_tensorboard_scalars`` reads them back without TensorBoard);
- ``config.json`` and ``config.txt``: the resolved config.

Example::

    writer = MetricWriter(workdir)
    writer.write_config(config)
    progress = Progress(total_steps=config.num_steps, every_steps=100)
    for step in range(1, config.num_steps + 1):
      state, loss = train_step(state, batch)
      progress.update(step)
      if step % 100 == 0:
        writer.write_scalars(step, {"train/loss": loss,
                                    **sparsity_scalars(state.params)})
    writer.close()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import json
import math
import numbers
import os
import struct
import sys
import time
from typing import Any

from absl import logging
import jax
import numpy as np

from flatsparse.sparsity import updater as sparsity_updater

__all__ = [
    "CONFIG_FILE",
    "METRICS_FILE",
    "TENSORBOARD_DIR",
    "MetricWriter",
    "Progress",
    "config_diff",
    "config_to_json",
    "read_config",
    "read_metrics",
    "read_tensorboard_scalars",
    "sparsity_scalars",
]

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
TENSORBOARD_DIR = "tensorboard"


def _to_number(name: str, value: Any) -> int | float:
  """A Python int/float from a Python, numpy or jax scalar."""
  if isinstance(value, bool):
    return int(value)
  if isinstance(value, numbers.Integral):
    return int(value)
  if isinstance(value, numbers.Real):
    return float(value)
  try:
    arr = np.asarray(value)
  except Exception as e:  # pylint: disable=broad-except
    raise TypeError(f"Scalar {name!r} is not a number: {value!r}.") from e
  if arr.size != 1 or arr.dtype.kind not in "biuf":
    raise TypeError(f"Scalar {name!r} must be a single int or float, got "
                    f"{arr.dtype} array of shape {arr.shape}.")
  return int(arr.item()) if arr.dtype.kind in "biu" else float(arr.item())


class MetricWriter:
  """Appends scalars to ``metrics.jsonl`` and TensorBoard event files.

  In multi-host runs only process 0 writes (``enabled`` default); the other
  processes' calls are no-ops, so every process can run the same loop.
  """

  def __init__(self, workdir: str, *, tensorboard: bool = True,
               enabled: bool | None = None):
    """Opens (appends to) the workdir's metric files.

    Args:
      workdir: the run directory (created if missing).
      tensorboard: also write TensorBoard events to ``workdir/tensorboard``
        (needs the ``tensorboardX`` package).
      enabled: whether this process writes; default ``jax.process_index() ==
        0``.

    Raises:
      ImportError: if ``tensorboard`` is True and tensorboardX is missing.
    """
    self.workdir = os.fspath(workdir)
    self.enabled = (jax.process_index() == 0) if enabled is None else enabled
    self._jsonl = None
    self._tb = None
    if not self.enabled:
      return
    os.makedirs(self.workdir, exist_ok=True)
    if tensorboard:
      try:
        import tensorboardX  # pylint: disable=g-import-not-at-top
      except ImportError as e:
        raise ImportError(
            "MetricWriter(tensorboard=True) needs tensorboardX (`pip install "
            "tensorboardX`; no TensorFlow needed); pass tensorboard=False to "
            "write metrics.jsonl only.") from e
      # Event files are named events.out.tfevents.<seconds>.<host><suffix>; a
      # unique suffix keeps a writer reopened within the same second (a quick
      # restart) from truncating the previous file.
      self._tb = tensorboardX.SummaryWriter(
          logdir=os.path.join(self.workdir, TENSORBOARD_DIR), flush_secs=30,
          filename_suffix=f".{time.time_ns()}.{os.getpid()}")
    path = os.path.join(self.workdir, METRICS_FILE)
    _repair_torn_last_line(path)
    self._jsonl = open(path, "a", encoding="utf-8")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Writes ``{"step": step, **scalars}`` as one JSON line and TB scalars.

    Args:
      step: the training step (int, or a 0-d integer array).
      scalars: ``{name: number}``; numbers may be Python, numpy or jax
        scalars (jax ones are fetched from the device). Names like
        ``train/loss`` group in TensorBoard by their first component.

    Raises:
      TypeError: if a name is not a string or a value is not a scalar.
      ValueError: if a name is ``"step"``.
    """
    step = _to_number("step", step)
    if not isinstance(step, int):
      raise TypeError(f"step must be an integer, got {step!r}.")
    if not self.enabled:
      return
    row = {"step": step}
    for name, value in scalars.items():
      if not isinstance(name, str):
        raise TypeError(f"Scalar names must be strings, got {name!r}.")
      if name == "step":
        raise ValueError('"step" is reserved for the step number; rename '
                         "the scalar.")
      row[name] = _to_number(name, value)
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for name, value in row.items():
        if name != "step":
          self._tb.add_scalar(name, value, global_step=step)
      self._tb.flush()

  def write_config(self, config: Any) -> None:
    """Saves the resolved config as ``config.json`` and ``config.txt``.

    Args:
      config: an ``ml_collections.ConfigDict`` (field references resolved;
        values JSON cannot hold are written as their best-effort JSON form)
        or a plain mapping.

    Raises:
      TypeError: if ``config`` is neither a ConfigDict nor a mapping.
    """
    text_json = config_to_json(config)
    if not self.enabled:
      return
    with open(os.path.join(self.workdir, CONFIG_FILE), "w",
              encoding="utf-8") as f:
      f.write(text_json + "\n")
    with open(os.path.join(self.workdir, "config.txt"), "w",
              encoding="utf-8") as f:
      f.write(str(config).rstrip("\n") + "\n")

  def keep_previous_config(self, step: int) -> str | None:
    """Renames ``config.json``/``.txt`` to ``config.<step>[.<n>].json/.txt``.

    Called before :meth:`write_config` when a resumed run continues with a
    different config, so the one used up to ``step`` is kept, never
    overwritten. Returns the new ``.json`` path (None if there was none).
    """
    if not self.enabled:
      return None
    old = os.path.join(self.workdir, CONFIG_FILE)
    if not os.path.exists(old):
      return None
    suffix, n = str(step), 1
    while any(os.path.exists(os.path.join(self.workdir, f"config.{suffix}{e}"))
              for e in (".json", ".txt")):
      n += 1
      suffix = f"{step}.{n}"
    kept = os.path.join(self.workdir, f"config.{suffix}.json")
    os.replace(old, kept)
    text = os.path.join(self.workdir, "config.txt")
    if os.path.exists(text):
      os.replace(text, os.path.join(self.workdir, f"config.{suffix}.txt"))
    return kept

  def flush(self) -> None:
    """Flushes both outputs (each ``write_scalars`` already does)."""
    if self._jsonl is not None:
      self._jsonl.flush()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    """Flushes and closes the files; later writes raise."""
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def read_config(workdir: str) -> dict[str, Any] | None:
  """The config saved in ``workdir/config.json``, or None if there is none.

  Raises:
    ValueError: if the file is not valid JSON.
  """
  path = os.path.join(os.fspath(workdir), CONFIG_FILE)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    text = f.read()
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); it should hold the "
                     "run's resolved config. Restore or delete it.") from e


def config_to_json(config: Any) -> str:
  """The JSON text :meth:`MetricWriter.write_config` saves for ``config``.

  Raises:
    TypeError: if ``config`` is neither a ConfigDict nor a mapping.
  """
  if hasattr(config, "to_json_best_effort"):  # ml_collections.ConfigDict
    return config.to_json_best_effort(indent=2)
  if isinstance(config, Mapping):
    return json.dumps(dict(config), indent=2, default=repr)
  raise TypeError("config must be an ml_collections.ConfigDict or a "
                  f"mapping, got {type(config).__name__}.")


class _Missing:
  """A key absent from one of two configs."""

  def __repr__(self) -> str:
    return "MISSING"


MISSING = _Missing()


def config_diff(old: Any, new: Any, prefix: str = ""
                ) -> list[tuple[str, Any, Any]]:
  """``[(dotted key, old value, new value)]`` where two JSON configs differ.

  A key missing on one side shows as ``MISSING`` there; lists are compared
  whole.
  """
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for key in sorted(set(old) | set(new), key=str):
      path = f"{prefix}.{key}" if prefix else str(key)
      out += config_diff(old.get(key, MISSING), new.get(key, MISSING), path)
    return out
  # 1 == 1.0 (the same hyperparameter) but True == 1 too: keep bools apart.
  if old == new and isinstance(old, bool) == isinstance(new, bool):
    return []
  return [(prefix or "<root>", old, new)]


def _repair_torn_last_line(path: str) -> None:
  """Truncates a partial last line (a crash mid-write) before appending.

  Appending after it would glue the next row onto the fragment and break
  both. A last line that is whole JSON but lost only its newline is kept.
  """
  if not os.path.exists(path):
    return
  with open(path, "rb+") as f:
    size = f.seek(0, os.SEEK_END)
    if size == 0:
      return
    f.seek(size - 1)
    if f.read(1) == b"\n":
      return
    # Find the start of the last line, reading back in chunks.
    end, start = size, 0
    while end > 0:
      begin = max(0, end - 65536)
      f.seek(begin)
      chunk = f.read(end - begin)
      i = chunk.rfind(b"\n")
      if i >= 0:
        start = begin + i + 1
        break
      end = begin
    f.seek(start)
    tail = f.read()
    try:
      json.loads(tail.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
      f.truncate(start)
      logging.warning("Removed a torn last line (%d bytes, a write "
                      "interrupted by a crash) from %s: %r", len(tail), path,
                      tail[:80])
      return
    f.write(b"\n")


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The rows of ``workdir/metrics.jsonl``, in the order written.

  A resumed run may repeat steps (the rows after its last checkpoint). A
  truncated last line (a crash mid-write) is skipped with a warning. A line
  whose start is such a fragment with a whole row appended to it (files
  written before ``MetricWriter`` repaired torn lines on open) gives that
  row, also with a warning: nothing that was written whole is skipped.

  Raises:
    FileNotFoundError: if the file does not exist.
    ValueError: if a line other than the last is not valid JSON.
  """
  path = os.path.join(os.fspath(workdir), METRICS_FILE)
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  rows = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError as e:
      row = _row_after_fragment(line)
      if row is not None:
        logging.warning("%s, line %d: dropped a torn fragment before a whole "
                        "row: %r", path, i + 1, line[:line.rfind('{"step"')])
        rows.append(row)
        continue
      if i == len(lines) - 1:  # No trailing newline: an interrupted write.
        logging.warning("Skipping truncated last line of %s: %r", path, line)
        continue
      raise ValueError(f"{path}, line {i + 1}: invalid JSON: {e}") from e
  return rows


def _row_after_fragment(line: str) -> dict[str, Any] | None:
  """The whole row at the end of ``fragment + row`` (rows start with step)."""
  start = line.rfind('{"step"')
  if start <= 0:
    return None
  try:
    row = json.loads(line[start:])
  except json.JSONDecodeError:
    return None
  return row if isinstance(row, dict) else None


def read_tensorboard_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """Scalars of all event files in ``logdir``: ``{tag: [(step, value)]}``.

  Reads the TFRecord framing and ``Event`` protos directly (with the protos
  tensorboardX ships), so neither TensorFlow nor TensorBoard is needed.
  Values are float32, as TensorBoard stores them.

  Raises:
    FileNotFoundError: if ``logdir`` has no event file.
    ValueError: if a record is corrupt (bad length or CRC).
  """
  # pylint: disable=g-import-not-at-top
  from tensorboardX.proto import event_pb2
  from tensorboardX.record_writer import masked_crc32c
  # pylint: enable=g-import-not-at-top
  logdir = os.fspath(logdir)
  files = sorted(f for f in os.listdir(logdir) if "tfevents" in f)
  if not files:
    raise FileNotFoundError(f"No TensorBoard event file in {logdir}.")
  out: dict[str, list[tuple[int, float]]] = {}
  for name in files:
    path = os.path.join(logdir, name)
    with open(path, "rb") as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      if pos + 12 > len(data):
        raise ValueError(f"{path}: truncated record header at byte {pos}.")
      header = data[pos:pos + 8]
      (length,) = struct.unpack("<Q", header)
      (header_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
      body = data[pos + 12:pos + 12 + length]
      end = pos + 12 + length + 4
      if (end > len(data) or header_crc != masked_crc32c(header)
          or struct.unpack("<I", data[end - 4:end])[0] != masked_crc32c(body)):
        raise ValueError(f"{path}: corrupt record at byte {pos}.")
      pos = end
      event = event_pb2.Event.FromString(body)
      if event.HasField("summary"):
        for value in event.summary.value:
          if value.HasField("simple_value"):
            out.setdefault(value.tag, []).append(
                (int(event.step), float(value.simple_value)))
  return out


def _format_duration(secs: float) -> str:
  """``'1h02m03s'``, ``'2m03s'`` or ``'45s'``; ``'?'`` if unknown."""
  if not math.isfinite(secs):
    return "?"
  secs = int(round(secs))
  hours, rest = divmod(secs, 3600)
  minutes, seconds = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m{seconds:02d}s"
  if minutes:
    return f"{minutes}m{seconds:02d}s"
  return f"{seconds}s"


class Progress:
  """Reports ``step/total, steps/s, ETA`` every ``every_steps`` steps or
  seconds.

  The rate is measured over the steps since the previous report, and the
  first ``update`` only starts the clock, so compilation time before it does
  not count. JAX dispatches asynchronously: the rate is that of the training
  loop, which equals the device's once the loop blocks on some result (e.g.
  fetching a metric) or dispatch runs ahead by its bounded queue.

  By default the report is printed, not logged through absl (whose records
  the experiment mains send to a log file): on a terminal as one line
  rewritten in place and erased when the run ends; elsewhere (a pipe, a
  cluster job's log) as a line at most every ``console_secs`` seconds, so a
  run shorter than that prints nothing.

  Attributes:
    rate: steps/s of the latest report (None before the first).
    eta_secs: estimated seconds to ``total_steps`` at that rate.
  """

  def __init__(self, total_steps: int, every_steps: int = 100,
               every_secs: float | None = None, *,
               clock: Callable[[], float] = time.monotonic,
               log_fn: Callable[[str], Any] | None = None,
               stream: Any = None, console_secs: float = 30.0):
    """Creates a progress reporter.

    Args:
      total_steps: the step at which training ends, >= 1.
      every_steps: report when the step crosses a multiple of this, >= 1.
      every_secs: also report when this many seconds passed since the last
        report (None: only by steps).
      clock: seconds as a float (injectable for tests).
      log_fn: called with each report line; default: print it (see above).
      stream: where the default prints (default ``sys.stdout`` at the time).
      console_secs: off a terminal, the default prints at most one line per
        this many seconds, > 0.

    Raises:
      ValueError: if an argument is out of range.
    """
    for name, value in (("total_steps", total_steps),
                        ("every_steps", every_steps)):
      if (not isinstance(value, numbers.Integral) or isinstance(value, bool)
          or value < 1):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    if every_secs is not None and not every_secs > 0:
      raise ValueError(f"every_secs must be > 0 or None, got {every_secs!r}.")
    if not console_secs > 0:
      raise ValueError(f"console_secs must be > 0, got {console_secs!r}.")
    self.total_steps = int(total_steps)
    self.every_steps = int(every_steps)
    self.every_secs = every_secs
    self._clock = clock
    self._log_fn = log_fn
    self._stream = stream
    self.console_secs = console_secs
    self._printed_at: float | None = None  # clock of the last printed line
    self._last_step: int | None = None
    self._last_time = 0.0
    self.rate: float | None = None
    self.eta_secs: float | None = None

  def update(self, step: int) -> str | None:
    """Records that ``step`` steps are done; returns the line if it logged."""
    step = int(step)
    now = self._clock()
    if self._last_step is None or step < self._last_step:
      self._last_step, self._last_time = step, now  # (Re)start the clock.
      if self._printed_at is None:
        self._printed_at = now
      return None
    done = step >= self.total_steps > self._last_step
    by_steps = step // self.every_steps > self._last_step // self.every_steps
    by_time = (self.every_secs is not None
               and now - self._last_time >= self.every_secs)
    if not (done or by_steps or by_time) or step == self._last_step:
      return None
    elapsed = now - self._last_time
    self.rate = (step - self._last_step) / elapsed if elapsed > 0 else math.inf
    remaining = max(self.total_steps - step, 0)
    self.eta_secs = remaining / self.rate if self.rate > 0 else math.inf
    line = (f"step {step}/{self.total_steps} "
            f"({100.0 * step / self.total_steps:.1f}%), "
            f"{self.rate:.2f} steps/s, ETA {_format_duration(self.eta_secs)}")
    if self._log_fn is not None:
      self._log_fn(line)
    else:
      self._print(line, now, done)
    self._last_step, self._last_time = step, now
    return line

  def _print(self, line: str, now: float, done: bool) -> None:
    stream = self._stream or sys.stdout
    if getattr(stream, "isatty", lambda: False)():
      # \r: back to the line's start; ESC[K: erase what the last one left.
      stream.write("\r\x1b[K" if done else f"\r{line}\x1b[K")
    elif now - self._printed_at >= self.console_secs:
      stream.write(line + "\n")
      self._printed_at = now
    else:
      return
    stream.flush()


def sparsity_scalars(params: Any, is_prunable: Callable[[str, Any], bool]
                     | None = None, *, all_leaves: bool = False
                     ) -> dict[str, float]:
  """Sparsity scalars for :meth:`MetricWriter.write_scalars`.

  Args:
    params: the parameters (fetched to the host; exact zeros are counted).
    is_prunable: ``(path, leaf) -> bool``; default: floating-point leaves
      with ``ndim > 1``, as the sparsity updaters use.
    all_leaves: also report leaves that are not prunable (biases, norms).

  Returns:
    ``{'sparsity/<leaf path>': s}`` for each prunable leaf (paths as in
    ``distributions.path_str``: ``Dense_0/kernel``), ``'sparsity/total'``
    over all parameters and ``'sparsity/prunable'`` over prunable ones.
  """
  summary = sparsity_updater.summarize_sparsity(params, is_prunable)
  out = {f"sparsity/{path}": float(leaf["sparsity"])
         for path, leaf in summary["leaves"].items()
         if all_leaves or leaf["prunable"]}
  out["sparsity/total"] = float(summary["sparsity"])
  out["sparsity/prunable"] = float(summary["prunable_sparsity"])
  return out
