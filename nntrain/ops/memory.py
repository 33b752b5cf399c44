"""Keep freed memory for reuse instead of handing it back to the kernel (glibc malloc).

A training step allocates and frees the same large arrays every iteration (activations,
im2col matrices, gradients: tens to hundreds of MB each at batch 1024). glibc serves
blocks above its mmap threshold (dynamic, at most 32 MB by default) with fresh
``mmap`` calls and unmaps them when freed, so every step page-faults -- and the kernel
zeroes -- all of that memory again, a large share of a big-batch step (timings in
bench/RESULTS.md). Raising the mmap and trim thresholds keeps freed blocks in the heap for the
next step, as PyTorch's caching allocator does. The peak is unchanged (the same arrays
are alive at the peak); the resident size just no longer shrinks between steps.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3

_state = {"done": None}


def keep_freed_memory() -> bool:
    """Set glibc's thresholds once per process; True if they are set (False elsewhere: macOS, musl)."""
    if _state["done"] is None:
        _state["done"] = False
        if sys.platform.startswith("linux"):
            try:
                mallopt = ctypes.CDLL("libc.so.6").mallopt
            except (OSError, AttributeError):
                return False
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _state["done"] = bool(mallopt(M_MMAP_THRESHOLD, 1 << 30) and mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    return _state["done"]
