"""What every experiment main shares: config-flag errors, a quiet console.

Each main (train, study, sparsity_sweep, overparam) calls :func:`define_flags`
in its own ``define_flags``, :func:`setup_logging` first thing in ``main`` and
runs with :func:`run`:

- A bad override (``--config.optimizer.lrr=0.1``, a typo; a key inside a
  section that is None) exits with one line naming the key, the keys allowed
  at that level and the closest one, instead of a traceback.
- Library logs (orbax's checkpointing, absl INFO, jax's platform messages) go
  to ``<workdir>/log.txt``; the terminal keeps the progress line, the results
  and warnings. ``--log_to_console`` shows everything there too (as before).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import os
import re
import sys
from typing import Any

from absl import app
from absl import flags
from absl import logging
from ml_collections.config_flags import config_flags

from flatsparse.train import config_schema

LOG_FILE = "log.txt"

_LOG_TO_CONSOLE = None


def define_flags() -> None:
  """Defines the shared flags (call from the main's ``define_flags``)."""
  global _LOG_TO_CONSOLE
  _LOG_TO_CONSOLE = flags.DEFINE_bool(
      "log_to_console", False,
      f"Also print library logs (orbax, absl INFO) on the console; they "
      f"always go to <workdir>/{LOG_FILE}.")


def setup_logging(workdir: str, to_console: bool | None = None) -> str:
  """Sends absl and Python logging to ``workdir/log.txt``; returns its path.

  Records at WARNING and above still reach stderr (unless
  ``--stderrthreshold`` says otherwise); with ``to_console`` (default: the
  ``--log_to_console`` flag) every record does.
  """
  if to_console is None:
    to_console = _LOG_TO_CONSOLE is not None and _LOG_TO_CONSOLE.value
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
