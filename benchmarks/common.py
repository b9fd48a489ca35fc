"""Pieces shared by the benchmark scripts, other than timing (``timing``).

Workloads and their synthetic batches, the one train-step builder (plain,
with extra arguments, or a hand-written SAM step) and the variants made of
it, command-line settings, device info, compile diagnostics and the JSON
output; :class:`Script` is what each script declares once (name, workloads,
defaults, variants), giving its flags and its ``main``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
import concurrent.futures
import ctypes
import dataclasses
import datetime
import json
import os
import sys
import time
from typing import Any, TypeVar

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from benchmarks import timing
from flatsparse import models
from flatsparse.federated import costs

PyTree = Any
T = TypeVar("T")
NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class Workload:
  """A model and the shape of its inputs."""

  name: str
  model: nn.Module
  input_shape: tuple[int, ...]  # One example, without the batch axis.


WORKLOADS: dict[str, Callable[[], Workload]] = {
  "mlp": lambda: Workload(
    "mlp", models.MLP(hidden=(1024, 1024), num_classes=NUM_CLASSES), (784,)
  ),
  "resnet18": lambda: Workload(
    "resnet18", models.ResNet18(num_classes=NUM_CLASSES), (32, 32, 3)
  ),
  "vit_s": lambda: Workload(
    "vit_s",
    models.ViTS16(num_classes=NUM_CLASSES, patch_size=4),
    (32, 32, 3),
  ),
  # Seconds to compile: what the smoke tests run (tests/benchmarks/), so a
  # script broken on CPU is caught before it costs device time.
  "mlp_tiny": lambda: Workload(
    "mlp_tiny", models.MLP(hidden=(32,), num_classes=NUM_CLASSES), (64,)
  ),
  "resnet_tiny": lambda: Workload(
    "resnet_tiny",
    models.CifarResNet(
      num_classes=NUM_CLASSES, stage_sizes=(1,), widths=(4,)
    ),
    (8, 8, 3),
  ),
}
SMOKE_WORKLOADS = ("mlp_tiny", "resnet_tiny")


def workloads(*names: str) -> dict[str, Callable[[], Workload]]:
  """The ``WORKLOADS`` a script benchmarks, plus the smoke-test ones."""
  return {name: WORKLOADS[name] for name in (*names, *SMOKE_WORKLOADS)}


def make_batch(
  workload: Workload, batch_size: int, seed: int = 0
) -> tuple[jax.Array, jax.Array]:
  """Fixed synthetic inputs and labels."""
  kx, ky = jax.random.split(jax.random.PRNGKey(seed))
  x = jax.random.normal(kx, (batch_size, *workload.input_shape), jnp.float32)
  y = jax.random.randint(ky, (batch_size,), 0, NUM_CLASSES)
  return x, y


def init_variables(
  workload: Workload, x: jax.Array, seed: int = 0
) -> tuple[PyTree, PyTree]:
  """``(params, batch_stats)`` for inputs like ``x``; batch stats are ``{}``
  without BatchNorm."""
  variables = jax.jit(lambda k, x: workload.model.init(k, x, train=False))(
    jax.random.PRNGKey(seed), x[:1]
  )
  return variables["params"], variables.get("batch_stats", {})


def prepare(
  workload: Workload, batch_size: int, log: Callable[[str], None], seed: int = 0
) -> tuple[tuple[jax.Array, jax.Array], PyTree, PyTree]:
  """Logs the start of a workload; its ``(batch, params, batch_stats)``."""
  log(f"workload {workload.name}, batch {batch_size}")
  batch = make_batch(workload, batch_size)
  return (batch, *init_variables(workload, batch[0], seed))


def num_params(params: PyTree) -> int:
  """How many numbers ``params`` holds."""
  return int(sum(a.size for a in jax.tree.leaves(params)))


# ---- train steps -------------------------------------------------------------


def classification_loss(
  model: nn.Module, has_batch_stats: bool
) -> Callable[..., tuple[jax.Array, PyTree]]:
  """``(params, batch_stats, x, y) -> (mean cross-entropy, batch_stats)``,
  the batch statistics updated by the forward pass."""

  def loss_fn(
    params: PyTree, batch_stats: PyTree, x: jax.Array, y: jax.Array
  ) -> tuple[jax.Array, PyTree]:
    if has_batch_stats:
      logits, new_vars = model.apply(
        {"params": params, "batch_stats": batch_stats},
        x,
        train=True,
        mutable=["batch_stats"],
      )
      batch_stats = new_vars["batch_stats"]
    else:
      logits = model.apply({"params": params}, x, train=True)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, batch_stats

  return loss_fn


def sgd() -> optax.GradientTransformation:
  """The plain optimizer of every script: ``optax.sgd(0.1, momentum=0.9)``."""
  return optax.sgd(0.1, momentum=0.9)


# Extra arguments of ``tx.update`` given the step's ``value_fn``.
Extras = Callable[[Callable[[PyTree], jax.Array]], dict[str, Any]]


def no_extras(value_fn: Callable[[PyTree], jax.Array]) -> dict[str, Any]:
  """No extra arguments (a plain optax transformation)."""
  del value_fn
  return {}


def pass_value_fn(value_fn: Callable[[PyTree], jax.Array]) -> dict[str, Any]:
  """The extra argument ``value_fn`` (SAM-style transformations)."""
  return {"value_fn": value_fn}


def make_step(
  model: nn.Module,
  tx: optax.GradientTransformation,
  has_batch_stats: bool,
  extras: Extras = no_extras,
  sam_limit_rho: float | None = None,
) -> Callable[..., Any]:
  """Jitted ``(params, opt_state, batch_stats, x, y) -> (..., loss)``.

  The first three arguments are donated. ``value_fn`` (for ``extras``) is
  the loss on the same batch with the statistics from *before* the step
  (new statistics discarded), as ``flatsparse.train.make_train_step`` builds
  it.

  Args:
    model: A linen module taking ``(x, train=True)``.
    tx: The optimizer.
    has_batch_stats: Whether the model has BatchNorm statistics.
    extras: The extra arguments of ``tx.update``, given ``value_fn``.
    sam_limit_rho: If given, the hand-written two-gradient SAM step of this
      radius instead (``g = grad f(w)``, ``g~ = grad f(w + rho g / ||g||)``,
      ``tx`` updates with ``g~``; ``extras`` unused): the limit for any SAM.

  Returns:
    The jitted step.
  """
  loss_fn = classification_loss(model, has_batch_stats)

  def step(
    params: PyTree,
    opt_state: PyTree,
    batch_stats: PyTree,
    x: jax.Array,
    y: jax.Array,
  ) -> tuple[PyTree, PyTree, PyTree, jax.Array]:
    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      params, batch_stats, x, y
    )

    def value_fn(p: PyTree) -> jax.Array:
      # Same batch and the pre-step statistics; new statistics discarded.
      return loss_fn(p, batch_stats, x, y)[0]

    if sam_limit_rho is not None:
      scale = sam_limit_rho / (optax.tree.norm(grads) + 1e-12)
      perturbed = jax.tree.map(lambda w, g: w + scale * g, params, grads)
      grads = jax.grad(value_fn)(perturbed)
      updates, opt_state = tx.update(grads, opt_state, params)
    else:
      updates, opt_state = tx.update(
        grads, opt_state, params, **extras(value_fn)
      )
    return optax.apply_updates(params, updates), opt_state, new_stats, loss

  return jax.jit(step, donate_argnums=(0, 1, 2))


@dataclasses.dataclass(frozen=True)
class Variant:
  """One timed train step: an optimizer and how the step calls it.

  Attributes:
    tx: The optimizer.
    extras: The extra arguments of ``tx.update`` (see :func:`make_step`).
    period: Steps per refresh window (>1: timed in whole windows).
    sam_limit_rho: If given, the hand-written SAM step of this radius.
  """

  tx: optax.GradientTransformation
  extras: Extras = no_extras
  period: int = 1
  sam_limit_rho: float | None = None


def step_runner(
  model: nn.Module,
  tx: optax.GradientTransformation,
  params: PyTree,
  batch_stats: PyTree,
  batch: Sequence[jax.Array],
  variant: Variant | None = None,
  **kwargs: Any,
) -> timing.StepRunner:
  """A runner of :func:`make_step` (BatchNorm when ``batch_stats`` has
  leaves) on copies of the state.

  Args:
    model: A linen module taking ``(x, train=True)``.
    tx: The optimizer.
    params: The initial parameters.
    batch_stats: The initial batch statistics (``{}``: none).
    batch: The step's fixed ``(x, y)``.
    variant: Where given, its ``extras``, ``sam_limit_rho`` and ``period``
      (``tx`` should be its own).
    **kwargs: Further ``timing.StepRunner`` options (``period``, ``reset``).

  Returns:
    The runner.
  """
  has_bs = bool(jax.tree.leaves(batch_stats))
  if variant is None:
    fn = make_step(model, tx, has_bs)
  else:
    fn = make_step(model, tx, has_bs, variant.extras, variant.sam_limit_rho)
    kwargs.setdefault("period", variant.period)
  return timing.StepRunner(fn, tx, params, batch_stats, batch, **kwargs)


def variant_runners(
  workload: Workload,
  batch_size: int,
  variants: Mapping[str, Variant],
  names: Sequence[str],
  log: Callable[[str], None],
  seed: int = 0,
) -> tuple[PyTree, dict[str, timing.StepRunner]]:
  """The initial params of ``workload`` (:func:`prepare`) and a runner of
  each variant of ``names``, all from copies of the same state.

  Args:
    workload: The model and its inputs.
    batch_size: Examples in the fixed batch.
    variants: Every variant, in timing order.
    names: The variants to run.
    log: Where the start of the workload is noted.
    seed: Of the initialization.

  Returns:
    ``(params, runners by name)``.
  """
  batch, params, batch_stats = prepare(workload, batch_size, log, seed)
  runners = {
    name: step_runner(workload.model, v.tx, params, batch_stats, batch, v)
    for name, v in variants.items()
    if name in names
  }
  return params, runners


@dataclasses.dataclass(frozen=True)
class VariantTimes:
  """The timed variants of one workload (:func:`time_variants`).

  Attributes:
    params: The initial parameters.
    runners: The runner of each variant, by name (after timing).
    times: Their timings, by name.
    start: The ``time.perf_counter()`` value the workload started at.
    after_first: What ``timing.warm_up``'s ``after_first`` returned.
  """

  params: PyTree
  runners: dict[str, timing.StepRunner]
  times: dict[str, timing.Timings]
  start: float
  after_first: Any = None

  @property
  def windowed(self) -> list[str]:
    """The variants with a period > 1, in timing order."""
    return [n for n, r in self.runners.items() if r.period > 1]

  def head(self, batch_size: int) -> dict[str, Any]:
    """The fields that start the workload's JSON section: ``num_params``,
    ``batch_size`` and the median, mean and minimum step ms."""
    return {
      "num_params": num_params(self.params),
      "batch_size": batch_size,
      **timing.step_ms(self.times, "median", "mean", "min"),
    }

  def tail(
    self, before_checks: Mapping[str, Any] | None = None, **fields: Any
  ) -> dict[str, Any]:
    """The fields that end it: ``first_step_loss``, ``before_checks``, then
    :func:`workload_checks` with ``fields``."""
    return {
      "first_step_loss": {n: r.first_loss for n, r in self.runners.items()},
      **(before_checks or {}),
      **workload_checks(self.runners, self.times, self.start, **fields),
    }


def time_variants(
  workload: Workload,
  settings: Settings,
  variants: Mapping[str, Variant],
  log: Callable[[str], None],
  seed: int = 0,
  *,
  after_first: Callable[[Mapping[str, timing.Runner]], Any] | None = None,
  whole_periods: bool = False,
  summary: str = "median",
) -> VariantTimes:
  """Warms up and times the chosen variants of one workload.

  Args:
    workload: The model and its inputs.
    settings: The run's settings (batch size, steps, rounds, variants).
    variants: Every variant, in timing order.
    log: Where the progress goes.
    seed: Of the initialization.
    after_first: See ``timing.warm_up``.
    whole_periods: See ``timing.warm_up``.
    summary: The per-round figure logged (``timing.time_interleaved``).

  Returns:
    The runners, their timings and the start time.
  """
  start = time.perf_counter()
  params, runners = variant_runners(
    workload, settings.batch_size, variants, settings.variants, log, seed
  )
  first = timing.warm_up(
    runners, log=log, whole_periods=whole_periods, after_first=after_first
  )
  times = timing.time_interleaved(
    runners, settings.steps, settings.rounds, log=log, summary=summary
  )
  return VariantTimes(params, runners, times, start, first)


# ---- settings ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Defaults:
  """A script's default settings on one kind of platform."""

  workloads: str  # Comma-separated names.
  batch_size: int
  steps: int  # Timed steps per variant per round.
  rounds: int


def add_run_args(
  parser: argparse.ArgumentParser,
  allowed: Sequence[str],
  cpu: Defaults,
  accelerator: Defaults,
  batch_note: str = "",
  steps_note: str = "",
) -> None:
  """``--workloads --batch-size --steps --rounds --json-out``, whose
  defaults depend on the platform (resolved by :func:`run_settings`)."""

  def default(field: str) -> str:
    return (
      f"Default {getattr(cpu, field)} on CPU, {getattr(accelerator, field)} "
      "on an accelerator"
    )

  parser.add_argument(
    "--workloads",
    default=None,
    help=f"Comma-separated subset of: {','.join(allowed)}. "
    f"{default('workloads')}.",
  )
  helps = {
    "batch_size": f"{default('batch_size')}.{batch_note}",
    "steps": f"Timed steps per variant per round{steps_note}. "
    f"{default('steps')}.",
    "rounds": f"Interleaved rounds. {default('rounds')}.",
  }
  for field, text in helps.items():
    parser.add_argument(
      "--" + field.replace("_", "-"), type=int, default=None, help=text
    )
  parser.add_argument(
    "--json-out", default=None, help="Also write the JSON object to this path."
  )


def parse_names(text: str, allowed: Sequence[str], what: str) -> list[str]:
  """Comma-separated names, each one of ``allowed`` (SystemExit otherwise)."""
  names = [n for n in text.split(",") if n]
  unknown = sorted(set(names) - set(allowed))
  if unknown or not names:
    raise SystemExit(
      f"Unknown or no {what} {unknown or text!r}; allowed: "
      f"{', '.join(allowed)}."
    )
  return names


def run_settings(
  args: argparse.Namespace,
  allowed: Sequence[str],
  cpu: Defaults,
  accelerator: Defaults,
) -> tuple[list[str], int, int, int]:
  """``(workloads, batch_size, steps, rounds)``: the flags, else the
  defaults of the platform jax runs on; validated."""
  on_cpu = jax.devices()[0].platform == "cpu"
  defaults = cpu if on_cpu else accelerator
  given = {
    f.name: getattr(args, f.name)
    for f in dataclasses.fields(Defaults)
  }
  chosen = dataclasses.replace(
    defaults, **{k: v for k, v in given.items() if v is not None}
  )
  names = parse_names(chosen.workloads, allowed, "workloads")
  counts = (chosen.batch_size, chosen.steps, chosen.rounds)
  if min(counts) < 1:
    raise SystemExit(
      "--batch-size, --steps and --rounds must be >= 1, got "
      f"{', '.join(map(str, counts))}."
    )
  return names, *counts


@dataclasses.dataclass(frozen=True)
class Settings:
  """A run's settings, resolved (:func:`run_settings`) and validated.

  Attributes:
    workloads: The names of the workloads to run, in order.
    batch_size: Examples in the fixed batch.
    steps: Timed steps per variant per round.
    rounds: Interleaved rounds.
    variants: The ``--variants`` chosen (empty where a script has none).
    malloc_no_mmap: Whether ``--malloc-no-mmap`` took effect.
    args: All the parsed flags.
  """

  workloads: list[str]
  batch_size: int
  steps: int
  rounds: int
  variants: list[str]
  malloc_no_mmap: bool
  args: argparse.Namespace

  def fields(self, *names: str) -> dict[str, Any]:
    """These settings by name, e.g. for a ``config`` section."""
    return {name: getattr(self, name) for name in names}


Section = Callable[[Settings], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Script:
  """What a benchmark script declares once, and its flags and ``main``.

  Attributes:
    name: The script's name (the ``benchmark`` field of its output).
    workloads: Its workloads, by name (:func:`workloads`).
    cpu: Its defaults on CPU.
    accelerator: Its defaults on an accelerator.
    make_variants: Builds every :class:`Variant` the script times, by name
      in timing order (the names ``--variants`` allows); None: the script
      has no variants and no such flag.
  """

  name: str
  workloads: Mapping[str, Callable[[], Workload]]
  cpu: Defaults
  accelerator: Defaults
  make_variants: Callable[[], dict[str, Variant]] | None = None

  @property
  def variants(self) -> tuple[str, ...]:
    """The names of the variants, in timing order (empty: none)."""
    return tuple(self.make_variants()) if self.make_variants else ()

  def log(self, message: str) -> None:
    """Progress on stderr, after the script's name (:func:`make_log`)."""
    make_log(self.name)(message)

  def time_variants(
    self, workload: Workload, settings: Settings, seed: int = 0, **kwargs: Any
  ) -> VariantTimes:
    """:func:`time_variants` of freshly built variants, logged.

    Args:
      workload: The model and its inputs.
      settings: The run's settings.
      seed: Of the initialization.
      **kwargs: Options of :func:`time_variants`.

    Returns:
      The runners, their timings and the start time.
    """
    return time_variants(
      workload, settings, self.make_variants(), self.log, seed, **kwargs
    )

  def parser(
    self,
    doc: str,
    batch_note: str = "",
    steps_note: str = "",
    variants_note: str = ".",
  ) -> argparse.ArgumentParser:
    """A parser described by ``doc``'s first line, with the flags of
    :func:`add_run_args` (and ``--variants``, all by default, where the
    script has variants; ``variants_note`` ends its help)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    add_run_args(
      parser, self.workloads, self.cpu, self.accelerator, batch_note,
      steps_note,
    )
    if self.make_variants:
      parser.add_argument(
        "--variants",
        default=",".join(self.variants),
        help="Comma-separated subset of: " + ",".join(self.variants)
        + variants_note,
      )
    return parser

  def run(
    self,
    args: argparse.Namespace,
    config: Section,
    bench: Callable[[Workload, Settings], dict[str, Any]],
    *,
    positive: Sequence[str] = (),
    before: Section | None = None,
    after: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
  ) -> dict[str, Any]:
    """The script's ``main``: settings, every workload, then the output.

    ``--malloc-no-mmap`` (where the script defines it) takes effect first;
    ``wall_s`` counts from just after.

    Args:
      args: The parsed flags (:meth:`parser` and the script's own).
      config: The ``config`` section, given the settings.
      bench: The JSON section of one workload.
      positive: Further int flags (attribute names) that must be >= 1.
      before: Further sections, computed and put before ``workloads``.
      after: Further fields, given the workloads' sections, put after them.

    Returns:
      The result object (printed and saved to ``--json-out``: :func:`finish`).

    Raises:
      SystemExit: On a bad setting, naming it.
    """
    no_mmap = getattr(args, "malloc_no_mmap", False) and disable_malloc_mmap()
    start = time.perf_counter()
    names, batch_size, steps, rounds = run_settings(
      args, self.workloads, self.cpu, self.accelerator
    )
    for attr in positive:
      if getattr(args, attr) < 1:
        flag = "--" + attr.replace("_", "-")
        raise SystemExit(f"{flag} must be >= 1, got {getattr(args, attr)}.")
    chosen = (
      parse_names(args.variants, self.variants, "variants")
      if self.make_variants
      else []
    )
    settings = Settings(
      names, batch_size, steps, rounds, chosen, no_mmap, args
    )
    result: dict[str, Any] = {
      "benchmark": self.name,
      "device": device_info(),
      "config": config(settings),
      **(before(settings) if before is not None else {}),
    }
    result["workloads"] = {
      name: bench(self.workloads[name](), settings) for name in names
    }
    if after is not None:
      result.update(after(result["workloads"]))
    return finish(result, start, args.json_out)


@dataclasses.dataclass(frozen=True)
class Start:
  """What a hand-written script's ``main`` fixes first (:func:`begin`).

  Attributes:
    args: The parsed flags.
    time: ``time.perf_counter()`` at the start (for :func:`finish`).
    load: The machine's 1-minute load average at the start.
    on_cpu: Whether jax runs on a CPU.
    steps: ``args.steps``, else the platform's default.
  """

  args: argparse.Namespace
  time: float
  load: float
  on_cpu: bool
  steps: int

  def load_average(self) -> dict[str, float]:
    """``{'start', 'end'}``: the 1-minute load average at the start and now
    (other jobs make noise)."""
    return {"start": round(self.load, 2), "end": round(os.getloadavg()[0], 2)}


def begin(
  args: argparse.Namespace, cpu_steps: int = 3, accelerator_steps: int = 20
) -> Start:
  """The start of a script whose ``main`` is not :meth:`Script.run`: the
  clock, the load average, the platform and the steps per round
  (``args.steps`` unless None)."""
  on_cpu = jax.devices()[0].platform == "cpu"
  return Start(
    args,
    time.perf_counter(),
    os.getloadavg()[0],
    on_cpu,
    args.steps or (cpu_steps if on_cpu else accelerator_steps),
  )


# ---- output and diagnostics --------------------------------------------------


def no_recompilation(cache_sizes: dict[str, int | None]) -> bool:
  """Every jitted step compiled once (None: jax lacks the cache API)."""
  return all(c in (None, 1) for c in cache_sizes.values())


def finish(
  result: dict[str, Any], start: float, path: str | None
) -> dict[str, Any]:
  """Adds ``no_recompilation`` over all workloads and ``wall_s`` (since the
  ``time.perf_counter()`` value ``start``), prints the result object (the
  script's only stdout) and saves it to ``path``."""
  result["no_recompilation"] = all(
    w["no_recompilation"] for w in result["workloads"].values()
  )
  result["wall_s"] = round(time.perf_counter() - start, 1)
  text = json.dumps(result, indent=2)
  print(text)
  if path:
    with open(path, "w") as f:
      f.write(text + "\n")
  return result


def disable_malloc_mmap() -> bool:
  """glibc: serve large blocks from the heap and keep it (no page faults).

  By default glibc maps every block above 32 MiB afresh, so a step whose
  compiled scratch exceeds that page-faults all its temporaries each call.
  """
  try:
    libc = ctypes.CDLL("libc.so.6")
  except OSError:
    return False
  m_trim_threshold, m_mmap_max = -1, -4
  return bool(
    libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2**30)
  )


def compiled_stats(runner: timing.Runner) -> dict[str, Any]:
  """XLA's estimates for the runner's compiled function (nothing runs)."""
  compiled = runner.compile()
  out: dict[str, Any] = {}
  xla = costs.analysis(compiled)
  if "flops" in xla:
    out["gflops"] = round(xla["flops"] / 1e9, 3)
    out["bytes_accessed_mb"] = round(xla["bytes_accessed"] / 2**20, 1)
  if "temp_bytes" in xla:
    out["temp_mb"] = round(xla["temp_bytes"] / 2**20, 1)
  text = compiled.as_text() or ""
  out["hlo_instructions"] = sum(
    1 for line in text.splitlines() if " = " in line and "%" in line
  )
  return out


def map_runners(
  fn: Callable[[timing.Runner], T], runners: Mapping[str, timing.Runner]
) -> dict[str, T]:
  """``fn`` of every runner, by name, computed in threads (XLA compiles
  without the GIL, so e.g. :func:`compiled_stats` of several at once)."""
  with concurrent.futures.ThreadPoolExecutor(len(runners)) as pool:
    return dict(zip(runners, pool.map(fn, runners.values())))


def device_info() -> dict[str, Any]:
  """What ran the benchmark: device, versions, XLA flags, UTC date."""
  device = jax.devices()[0]
  return {
    "device_kind": device.device_kind,
    "platform": device.platform,
    "device_count": jax.device_count(),
    "cpu_count": os.cpu_count(),
    "jax": jax.__version__,
    "optax": optax.__version__,
    "flax": flax.__version__,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "date": datetime.datetime.now(datetime.UTC).isoformat(
      timespec="seconds"
    ),
  }


def make_log(name: str) -> Callable[[str], None]:
  """Progress printer on stderr (stdout carries only the JSON object)."""

  def log(message: str) -> None:
    print(f"[{name}] {message}", file=sys.stderr, flush=True)

  return log


def cache_size(fn: Any) -> int | None:
  """Compiled entries of a jitted function (None where jax lacks the API)."""
  size = getattr(fn, "_cache_size", None)
  return size() if callable(size) else None


def jit_cache_sizes(
  runners: Mapping[str, timing.Runner],
) -> dict[str, int | None]:
  """:func:`cache_size` of every runner's function, by name."""
  return {name: cache_size(r.fn) for name, r in runners.items()}


def workload_checks(
  runners: Mapping[str, timing.Runner],
  times: Mapping[str, timing.Timings],
  start: float,
  **fields: Any,
) -> dict[str, Any]:
  """The fields that end a workload's JSON section.

  Args:
    runners: The runners whose jit cache sizes are reported.
    times: The timings whose numbers of calls are reported.
    start: The ``time.perf_counter()`` value the workload started at.
    **fields: Further fields, put after ``no_recompilation``.

  Returns:
    ``jit_cache_sizes``, ``no_recompilation``, the ``fields``, ``samples``
    (timed calls of each runner) and ``wall_s`` (seconds since ``start``).
  """
  cache_sizes = jit_cache_sizes(runners)
  return {
    "jit_cache_sizes": cache_sizes,
    "no_recompilation": no_recompilation(cache_sizes),
    **fields,
    "samples": {name: t.samples for name, t in times.items()},
    "wall_s": round(time.perf_counter() - start, 1),
  }
