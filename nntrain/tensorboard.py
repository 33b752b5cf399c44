"""TensorBoard logs of a run (tensorboardX, an optional extra): ``RUN/tensorboard/``.

A training-loop hook (nntrain.hooks) that writes the numbers of the CSV logs as
TensorBoard scalars, with the iteration as the step::

    iterations/lr, iterations/energy, iterations/loss, iterations/batch_error
        every train.log_every steps: the rows of iterations.csv
    metrics/lr, metrics/energy, metrics/loss, metrics/weight_decay, metrics/train_error,
    metrics/val_loss, metrics/val_error
        at every evaluation (each epoch end, and every train.eval_every steps): the rows
        of metrics.csv (a column left empty there, e.g. without a validation split, is not written)

and, with ``histograms``, at each epoch end ``weights/<layer>.<param>`` and
``gradients/<layer>.<param>`` (the last batch's gradient). ``tensorboard --logdir runs/``
shows every run under runs/ side by side.

Resuming: TensorBoard event files are append-only, and a run killed after its last
checkpoint may have logged steps that the resumed run will log again. So a writer opened
on a run that already has event files (a resume, or a divergence roll-back) starts its
new file with ``purge_step`` = the state's iteration + 1: TensorBoard drops every
earlier-written event from that step on, and each curve continues with no step twice.
The new file's name sorts after the older ones (TensorBoard reads a folder's files in
name order), also when both are created in the same second.
"""

from __future__ import annotations

from pathlib import Path

from .config.schema import tensorboard_option  # noqa: F401  (re-exported: the config check)
from .errors import ConfigError
from .hooks import Hook
from .rundir import ITERATION_COLUMNS, METRICS_COLUMNS

INSTALL_HINT = ("TensorBoard logging needs tensorboardX, an optional extra: install it with\n"
                "    pip install 'nntrain[tensorboard]'\n"
                "(or: pip install tensorboardX; and pip install tensorboard to view the logs)")
FOLDER = "tensorboard"
ITERATION_TAGS = [c for c in ITERATION_COLUMNS if c not in ("iteration", "epoch")]
METRICS_TAGS = [c for c in METRICS_COLUMNS if c not in ("epoch", "iteration", "seconds")]


def require_tensorboardx():
    """tensorboardX's SummaryWriter, or a ConfigError (exit 2) saying how to install it."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return SummaryWriter


class TensorBoardHook(Hook):
    """Write the run's curves (and optionally weight/gradient histograms) to ``log_dir``
    (default ``RUN/tensorboard``); see the module docstring for the tags."""

    def __init__(self, log_dir=None, *, histograms: bool = False):
        self._summary_writer = require_tensorboardx()  # a missing package is reported before training
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.histograms = histograms
        self.writer = None

    # ----- the writer ------------------------------------------------------------------
    def _open(self, trainer) -> None:
        """A new event file; ``purge_step`` hides what older files logged past the state's iteration."""
        self.close()
        log_dir = self.log_dir or Path(trainer.run_dir) / FOLDER
        log_dir.mkdir(parents=True, exist_ok=True)
        existing = sorted(log_dir.glob("events.out.tfevents.*"))
        purge = trainer.state.progress.iteration + 1 if existing else None
        # file names are events.out.tfevents.<unix seconds>.<host><suffix>: the count of
        # earlier files as the suffix keeps name order = creation order within one second
        self.writer = self._summary_writer(str(log_dir), purge_step=purge, filename_suffix=f".{len(existing):04d}",
                                           flush_secs=30)

    on_train_start = on_restore = _open

    def close(self, trainer=None) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    on_exit = close

    # ----- the numbers -----------------------------------------------------------------
    def on_step_end(self, trainer, step):
        if step.iteration % trainer.config["train"]["log_every"] == 0:
            values = {"lr": step.lr, "energy": step.energy, "loss": step.loss, "batch_error": step.batch_error}
            for tag in ITERATION_TAGS:
                self.writer.add_scalar(f"iterations/{tag}", values[tag], step.iteration)

    def on_evaluate(self, trainer, row):
        for tag in METRICS_TAGS:
            if row.get(tag) is not None:
                self.writer.add_scalar(f"metrics/{tag}", row[tag], row["iteration"])
        self.writer.flush()  # an evaluation is rare enough: the curves survive a crash

    def on_epoch_end(self, trainer, epoch):
        if not self.histograms:
            return
        iteration = trainer.state.progress.iteration
        for name, p in trainer.state.network.named_parameters():
            self.writer.add_histogram(f"weights/{name}", p.value, iteration)
            self.writer.add_histogram(f"gradients/{name}", p.grad, iteration)
