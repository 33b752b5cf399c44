"""A labelled split of a data set, the stratified validation hold-out, and class-balanced limits.

All selections return indices in increasing order, so the chosen samples keep their
file order (a ``shuffle: false`` loader then reads them as stored).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError

# The validation hold-out draws from default_rng([seed, VALIDATION_STREAM]); the loader
# uses [seed, epoch] and [seed, epoch, batch], which never reach this value.
VALIDATION_STREAM = 0x7A11D


@dataclass
class Split:
    """Images ``x`` (N, C, H, W) (uint8, or float32 for float npz data) and labels ``y`` (N,) int64.

    Arrays read straight from a file may be read-only views of its bytes: treat a
    split as immutable (the loader copies each batch before normalising it).
    """

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self):
        if self.x.ndim != 4:
            raise DataError(f"images must be (N, C, H, W), got shape {self.x.shape}")
        if self.y.ndim != 1 or len(self.y) != len(self.x):
            raise DataError(f"{len(self.x)} images but labels of shape {self.y.shape}")

    def __len__(self) -> int:
        return len(self.y)

    def take(self, indices: np.ndarray) -> "Split":
        return Split(self.x[indices], self.y[indices])

    def class_counts(self, num_classes: int) -> np.ndarray:
        return np.bincount(self.y, minlength=num_classes)


def _rank_within_class(y: np.ndarray, order: np.ndarray) -> np.ndarray:
    """rank[i] = how many samples of y[i]'s class come before i in ``order``."""
    labels = y[order]
    by_class = np.argsort(labels, kind="stable")  # grouped by class, ``order`` kept inside
    sorted_labels = labels[by_class]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(labels)]))
    rank = np.empty(len(y), dtype=np.int64)
    rank[order[by_class]] = np.arange(len(labels)) - group_start
    return rank


def stratified_split(y: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held_out) indices: ``count`` samples held out, each class in proportion.

    Class c with n_c of the N samples gives round(count * n_c / N) samples (largest
    remainders fix the total to exactly ``count``), chosen uniformly at random with
    ``default_rng([seed, VALIDATION_STREAM])``: the same seed gives the same split.
    """
    n = len(y)
    if not 0 <= count < n:
        raise DataError(f"cannot hold out {count} of {n} training samples for validation")
    if count == 0:
        return np.arange(n), np.arange(0)
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * (count / n)
    quota = np.floor(exact).astype(np.int64)
    short = count - int(quota.sum())
    if short:
        quota[np.argsort(-(exact - quota), kind="stable")[:short]] += 1
    per_label = np.zeros(int(classes.max()) + 1, dtype=np.int64)
    per_label[classes] = quota
    order = np.random.default_rng([seed, VALIDATION_STREAM]).permutation(n)
    held = _rank_within_class(y, order) < per_label[y]
    return np.flatnonzero(~held), np.flatnonzero(held)


def balanced_first(y: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices of the first ``limit`` samples taken round-robin over classes, in file order.

    Each class gives its earliest samples, and the classes stay as balanced as the data
    allows (a class that runs out leaves its share to the others).
    """
    n = len(y)
    if limit is None or limit >= n:
        return np.arange(n)
    rank = _rank_within_class(y, np.arange(n))
    chosen = np.lexsort((np.arange(n), rank))[:limit]  # by rank within class, then file order
    return np.sort(chosen)


def validation_count(validation, n: int) -> int:
    """The number of samples a ``validation`` setting (count or fraction) holds out of ``n``."""
    if isinstance(validation, float):
        return int(round(validation * n))
    return int(validation)
