"""Reading data files with bounded memory: never more than the format allows, never more than fits.

A data file is hostile until checked: a gzip stream or tar member that decompresses to
gigabytes from a few kilobytes on disk (a "bomb"), a header announcing an enormous shape,
a device such as /dev/zero under a data file's name. The readers of ``nntrain.data`` and of checkpoints (``nntrain.fileio``) go
through these functions, which

- take the size a file may have from its format before reading it (IDX: the header's
  dimensions; a CIFAR batch: its records; an npz array: its header, cross-checked with
  the zip directory), and refuse a larger file with a message naming it and that size;
- refuse a size that cannot fit in this process's memory (``nntrain.sizes.memory_limit``);
- read in chunks of ``CHUNK`` bytes into a buffer of the announced size, so what a stream
  holds beyond it is never read.

``NpzReader`` reads an ``.npz`` array by array this way, without pickle.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import math
import os
import stat
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError
from .sizes import format_bytes, memory_limit

CHUNK = 1 << 20
# Exceptions of a corrupt compressed stream or zip member (DataError, a ValueError, is not among them).
CORRUPT = (EOFError, OSError, zlib.error, lzma.LZMAError, zipfile.BadZipFile)
# ... and what zipfile and numpy's .npy header parser raise for a damaged archive: an unknown
# compression method, an "encrypted" flag, a malformed header or dtype description.
_DAMAGED = CORRUPT + (ValueError, TypeError, NotImplementedError, RuntimeError)


def check_fits(nbytes: int, name: str, what: str) -> None:
    """DataError if ``nbytes`` (for ``what``) exceed the memory this process may use."""
    limit, who = memory_limit()
    if nbytes > limit:
        raise DataError(f"{name}: {what} needs {format_bytes(nbytes)} but {who} {format_bytes(limit)}")


def check_shape(shape: tuple, itemsize: int, name: str) -> None:
    """DataError unless numpy can hold an array of ``shape``: at most 32 axes, and the
    product of the axes (zeros left out) addressable in bytes, even for an empty array."""
    if len(shape) > 32 or math.prod(max(int(d), 1) for d in shape) * max(itemsize, 1) >= 2**62:
        raise DataError(f"{name}: shape {tuple(shape)} is not a valid array shape")


def allocate(nbytes: int, name: str, what: str) -> np.ndarray:
    """An uninitialised uint8 buffer of ``nbytes`` for ``what``, refused (DataError) if it
    cannot fit; its pages are only committed as the data arrives."""
    check_fits(nbytes, name, what)
    try:
        return np.empty(nbytes, np.uint8)
    except MemoryError:
        limit, who = memory_limit()
        raise DataError(f"{name}: {what} needs {format_bytes(nbytes)}, more than is free now ({who} "
                        f"{format_bytes(limit)})") from None


def regular_file_size(path: Path) -> int:
    """The size of ``path``; DataError unless it is a regular file (not a device or a pipe)."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: not a regular file")
    return st.st_size


def read_into(f, buf: np.ndarray) -> int:
    """Fill the uint8 array ``buf`` from the stream ``f`` in ``CHUNK`` reads; the bytes read."""
    view, done = memoryview(buf).cast("B"), 0
    while done < len(view):
        chunk = f.read(min(CHUNK, len(view) - done))
        if not chunk:
            break
        view[done:done + len(chunk)] = chunk
        done += len(chunk)
    return done


def read_capped(f, cap: int, name: str, expected: str) -> bytes:
    """All of the stream ``f``, refused as soon as it exceeds ``cap`` bytes (``expected``
    says what the format allows)."""
    chunks, total = [], 0
    while True:
        chunk = f.read(min(CHUNK, cap + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > cap:
            raise DataError(f"{name}: larger than {expected} can be ({cap:,} bytes at most)")


def count_extra(f, already: int = 0, cap: int = CHUNK) -> str:
    """``already`` + the bytes left in ``f``, read up to ``cap``: "123" or "more than 1,048,576"."""
    extra = already
    while extra <= cap:
        chunk = f.read(CHUNK)
        if not chunk:
            return f"{extra:,}"
        extra += len(chunk)
    return f"more than {cap:,}"


class LimitedReader:
    """A read-only stream over ``f`` that raises DataError (``message``) once more than
    ``cap`` bytes are read in total; no single read goes beyond that either."""

    def __init__(self, f, cap: int, message: str):
        self.f, self.left, self.message = f, cap, message

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self.left:
            data = self.f.read(self.left + 1)
            if len(data) > self.left:
                raise DataError(self.message)
        else:
            data = self.f.read(n)
        self.left -= len(data)
        return data


def decompressed(raw):
    """The decompressed stream of an open file: gzip, bzip2 and xz by their magic bytes,
    anything else as it is."""
    head = raw.peek(6)[:6] if hasattr(raw, "peek") else b""
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if head.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw)
    return raw


class NpzReader:
    """The arrays of an ``.npz`` file, read one at a time with bounded memory, never unpickling.

    Opening reads only the zip directory and each array's ``.npy`` header; ``headers``
    maps the array names to (shape, dtype). Each header is checked against the zip
    directory (the member's size must be exactly the header plus shape x itemsize), so
    ``read`` allocates the announced size once and reads at most that. DataError, naming
    the file and the array, for anything else: not a zip (a lone ``.npy``), object arrays
    (they need pickle), a corrupt deflate stream, a CRC error, more data than fits.
    """

    def __init__(self, path, label: str = ".npz file"):
        self.path = Path(path)
        self.headers: dict[str, tuple[tuple, np.dtype]] = {}
        self._info, self._layout, self._read_bytes = {}, {}, 0
        try:
            regular_file_size(self.path)
            with open(self.path, "rb") as f:
                magic = f.read(6)
        except OSError as exc:
            raise DataError(f"{self.path}: cannot read ({exc})") from None
        try:
            self.zip = zipfile.ZipFile(self.path)
        except _DAMAGED as exc:
            why = ("it is a single .npy array; save the arrays with np.savez(path, x=..., y=...)"
                   if magic == b"\x93NUMPY" else f"not a zip archive, which an .npz is: {exc}")
            raise DataError(f"{self.path}: not a readable {label} ({why})") from None
        try:
            for info in self.zip.infolist():
                self._read_header(info)
        except BaseException:
            self.zip.close()
            raise

    def _read_header(self, info: zipfile.ZipInfo) -> None:
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        where = f"{self.path}:{key}"
        if key in self.headers:
            raise DataError(f"{where}: the archive holds two arrays of this name")
        try:
            with self.zip.open(info) as f:
                version = np.lib.format.read_magic(f)
                read = {(1, 0): np.lib.format.read_array_header_1_0,
                        (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read is None:
                    raise DataError(f"{where}: .npy format version {version} is not supported (1.0 and 2.0 are)")
                shape, fortran, dtype = read(f)
                header = f.tell()
        except DataError:
            raise
        except _DAMAGED as exc:
            raise DataError(f"{where}: not a readable .npy array ({type(exc).__name__}: {exc})") from None
        if dtype.hasobject:
            raise DataError(f"{where}: cannot read without pickle (an object array); store plain numeric/string "
                            f"arrays")
        check_shape(shape, dtype.itemsize, where)
        nbytes = math.prod(shape) * dtype.itemsize
        if info.file_size != header + nbytes:
            raise DataError(f"{where}: the header announces shape {shape} of {dtype} ({nbytes:,} bytes) but "
                            f"the archive holds {info.file_size - header:,} bytes of data")
        self.headers[key] = (tuple(shape), dtype)
        self._info[key], self._layout[key] = info, (header, fortran)

    def read(self, key: str) -> np.ndarray:
        """The array ``key`` (must be in ``headers``)."""
        shape, dtype = self.headers[key]
        header, fortran = self._layout[key]
        where = f"{self.path}:{key}"
        nbytes = math.prod(shape) * dtype.itemsize
        self._read_bytes += nbytes
        check_fits(self._read_bytes, where, f"the array (shape {shape} of {dtype}) with those read before it")
        buf = allocate(nbytes, where, f"shape {shape} of {dtype}")
        try:
            with self.zip.open(self._info[key]) as f:
                f.read(header)
                got = read_into(f, buf)
        except _DAMAGED as exc:
            raise DataError(f"{where}: corrupt array data ({type(exc).__name__}: {exc}); write the file "
                            f"again") from None
        if got != nbytes:
            raise DataError(f"{where}: truncated: {got:,} of {nbytes:,} bytes")
        if dtype.itemsize == 0:
            return np.empty(shape, dtype)
        flat = buf.view(dtype)
        return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)

    def close(self) -> None:
        self.zip.close()

    def __enter__(self) -> "NpzReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
