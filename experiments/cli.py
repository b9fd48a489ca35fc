"""The one flags helper of the experiment mains: the shared flags, config-flag
errors, a quiet console.

Each main (train, study, sparsity_sweep, overparam, report) calls
:func:`define_flags` under ``if __name__ == '__main__'`` (defining flags at
import would make two mains collide when both are imported, e.g. by
pytest-xdist), then :func:`run`; ``main`` reads the values with
:func:`config`, :func:`workdir` and :func:`config_module`, and calls
:func:`setup_logging` first:

- ``--config`` (a config file, ``path.py[:variant]``, with overrides
  ``--config.key=value``), ``--workdir`` (required) and
  ``--log_to_console``.
- A bad override (``--config.optimizer.lrr=0.1``, a typo; a key inside a
  section that is None) exits with one line naming the key, the keys allowed
  at that level and the closest one, instead of a traceback.
- Library logs (orbax's checkpointing, absl INFO, jax's platform messages) go
  to ``<workdir>/log.txt``; the terminal keeps the progress line, the results
  and warnings. ``--log_to_console`` shows everything there too (as before).
- Study configs give their sweep as code: :func:`config_variants` calls
  ``variants(config)`` of the ``--config`` file's module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import importlib.util
import os
import re
import sys
import time
import types
from typing import Any

from absl import app
from absl import flags
from absl import logging
from ml_collections.config_flags import config_flags

from flatsparse.train import config_schema

LOG_FILE = "log.txt"

_FLAGS: dict[str, flags.FlagHolder] = {}


def define_flags(config: str | None = None, *,
                 workdir: str | None = "Where the runs are written.",
                 lock_config: bool = False) -> None:
  """Defines the flags every main shares; call once, under ``__main__``.

  Args:
    config: the help of a required ``--config`` flag (a config file), or
      None for no such flag.
    workdir: the help of a required ``--workdir`` flag, or None for none.
    lock_config: lock the config (a typo in ``main`` raises instead of
      adding a key).
  """
  if config is not None:
    _FLAGS["config"] = config_flags.DEFINE_config_file(
        "config", None, config, lock_config=lock_config)
    flags.mark_flag_as_required("config")
  if workdir is not None:
    _FLAGS["workdir"] = flags.DEFINE_string("workdir", None, workdir,
                                            required=True)
  _FLAGS["log_to_console"] = flags.DEFINE_bool(
      "log_to_console", False,
      f"Also print library logs (orbax, absl INFO) on the console; they "
      f"always go to <workdir>/{LOG_FILE}.")


def _holder(name: str) -> flags.FlagHolder:
  if name not in _FLAGS:
    raise ValueError(f"--{name} is not defined; call cli.define_flags("
                     f"{'config=...' if name == 'config' else ''}) first.")
  return _FLAGS[name]


def config() -> Any:
  """The value of ``--config`` (with its command-line overrides)."""
  return _holder("config").value


def workdir() -> str:
  """The value of ``--workdir``."""
  return _holder("workdir").value


def config_module() -> types.ModuleType:
  """The module of the ``--config`` file (its ``variants``, constants)."""
  path = config_flags.get_config_filename(flags.FLAGS["config"])
  return load_config_module(path.split(":", 1)[0])


def config_variants(config: Any) -> list[Any]:
  """The sweep of a study config: ``variants(config)`` of its module (a
  list of ``flatsparse.study.Variant``)."""
  module = config_module()
  if not callable(getattr(module, "variants", None)):
    raise ValueError(
        f"{module.__file__} defines no variants(config); a study config "
        "module returns its sweep from it (a list of "
        "flatsparse.study.Variant), e.g. configs/safe_digits.py.")
  return module.variants(config)


def load_config_module(path: str) -> types.ModuleType:
  """Imports a config file by path (``configs/x.py``) as a module."""
  name = "study_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise ValueError(f"Cannot load the config file {path!r}.")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def setup_logging(workdir: str, to_console: bool | None = None) -> str:
  """Sends absl and Python logging to ``workdir/log.txt``; returns its path.

  Records at WARNING and above still reach stderr (unless
  ``--stderrthreshold`` says otherwise); with ``to_console`` (default: the
  ``--log_to_console`` flag) every record does.
  """
  if to_console is None:
    holder = _FLAGS.get("log_to_console")
    to_console = holder is not None and holder.value
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOG_FILE)
  handler = logging.get_absl_handler().python_handler
  # absl's handler writes to this stream and copies records at or above
  # --stderrthreshold (or all, with --alsologtostderr) to stderr.
  handler.stream = open(  # pylint: disable=consider-using-with
      path, "a", encoding="utf-8", buffering=1)
  if to_console:
    flags.FLAGS.alsologtostderr = True
  elif not flags.FLAGS["stderrthreshold"].present:
    flags.FLAGS.stderrthreshold = "warning"
  return path


def print_outputs(paths: Mapping[str, str], start: float,
                  report: str = "report") -> None:
  """Prints the markdown file ``paths[report]``, the absolute path of every
  output and the wall time since ``start`` (a ``time.time()``)."""
  print()
  with open(paths[report]) as f:
    print(f.read())
  for name, path in paths.items():
    print(f"{name}: {os.path.abspath(path)}")
  print(f"Total: {time.time() - start:.0f} s")


def _config_flag_names(flag_values: flags.FlagValues) -> list[str]:
  return [name for name in flag_values
          if config_flags.is_config_flag(flag_values[name])]


def _flag_value(argv: Sequence[str], name: str) -> str | None:
  """The value of ``--name=v`` / ``--name v`` in argv (the last one)."""
  value = None
  for i, arg in enumerate(argv):
    match = re.match(rf"^--?{re.escape(name)}(=(.*))?$", arg)
    if match:
      value = (match.group(2) if match.group(1) is not None
               else argv[i + 1] if i + 1 < len(argv) else None)
  return value


def override_error(argv: Sequence[str],
                   flag_values: flags.FlagValues = flags.FLAGS
                   ) -> str | None:
  """One line describing the first override in ``argv`` that names no
  settable key of its config (unknown key; key inside a None section; key
  inside a plain value), or None if every override names a key."""
  for name in _config_flag_names(flag_values):
    overrides = []
    for arg in argv:
      match = re.match(rf"^--?(?:no)?{re.escape(name)}\.([^=]+)", arg)
      if match and match.group(1) not in overrides:
        overrides.append(match.group(1))
    source = _flag_value(argv, name)
    if not overrides or source is None:
      continue
    try:
      config = flag_values[name].parser.parse(source)
      config.keys()  # an unloadable file gives an object that raises here
    except Exception:  # pylint: disable=broad-except
      return None  # the file's own error is the one to show
    for override in overrides:
      if "[" in override:
        continue  # indexing into sequences: config_flags' own errors
      message = _walk(config, name, override)
      if message:
        return message
  return None


def _walk(config: Any, name: str, override: str) -> str | None:
  node, seen = config, []
  for part in override.split("."):
    where = ".".join([name, *seen])
    if node is None:
      return (f"{where} is None in this config, so --{name}.{override} has "
              f"no key to set; set the whole section instead, e.g. "
              f"--{where}=\"{{'{part}': ...}}\" (with its required keys).")
    if not hasattr(node, "keys"):
      return (f"{where} is {node!r} (a {type(node).__name__}), not a "
              f"section; --{name}.{override} has no key to set.")
    if part not in node.keys():
      return config_schema.unknown_keys_message(
          [".".join([*seen, part])], node.keys(), where)
    node = node[part]
    seen.append(part)
  return None


def parse_flags(argv: Sequence[str]) -> list[str]:
  """absl's flag parsing, with a bad config override as one line + exit 1."""
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    message = override_error(argv)
    if message:
      sys.stderr.write(f"FATAL Flags parsing error: {message}\n")
      sys.exit(1)
    if isinstance(e, flags.Error):  # what absl's default parser prints
      sys.stderr.write(f"FATAL Flags parsing error: {e}\n"
                       "Pass --helpshort or --helpfull to see help on "
                       "flags.\n")
      sys.exit(1)
    raise


def run(main: Callable[[list[str]], Any]) -> None:
  """``app.run(main)`` with :func:`parse_flags`."""
  app.run(main, flags_parser=parse_flags)


def report_main(run_study: Callable[[Any, str], Mapping[str, Any]]
                ) -> Callable[[Sequence[str]], None]:
  """The ``main`` of a study whose ``run_study(config, workdir)`` returns a
  ``'report'``: logs to the workdir, prints the report and the time."""

  def main(argv: Sequence[str]) -> None:
    del argv
    path = workdir()
    setup_logging(path)
    start = time.time()
    results = run_study(config(), path)
    print(results["report"])
    print(f"({time.time() - start:.0f} s; {path})")

  return main
