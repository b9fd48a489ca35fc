"""The README's quick start runs as written."""

import pathlib
import re

import pytest


def test_quick_start_runs(capsys):
  readme = (pathlib.Path(__file__).resolve().parents[1]
            / "README.md").read_text()
  assert readme.startswith("```bash\nmake demo")
  assert readme.splitlines()[2].startswith("make test")
  # The Quick start section's blocks run; later ones are sketches of code
  # in other trainers.
  quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
  blocks = re.findall(r"```python\n(.*?)```", quick_start, re.S)
  assert len(blocks) == 2  # the pruning quick start, then SAFE reusing it
  namespace = {}
  for code in blocks:
    code = code.replace("num_epochs=130", "num_epochs=3")  # keep it short
    exec(compile(code, "README.md", "exec"), namespace)  # pylint: disable=exec-used
    out = capsys.readouterr().out
    assert "prunable" in out, out
  # Proj(w_T) is exactly 90% sparse however short the run.
  assert re.search(r"prunable +84480 +8448 +0\.9000", out), out


ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO_SUMMARY = ROOT / "benchmarks/results/studies/demo/summary.json"


def test_demo_table_is_one_recorded_run_of_the_demo_config():
  """The README's table is rendered from the summary.json of one `make demo`
  run, and that run used the demo config as it is now."""
  import json  # pylint: disable=g-import-not-at-top

  from configs import flagship_digits  # pylint: disable=g-import-not-at-top
  from experiments import report  # pylint: disable=g-import-not-at-top
  summary = json.loads(DEMO_SUMMARY.read_text())
  config = json.loads(
      flagship_digits.get_config().to_json_best_effort(sort_keys=True))
  assert summary["config"] == config, (
      "configs/flagship_digits.py changed since the recorded demo: run "
      "`make demo`, copy workdirs/demo/report/summary.json to "
      f"{DEMO_SUMMARY.relative_to(ROOT)} and run `python -m "
      "experiments.report --readme=README.md --summary=...`.")
  assert [r["variant"] for r in summary["rows"]] == list(config["variants"])
  readme = (ROOT / "README.md").read_text()
  block = readme.split(report.README_BEGIN)[1].split(report.README_END)[0]
  assert block.strip() == report.readme_table(summary)


def test_readme_table_rendering_and_replacement():
  from experiments import report  # pylint: disable=g-import-not-at-top
  summary = {"config": {"seeds": [0, 1], "labels": {"a": "A (x)"}},
             "rows": [{"variant": "a", "accuracy_mean": 0.97123,
                       "accuracy_std": 0.0053, "sparsity": 0.0},
                      {"variant": "b", "accuracy_mean": 0.9, "accuracy_std": 0,
                       "sparsity": 0.9}],
             "machine": "2-core x86_64 CPU", "versions": {"jax": "9.9"},
             "date": "2026-01-02", "seconds": 61}
  table = report.readme_table(summary)
  assert table.splitlines()[0] == ("Measured on 2026-01-02 (2-core x86_64 CPU, "
                                   "jax 9.9, 2 seeds, 61 s after the "
                                   "environment exists):")
  assert "| A (x) | 97.12 ± 0.53 | 0 |" in table
  assert "| b | 90.00 ± 0.00 | 0.90 |" in table
  text = f"x\n{report.README_BEGIN}\nold\n{report.README_END}\ny"
  assert report.replace_readme_table(text, table) == (
      f"x\n{report.README_BEGIN}\n{table}\n{report.README_END}\ny")
  with pytest.raises(ValueError, match="exactly once"):
    report.replace_readme_table("no markers", table)


def test_readme_states_the_digits_test_size():
  from flatsparse import data  # pylint: disable=g-import-not-at-top
  n = len(data.load_digits("test").labels)
  readme = (ROOT / "README.md").read_text()
  assert f"{n} test images" in readme
  assert "360 test images" not in readme or n == 360
