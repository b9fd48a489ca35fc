"""Numpy image transforms: normalization, CIFAR-style augmentation, resizing.

All functions work on NHWC (or HWC for single images) float arrays, are pure
given their arguments, and draw randomness only from the ``np.random.Generator``
they are passed.
"""

import numpy as np

from flatsparse.data.dataset import Dataset

PAD_MODES = ("constant", "reflect")
_STATS_CHUNK = 4096  # Examples per chunk: bounds the float64 temporaries.


def normalize(images: np.ndarray, mean, std) -> np.ndarray:
  """Returns ``(images - mean) / std`` per channel (the last axis), as float32.

  Args:
    images: float array of shape (..., C).
    mean: Scalar or sequence of C per-channel means.
    std: Scalar or sequence of C per-channel standard deviations, all > 0.

  Returns:
    A new float32 array of the same shape.

  Raises:
    ValueError: If ``mean``/``std`` do not have 1 or C entries, or a std <= 0.
  """
  images = np.asarray(images)
  mean = np.asarray(mean, np.float32).reshape(-1)
  std = np.asarray(std, np.float32).reshape(-1)
  channels = images.shape[-1] if images.ndim else 1
  for name, value in (("mean", mean), ("std", std)):
    if value.size not in (1, channels):
      raise ValueError(
          f"{name} must have 1 or {channels} entries (the channels of images "
          f"with shape {images.shape}), got {value.size}: {value.tolist()}."
      )
  if not np.all(std > 0):
    raise ValueError(f"std must be > 0 in every channel, got {std.tolist()}.")
  return ((images.astype(np.float32, copy=False) - mean)
          / std).astype(np.float32)


def channel_stats(ds: Dataset | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and (population) standard deviation of a dataset.

  Statistics are over every axis but the last, accumulated in float64 in
  chunks (two passes), so a 50,000-image CIFAR split needs no float64 copy.

  Args:
    ds: A ``Dataset`` (its images are used) or an image array (N, ..., C).

  Returns:
    ``(mean, std)``, float32 arrays of shape (C,).

  Raises:
    ValueError: If there are no images.
  """
  images = ds.images if isinstance(ds, Dataset) else np.asarray(ds)
  if images.ndim < 2 or images.shape[0] == 0:
    raise ValueError(
        "channel_stats needs images of shape (N>0, ..., C), got "
        f"{images.shape}."
    )
  channels = images.shape[-1]
  count = images.size // channels
  total = np.zeros(channels)
  for start in range(0, images.shape[0], _STATS_CHUNK):
    chunk = images[start : start + _STATS_CHUNK].reshape(-1, channels)
    total += chunk.sum(0, dtype=np.float64)
  mean = total / count
  squares = np.zeros(channels)
  for start in range(0, images.shape[0], _STATS_CHUNK):
    chunk = images[start : start + _STATS_CHUNK].reshape(-1, channels)
    squares += np.square(chunk - mean).sum(0)
  return mean.astype(np.float32), np.sqrt(squares / count).astype(np.float32)


def random_crop_flip(
    images: np.ndarray,
    rng: np.random.Generator,
    padding: int = 4,
    *,
    flip: bool = True,
    pad_mode: str = "constant",
) -> np.ndarray:
  """Standard CIFAR augmentation: pad, random crop back, random horizontal flip.

  Each image is padded by ``padding`` pixels on every side, with zeros
  (``pad_mode="constant"``, as torchvision's ``RandomCrop(32, padding=4)``)
  or by mirroring without repeating the edge (``"reflect"``), then cropped
  back to its size at an offset uniform in [0, 2 * padding] per axis, and
  mirrored left to right with probability 1/2. Apply it before
  ``normalize``, so padding is black in [0, 1] pixel space.

  Draws, in this order: N row offsets, N column offsets, N uniforms for the
  flips (only if ``flip``). The same Generator state gives the same output.

  Args:
    images: Array of shape (N, H, W, C).
    rng: The source of randomness; it is advanced.
    padding: Pixels of padding per side, >= 0 (0: no crop).
    flip: Whether to flip at random.
    pad_mode: "constant" (zeros) or "reflect".

  Returns:
    A new array with the shape and dtype of ``images``.

  Raises:
    ValueError: If ``images`` is not 4-d, ``padding`` < 0, or ``pad_mode``
      unknown.
  """
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(
        f"random_crop_flip needs NHWC images (4-d), got shape {images.shape}."
    )
  if padding < 0:
    raise ValueError(f"padding must be >= 0, got {padding}.")
  if pad_mode not in PAD_MODES:
    raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}.")
  n, h, w, _ = images.shape
  dy = rng.integers(0, 2 * padding + 1, n)
  dx = rng.integers(0, 2 * padding + 1, n)
  cols = np.broadcast_to(np.arange(w), (n, w))
  if flip:
    cols = np.where((rng.random(n) < 0.5)[:, None], cols[:, ::-1], cols)
  pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
  padded = np.pad(images, pad, mode=pad_mode) if padding else images
  # One gather: rows (N, H, 1), cols (N, 1, W) -> (N, H, W, C), contiguous.
  rows = (dy[:, None] + np.arange(h))[:, :, None]
  cols = (dx[:, None] + cols)[:, None, :]
  return padded[np.arange(n)[:, None, None], rows, cols]


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) linear-interpolation weights, antialiased when shrinking."""
  scale = n_out / n_in
  centers = (np.arange(n_out) + 0.5) / scale - 0.5
  # A triangle kernel, widened by 1/scale when downsampling (antialiasing).
  dist = np.abs(np.arange(n_in)[None, :] - centers[:, None]) * min(scale, 1.0)
  weights = np.maximum(0.0, 1.0 - dist)
  return weights / weights.sum(1, keepdims=True)


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Resizes one HWC image with antialiased bilinear interpolation.

  Same kernel as ``jax.image.resize(..., "linear", antialias=True)`` up to
  boundary handling (weights are renormalised at the borders).

  Args:
    image: Array of shape (H, W, C).
    size: Output (height, width), each >= 1.

  Returns:
    float32 array of shape (*size, C), same value scale as ``image``.
  """
  image = np.asarray(image)
  if image.ndim != 3:
    raise ValueError(
        f"resize needs one HWC image (3-d), got shape {image.shape}.")
  if min(size) < 1:
    raise ValueError(f"size must be positive, got {size}.")
  ry = _resize_matrix(image.shape[0], size[0])
  rx = _resize_matrix(image.shape[1], size[1])
  out = np.einsum("oh,hwc,pw->opc", ry, image.astype(np.float64), rx)
  return out.astype(np.float32)


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
  """Resizes the shorter side of an HWC image to ``size``, then center-crops.

  The usual ImageNet evaluation geometry: the result is ``size`` x ``size``.

  Args:
    image: Array of shape (H, W, C).
    size: Output side length, >= 1.

  Returns:
    float32 array of shape (size, size, C), same value scale as ``image``.
  """
  image = np.asarray(image)
  if image.ndim != 3:
    raise ValueError(
        "center_crop_resize needs one HWC image (3-d), got shape "
        f"{image.shape}."
    )
  if size < 1:
    raise ValueError(f"size must be >= 1, got {size}.")
  h, w = image.shape[:2]
  short = min(h, w)
  # Crops the central square first, then resizes it: far less work for large
  # images than resizing first; the kernel then sees no pixels outside the
  # square, which only changes the outermost output pixels slightly.
  top, left = (h - short) // 2, (w - short) // 2
  return resize(image[top : top + short, left : left + short], (size, size))
