"""The README's quick start runs as written."""

import pathlib
import re


def test_quick_start_runs(capsys):
  readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
  assert readme.startswith("```bash\nmake demo")
  assert readme.splitlines()[2].startswith("make test")
  blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
  assert len(blocks) == 2  # the pruning quick start, then SAFE reusing it
  namespace = {}
  for code in blocks:
    code = code.replace("num_epochs=130", "num_epochs=3")  # keep it short
    exec(compile(code, "README.md", "exec"), namespace)  # pylint: disable=exec-used
    out = capsys.readouterr().out
    assert "prunable" in out, out
  # Proj(w_T) is exactly 90% sparse however short the run.
  assert re.search(r"prunable +84480 +8448 +0\.9000", out), out
