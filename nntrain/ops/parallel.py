"""Run a kernel over blocks of independent items (samples or channels) on all cores.

numpy runs elementwise work and copies on one core; only the matrix products use all
of them (BLAS threads). In im2col, col2im, padding and pooling each sample (and each
channel) reads and writes its own part of the arrays only, so these memory-bound
kernels split into ``threads`` independent calls ``fn(lo, hi)`` over items [lo, hi),
run on a small thread pool (numpy releases the GIL inside each call). Every block
computes exactly what one call over all items would, so results do not depend on the
number of threads.

Threads: ``NNTRAIN_THREADS`` if set (1 turns this off, e.g. one process per core in a
sweep), else the cores this process may run on (at most 8).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

MIN_ELEMENTS = 1 << 16  # below this, thread hand-off (~20 us) costs more than it saves

_state = {"pool": None, "pid": None, "threads": None}
_local = threading.local()


def num_threads() -> int:
    """How many blocks ``parallel_for`` uses (see the module docstring)."""
    if _state["threads"] is None:
        env = os.environ.get("NNTRAIN_THREADS", "").strip()
        if env:
            try:
                n = int(env)
            except ValueError:
                n = 1
        else:
            try:
                n = len(os.sched_getaffinity(0))
            except AttributeError:
                n = os.cpu_count() or 1
        _state["threads"] = max(1, min(n, 8))
    return _state["threads"]


def _pool() -> ThreadPoolExecutor:
    # a forked child inherits the pool object but not its threads: make a new one there
    if _state["pool"] is None or _state["pid"] != os.getpid():
        _state["pool"] = ThreadPoolExecutor(num_threads() - 1, thread_name_prefix="nntrain-kernel",
                                            initializer=_mark_worker)
        _state["pid"] = os.getpid()
    return _state["pool"]


def _mark_worker() -> None:
    _local.worker = True


def parallel_for(n: int, fn, work: int) -> None:
    """Call ``fn(lo, hi)`` on contiguous blocks covering range(n), one per thread.

    ``work`` is the number of array elements the whole job touches: small jobs, jobs with
    one block, and calls from inside a worker run inline as ``fn(0, n)``.
    """
    parts = min(num_threads(), n)
    if parts <= 1 or work < MIN_ELEMENTS or getattr(_local, "worker", False):
        fn(0, n)
        return
    bounds = [n * i // parts for i in range(parts + 1)]
    futures = [_pool().submit(fn, bounds[i], bounds[i + 1]) for i in range(1, parts)]
    try:
        fn(bounds[0], bounds[1])
    finally:
        wait(futures)  # never leave a block running on arrays the caller may free
    for f in futures:
        f.result()  # re-raise a block's exception
