"""Smoke test of ``benchmarks.fedfwd_rounds`` (tiny workload): one JSON
object with every figure, both simulations giving the same model; it times
nothing worth reading."""

import json
import math

from benchmarks import fedfwd_rounds


def test_fedfwd_rounds_prints_every_figure(tmp_path, capsys):
  out = tmp_path / "result.json"
  result = fedfwd_rounds.main(["--workloads", "tiny", "--clients", "8",
                               "--rounds", "1", "--out", str(out)])
  assert json.loads(capsys.readouterr().out) == json.loads(out.read_text())
  tiny = result["workloads"]["tiny"]
  assert tiny["same_result"] is True
  assert set(tiny["seconds_per_round"]) == {"vmapped", "loop"}
  assert math.isfinite(tiny["speedup"]) and tiny["speedup"] > 0
  plans = tiny["memory"]["plans"]
  assert set(plans) == {"ff_step", "ff_one_layer", "bp_step"}
  assert all(p["peak_mib"] > 0 and p["gflop_per_step"] > 0
             for p in plans.values())
