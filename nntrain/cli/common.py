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
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            if debug:
                raise
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except MemoryError:
            if debug:
                raise
            click.echo("error: out of memory; try a smaller train.batch_size or eval.batch_size", err=True)
            sys.exit(EXIT_RUN_FAILED)

    return wrapper


debug_option = click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
set_option = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                          help="Override a config key, e.g. --set optimizer.lr=0.01 (repeatable; "
                               "values are YAML; list items by index or layer name: model.conv1.out_channels=64).")

POSITIVE_INT = click.IntRange(min=1)  # a count or a size: 0 and negatives are refused by click (exit 2)

__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_RUN_FAILED", "POSITIVE_INT", "debug_option",
           "handle_errors", "set_option"]
