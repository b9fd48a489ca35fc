"""The README's quick start runs as written."""

import pathlib
import re


def test_quick_start_runs(capsys):
  readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
  assert readme.startswith("```bash\nmake demo")
  assert readme.splitlines()[2].startswith("make test")
  code = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
  code = code.replace("num_epochs=130", "num_epochs=3")  # keep the test short
  exec(compile(code, "README.md", "exec"), {})  # pylint: disable=exec-used
  assert "prunable" in capsys.readouterr().out
