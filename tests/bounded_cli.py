"""Run the nntrain command line in a subprocess with bounded memory, for hostile-input tests.

The child gets ``RLIMIT_AS`` (address space) of ``LIMIT`` and a timeout: an input that
made nntrain read or allocate without bound ends in a MemoryError (exit 1, "out of
memory") or the timeout instead of the promised refusal, so the test fails.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

LIMIT = 3 << 29  # 1.5 GiB: nntrain with numpy and OpenBLAS starts in about a third of it


def run_cli(args, cwd: Path, *, limit: int = LIMIT, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m nntrain.cli ARGS`` in ``cwd`` under ``RLIMIT_AS = limit``; no data set
    is found outside ``cwd`` ($NNTRAIN_DATA and $HOME point into it)."""

    def bound():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = dict(os.environ, NNTRAIN_DATA=str(cwd / "no-data"), HOME=str(cwd), NNTRAIN_THREADS="1")
    return subprocess.run([sys.executable, "-m", "nntrain.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=bound)


def assert_refused(result: subprocess.CompletedProcess, *fragments: str, code: int = 2) -> str:
    """Exit ``code``, no traceback, exactly one ``error:`` line (the last one on stderr),
    containing every fragment; returns that line."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    assert result.returncode == code, (result.returncode, result.stderr[-3000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]
