"""OpenBLAS settings that must be in the environment before numpy loads OpenBLAS.

After each threaded product, OpenBLAS's worker threads keep spinning on their cores,
waiting for the next one, for up to 2**THREAD_TIMEOUT clock ticks (2**28 by default:
~0.1 s) before they sleep. nntrain runs everything else, convolution products included
(``ops.parallel.matmul``), on its own thread pool; a worker left spinning by a linear
layer's product takes one of the cores that pool is about to use, and the pool's next
product then runs markedly slower. With the timeout at 2**16 ticks (~25 us, still
long enough to bridge back-to-back products) the workers are asleep by then (timings in
bench/RESULTS.md). A spinning worker also slowed PyTorch when it ran next in the same
process.

OpenBLAS reads ``OPENBLAS_THREAD_TIMEOUT`` (log2 of the ticks, clamped to 4..30) once,
when it is loaded, so ``nntrain`` commands and ``bench/speed.py`` call
``set_openblas_environment`` before anything imports numpy. A value already in the
environment is left alone. This module must not import numpy.
"""

from __future__ import annotations

import os
import sys

THREAD_TIMEOUT_LOG2_TICKS = 16


def set_openblas_environment() -> bool:
    """Put our OpenBLAS settings in the environment (unless set already); False if numpy is
    already imported, when OpenBLAS has read its environment and this comes too late."""
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", str(THREAD_TIMEOUT_LOG2_TICKS))
    return "numpy" not in sys.modules
