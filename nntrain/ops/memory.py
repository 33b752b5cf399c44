"""Keep freed memory for reuse instead of handing it back to the kernel (glibc malloc).

A training step allocates and frees the same large arrays every iteration (activations,
im2col matrices, gradients: tens to hundreds of MB each at batch 1024). glibc serves
blocks above its mmap threshold (dynamic, at most 32 MB by default) with fresh
``mmap`` calls and unmaps them when freed, so every step page-faults -- and the kernel
zeroes -- all of that memory again, a large share of a big-batch step (timings in
bench/RESULTS.md). Raising the mmap and trim thresholds keeps freed blocks in the heap for the
next step, as PyTorch's caching allocator does. The peak is unchanged (the same arrays
are alive at the peak); the resident size just no longer shrinks between steps.

One arena for all threads (``M_ARENA_MAX`` 1). glibc gives each thread that allocates its
own arena, and a block stays in the arena that served it: the kernel threads
(``ops.parallel``) allocate a convolution's scratch buffers, the main thread the layers'
outputs, so a block kept in a worker's arena cannot serve the main thread's next array of
that size, and each arena grows to its own high-water mark. With kept memory that showed
as a resident size growing by steps from epoch to epoch (about 100 MB over 12 short
epochs of ``configs/cifar10_fast.yaml``; with one arena flat there, and flat after the
first 7 of the full 30-epoch run: bench/RESULTS.md). nntrain's allocations are few and
large, so the one arena's lock costs nothing measurable.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

_state = {"done": None}


def keep_freed_memory() -> bool:
    """Set glibc's thresholds and one arena, once per process; True if set (False elsewhere: macOS, musl).

    Call it before threads allocate (``nntrain.cli`` does, before the first kernel runs).
    """
    if _state["done"] is None:
        _state["done"] = False
        if sys.platform.startswith("linux"):
            try:
                mallopt = ctypes.CDLL("libc.so.6").mallopt
            except (OSError, AttributeError):
                return False
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _state["done"] = bool(mallopt(M_MMAP_THRESHOLD, 1 << 30) and mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
                                  and mallopt(M_ARENA_MAX, 1))
    return _state["done"]
