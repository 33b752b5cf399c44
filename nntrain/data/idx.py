"""The IDX file format of MNIST and Fashion-MNIST (gzipped or not), read and written.

Layout (all integers big-endian)::

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions d
    4*d bytes   the size of each dimension (uint32)
    then        prod(sizes) elements, C order

Every inconsistency (bad magic, wrong rank, a file shorter or longer than its header
says, a corrupt gzip stream) is a DataError naming the file.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(t).newbyteorder("="): c for c, t in _TYPES.items()}


def read_bytes(path) -> bytes:
    """The (decompressed, if the name ends in .gz) content of ``path``."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip file ({exc}); download it again") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def parse_idx(data: bytes, name: str, *, ndim: int | None = None) -> np.ndarray:
    """The array stored in the IDX bytes ``data`` (``name`` is used in error messages).

    Returns a native-endian array (read-only for uint8, a view of ``data``).
    """
    if len(data) < 4:
        raise DataError(f"{name}: not an IDX file (only {len(data)} bytes)")
    if data[0] != 0 or data[1] != 0 or data[2] not in _TYPES:
        raise DataError(f"{name}: not an IDX file (magic number {data[:4].hex()}; "
                        f"expected 0000 then a type byte in {sorted(hex(c) for c in _TYPES)} and a rank byte)")
    rank = data[3]
    if ndim is not None and rank != ndim:
        raise DataError(f"{name}: expected a {ndim}-dimensional IDX file, the header says {rank} dimensions")
    header = 4 + 4 * rank
    if len(data) < header:
        raise DataError(f"{name}: truncated header: expected {header} bytes, file has {len(data)}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=rank, offset=4))
    dtype = np.dtype(_TYPES[data[2]])
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) < expected:
        raise DataError(f"{name}: truncated: the header announces shape {dims}, i.e. {expected} bytes, "
                        f"but the file has {len(data)} bytes")
    if len(data) > expected:
        raise DataError(f"{name}: {len(data) - expected} unexpected bytes after the {expected} that "
                        f"shape {dims} needs")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr if dtype.itemsize == 1 and dtype.kind == "u" else arr.astype(dtype.newbyteorder("="))


def read_idx(path, *, ndim: int | None = None) -> np.ndarray:
    """The array in the IDX file ``path`` (``.gz`` is decompressed in memory)."""
    return parse_idx(read_bytes(path), str(path), ndim=ndim)


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode ``arr`` (uint8, int8, int16, int32, float32 or float64) as IDX bytes."""
    arr = np.asarray(arr)
    code = _CODES.get(arr.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"IDX cannot store dtype {arr.dtype}")
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(arr, dtype=_TYPES[code]).tobytes()


def write_idx(path, arr: np.ndarray) -> None:
    """Write ``arr`` as an IDX file; gzipped (with a zero timestamp, so the bytes are
    reproducible) when ``path`` ends in ``.gz``."""
    path = Path(path)
    data = idx_bytes(arr)
    if path.suffix == ".gz":
        with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                    compresslevel=9) as f:
            f.write(data)
    else:
        path.write_bytes(data)


def read_image_label_pair(images_path, labels_path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, H, W) uint8 and labels (N,) int64 from an IDX image/label file pair.

    Checks: images are a 3-d uint8 file, labels a 1-d uint8 file, the counts agree,
    every label is in [0, num_classes).
    """
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected uint8 pixels (type byte 0x08), found {images.dtype}")
    if labels.dtype.kind not in "ui":
        raise DataError(f"{labels_path}: expected integer labels, found {labels.dtype}")
    if len(labels) != len(images):
        raise DataError(f"{labels_path} has {len(labels)} labels but {images_path} has {len(images)} images")
    labels = labels.astype(np.int64)
    check_labels(labels, num_classes, str(labels_path))
    return images.reshape(images.shape[0], 1, *images.shape[1:]), labels


def check_labels(labels: np.ndarray, num_classes: int, name: str) -> None:
    """DataError unless every label is an integer in [0, num_classes)."""
    if labels.size == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise DataError(f"{name}: label {bad} is out of range: {num_classes} classes allow 0..{num_classes - 1}")
