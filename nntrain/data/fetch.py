"""Download the official data set files, check their SHA-256, write them atomically.

``fetch_dataset("cifar10", root)`` puts ``cifar-10-python.tar.gz`` into ``root``
(the loader reads the archive in place); ``root`` defaults to ``default_root(name)``
in the CLI, a folder the loader searches. A file already there with the right
checksum is kept; a download with the wrong checksum is deleted and refused.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import DataError

# SHA-256 of the official files.
# CIFAR: the python-version archives at https://www.cs.toronto.edu/~kriz/cifar.html.
# MNIST: the four .gz files of yann.lecun.com/exdb/mnist (the ossci-datasets mirror
#   serves the same bytes: 9912422, 28881, 1648877 and 4542 bytes); the same values
#   are pinned by torchvision's prototype MNIST dataset. The copies in shared/data are
#   re-compressed (different .gz bytes) but decompress to the original IDX files, whose
#   SHA-256 are listed in MNIST_IDX_SHA256 below.
# Fashion-MNIST: the four .gz files of the official bucket, as pinned by torchvision's
#   prototype FashionMNIST dataset (the Debian package re-compresses them).
FILES = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/", {
        "cifar-10-python.tar.gz": "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    }),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/", {
        "cifar-100-python.tar.gz": "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
    }),
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    }),
    "fashion_mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    }),
}

# SHA-256 of the decompressed MNIST IDX files (checked by the tests on shared/data).
MNIST_IDX_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

_BLOCK = 1 << 20
# The largest official file is cifar-10-python.tar.gz (170,498,071 bytes): a download that
# announces or sends more than this is refused before the disk fills (a broken or hostile mirror).
MAX_DOWNLOAD = 512 << 20


def default_root(name: str) -> Path:
    """Where ``nntrain data fetch NAME`` writes by default, a place ``load_data`` searches:
    $NNTRAIN_DATA/NAME when $NNTRAIN_DATA is set, else ~/.cache/nntrain/NAME."""
    env = os.environ.get("NNTRAIN_DATA")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "nntrain") / name


def download_urls(name: str) -> list[str]:
    """The official addresses of data set ``name`` (empty for embedded / user data)."""
    if name not in FILES:
        return []
    base, files = FILES[name]
    return [base + f for f in files]


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def fetch_dataset(name: str, root, *, base_url: str | None = None, checksums: dict | None = None,
                  progress=None, timeout: float = 60.0) -> list[Path]:
    """Download data set ``name`` into the folder ``root``; return the paths of its files.

    ``base_url`` replaces the official address (a mirror; the tests use a local
    server) and ``checksums`` ({file: sha256}) the pinned checksums. ``progress`` is
    called as ``progress(file_name, bytes_so_far, total_or_None)``.
    """
    if name not in FILES:
        known = ", ".join(sorted(FILES))
        raise DataError(f"nothing to download for data set '{name}' (downloadable: {known}; "
                        f"mnist_subset ships with nntrain, npz is your own file)")
    official, files = FILES[name]
    files = dict(files if checksums is None else checksums)
    base = base_url or official
    if not base.endswith("/"):
        base += "/"
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for fname, expected in files.items():
        target = root / fname
        paths.append(target)
        if target.is_file() and sha256_of(target) == expected:
            continue
        _download(base + fname, target, expected, progress, timeout)
    return paths


def _download(url: str, target: Path, expected: str, progress, timeout: float) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    total = response.headers.get("Content-Length")
                    total = int(total) if total and total.isdigit() else None
                    if total is not None and total > MAX_DOWNLOAD:
                        raise DataError(f"refusing {url}: it announces {total:,} bytes, more than the "
                                        f"{MAX_DOWNLOAD:,} any official data set file has")
                    done = 0
                    for block in iter(lambda: response.read(_BLOCK), b""):
                        done += len(block)
                        if done > MAX_DOWNLOAD:
                            raise DataError(f"refusing {url}: it sent more than the {MAX_DOWNLOAD:,} bytes "
                                            f"any official data set file has")
                        out.write(block)
                        h.update(block)
                        if progress is not None:
                            progress(target.name, done, total)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise DataError(f"could not download {url}: {exc}") from None
            out.flush()
            os.fsync(out.fileno())
        actual = h.hexdigest()
        if actual != expected:
            raise DataError(f"checksum mismatch for {url}: expected sha256 {expected}, got {actual} "
                            f"({done} bytes); the file was not saved (corrupt download or a changed mirror)")
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
