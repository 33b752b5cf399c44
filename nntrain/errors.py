"""Exceptions that the command line turns into one clear message and an exit code.

- ``ConfigError``: bad input (YAML, unknown key, wrong type or value, shape mismatch,
  missing or malformed data). Exit code 2.
- ``RunError``: a failure while a run is going (divergence that could not be recovered,
  a corrupt checkpoint met during resume). Exit code 1.

The process exit codes are defined here, once; the command line and the sweep runner use them.
"""

EXIT_OK = 0
EXIT_RUN_FAILED = 1  # a run failed: unrecoverable divergence, a failed gradient check, disk full
EXIT_BAD_INPUT = 2  # bad input: config, data file, checkpoint, command-line value
EXIT_INTERRUPTED = 130  # 128 + SIGINT: interrupted, a checkpoint was saved


class NNTrainError(Exception):
    """Base class of every error nntrain reports to the user without a traceback."""

    exit_code = 1


class ConfigError(NNTrainError, ValueError):
    """The user's input is wrong: the message says what, where, and what is allowed."""

    exit_code = 2


class DataError(ConfigError):
    """A data set is missing, truncated or malformed."""


class CheckpointError(ConfigError):
    """A checkpoint file is missing, truncated, corrupt or of another format."""


class RunError(NNTrainError, RuntimeError):
    """A run failed while it was going."""

    exit_code = 1
