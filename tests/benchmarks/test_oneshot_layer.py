"""Smoke test of ``benchmarks.oneshot_layer`` on a tiny layer.

It checks that the script runs end to end, prints one JSON object with the
keys the figures are read from, finite positive ratios and layer errors,
and compiles every stage once; it times nothing worth reading.
"""

import json
import math

import pytest

from benchmarks import oneshot_layer

TINY = ["--in-features", "64", "--out-features", "48", "--sequences", "2",
        "--seq-len", "16", "--block-size", "16", "--repeats", "1"]
STAGES = {"dense_matmul", "hessian_statistics", "wanda_statistics",
          "sparsegpt_50", "sparsegpt_2_4", "wanda_row_50", "wanda_2_4"}


def test_oneshot_layer_prints_every_figure(tmp_path, capsys):
  out = tmp_path / "result.json"
  result = oneshot_layer.main(TINY + ["--json-out", str(out)])
  printed = json.loads(capsys.readouterr().out)
  assert printed == json.loads(out.read_text()) == json.loads(
      json.dumps(result))
  assert result["config"]["tokens"] == 32
  (layer,) = result["workloads"].values()
  assert set(layer["seconds"]) == STAGES
  assert set(layer["ratios"]) == {f"{s}_over_dense_matmul"
                                  for s in STAGES - {"dense_matmul"}}
  for ratio in layer["ratios"].values():
    assert all(math.isfinite(v) and v > 0 for v in ratio.values())
  assert set(layer["ours_over_reference"]) == set(
      oneshot_layer.REFERENCE_SECONDS)
  errors = layer["layer_error"]
  assert set(errors) == {"sparsegpt_50", "sparsegpt_50_mask_only",
                         "sparsegpt_2_4", "wanda_row_50", "wanda_2_4",
                         "magnitude_50", "magnitude_2_4"}
  assert all(0 < e < 2 for e in errors.values())
  # SparseGPT's update can only help its own mask.
  assert errors["sparsegpt_50"] < errors["sparsegpt_50_mask_only"]
  memory = layer["memory"]
  assert memory["method"] and set(memory["peak_rss_mb"]) == STAGES
  assert set(memory["xla_temp_mb"]) == STAGES
  assert result["no_recompilation"]


@pytest.mark.parametrize("argv, message", [
    (["--in-features", "0"], "--in-features must be >= 1, got 0"),
    (["--in-features", "66"], "multiples of 4"),
])
def test_bad_settings_name_the_value(argv, message):
  with pytest.raises(SystemExit, match=message):
    oneshot_layer.main(argv)
