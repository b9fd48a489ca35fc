"""The timing machinery of the benchmark scripts, kept once.

Every script times its variants the same way: each variant is a *runner* (a
jitted function and the arguments it carries forward from call to call);
all runners are compiled and warmed up first (:func:`warm_up`), then timed
in interleaved rounds (:func:`time_interleaved`: for each round, for each
runner, a number of calls, each blocked on and timed with
``time.perf_counter``), so drifts in machine load hit all variants alike.
The per-call times of a runner are its :class:`Timings`; :func:`step_ms`,
:func:`ratio`, :func:`ratios` and :func:`per_round_ratios` turn them into
the figures the scripts report.

A runner with a ``period`` > 1 (a step that does extra work every
``period``-th call, e.g. a Hessian refresh or a projection) is always run in
whole periods, so every round holds the same share of the expensive calls;
with ``reset`` a :class:`StepRunner` starts every run from a fresh state
(e.g. a fixed window of a pruning schedule).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
import concurrent.futures
import dataclasses
import math
import resource
import statistics
import time
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import optax

PyTree = Any
# One timed call: (calls the runner took before it, seconds).
Sample = tuple[int, float]
Log = Callable[[str], None]
T = TypeVar("T")

WARMUP_STEPS = 3  # Untimed calls per runner before timing, by default.
STATS: dict[str, Callable[[Iterable[float]], float]] = {
  "median": statistics.median,
  "mean": statistics.fmean,
  "min": min,
}


# ---- runners -----------------------------------------------------------------


@jax.jit
def copy_tree(tree: PyTree) -> PyTree:
  """Fresh device copies of all leaves (a runner donates its own copies)."""
  return jax.tree.map(jnp.copy, tree)


class Runner:
  """Timed calls of a jitted function on fixed arguments.

  This base class calls ``fn(*args)`` with the same arguments every time
  (e.g. a mask function of fixed parameters); subclasses that carry a state
  forward override :meth:`args` and :meth:`update` (and :meth:`start_run`).

  Attributes:
    fn: The jitted function; ``fn(*self.args())`` is one call.
    period: Calls per window of a periodic step (1: none); timing runs
      whole windows (:meth:`steps_for`).
    count: Calls taken (since the last reset); the count of the next call.
    first_loss: The loss of the first call, where :meth:`update` notes one.
  """

  def __init__(self, fn: Callable[..., Any], *args: Any, period: int = 1):
    self.fn, self._args, self.period = fn, args, period
    self.count = 0
    self.first_loss: float | None = None

  def args(self) -> tuple[Any, ...]:
    """The arguments of the next call."""
    return self._args

  def update(self, out: Any) -> None:
    """Takes the (blocked) result of a call, after its timing."""
    del out

  def start_run(self) -> None:
    """Runs before the calls of each :meth:`run`, outside the timing."""

  def note_loss(self, loss: jax.Array) -> None:
    """Keeps ``loss`` as :attr:`first_loss` if it is the first one."""
    if self.first_loss is None:
      self.first_loss = float(loss)

  def steps_for(self, n: int) -> int:
    """``n`` rounded up to whole windows of :attr:`period` calls."""
    return self.period * math.ceil(n / self.period)

  def run(self, n: int) -> list[Sample]:
    """Makes ``n`` calls, each blocked on and timed on its own.

    Args:
      n: How many calls.

    Returns:
      ``(count before the call, seconds)`` of each call.
    """
    self.start_run()
    samples = []
    for _ in range(n):
      args = self.args()
      start = time.perf_counter()
      out = jax.block_until_ready(self.fn(*args))
      samples.append((self.count, time.perf_counter() - start))
      self.count += 1
      self.update(out)
    return samples

  def compile(self) -> Any:
    """The compiled ``fn`` for the shapes of :meth:`args` (nothing runs)."""
    spec = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), self.args()
    )
    return self.fn.lower(*spec).compile()


class StepRunner(Runner):
  """A train step and the training state it carries forward.

  The step is ``fn(params, opt_state, batch_stats, *batch) -> (params,
  opt_state, batch_stats, loss)`` (the first three donated, as
  :func:`benchmarks.common.make_step` builds it). The runner owns copies of
  ``params`` and ``batch_stats`` and the optimizer state ``tx.init(params)``.

  Attributes:
    state: ``(params, opt_state, batch_stats)`` after the last call.
    batch: The step's fixed trailing arguments, e.g. ``(x, y)``.
    reset: Whether every :meth:`run` starts from a fresh state (built outside
      the timing; :attr:`count` starts again at 0). A resetting runner is
      timed one window of :attr:`period` calls per run (:meth:`steps_for`).
  """

  def __init__(
    self,
    fn: Callable[..., Any],
    tx: optax.GradientTransformation,
    params: PyTree,
    batch_stats: PyTree,
    batch: Sequence[jax.Array],
    *,
    period: int = 1,
    reset: bool = False,
  ):
    super().__init__(fn, period=period)
    init = jax.jit(tx.init)

    def fresh() -> tuple[PyTree, PyTree, PyTree]:
      return copy_tree(params), init(params), copy_tree(batch_stats)

    self.batch, self.reset = tuple(batch), reset
    self.state: tuple[PyTree, PyTree, PyTree] = fresh()
    # Only a resetting runner keeps the initial values alive.
    self._fresh = fresh if reset else None

  def args(self) -> tuple[Any, ...]:
    """``(params, opt_state, batch_stats, *batch)``."""
    return (*self.state, *self.batch)

  def steps_for(self, n: int) -> int:
    """``n`` rounded up to whole windows; with :attr:`reset`, one window."""
    return self.period if self.reset else super().steps_for(n)

  def start_run(self) -> None:
    """With :attr:`reset`: a fresh state and count."""
    if self._fresh is not None:
      self.state, self.count = jax.block_until_ready(self._fresh()), 0

  def update(self, out: Any) -> None:
    """Carries the new state forward; notes the first loss."""
    *state, loss = out
    self.state = tuple(state)
    self.note_loss(loss)


# ---- timing ------------------------------------------------------------------


def minor_faults() -> int:
  """Minor page faults of this process so far."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@dataclasses.dataclass
class Timings:
  """The timed calls of one runner.

  Attributes:
    rounds: The samples of each round, in order.
    faults: Minor page faults of this process during the timed runs.
  """

  rounds: list[list[Sample]] = dataclasses.field(default_factory=list)
  faults: int = 0

  def seconds(self) -> list[float]:
    """Every call's seconds, all rounds together."""
    return [s for r in self.rounds for _, s in r]

  @property
  def samples(self) -> int:
    """How many calls were timed."""
    return sum(len(r) for r in self.rounds)

  def ms(self, stat: str = "median") -> float:
    """The ``stat`` (``'median'``, ``'mean'`` or ``'min'``) call, in ms."""
    return 1e3 * STATS[stat](self.seconds())

  def round_ms(self, stat: str = "median") -> list[float]:
    """The ``stat`` call of each round, in ms."""
    return [1e3 * STATS[stat](s for _, s in r) for r in self.rounds]

  def window_mean_ms(self) -> float:
    """Median over rounds of each round's mean (whole windows per round)."""
    return 1e3 * statistics.median(
      statistics.fmean(s for _, s in r) for r in self.rounds
    )

  def split_ms(
    self, is_special: Callable[[int], bool], special: str, other: str
  ) -> dict[str, float]:
    """Medians of the calls whose count satisfies ``is_special`` and of the
    others (e.g. refresh vs reuse steps, projection vs plain steps).

    Args:
      is_special: Whether the call of this count is one of the special ones.
      special: Key prefix of the special calls' figures.
      other: Key prefix of the other calls' figures.

    Returns:
      ``{special}_median`` and ``{other}_median`` (ms, 3 decimals) and the
      numbers of calls ``{special}_steps`` and ``{other}_steps``.
    """
    hit = [s for r in self.rounds for c, s in r if is_special(c)]
    rest = [s for r in self.rounds for c, s in r if not is_special(c)]
    return {
      f"{special}_median": round(1e3 * statistics.median(hit), 3),
      f"{other}_median": round(1e3 * statistics.median(rest), 3),
      f"{special}_steps": len(hit),
      f"{other}_steps": len(rest),
    }

  def faults_per_call(self) -> int:
    """Minor page faults per timed call, rounded."""
    return round(self.faults / self.samples)


def warm_up(
  runners: Mapping[str, Runner],
  steps: int = WARMUP_STEPS,
  *,
  log: Log | None = None,
  whole_periods: bool = False,
  threads: bool = True,
  after_first: Callable[[Mapping[str, Runner]], T] | None = None,
) -> T | None:
  """Compiles and runs every runner before timing.

  First every runner makes one call (its compile, timed and logged), then
  ``after_first`` looks at the runners, then they make the remaining calls.

  Args:
    runners: The runners, by name.
    steps: Calls per runner, at least 1.
    log: Where the compile times go (None: nowhere).
    whole_periods: Round ``steps`` up to whole windows of each runner's
      period, so timing starts at a window boundary (and a resetting runner
      runs a whole window).
    threads: Run the runners at once in threads (XLA compiles without the
      GIL); False: one after the other (clean compile times).
    after_first: Called with ``runners`` after every runner's first call
      (all from the same state, e.g. to compare one step's results).

  Returns:
    What ``after_first`` returned; None without it.
  """
  start = time.perf_counter()

  def first(runner: Runner) -> float:
    t0 = time.perf_counter()
    runner.run(1)
    return time.perf_counter() - t0

  def rest(runner: Runner) -> None:
    runner.run((runner.steps_for(steps) if whole_periods else steps) - 1)

  workers = len(runners) if threads else 1
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    compile_s = dict(zip(runners, pool.map(first, runners.values())))
    value = after_first(runners) if after_first is not None else None
    list(pool.map(rest, runners.values()))
  if log is not None:
    log(
      f"  compiled and warmed up {len(runners)} runners in "
      f"{time.perf_counter() - start:.1f}s (first calls: "
      + ", ".join(f"{n} {s:.1f}s" for n, s in compile_s.items())
      + ")"
    )
  return value


def time_interleaved(
  runners: Mapping[str, Runner],
  steps: int | Mapping[str, int],
  rounds: int,
  *,
  log: Log | None = None,
  summary: str = "median",
) -> dict[str, Timings]:
  """Times ``rounds`` rounds; each round runs every runner once, in order.

  Args:
    runners: The runners, by name (warmed up).
    steps: Calls per runner per round (rounded up to whole windows), or
      those of each runner by name.
    rounds: How many rounds.
    log: Where the progress goes, each round's ``summary`` call of every
      runner (None: nowhere).
    summary: ``'median'``, ``'mean'`` or ``'min'``.

  Returns:
    The timings of every runner, by name.
  """
  reps = steps if isinstance(steps, Mapping) else dict.fromkeys(runners, steps)
  times = {name: Timings() for name in runners}
  if log is not None:
    log(f"  timing {rounds} rounds")
  for i in range(rounds):
    for name, runner in runners.items():
      faults = minor_faults()
      times[name].rounds.append(runner.run(runner.steps_for(reps[name])))
      times[name].faults += minor_faults() - faults
    if log is not None:
      log(
        f"  round {i + 1}/{rounds}: "
        + ", ".join(
          f"{n} {1e3 * STATS[summary](s for _, s in t.rounds[-1]):.2f}"
          for n, t in times.items()
        )
        + (" ms" if summary == "median" else f" ms ({summary})")
      )
  return times


# ---- figures -----------------------------------------------------------------


def step_ms(
  times: Mapping[str, Timings], *stats: str
) -> dict[str, dict[str, float]]:
  """``{stat}_step_ms``: the ``stat`` call of every runner (ms, 3 decimals),
  for each of ``stats`` (``'median'``, ``'mean'``, ``'min'``)."""
  return {
    f"{stat}_step_ms": {n: round(t.ms(stat), 3) for n, t in times.items()}
    for stat in stats
  }


def ratio(
  times: Mapping[str, Timings], num: str, den: str
) -> dict[str, float]:
  """``num``'s median, mean and minimum call over ``den``'s (4 decimals)."""
  return {
    stat: round(times[num].ms(stat) / times[den].ms(stat), 4)
    for stat in STATS
  }


def ratios(
  times: Mapping[str, Timings], specs: Iterable[str]
) -> dict[str, dict[str, float]]:
  """:func:`ratio` of every ``'num/den'`` of ``specs`` whose two runners
  were both timed, as ``'{num}_over_{den}'``."""
  pairs = [spec.split("/") for spec in specs]
  return {
    f"{num}_over_{den}": ratio(times, num, den)
    for num, den in pairs
    if num in times and den in times
  }


def per_round_ratios(
  times: Mapping[str, Timings], num: str, den: str
) -> list[float]:
  """``num``'s median call over ``den``'s in each round (4 decimals; their
  spread shows the noise); empty unless both were timed."""
  if num not in times or den not in times:
    return []
  return [
    round(a / b, 4)
    for a, b in zip(times[num].round_ms(), times[den].round_ms())
  ]
