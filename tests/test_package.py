"""``import flatsparse as fs`` reaches every subpackage the README names."""

import types

import pytest

import flatsparse as fs


@pytest.mark.parametrize("name", fs.LAZY_SUBPACKAGES)
def test_subpackages_load_on_first_use(name):
  module = getattr(fs, name)
  assert isinstance(module, types.ModuleType)
  assert module.__name__ == f"flatsparse.{name}"


def test_unknown_attribute_is_an_attribute_error():
  with pytest.raises(AttributeError, match="no attribute 'federate'"):
    fs.federate  # noqa: B018
