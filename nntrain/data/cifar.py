"""CIFAR-10 / CIFAR-100 in the official "python version" layout, read without trusting pickle.

The official batches are pickled dicts: ``data`` (N, 3072) uint8 with the R, G and B
planes of each 32x32 image one after the other (so ``reshape(N, 3, 32, 32)`` is NCHW),
``labels`` (CIFAR-10) or ``fine_labels`` / ``coarse_labels`` (CIFAR-100). Class
names are in ``batches.meta`` (``label_names``) or ``meta`` (``fine_label_names``,
``coarse_label_names``).

Pickle can run arbitrary code, so the files are read with ``SafeUnpickler``, which
resolves only the few numpy globals an array needs and refuses everything else.

Accepted sources: the ``cifar-10-batches-py`` / ``cifar-100-python`` folder, its
parent, or the archive itself (``.tar.gz`` as downloaded, ``.tar.xz``, ``.tar``),
read in memory in one sequential pass (no extraction to disk).
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from .idx import check_labels


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as protocol-2 pickles of bytes use it, restricted to latin1."""
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode(..., {encoding!r}) in a data file")
    return text.encode("latin1")


def _safe_frombuffer(buf, dtype, shape, order):
    """numpy's protocol-5 array constructor (``_frombuffer``), restricted to plain dtypes."""
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise pickle.UnpicklingError("refusing an object array in a data file")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy.(_)core.multiarray._reconstruct


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that can rebuild dicts, lists, strings, numbers and numpy arrays, nothing else.

    ``find_class`` is the only way a pickle names a callable; it answers only these
    (module, name) pairs, under the module names numpy 1.x and 2.x write.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
        ("_codecs", "encode"): _latin1_encode,
    }

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global '{module}.{name}' from a data file") from None


def safe_loads(data: bytes, name: str):
    """Unpickle ``data`` with SafeUnpickler; any failure is a DataError naming ``name``."""
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:  # noqa: BLE001 - every unpickling failure means a bad file
        raise DataError(f"{name}: not a readable CIFAR batch ({type(exc).__name__}: {exc})") from None


def _get(d, key: str, name: str):
    """``d[key]`` for a dict with str or bytes keys (Python 2 and 3 pickles differ)."""
    if not isinstance(d, dict):
        raise DataError(f"{name}: expected a pickled dict, found {type(d).__name__}")
    for k in (key, key.encode()):
        if k in d:
            return d[k]
    keys = ", ".join(k.decode() if isinstance(k, bytes) else str(k) for k in d)
    raise DataError(f"{name}: missing '{key}' (has: {keys})")


LAYOUTS = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "archives": ("cifar-10-python.tar.gz", "cifar-10-python.tar.xz", "cifar-10-python.tar"),
        "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test": ("test_batch",),
        "meta": "batches.meta",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "archives": ("cifar-100-python.tar.gz", "cifar-100-python.tar.xz", "cifar-100-python.tar"),
        "train": ("train",),
        "test": ("test",),
        "meta": "meta",
    },
}


def find_source(root: Path, kind: str) -> Path | None:
    """The folder or archive holding the ``kind`` batches at or inside ``root``, or None."""
    layout = LAYOUTS[kind]
    root = Path(root)
    if root.is_file():  # an archive given directly; read errors are reported when it is read
        return root
    candidates = [root, root / layout["folder"]] + [root / a for a in layout["archives"]]
    for c in candidates:
        if c.is_dir() and (c / layout["meta"]).is_file():
            return c
        if c.is_file():
            return c
    return None


def expected_files(kind: str) -> list[str]:
    layout = LAYOUTS[kind]
    names = [*layout["train"], *layout["test"], layout["meta"]]
    return [f"{layout['folder']}/{{{','.join(names)}}}", *layout["archives"]]


def _read_members(source: Path, kind: str) -> dict[str, bytes]:
    """{file name: bytes} of the batch files from a folder or a tar archive."""
    layout = LAYOUTS[kind]
    wanted = {*layout["train"], *layout["test"], layout["meta"]}
    found: dict[str, bytes] = {}
    if source.is_dir():
        for n in wanted:
            if (source / n).is_file():
                found[n] = (source / n).read_bytes()
    else:
        try:
            # "r|*": one sequential pass; random access into a compressed stream would
            # decompress it again for every member read out of order.
            with tarfile.open(source, mode="r|*") as tar:
                for member in tar:
                    base = member.name.rsplit("/", 1)[-1]
                    if member.isfile() and base in wanted and base not in found:
                        found[base] = tar.extractfile(member).read()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(f"{source}: corrupt or truncated archive ({exc}); download it again") from None
    missing = sorted(wanted - set(found))
    if missing:
        raise DataError(f"{source}: missing {', '.join(missing)} (a {kind} 'python version' folder or archive "
                        f"holds {', '.join(sorted(wanted))})")
    return found


def _batch(data: bytes, name: str, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = safe_loads(data, name)
    x = _get(d, "data", name)
    labels = _get(d, label_key, name)
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        shown = f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise DataError(f"{name}: 'data' must be a uint8 array of shape (N, 3072), found {shown}")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{name}: '{label_key}' must be a list of integers") from None
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{name}: {len(x)} images but '{label_key}' has shape {y.shape}")
    check_labels(y, num_classes, f"{name} ({label_key})")
    return x.reshape(len(x), 3, 32, 32), y


def load_cifar(source: Path, kind: str, label_mode: str = "fine"):
    """(x_train, y_train, x_test, y_test, class_names) from a folder or archive.

    ``kind`` is cifar10 or cifar100; ``label_mode`` (cifar100) is fine (100 classes)
    or coarse (20 superclasses). Images are (N, 3, 32, 32) uint8, labels int64.
    """
    layout = LAYOUTS[kind]
    files = _read_members(Path(source), kind)
    if kind == "cifar10":
        label_key, names_key = "labels", "label_names"
    else:
        label_key, names_key = f"{label_mode}_labels", f"{label_mode}_label_names"
    meta = safe_loads(files[layout["meta"]], f"{source}:{layout['meta']}")
    classes = _get(meta, names_key, f"{source}:{layout['meta']}")
    if not isinstance(classes, list) or not classes:
        raise DataError(f"{source}:{layout['meta']}: '{names_key}' must be a non-empty list of names")
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in classes]
    parts = {}
    for split in ("train", "test"):
        batches = [_batch(files[n], f"{source}:{n}", label_key, len(classes)) for n in layout[split]]
        parts[split] = (np.concatenate([b[0] for b in batches]) if len(batches) > 1 else batches[0][0],
                        np.concatenate([b[1] for b in batches]) if len(batches) > 1 else batches[0][1])
    return (*parts["train"], *parts["test"], classes)
