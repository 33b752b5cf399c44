"""The number of CPU cores this process may use: the one definition (no numpy import, so it
can run before numpy loads OpenBLAS, which reads its thread count once)."""

from __future__ import annotations

import os


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
