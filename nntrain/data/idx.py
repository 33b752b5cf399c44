"""The IDX file format of MNIST and Fashion-MNIST (gzipped or not), read and written.

Layout (all integers big-endian)::

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3     number of dimensions d
    4*d bytes   the size of each dimension (uint32)
    then        prod(sizes) elements, C order

Every inconsistency (bad magic, wrong rank, a file shorter or longer than its header
says, a corrupt gzip stream, a shape too large for this machine's memory) is a DataError
naming the file. A gzip stream is read only as far as the header says (plus one byte to
detect extra data), so a small file that decompresses to gigabytes is refused unread.
"""

from __future__ import annotations

import gzip
import io
import math
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..bounded import allocate, check_shape, count_extra, read_into, regular_file_size

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(t).newbyteorder("="): c for c, t in _TYPES.items()}


def read_idx(path, *, ndim: int | None = None) -> np.ndarray:
    """The array in the IDX file ``path`` (``.gz`` is decompressed as it is read).

    Memory is bounded by what the header announces: the body is read in chunks into a
    buffer of exactly that size, whatever the (decompressed) stream holds after it.
    """
    path = Path(path)
    try:
        size = regular_file_size(path)
        with open(path, "rb") as raw:
            if path.suffix == ".gz":
                with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                    return _read(f, str(path), ndim, None)
            return _read(raw, str(path), ndim, size)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip file ({exc}); download it again") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def parse_idx(data: bytes, name: str, *, ndim: int | None = None) -> np.ndarray:
    """The array stored in the IDX bytes ``data`` (``name`` is used in error messages)."""
    return _read(io.BytesIO(data), name, ndim, len(data))


def _read(f, name: str, ndim: int | None, size: int | None) -> np.ndarray:
    """Read an IDX stream: the header, then exactly the body it announces. ``size`` is the
    file's size when known (a plain file), else None (gzip: checked while reading)."""
    head = f.read(4)
    if len(head) < 4:
        raise DataError(f"{name}: not an IDX file (only {len(head)} bytes)")
    if head[0] != 0 or head[1] != 0 or head[2] not in _TYPES:
        raise DataError(f"{name}: not an IDX file (magic number {head.hex()}; "
                        f"expected 0000 then a type byte in {sorted(hex(c) for c in _TYPES)} and a rank byte)")
    rank = head[3]
    if ndim is not None and rank != ndim:
        raise DataError(f"{name}: expected a {ndim}-dimensional IDX file, the header says {rank} dimensions")
    header = 4 + 4 * rank
    raw_dims = f.read(4 * rank)
    if len(raw_dims) < 4 * rank:
        raise DataError(f"{name}: truncated header: expected {header} bytes, file has {4 + len(raw_dims)}")
    dims = tuple(int(d) for d in np.frombuffer(raw_dims, dtype=">u4"))
    dtype = np.dtype(_TYPES[head[2]])
    check_shape(dims, dtype.itemsize, name)
    body = math.prod(dims) * dtype.itemsize
    if size is not None and size != header + body:
        _wrong_size(name, dims, header + body, size)
    buf = allocate(body, name, f"the array of shape {dims} its header announces")
    got = read_into(f, buf)
    if got < body:
        _wrong_size(name, dims, header + body, header + got, " (decompressed)")
    if size is None and f.read(1):
        raise DataError(f"{name}: {count_extra(f, already=1)} unexpected bytes (decompressed) after the "
                        f"{header + body} that shape {dims} needs")
    arr = buf.view(dtype).reshape(dims)
    return arr if dtype.itemsize == 1 and dtype.kind == "u" else arr.astype(dtype.newbyteorder("="))


def _wrong_size(name: str, dims: tuple, expected: int, actual: int, how: str = "") -> None:
    if actual < expected:
        raise DataError(f"{name}: truncated: the header announces shape {dims}, i.e. {expected} bytes, "
                        f"but the file has {actual} bytes{how}")
    raise DataError(f"{name}: {actual - expected} unexpected bytes after the {expected} that shape {dims} needs")


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
