"""Atomic, code-free file I/O: npz without pickle, JSON, YAML with safe_load.

An atomic write goes to a temporary file in the same folder, is fsync'ed and then
renamed over the target, so a reader (or a run killed mid-write) sees either the old
file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .bounded import NpzReader
from .errors import CheckpointError, DataError


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb"):
    """Open a temporary file beside ``path``; on success fsync and rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide a shared run from others
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write says which file (e.g. a full disk)
        raise


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it: done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_npz(path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically as an uncompressed npz (no pickled objects)."""
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise TypeError(f"refusing to save object array '{key}' (it would need pickle)")
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


def load_npz(path) -> dict[str, np.ndarray]:
    """Read every array of an npz written by ``save_npz``; never unpickles, and never reads
    more than the file's own headers announce and this machine can hold (nntrain.bounded).

    A missing, truncated, corrupt or foreign file raises CheckpointError with the path.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with NpzReader(path, label="nntrain checkpoint") as npz:
            return {key: npz.read(key) for key in npz.headers}
    except DataError as exc:
        raise CheckpointError(f"{path} is not a readable nntrain checkpoint (truncated or corrupt?): {exc}") from None


def save_json(path, obj) -> None:
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=_json_default)
        f.write("\n")


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")

