"""Smoke test of ``benchmarks.cbm_intervention`` on a tiny concept set.

It checks that the script runs end to end, prints one JSON object with the
keys the figures are read from, finite positive seconds and speedups, an
extrapolated baseline, and agreement of the loop with the vectorized curve;
it times nothing worth reading.
"""

import json
import math

from benchmarks import cbm_intervention

CRITERIA = ["rand", "ucp", "ectp"]  # Random, elementwise, calls f.
TINY = ["--examples", "64", "--concepts", "8", "--classes", "4",
        "--baseline_examples", "8", "--repeats", "1",
        "--criteria", ",".join(CRITERIA)]


def test_cbm_intervention_prints_every_figure(tmp_path, capsys):
  out = tmp_path / "result.json"
  result = cbm_intervention.main(TINY + ["--out", str(out)])
  printed = json.loads(capsys.readouterr().out)
  assert printed == json.loads(out.read_text()) == json.loads(
      json.dumps(result))
  assert result["device"]["jax"] and result["device"]["date"]
  (section,) = result["workloads"].values()
  assert section["examples"] == 64
  vectorized, baseline = section["vectorized"], section["baseline"]
  for figures in (vectorized["seconds"], vectorized["first_call_s"],
                  baseline["seconds"], baseline["extrapolated_seconds"]):
    assert set(figures) == set(CRITERIA)
    assert all(math.isfinite(v) and v > 0 for v in figures.values())
  assert baseline["extrapolated"] and baseline["examples"] == 8
  for c in CRITERIA:
    assert math.isclose(baseline["extrapolated_seconds"][c],
                        8 * baseline["seconds"][c], rel_tol=1e-3)
  assert set(section["speedup"]) == {*CRITERIA, "overall"}
  assert all(math.isfinite(v) and v > 0 for v in section["speedup"].values())
  assert section["agree"] is True
  assert set(section["agreement"]) == {"ucp", "ectp"}
  assert result["no_recompilation"]
