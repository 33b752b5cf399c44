"""What every ``nntrain`` command shares: the error wrapper, common options, exit codes.

Exit codes (defined once, in nntrain.errors): 0 success; 2 bad input (config, data,
checkpoint, a command-line value: one clear message, no traceback unless --debug); 1 a
failure during a run (e.g. divergence that could not be recovered, a failed gradient
check); 130 interrupted (a checkpoint was saved).

Only click and the standard library are imported here: ``nntrain --help`` stays fast.
"""

from __future__ import annotations

import functools
import sys

import click

from ..errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_RUN_FAILED  # noqa: F401  (re-exported)


def handle_errors(fn):
    """Turn nntrain errors into one message and an exit code (a traceback only with --debug).

    Also sets up the process before the command's first numpy import: OpenBLAS's
    environment (read once, when numpy loads it), the thread count (a bad NNTRAIN_THREADS
    is reported now, not at the first kernel) and glibc's keeping of freed memory.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = kwargs.get("debug", False)
        from ..openblas_env import set_openblas_environment

        set_openblas_environment()  # before the first numpy import (the next lines')
        from ..distributed import share_cores_between_ranks

        share_cores_between_ranks()  # under mpiexec, each rank its share of the cores: before numpy too
        from ..errors import NNTrainError

        try:
            from ..ops.memory import keep_freed_memory
            from ..ops.parallel import num_threads

            num_threads()
            keep_freed_memory()
            return fn(*args, **kwargs)
        except NNTrainError as exc:
            if debug:
                raise
            fail(f"error: {exc}", exc.exit_code)
        except KeyboardInterrupt:
            if debug:
                raise
            fail("interrupted", EXIT_INTERRUPTED)
        except MemoryError as exc:
            if debug:
                raise
            from ..sizes import memory_error_message

            fail(f"error: {memory_error_message(exc)}", EXIT_RUN_FAILED)
        except OSError as exc:  # the environment failed us: a full disk, a vanished file system
            if debug:
                raise
            where = f" at {exc.filename}" if exc.filename else ""
            fail(f"error: {(exc.strerror or str(exc)).lower()}{where}", EXIT_RUN_FAILED)

    return wrapper


def fail(message: str, code: int) -> None:
    """Print the one message and exit; under MPI, stop the other ranks too (they would wait
    for this one forever), prefixing the message with the rank when it is not rank 0."""
    from .. import distributed

    dist = distributed.current()
    if dist.size > 1 and not dist.is_main:
        message = f"[rank {dist.rank}] {message}"
    click.echo(message, err=True)
    if dist.size > 1:
        sys.stderr.flush()
        dist.abort(code)
    sys.exit(code)


debug_option = click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
set_option = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                          help="Override a config key, e.g. --set optimizer.lr=0.01 (repeatable; "
                               "values are YAML; list items by index or layer name: model.conv1.out_channels=64).")

POSITIVE_INT = click.IntRange(min=1)  # a count or a size: 0 and negatives are refused by click (exit 2)

__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_RUN_FAILED", "POSITIVE_INT", "debug_option",
           "handle_errors", "set_option"]
