"""The training-loop hook of ``nntrain tune``: report every evaluation to the Optuna trial,
stop the run as ``pruned`` when the study's pruner says so.

Step k of the trial is the run's k-th evaluation (k = 1, 2, ...): the epoch number with
the default one evaluation per epoch, and comparable between trials as long as they
evaluate at the same points (``train.eval_every`` counts iterations, so do not tune the
batch size together with ``eval_every``). The value is the ``--monitor`` column of the
metrics row (validation error by default).

A resumed trial first reports the evaluations already in its metrics.csv that the trial
lacks (those logged before the process that ran it stopped), so the pruner sees the whole
curve, then decides once. The run's last evaluation is never pruned: its training is
done, and the trial completes with its value. A pruned run ends like any other: checkpoints/last.npz saved,
summary.json with ``stop_reason: pruned`` (nntrain.rundir.STOP_PRUNED), no test.
"""

from __future__ import annotations

from ..hooks import Hook
from ..rundir import STOP_PRUNED, read_csv


class OptunaPruning(Hook):
    """``trial.report(value, step)`` after each evaluation; ``trial.should_prune()`` ->
    ``trainer.request_stop(STOP_PRUNED, ...)``. ``reported``: the steps the trial already has."""

    def __init__(self, trial, monitor: str, reported=()):
        self.trial, self.monitor = trial, monitor
        self.reported = set(reported)
        self.evaluations = 0

    def on_train_start(self, trainer):
        iteration = trainer.state.progress.iteration
        rows = [r for r in read_csv(trainer.run_dir / "metrics.csv") if r.get("iteration", 0) <= iteration]
        for row in rows:
            self._report(row)
        if rows:
            self._decide(trainer, rows[-1])

    def on_evaluate(self, trainer, row):
        self._report(row)
        self._decide(trainer, row)

    def _report(self, row: dict) -> None:
        self.evaluations += 1
        value = row.get(self.monitor)
        if value is not None and self.evaluations not in self.reported:
            self.trial.report(float(value), self.evaluations)
            self.reported.add(self.evaluations)

    def _decide(self, trainer, row: dict) -> None:
        if trainer.state.progress.iteration >= trainer.total_iterations:
            return  # the run's last evaluation: its training is paid for, it completes
        if row.get(self.monitor) is not None and self.trial.should_prune():
            trainer.request_stop(STOP_PRUNED, f"pruned by the study's pruner at evaluation {self.evaluations} "
                                              f"(epoch {row['epoch']:g}): {self.monitor} {row[self.monitor]:.4g}")
