"""Mini-batches: shuffle, gather, normalise, augment, with the next batch prepared in a thread.

Determinism without saved RNG state: epoch e visits the samples in the order
``default_rng([seed, e]).permutation(N)`` and batch b of epoch e is augmented with
``default_rng([seed, e, b])``. A run resumed at (epoch e, batch b) therefore sees
exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import queue
import threading

import numpy as np

from .. import validate as v
from ..errors import ConfigError
from .augment import SampleIds
from .splits import Split

_DONE = object()


class BatchLoader:
    """Iterate one split in mini-batches of float32 (B, C, H, W) images and int64 (B,) labels.

    >>> loader = BatchLoader(data.train, 128, normalizer=norm, augment=pipeline, seed=run_seed)
    >>> for x, y in loader.epoch(3, start_batch=10): ...

    ``len(loader)`` is the number of batches per epoch: ceil(N / B), or floor(N / B)
    with ``drop_last`` (the last, smaller batch is dropped). ``shuffle=False`` keeps
    the stored order (evaluation). ``augment`` is any callable (x, rng) -> x, such as a
    ``Pipeline`` or ``Pipeline.for_eval()``. With ``prefetch`` a background thread
    prepares up to two batches ahead (numpy releases the GIL in the gathers and
    arithmetic); it stops when the iteration ends, is closed or is abandoned, and an
    exception raised there is re-raised in the consumer.
    """

    def __init__(self, split: Split, batch_size: int, *, normalizer, augment=None, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, prefetch: bool = True):
        self.split = split
        self.batch_size = v.positive_int(batch_size, "batch_size")
        self.normalizer = normalizer
        if augment is not None and not callable(augment):
            raise ConfigError(f"augment: expected a callable (x, rng) -> x such as a Pipeline, received {augment!r}")
        self.augment = augment
        self.shuffle = v.boolean(shuffle, "shuffle")
        self.seed = v.integer(seed, "seed", min_value=0)
        self.drop_last = v.boolean(drop_last, "drop_last")
        self.prefetch = v.boolean(prefetch, "prefetch")

    def __len__(self) -> int:
        n, b = len(self.split), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    @property
    def num_samples(self) -> int:
        """Samples per epoch (fewer than len(split) when drop_last drops a partial batch)."""
        return min(len(self) * self.batch_size, len(self.split))

    def order(self, epoch: int) -> np.ndarray | None:
        """The sample order of ``epoch`` (None: stored order)."""
        if not self.shuffle:
            return None
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.split))

    def batch(self, epoch: int, index: int, order=None) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``index`` of ``epoch`` (``order`` = ``self.order(epoch)``, passed to avoid recomputing it)."""
        lo, hi = index * self.batch_size, min((index + 1) * self.batch_size, len(self.split))
        if self.shuffle:
            idx = (self.order(epoch) if order is None else order)[lo:hi]
            xb, yb = self.split.x[idx], self.split.y[idx]
        else:
            xb, yb = self.split.x[lo:hi], self.split.y[lo:hi].copy()
        x = self.normalizer.apply(xb)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, epoch, index])
            if getattr(self.augment, "uses_samples", False):
                ids = SampleIds(idx if self.shuffle else np.arange(lo, hi), epoch, self.seed, len(self.split))
                x = self.augment(x, rng, samples=ids)
            else:
                x = self.augment(x, rng)
        return np.ascontiguousarray(x, dtype=np.float32), yb

    def epoch(self, epoch: int, start_batch: int = 0):
        """An iterator of (x, y) for batches start_batch .. len(self)-1 of ``epoch``.

        The arguments are checked now (ConfigError), not at the first ``next``.
        """
        epoch = v.integer(epoch, "epoch", min_value=0)
        start_batch = v.integer(start_batch, "start_batch", min_value=0, max_value=len(self))
        order = self.order(epoch)
        if self.prefetch:
            return self._prefetched(epoch, start_batch, order)
        return (self.batch(epoch, b, order) for b in range(start_batch, len(self)))

    def _prefetched(self, epoch: int, start_batch: int, order):
        q: queue.Queue = queue.Queue(maxsize=2)
        stop = threading.Event()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def produce():
            try:
                for b in range(start_batch, len(self)):
                    if stop.is_set() or not put(self.batch(epoch, b, order)):
                        return
                put(_DONE)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                put(exc)

        thread = threading.Thread(target=produce, name="nntrain-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:  # normal end, exception, close() or the generator being dropped
            stop.set()
            thread.join()
