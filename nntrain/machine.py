"""What a run records about the machine it ran on (summary.json's ``machine``)."""

from __future__ import annotations

import platform
import sys

import numpy as np

from .ops.parallel import available_cores


def machine_info() -> dict:
    return {"python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform(),
            "cpu": _cpu_model(), "cores": available_cores()}


def peak_rss_mib() -> float | None:
    """The largest resident set size of this process so far, MiB (None where unknown: Windows).

    ``ru_maxrss`` counts KiB on Linux and bytes on macOS. A resumed run reports its own process.
    """
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
