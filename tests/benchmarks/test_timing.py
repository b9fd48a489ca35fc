"""Unit tests of ``benchmarks.timing``: what is run, counted and reported.

Tiny jitted functions only: the call counts, windows and figures, not how
fast anything is.
"""

import jax
import jax.numpy as jnp
import optax
import pytest

from benchmarks import timing


def _step(params, opt_state, batch_stats, x, y):
  """A train step of the runner convention: adds ``x``, loss ``sum(y)``."""
  return params + x, opt_state, batch_stats, jnp.sum(y)


def _runner(**kwargs):
  return timing.StepRunner(jax.jit(_step), optax.identity(), jnp.zeros(2),
                           {}, (jnp.ones(2), jnp.full(2, 3.0)), **kwargs)


def _timings(*rounds):
  return timing.Timings(rounds=[list(enumerate(r)) for r in rounds])


def test_step_runner_carries_state_and_counts():
  runner = _runner(period=4)
  assert [c for c, _ in runner.run(3)] == [0, 1, 2]
  assert runner.first_loss == 6.0
  assert runner.state[0].tolist() == [3.0, 3.0]
  assert runner.steps_for(5) == 8 and runner.steps_for(8) == 8


def test_resetting_runner_times_one_fresh_window():
  runner = _runner(period=5, reset=True)
  assert runner.steps_for(1) == runner.steps_for(12) == 5
  for _ in range(2):
    assert [c for c, _ in runner.run(runner.steps_for(1))] == list(range(5))
    assert runner.state[0].tolist() == [5.0, 5.0]


def test_warm_up_whole_periods_and_after_first():
  runners = {"a": _runner(period=4), "b": timing.Runner(jax.jit(jnp.sin),
                                                        jnp.ones(3))}
  seen = timing.warm_up(runners, 3, whole_periods=True,
                        after_first=lambda r: {n: x.count for n, x in
                                               r.items()})
  assert seen == {"a": 1, "b": 1}
  assert runners["a"].count == 4 and runners["b"].count == 3


@pytest.mark.parametrize("threads", [True, False])
def test_time_interleaved_steps_per_runner(threads):
  runners = {"a": _runner(period=2), "b": timing.Runner(jax.jit(jnp.cos),
                                                        jnp.ones(3))}
  timing.warm_up(runners, 1, threads=threads)
  logged = []
  times = timing.time_interleaved(runners, {"a": 3, "b": 1}, 2,
                                  log=logged.append, summary="mean")
  assert times["a"].samples == 8 and times["b"].samples == 2
  assert [c for c, _ in times["a"].rounds[1]] == [5, 6, 7, 8]
  assert len(logged) == 3 and logged[-1].endswith(" ms (mean)")
  assert times["a"].faults >= 0


def test_figures():
  fast, slow = _timings([1.0, 3.0], [2.0, 2.0]), _timings([2.0, 6.0],
                                                          [4.0, 8.0])
  times = {"fast": fast, "slow": slow}
  assert fast.ms("median") == 2000.0 and fast.ms("min") == 1000.0
  assert slow.round_ms("mean") == [4000.0, 6000.0]
  assert slow.window_mean_ms() == 5000.0
  assert timing.ratio(times, "slow", "fast") == {
      "median": 2.5, "mean": 2.5, "min": 2.0}
  assert list(timing.ratios(times, ["slow/fast", "slow/absent"])) == [
      "slow_over_fast"]
  assert timing.per_round_ratios(times, "slow", "fast") == [2.0, 3.0]
  assert timing.per_round_ratios(times, "slow", "absent") == []
  assert timing.step_ms(times, "min")["min_step_ms"] == {
      "fast": 1000.0, "slow": 2000.0}
  assert slow.split_ms(lambda c: c == 0, "first", "later") == {
      "first_median": 3000.0, "later_median": 7000.0,
      "first_steps": 2, "later_steps": 2}
