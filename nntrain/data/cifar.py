"""CIFAR-10 / CIFAR-100 in the official "python version" layout, read without trusting pickle.

The official batches are pickled dicts: ``data`` (N, 3072) uint8 with the R, G and B
planes of each 32x32 image one after the other (so ``reshape(N, 3, 32, 32)`` is NCHW),
``labels`` (CIFAR-10) or ``fine_labels`` / ``coarse_labels`` (CIFAR-100). Class
names are in ``batches.meta`` (``label_names``) or ``meta`` (``fine_label_names``,
``coarse_label_names``).

Pickle can run arbitrary code, so the files are read with ``SafeUnpickler``, which
resolves only the few numpy globals an array needs and refuses everything else.

Accepted sources: the ``cifar-10-batches-py`` / ``cifar-100-python`` folder, its
parent, or the archive itself (``.tar.gz`` as downloaded, ``.tar.xz``, ``.tar.bz2``,
``.tar``), read in memory in one sequential pass (no extraction to disk).

Sizes are bounded by the format: a batch file holds at most ``records`` images (10,000
per CIFAR-10 batch and per test file, 50,000 in CIFAR-100's train file), each at most
``PICKLED_RECORD`` bytes pickled, and ``batches.meta`` / ``meta`` at most ``META_BYTES``.
A file or tar member that says it is larger is refused before it is read, and the
decompressed archive stream is cut off at the sum of those sizes, so a small archive
that decompresses to gigabytes is refused after reading at most that much.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..bounded import CORRUPT, LimitedReader, decompressed, read_capped, regular_file_size
from .idx import check_labels

# One image is 3072 pixel bytes (3073 with its label in the binary version). Pickled, the
# pixels are one byte each in Python 2's files, but up to two in a Python 3 protocol-2
# pickle (bytes stored as latin-1 text, UTF-8 encoded); the label, the file name and the
# pickle opcodes add well under 256 bytes.
PICKLED_RECORD = 2 * 3072 + 256
META_BYTES = 1 << 20
MAX_MEMBERS = 100  # the official archives hold 8 (CIFAR-10) and 5 (CIFAR-100) entries


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
        "records": {"train": 10_000, "test": 10_000},  # images per file at most
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "archives": ("cifar-100-python.tar.gz", "cifar-100-python.tar.xz", "cifar-100-python.tar"),
        "train": ("train",),
        "test": ("test",),
        "meta": "meta",
        "records": {"train": 50_000, "test": 10_000},
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


def file_caps(kind: str) -> dict[str, tuple[int, str]]:
    """{file name: (its largest size in bytes, why)} of a ``kind`` folder or archive."""
    layout = LAYOUTS[kind]
    caps = {layout["meta"]: (META_BYTES, "the class names")}
    for split in ("train", "test"):
        n = layout["records"][split]
        caps.update({name: (n * PICKLED_RECORD + META_BYTES, f"a batch of {n:,} images") for name in layout[split]})
    return caps


def _read_members(source: Path, kind: str) -> dict[str, bytes]:
    """{file name: bytes} of the batch files from a folder or a tar archive (sizes bounded)."""
    layout = LAYOUTS[kind]
    caps = file_caps(kind)
    if source.is_dir():
        found = {n: _read_file(source / n, cap, what) for n, (cap, what) in caps.items() if (source / n).exists()}
    else:
        try:
            found = _read_archive(source, kind, caps)
        except CORRUPT + (tarfile.TarError,) as exc:
            raise DataError(f"{source}: corrupt or truncated archive ({exc}); download it again") from None
    missing = sorted(set(caps) - set(found))
    if missing:
        raise DataError(f"{source}: missing {', '.join(missing)} (a {kind} 'python version' folder or archive "
                        f"holds {', '.join(sorted(caps))})")
    return found


def _read_file(path: Path, cap: int, what: str) -> bytes:
    try:
        size = regular_file_size(path)
        if size > cap:
            raise DataError(f"{path}: {size:,} bytes, larger than {what} can be ({cap:,} bytes at most)")
        with open(path, "rb") as f:
            return read_capped(f, cap, str(path), what)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def _read_archive(source: Path, kind: str, caps: dict) -> dict[str, bytes]:
    found = {}
    total = sum(cap for cap, _ in caps.values()) + META_BYTES  # + tar headers and small extra members
    with open(source, "rb") as raw:
        # One sequential pass over the decompressed stream ("r|"): random access into a
        # compressed stream would decompress it again for every member read out of order.
        stream = LimitedReader(decompressed(raw), total, f"{source}: the archive holds more than {total:,} "
                               f"bytes, the most a {kind} archive can hold; not a {kind} archive")
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for count, member in enumerate(tar):
                if count >= MAX_MEMBERS:
                    raise DataError(f"{source}: more than {MAX_MEMBERS} entries; not a {kind} archive")
                base = member.name.rsplit("/", 1)[-1]
                if not member.isfile() or base not in caps or base in found:
                    continue
                cap, what = caps[base]
                if member.size > cap:
                    raise DataError(f"{source}:{member.name}: {member.size:,} bytes, larger than {what} can be "
                                    f"({cap:,} bytes at most)")
                found[base] = tar.extractfile(member).read()
                if len(found) == len(caps):
                    break
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
