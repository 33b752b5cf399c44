"""Rebuild the embedded ``mnist_subset`` data set from the official MNIST files.

    python -m nntrain.data.make_embedded /path/to/mnist [output_folder]

Keeps the first 1000 images of each digit from the training file (10,000) and the
first 200 of each digit from the test file (2,000), in their original order, and
writes them as gzipped IDX files (zero gzip timestamp: the output bytes depend only
on the input) into ``nntrain/data/embedded/`` by default.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .idx import read_image_label_pair, write_idx

PER_CLASS = {"train": 1000, "t10k": 200}


def first_per_class(y: np.ndarray, per_class: int) -> np.ndarray:
    """Indices (increasing) of the first ``per_class`` samples of every class."""
    order = np.argsort(y, kind="stable")
    sorted_y = y[order]
    starts = np.searchsorted(sorted_y, np.unique(sorted_y))
    rank = np.arange(len(y)) - np.repeat(starts, np.diff(np.r_[starts, len(y)]))
    return np.sort(order[rank < per_class])


def make(source: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for prefix, n in PER_CLASS.items():
        def find(base):
            for name in (base + ".gz", base):
                if (source / name).is_file():
                    return source / name
            raise SystemExit(f"{source}: missing {base}[.gz]")

        x, y = read_image_label_pair(find(f"{prefix}-images-idx3-ubyte"), find(f"{prefix}-labels-idx1-ubyte"), 10)
        keep = first_per_class(y, n)
        counts = np.bincount(y[keep], minlength=10)
        if not (counts == n).all():
            raise SystemExit(f"{source}: expected {n} images of each digit in {prefix}, found {counts.tolist()}")
        write_idx(dest / f"{prefix}-images-idx3-ubyte.gz", x[keep, 0])
        write_idx(dest / f"{prefix}-labels-idx1-ubyte.gz", y[keep].astype(np.uint8))
        print(f"{prefix}: kept {len(keep)} of {len(y)} ({n} per class)")


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not 1 <= len(argv) <= 2:
        raise SystemExit(__doc__)
    dest = Path(argv[1]) if len(argv) == 2 else Path(__file__).resolve().parent / "embedded"
    make(Path(argv[0]), dest)


if __name__ == "__main__":
    main()
