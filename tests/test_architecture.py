"""Structure rules of the code base, checked on its source.

* No module uses another module's private (underscore) name: what is
  shared is public, documented and exported in one place (``flatsparse.
  tree_utils``, ``flatsparse.validation``, ``flatsparse.protocol``, ...).
* Nothing in the repository cites a document outside it.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("flatsparse", "experiments", "benchmarks", "configs", "tests")
SOURCES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _is_private(name: str) -> bool:
  return name.startswith("_") and not name.startswith("__")


def _project_module(name: str | None) -> bool:
  return bool(name) and name.split(".")[0] in PACKAGES


def private_uses(source: str) -> list[str]:
  """``module._name`` uses of project modules that ``source`` imports."""
  tree = ast.parse(source)
  modules = set()  # local names bound to project modules
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if _project_module(alias.name):
          modules.add(alias.asname or alias.name.split(".")[0])
    elif isinstance(node, ast.ImportFrom) and _project_module(node.module):
      for alias in node.names:
        if _is_private(alias.name):
          found.append(f"line {node.lineno}: from {node.module} import "
                       f"{alias.name}")
        else:  # may be a submodule (from flatsparse import sparsity)
          modules.add(alias.asname or alias.name)
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and _is_private(node.attr)
        and isinstance(node.value, ast.Name) and node.value.id in modules):
      found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
  return found


def test_the_checker_finds_private_imports_and_attributes():
  bad = ("from flatsparse.sparsity.updater import _map_masked\n"
         "from flatsparse.train import sharpness as s\n"
         "s._measure(1)\n")
  assert private_uses(bad) == [
      "line 1: from flatsparse.sparsity.updater import _map_masked",
      "line 3: s._measure"]
  fine = ("import numpy as np\nnp._NoValue\n"
          "from flatsparse import tree_utils\ntree_utils.map_masked\n"
          "from tests.train.run_checks import assert_trees_equal as _eq\n")
  assert private_uses(fine) == []


@pytest.mark.parametrize("path", SOURCES,
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_uses_another_modules_private_names(path):
  assert private_uses(path.read_text()) == []


def test_nothing_cites_a_document_outside_the_repository():
  texts = [p.read_text() for p in SOURCES if p != pathlib.Path(__file__)]
  texts += [(ROOT / name).read_text() for name in ("README.md", "WORKSPACE.md")]
  outside = ("ARCHITECTURE" + ".md", "../" + "shared")
  for text in texts:
    for name in outside:
      assert name not in text
