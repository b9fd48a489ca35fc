"""Smoke test of ``benchmarks.zo_queries`` on the tiny random text tower.

It checks that the script runs end to end, prints one JSON object with the
keys the figures are read from, finite positive times, rates and speedups,
and exact query counts; it times nothing worth reading.
"""

import json
import math

import pytest

from benchmarks import zo_queries

TINY = ["--workloads", "tiny", "--directions", "1,2", "--rounds", "1",
        "--steps", "1"]
VARIANTS = {"batched", "sequential", "queries_only"}


def positive(value):
  return isinstance(value, float) and math.isfinite(value) and value > 0


def test_zo_queries_prints_every_figure(tmp_path, capsys):
  out = tmp_path / "result.json"
  result = zo_queries.main(TINY + ["--out", str(out)])
  printed = json.loads(capsys.readouterr().out)
  assert printed == json.loads(out.read_text()) == json.loads(
      json.dumps(result))
  assert result["device"]["jax"] and result["device"]["date"]
  assert result["benchmark"] == "zo_queries"
  assert result["queries_exact"] is True and result["no_recompilation"]
  assert list(result["workloads"]) == ["tiny"]
  workload = result["workloads"]["tiny"]
  assert workload["zip_numbers"] == 417
  assert workload["prompt_shape"] == [8, zo_queries.TINY_HIDDEN]
  assert set(workload["directions"]) == {"1", "2"}
  for key, section in workload["directions"].items():
    q = int(key)
    assert section["q"] == q and section["queries_per_step"] == 2 * q
    for stat in ("median", "mean", "min"):
      figures = section[f"{stat}_step_ms"]
      assert set(figures) == VARIANTS
      assert all(positive(v) for v in figures.values())
    assert set(section["queries_per_second"]) == VARIANTS
    assert all(positive(v) for v in section["queries_per_second"].values())
    assert section["queries_per_second"]["batched"] == pytest.approx(
        2 * q / (section["median_step_ms"]["batched"] / 1e3), rel=1e-2)
    assert positive(section["speedup"])
    assert section["speedup"] == pytest.approx(
        section["median_step_ms"]["sequential"]
        / section["median_step_ms"]["batched"], rel=1e-2)
    overhead = section["estimator_overhead_percent"]
    assert math.isfinite(overhead) and overhead > -100
    assert section["queries_exact"] is True
    queries = section["queries"]
    assert queries["counted"] == queries["expected"] == {
        v: 2 * q * section["samples"][v] for v in VARIANTS}
    assert queries["estimator_queries_used"] == queries["estimator_expected"]
    assert section["estimate_finite"] and section["no_recompilation"]
  assert set(workload["meets_targets"]) == {
      "speedup_target_applies", "speedup_q5", "estimator_overhead"}
  assert workload["meets_targets"]["speedup_q5"] is None  # q = 5 not run


def test_bad_flags_exit():
  for bad in (["--directions", "0"], ["--directions", "a"],
              ["--workloads", "nope"], ["--rounds", "0"]):
    with pytest.raises(SystemExit):
      zo_queries.parse_args(bad)
