"""Tests for flatsparse.data.transforms."""

import numpy as np
import pytest

from flatsparse.data import center_crop_resize
from flatsparse.data import channel_stats
from flatsparse.data import Dataset
from flatsparse.data import normalize
from flatsparse.data import random_crop_flip
from flatsparse.data import resize


def _images(n=5, h=6, w=7, c=3, seed=0):
  return np.random.default_rng(seed).random((n, h, w, c), dtype=np.float32)


def test_normalize_per_channel():
  x = _images()
  mean, std = [0.1, 0.2, 0.3], [0.5, 2.0, 4.0]
  got = normalize(x, mean, std)
  assert got.dtype == np.float32 and got.shape == x.shape
  for c in range(3):
    np.testing.assert_allclose(got[..., c], (x[..., c] - mean[c]) / std[c],
                               rtol=1e-6)
  # A scalar applies to every channel; the input is not modified.
  np.testing.assert_allclose(normalize(x, 0.5, 0.25), (x - 0.5) / 0.25,
                             rtol=1e-6)
  np.testing.assert_array_equal(x, _images())


@pytest.mark.parametrize(
    "mean, std, match",
    [([0.1, 0.2], [1, 1, 1], "mean must have 1 or 3"),
     (0.0, [1, 0, 1], "std must be > 0")],
)
def test_normalize_errors(mean, std, match):
  with pytest.raises(ValueError, match=match):
    normalize(_images(), mean, std)


def test_channel_stats_match_numpy_and_normalize_to_unit():
  x = _images(n=9000, h=2, w=2)  # > one chunk of 4096.
  mean, std = channel_stats(Dataset(x, np.zeros(9000, np.int32), 1))
  assert mean.shape == std.shape == (3,) and mean.dtype == np.float32
  np.testing.assert_allclose(mean, x.reshape(-1, 3).mean(0, dtype=np.float64),
                             rtol=1e-6)
  np.testing.assert_allclose(std, x.reshape(-1, 3).std(0, dtype=np.float64),
                             rtol=1e-6)
  z = normalize(x, mean, std).reshape(-1, 3)
  np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(z.std(0), 1.0, atol=1e-5)
  with pytest.raises(ValueError, match="N>0"):
    channel_stats(np.zeros((0, 2, 2, 3), np.float32))


def test_crop_flip_shapes_and_determinism():
  x = _images()
  a = random_crop_flip(x, np.random.default_rng(1))
  b = random_crop_flip(x, np.random.default_rng(1))
  c = random_crop_flip(x, np.random.default_rng(2))
  assert a.shape == x.shape and a.dtype == x.dtype
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def _reference(x, rng, padding, mode):
  """Per-image loop with the documented draw order."""
  n, h, w, _ = x.shape
  dy, dx = (rng.integers(0, 2 * padding + 1, n),
            rng.integers(0, 2 * padding + 1, n))
  flips = rng.random(n) < 0.5
  out = []
  for i in range(n):
    p = np.pad(x[i], ((padding, padding), (padding, padding), (0, 0)),
               mode=mode)
    crop = p[dy[i] : dy[i] + h, dx[i] : dx[i] + w]
    out.append(crop[:, ::-1] if flips[i] else crop)
  return np.stack(out)


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_crop_flip_matches_reference(mode):
  x = _images(n=64)
  got = random_crop_flip(x, np.random.default_rng(3), 4, pad_mode=mode)
  np.testing.assert_array_equal(
      got, _reference(x, np.random.default_rng(3), 4, mode))


def test_crop_flip_padding_is_zero_and_flips_happen():
  x = np.ones((200, 4, 4, 1), np.float32)
  got = random_crop_flip(x, np.random.default_rng(0), padding=4)
  assert (got == 0).any() and (got == 1).any()  # Zero padding moved in.
  # padding=0: only flips; about half the images are mirrored.
  x = np.broadcast_to(np.arange(4, dtype=np.float32)[None, None, :, None],
                      (200, 3, 4, 1))
  got = random_crop_flip(x, np.random.default_rng(0), padding=0)
  flipped = (got[:, 0, 0, 0] == 3).sum()
  assert 70 < flipped < 130
  assert np.all((got == x) | (got == x[:, :, ::-1]))
  same = random_crop_flip(x, np.random.default_rng(0), 0, flip=False)
  np.testing.assert_array_equal(same, x)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"images": np.zeros((2, 4, 4))}, "4-d"),
        ({"padding": -1}, "padding"),
        ({"pad_mode": "edge"}, "pad_mode.*'constant'.*'reflect'"),
    ],
)
def test_crop_flip_errors(kwargs, match):
  kwargs = {"images": _images(), "rng": np.random.default_rng(0), **kwargs}
  with pytest.raises(ValueError, match=match):
    random_crop_flip(**kwargs)


def test_resize():
  x = _images(n=1, h=8, w=6)[0]
  np.testing.assert_allclose(resize(x, (8, 6)), x, atol=1e-6)  # Identity.
  const = np.full((40, 30, 2), 0.7, np.float32)
  np.testing.assert_allclose(resize(const, (9, 13)), 0.7, atol=1e-6)
  # Downsampling by 2 with the antialiased kernel averages neighbouring pixels.
  ramp = np.tile(np.arange(8, dtype=np.float32)[None, :, None], (4, 1, 1))
  got = resize(ramp, (4, 4))[0, :, 0]
  np.testing.assert_allclose(got[1:3], [2.5, 4.5], atol=1e-6)


def test_center_crop_resize():
  x = np.zeros((40, 20, 3), np.float32)
  x[10:30] = 1.0  # The central 20x20 square is ones.
  got = center_crop_resize(x, 8)
  assert got.shape == (8, 8, 3) and got.dtype == np.float32
  np.testing.assert_allclose(got, 1.0, atol=1e-6)
  with pytest.raises(ValueError, match="size"):
    center_crop_resize(x, 0)
