"""What a run records about the machine it ran on (summary.json's ``machine``)."""

from __future__ import annotations

import platform

import numpy as np

from .ops.parallel import available_cores


def machine_info() -> dict:
    return {"python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform(),
            "cpu": _cpu_model(), "cores": available_cores()}


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
