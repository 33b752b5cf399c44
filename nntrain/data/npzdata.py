"""Your own data as an ``.npz`` file (read with ``allow_pickle=False``).

Arrays:

- ``x``: training images, (N, H, W) (grey), (N, H, W, C) or (N, C, H, W); uint8, any
  integer type with values in 0..255 (stored as uint8), or floats (kept as float32;
  normalisation then applies to those float values, e.g. ``scale`` still divides by 255).
- ``y``: (N,) integer labels 0..K-1.
- ``x_test``, ``y_test``: an optional test split, same conventions.
- ``classes``: optional (K,) array of class names (a unicode array, not objects).

Layout of a 4-d ``x``: NHWC when the last axis is 1 or 3 and the second is not;
NCHW otherwise. Images are returned as (N, C, H, W).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from .idx import check_labels

KEYS = ("x", "y", "x_test", "y_test", "classes")


def to_nchw(x: np.ndarray, name: str) -> np.ndarray:
    """(N, C, H, W) images (uint8 or float32) from any of the accepted layouts and dtypes."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[3] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{name}: expected images of shape (N, H, W), (N, H, W, C) or (N, C, H, W), "
                        f"found shape {x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind in "ui":
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{name}: integer pixels must be in 0..255, found {x.min()}..{x.max()} "
                            f"(store floats to use another range)")
        return np.ascontiguousarray(x, dtype=np.uint8)
    if x.dtype.kind == "f":
        out = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(out).all():
            raise DataError(f"{name}: images contain NaN or infinite values")
        return out
    raise DataError(f"{name}: images must be integers or floats, found dtype {x.dtype}")


def to_labels(y: np.ndarray, n: int, name: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{name}: expected labels of shape (N,), found shape {y.shape} "
                        f"(one-hot labels: store argmax instead)")
    if y.dtype.kind == "f":
        if not np.array_equal(y, np.round(y)):
            raise DataError(f"{name}: labels must be whole numbers")
    elif y.dtype.kind not in "ui":
        raise DataError(f"{name}: labels must be integers, found dtype {y.dtype}")
    if len(y) != n:
        raise DataError(f"{name}: {len(y)} labels for {n} images")
    return y.astype(np.int64)


def npz_shape_and_classes(path: Path) -> tuple[tuple, int]:
    """(C, H, W) and the class count of an npz data file, reading only x's header and the labels."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z, z.open("x.npy") as f:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            shape = read_header(f)[0] if read_header else None
        with np.load(path, allow_pickle=False) as f:
            if shape is None:  # a rare header version: read the array itself
                shape = f["x"].shape
            if "classes" in f.files:
                k = len(f["classes"])
            else:
                k = 1 + max(int(f[key].max(initial=-1)) for key in ("y", "y_test") if key in f.files)
    except (KeyError, ValueError, zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not a readable npz data file ({exc})") from None
    x_shape = to_nchw(np.empty((0, *shape[1:]), np.uint8), f"{path}:x").shape
    return tuple(int(s) for s in x_shape[1:]), k


def read_npz(path: Path):
    """(x_train, y_train, x_test or None, y_test or None, classes) from an npz file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as exc:  # object arrays need pickle: refused
        raise DataError(f"{path}: cannot read without pickle ({exc}); store plain numeric/string arrays") from None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    unknown = sorted(set(arrays) - set(KEYS))
    if unknown or "x" not in arrays or "y" not in arrays:
        raise DataError(f"{path}: expected arrays x, y and optionally x_test, y_test, classes; "
                        f"found {', '.join(sorted(arrays)) or 'none'}")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path}: x_test and y_test go together; found only one of them")
    x = to_nchw(arrays["x"], f"{path}:x")
    y = to_labels(arrays["y"], len(x), f"{path}:y")
    x_test = y_test = None
    if "x_test" in arrays:
        x_test = to_nchw(arrays["x_test"], f"{path}:x_test")
        y_test = to_labels(arrays["y_test"], len(x_test), f"{path}:y_test")
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(f"{path}: x_test images are {x_test.shape[1:]} (C, H, W) but x images are {x.shape[1:]}")
        if x_test.dtype != x.dtype:
            raise DataError(f"{path}: x is {x.dtype} but x_test is {x_test.dtype}; store both the same way")
    if "classes" in arrays:
        names = arrays["classes"]
        if names.ndim != 1 or names.dtype.kind not in "US" or len(names) == 0:
            raise DataError(f"{path}:classes must be a 1-d array of names, found {names.dtype} {names.shape}")
        classes = [str(c.decode() if isinstance(c, bytes) else c) for c in names.tolist()]
    else:
        top = max(int(y.max(initial=-1)), int(y_test.max(initial=-1)) if y_test is not None else -1)
        classes = [str(i) for i in range(top + 1)]
    check_labels(y, len(classes), f"{path}:y")
    if y_test is not None:
        check_labels(y_test, len(classes), f"{path}:y_test")
    if len(x) == 0:
        raise DataError(f"{path}: x holds no images")
    return x, y, x_test, y_test, classes
