"""Reader and writer for the IDX format of MNIST and Fashion-MNIST, in numpy.

An IDX file is a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim``
big-endian uint32 dimension sizes, then the array in C order, big-endian. The
files are often gzip-compressed (``*-ubyte.gz``); ``read_idx`` detects that from
the content (the gzip magic bytes), not from the file name.
"""

import gzip
import os

import numpy as np

# IDX type byte -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _type_codes() -> str:
  return ", ".join(
      f"0x{code:02X} ({dt.name})" for code, dt in _IDX_DTYPES.items())


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an IDX file, gzip-compressed or not, into a numpy array.

  Args:
    path: The file to read.

  Returns:
    A native-endian array with the file's dtype (uint8 for MNIST files) and
    shape.

  Raises:
    FileNotFoundError: If ``path`` does not exist.
    ValueError: If the content is not a well-formed IDX file: bad magic number,
      unknown type byte, or a data size that does not match the header.
  """
  with open(path, "rb") as f:
    raw = f.read()
  if raw[:2] == _GZIP_MAGIC:
    raw = gzip.decompress(raw)
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
    raise ValueError(
        f"{os.fspath(path)!r} is not an IDX file: the magic number must start "
        f"with two zero bytes, got {raw[:4]!r}."
    )
  type_code, ndim = raw[2], raw[3]
  if type_code not in _IDX_DTYPES:
    raise ValueError(
        f"{os.fspath(path)!r} has IDX type byte 0x{type_code:02X}; known: "
        f"{_type_codes()}."
    )
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise ValueError(
        f"{os.fspath(path)!r} is truncated: its {ndim}-d IDX header needs "
        f"{header} bytes, the file has {len(raw)}."
    )
  shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
  dtype = _IDX_DTYPES[type_code]
  expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if len(raw) - header != expected:
    raise ValueError(
        f"{os.fspath(path)!r}: header shape {shape} of {dtype.name} needs "
        f"{expected} data bytes, the file has {len(raw) - header}."
    )
  data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
  # astype copies: the result is writable and owns native-endian memory.
  return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
  """Writes ``array`` as an IDX file, gzip-compressed if ``path`` ends in ".gz".

  Args:
    path: The file to write.
    array: An array of dtype uint8, int8, int16, int32, float32 or float64
      with 1 to 255 dimensions.

  Raises:
    ValueError: If the dtype or the number of dimensions cannot be stored.
  """
  array = np.asarray(array)
  codes = {dt.newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}
  code = codes.get(array.dtype.newbyteorder("="))
  if code is None:
    raise ValueError(
        f"Cannot store dtype {array.dtype} in IDX; allowed: "
        f"{sorted(dt.name for dt in codes)}."
    )
  if not 1 <= array.ndim <= 255:
    raise ValueError(f"IDX stores 1 to 255 dimensions, got ndim={array.ndim}.")
  header = (bytes([0, 0, code, array.ndim])
            + np.asarray(array.shape, ">u4").tobytes())
  data = header + np.ascontiguousarray(array, _IDX_DTYPES[code]).tobytes()
  if os.fspath(path).endswith(".gz"):
    # mtime=0 makes the bytes depend only on the array.
    data = gzip.compress(data, mtime=0)
  with open(path, "wb") as f:
    f.write(data)
