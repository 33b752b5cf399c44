"""Run a kernel over blocks of independent items (samples or channels) on all cores.

numpy runs elementwise work and copies on one core; only the matrix products use all
of them (BLAS threads). In im2col, col2im, padding and pooling each sample (and each
channel) reads and writes its own part of the arrays only, so these memory-bound
kernels split into ``threads`` independent calls ``fn(lo, hi)`` over items [lo, hi),
run on a small thread pool (numpy releases the GIL inside each call). Every block
computes exactly what one call over all items would, so results do not depend on the
number of threads (except for ``matmul``, see there).

Threads: ``NNTRAIN_THREADS`` if set (1 turns this off, e.g. one process per core in a
sweep), else the cores this process may run on (at most 8).

``matmul`` does the same for the matrix products themselves: the product is cut into
one block of rows or columns (or of a stack) per thread, each an independent BLAS call
with OpenBLAS held at one thread meanwhile. A training step then uses one pool of
threads for everything instead of two (OpenBLAS's for the products, this module's for
the rest) taking turns on the same cores, where OpenBLAS's idle workers keep spinning
for a while after each product (``nntrain.openblas_env`` shortens that spin for the
products left to OpenBLAS: the linear layers'). Against products left to OpenBLAS, the
airbench net trains and infers faster this way (bench/RESULTS.md).

``batched_matmul`` is that for a stack of small matrix products (the Fourier
convolution's per-frequency products): each thread takes a block of the stack. Left to
OpenBLAS, each of the hundreds of small products would be split over its own threads,
a hand-off per product that costs more than the product itself -- and on a machine
shared with other processes, where a hand-off waits for a time slice, made a training
step several times slower.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

from ..cores import available_cores  # noqa: F401  (re-exported: the one core count)

MIN_ELEMENTS = 1 << 16  # below this, thread hand-off (~20 us) costs more than it saves
SPLIT_MATMUL = True  # ``matmul`` splits large products over the threads (tests turn it off)

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
                n = 0
            if n < 1:
                from ..errors import ConfigError

                raise ConfigError(f"NNTRAIN_THREADS must be a positive integer (1 turns threading off), "
                                  f"received {env!r}")
        else:
            n = available_cores()
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
    _local.worker = True  # the caller runs block 0: a kernel it calls runs inline, as in the workers
    try:
        fn(bounds[0], bounds[1])
    finally:
        _local.worker = False
        wait(futures)  # never leave a block running on arrays the caller may free
    for f in futures:
        f.result()  # re-raise a block's exception


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.matmul(a, b, out=out)`` for 2-D operands or stacks (G, m, k) @ (G, k, n), on all cores.

    The result is cut along its largest extent (G, m or n) into one block per thread,
    each a single-threaded BLAS call. Every entry is still one sum over k, but OpenBLAS
    picks its kernel by matrix size, so a block may round differently from one call over
    the whole product: unlike the other kernels here, products depend on the number of
    threads at the level of float rounding (a run is reproducible for a given
    ``NNTRAIN_THREADS``). ``out`` may be any view of the right shape (e.g. a transposed one).
    """
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    stack = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    if out is None:
        out = np.empty((*stack, m, n), np.result_type(a, b))
    g = stack[0] if stack else 1
    if (num_threads() == 1 or not SPLIT_MATMUL or g * m * k * n < 64 * MIN_ELEMENTS
            or getattr(_local, "worker", False) or _openblas_threads() is None):
        # (a BLAS we cannot hold at one thread would run threads x its own threads)
        return np.matmul(a, b, out=out)
    axis = max((g, 0), (m, 1), (n, 2))[1] if stack else max((m, 1), (n, 2))[1]

    def block(lo, hi):
        if axis == 0:
            np.matmul(a[lo:hi] if a.ndim == 3 else a, b[lo:hi] if b.ndim == 3 else b, out=out[lo:hi])
        elif axis == 1:
            np.matmul(a[..., lo:hi, :], b, out=out[..., lo:hi, :])
        else:
            np.matmul(a, b[..., lo:hi], out=out[..., lo:hi])

    with _one_blas_thread():
        parallel_for((g, m, n)[axis], block, MIN_ELEMENTS)
    return out


def blas_for(n: int, fn, work: int) -> None:
    """``parallel_for`` for blocks that call BLAS themselves (``fn(lo, hi)``), e.g. a
    convolution done chunk by chunk of samples: the blocks run on nntrain's threads with
    OpenBLAS held at one thread meanwhile. Where that cannot be done (one thread, or a BLAS
    whose thread count we cannot hold), ``fn(0, n)`` runs inline and each product gets
    BLAS's own threads."""
    if num_threads() == 1 or not SPLIT_MATMUL or getattr(_local, "worker", False) or _openblas_threads() is None:
        fn(0, n)
        return
    with _one_blas_thread():
        parallel_for(n, fn, work)


def batched_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.matmul(a, b)`` for a stack of products, (G, m, k) @ (G, k, n) -> (G, m, n), spread over
    the threads in blocks of the G axis. Either operand may be one (m, k) / (k, n) matrix used
    for all G; ``out`` may be any (G, m, n) view."""
    g = a.shape[0] if a.ndim == 3 else b.shape[0]
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    if out is None:
        out = np.empty((g, m, n), np.result_type(a, b))

    def block(lo, hi):
        np.matmul(a[lo:hi] if a.ndim == 3 else a, b[lo:hi] if b.ndim == 3 else b, out=out[lo:hi])

    with _one_blas_thread():
        parallel_for(g, block, g * m * k * n // 64)
    return out


def _openblas_threads():
    """(get, set) of the OpenBLAS that numpy loaded, through ctypes; None if there is none."""
    if "blas" not in _state:
        _state["blas"] = None
        try:
            with open("/proc/self/maps") as f:
                paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line})
            for path in paths:
                lib = ctypes.CDLL(path)
                for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"),
                                       ("openblas", "")):
                    get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                    set_ = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                    if get is not None and set_ is not None:
                        _state["blas"] = (get, set_)
                        return _state["blas"]
        except OSError:
            pass
    return _state["blas"]


@contextlib.contextmanager
def _one_blas_thread():
    blas = _openblas_threads()
    if blas is None:
        yield
        return
    get, set_ = blas
    with _blas_lock:
        before = get()
        set_(1)
        try:
            yield
        finally:
            set_(before)


_blas_lock = threading.Lock()
