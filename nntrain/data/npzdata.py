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

The file is read with ``bounded.NpzReader`` (array by array, sizes checked against the
headers and this machine's memory, never unpickling). Labels are class indices: at most
``MAX_CLASSES`` classes, so a label such as 2**40 (an id, not a class) is refused with
the file and the label instead of building a class list that size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from ..bounded import NpzReader
from .idx import check_labels

KEYS = ("x", "y", "x_test", "y_test", "classes")
MAX_CLASSES = 100_000  # a sane bound on a class count (ImageNet-21k has 21,841)


def _check_rank(shape: tuple, name: str) -> None:
    if len(shape) not in (3, 4):
        raise DataError(f"{name}: expected images of shape (N, H, W), (N, H, W, C) or (N, C, H, W), "
                        f"found shape {tuple(shape)}")


def to_nchw(x: np.ndarray, name: str) -> np.ndarray:
    """(N, C, H, W) images (uint8 or float32) from any of the accepted layouts and dtypes."""
    _check_rank(x.shape, name)
    if x.ndim == 3:
        x = x[:, None]
    elif x.shape[3] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if 0 in x.shape[1:]:
        raise DataError(f"{name}: images of shape {x.shape[1:]} (C, H, W) hold no pixels")
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
        if not np.isfinite(y).all() or not np.array_equal(y, np.round(y)):
            raise DataError(f"{name}: labels must be whole numbers")
    elif y.dtype.kind not in "ui":
        raise DataError(f"{name}: labels must be integers, found dtype {y.dtype}")
    if len(y) != n:
        raise DataError(f"{name}: {len(y)} labels for {n} images")
    if y.size and (y.min() < 0 or y.max() >= MAX_CLASSES):  # compared before the cast: uint64 2**63 stays large
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise DataError(f"{name}: label {bad} is out of range: labels are class indices 0..{MAX_CLASSES - 1:,} "
                        f"(at most {MAX_CLASSES:,} classes)")
    return y.astype(np.int64)


def _class_count(labels: list[np.ndarray]) -> int:
    """Without a ``classes`` array: the largest label + 1 (labels already range-checked)."""
    return 1 + max(int(y.max(initial=-1)) for y in labels)


def _check_keys(npz: NpzReader) -> None:
    names = npz.headers
    if sorted(set(names) - set(KEYS)) or "x" not in names or "y" not in names:
        raise DataError(f"{npz.path}: expected arrays x, y and optionally x_test, y_test, classes; "
                        f"found {', '.join(sorted(names)) or 'none'}")
    if ("x_test" in names) != ("y_test" in names):
        raise DataError(f"{npz.path}: x_test and y_test go together; found only one of them")


def npz_shape_and_classes(path: Path) -> tuple[tuple, int]:
    """(C, H, W) and the class count of an npz data file, reading only x's header and the labels
    (or the class names)."""
    path = Path(path)
    with NpzReader(path, "npz data file") as npz:
        _check_keys(npz)
        shape = npz.headers["x"][0]
        _check_rank(shape, f"{path}:x")
        x_shape = to_nchw(np.empty((0, *shape[1:]), np.uint8), f"{path}:x").shape
        if "classes" in npz.headers:
            return tuple(x_shape[1:]), len(_class_names(npz.read("classes"), path))
        labels = []
        for key, images in (("y", "x"), ("y_test", "x_test")):
            if key in npz.headers:
                _check_rank(npz.headers[images][0], f"{path}:{images}")
                labels.append(to_labels(npz.read(key), npz.headers[images][0][0], f"{path}:{key}"))
    return tuple(x_shape[1:]), _class_count(labels)


def _class_names(names: np.ndarray, path: Path) -> list[str]:
    if names.ndim != 1 or names.dtype.kind not in "US" or not 0 < len(names) <= MAX_CLASSES:
        raise DataError(f"{path}:classes must be a 1-d array of 1..{MAX_CLASSES:,} names, found {names.dtype} "
                        f"{names.shape}")
    try:
        return [str(c.decode() if isinstance(c, bytes) else c) for c in names.tolist()]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}:classes: a class name is not UTF-8 text ({exc.object!r:.40})") from None


def read_npz(path: Path):
    """(x_train, y_train, x_test or None, y_test or None, classes) from an npz file."""
    path = Path(path)
    with NpzReader(path) as npz:
        _check_keys(npz)
        arrays = {k: npz.read(k) for k in npz.headers}
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
        classes = _class_names(arrays["classes"], path)
    else:
        classes = [str(i) for i in range(_class_count([y] if y_test is None else [y, y_test]))]
    check_labels(y, len(classes), f"{path}:y")
    if y_test is not None:
        check_labels(y_test, len(classes), f"{path}:y_test")
    if len(x) == 0:
        raise DataError(f"{path}: x holds no images")
    return x, y, x_test, y_test, classes
