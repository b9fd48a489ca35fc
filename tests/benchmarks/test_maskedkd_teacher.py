"""Smoke test of ``benchmarks.maskedkd_teacher`` on tiny ViTs: it runs end
to end and prints every figure (it times nothing worth reading)."""

import json
import math

import pytest

from benchmarks import maskedkd_teacher


def test_maskedkd_teacher_prints_every_figure(tmp_path, capsys):
  out = tmp_path / "result.json"
  result = maskedkd_teacher.main(["--workloads", "tiny", "--batch", "4",
                                  "--rounds", "1", "--steps", "1", "--ratios",
                                  "0.5", "--out",
                                  str(out)])
  printed = json.loads(capsys.readouterr().out)
  assert printed == json.loads(out.read_text())
  assert result["benchmark"] == "maskedkd_teacher"
  assert result["no_recompilation"] is True
  section = result["workloads"]["tiny"]
  flops = section["teacher_gflops_per_image"]
  assert set(flops) == {"full", "r0.5"}
  # 16 patches: the teacher's cost falls with the tokens it sees.
  assert flops["full"] > flops["r0.5"] > 0
  assert set(section["median_ms"]) == {
      "teacher_full", "teacher_r0.5", "step_no_kd", "step_full_kd",
      "step_maskedkd_0.5"}
  assert all(math.isfinite(v) and v > 0
             for v in section["median_ms"].values())
  assert section["ratios"]["teacher_r0.5_over_teacher_full"] > 0
  # Zero-initialized heads: CE ln 10, KD 0 at the first step.
  assert section["first_losses"]["step_no_kd"] == pytest.approx(math.log(10),
                                                                rel=1e-5)
  assert section["first_losses"]["step_full_kd"] == pytest.approx(
      0.5 * math.log(10), rel=1e-5)


def test_vit_b16_is_skipped_on_a_cpu(capsys):
  result = maskedkd_teacher.main(["--workloads", "vit_b16"])
  capsys.readouterr()
  assert result["config"]["skipped"] == ["vit_b16"]
  assert result["workloads"] == {}
