"""Training-loop hooks: every feature around the step is one small object with call points.

The loop (nntrain.train.Trainer.run) calls each hook's methods at fixed points, in the
order of the hook list; a hook overrides only the points it needs::

    on_train_start(trainer)                 the state is built (or loaded, on resume)
    for each epoch:
        on_epoch_start(trainer, epoch)      before its first batch (or its first resumed one)
        for each batch:
            on_loss(trainer, energy)        after the forward pass, before backward
            -- backward, optimizer step --
            on_update(trainer, iteration)   the weights were just updated (weight averaging)
            -- running sums --
            at the epoch's last batch:  on_epoch_end(trainer, epoch), then an evaluation
            else every train.eval_every steps: an evaluation
            on_step_end(trainer, step)      after the step and the evaluation it triggered
    on_train_end(trainer, summary)          the run ended normally and summary.json is written

    on_evaluate(trainer, row)               after each evaluation: ``row`` is its metrics row
    on_restore(trainer)                     after a divergence roll-back replaced the state
    on_exit(trainer)                        always last, also after an error: close files

A hook stops the run with ``trainer.request_stop(reason, message)`` (the first request
wins, but an interruption overrides); the loop stops after the step's ``on_step_end``, and at once after
``on_train_start``. ``trainer.epoch_ending`` is true from ``on_epoch_end`` to the end of
that step. What a hook must keep across a resume lives in the TrainState
(nntrain.state), never in the hook, so one checkpoint holds the whole run and hooks are
rebuilt from the config at any time.

Where things go: a feature that reacts to steps or evaluations is a hook here (or in its
own module for an optional dependency: MPI, TensorBoard, Optuna); the loop itself only
steps, sums and evaluates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .rundir import (ITERATION_COLUMNS, METRICS_COLUMNS, STOP_EARLY, STOP_INTERRUPTED, CsvLog,
                     truncate_csv)


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step produced (the values are Python floats, batch means)."""

    iteration: int  # optimizer steps done, this one included
    epoch: float  # iteration / iterations per epoch
    lr: float
    energy: float  # data loss + weight-decay term
    loss: float
    weight_decay: float
    batch_error: float
    batch_size: int
    epoch_end: bool  # the epoch's last step (its evaluation has been done)


class Hook:
    """Base class: every call point does nothing."""

    def on_train_start(self, trainer) -> None:
        pass

    def on_epoch_start(self, trainer, epoch: int) -> None:
        pass

    def on_loss(self, trainer, energy: float) -> None:
        pass

    def on_update(self, trainer, iteration: int) -> None:
        pass

    def on_step_end(self, trainer, step: StepResult) -> None:
        pass

    def on_evaluate(self, trainer, row: dict) -> None:
        pass

    def on_epoch_end(self, trainer, row: dict) -> None:
        pass

    def on_train_end(self, trainer, summary: dict) -> None:
        pass

    def on_restore(self, trainer) -> None:
        pass

    def on_exit(self, trainer) -> None:
        pass


class Hooks:
    """An ordered list of hooks called as one: ``hooks.call("on_step_end", trainer, step)``."""

    def __init__(self, hooks=()):
        self.hooks = list(hooks)

    def __iter__(self):
        return iter(self.hooks)

    def call(self, point: str, *args) -> None:
        for hook in self.hooks:
            getattr(hook, point)(*args)


# ----- the built-in hooks ------------------------------------------------------------------
class WeightAveraging(Hook):
    """train.lookahead and train.ema: average the weights after every step; at each epoch end
    Lookahead sets the weights to its slow ones, so the epoch is evaluated (and ends) with them."""

    def on_update(self, trainer, iteration):
        state = trainer.state
        if state.lookahead is not None:
            state.lookahead.update(iteration)
        if state.ema is not None:
            state.ema.update(iteration)

    def on_epoch_end(self, trainer, epoch):
        if trainer.state.lookahead is not None:
            trainer.state.lookahead.sync()


class TrainUntil(Hook):
    """``params: {NAME: {train_until_epoch: E}}``: the parameter is updated by the first
    round(E x iterations per epoch) optimizer steps only, then frozen (``trainable`` false: no
    update, no decay, out of the energy), as airbench freezes its whitening bias after 3 epochs.
    The flag is a function of the iteration, set again on start (a resumed run) and after a
    roll-back."""

    def __init__(self, params, iters_per_epoch: int):
        self.limits = [(p, round(p.train_until_epoch * iters_per_epoch)) for p in params
                       if p.train_until_epoch is not None]

    def _set(self, iteration: int) -> None:
        for p, last in self.limits:
            p.trainable = iteration < last

    def on_train_start(self, trainer):
        self._set(trainer.state.progress.iteration)

    on_restore = on_train_start

    def on_update(self, trainer, iteration):
        self._set(iteration)


class Diverged(Exception):
    """Raised by DivergenceGuard.on_loss; the loop hands it back to ``DivergenceGuard.recover``."""


class DivergenceGuard(Hook):
    """train.divergence: a NaN/inf energy, or one above ``explode_factor`` x the first batch's,
    rolls the state back to the start of the epoch and multiplies the learning rate by
    ``lr_factor`` (at most ``max_retries`` times), or stops the run (``action: stop``)."""

    def __init__(self, options: dict):
        self.options = options
        self.snapshot = None

    def on_epoch_start(self, trainer, epoch):
        self.snapshot = trainer.state.state_dict()  # copies

    def on_loss(self, trainer, energy):
        progress = trainer.state.progress
        if not math.isfinite(energy):
            raise Diverged(f"diverged: the energy is {energy}")
        if progress.reference_energy is None:
            progress.reference_energy = max(abs(energy), 1e-3)
        elif energy > self.options["explode_factor"] * progress.reference_energy:
            raise Diverged(f"diverged: the energy {energy:.4g} exceeds {self.options['explode_factor']:g} x the "
                           f"first batch's {progress.reference_energy:.4g}")

    def recover(self, trainer, exc: Diverged) -> bool:
        """Roll back and cut the learning rate (True), or give up (False); logs the event."""
        opts, progress = self.options, trainer.state.progress
        if opts["action"] == "stop" or progress.retries >= opts["max_retries"]:
            trainer.event(str(exc))
            return False
        retries, lr_scale = progress.retries + 1, progress.lr_scale * opts["lr_factor"]
        trainer.event(f"{exc}; rolled back to iteration {self.snapshot['meta']['iteration']} and multiplied "
                      f"the learning rate by {opts['lr_factor']} (retry {retries} of {opts['max_retries']})")
        trainer.restore(self.snapshot, keep=("elapsed", "train_seconds"))
        trainer.state.progress.retries, trainer.state.progress.lr_scale = retries, lr_scale
        return True


class BestCheckpoint(Hook):
    """Track the best value of the monitored metric; save checkpoints/best.npz when it improves
    by more than ``min_delta`` (``mode`` min or max). ``progress.bad_evals`` counts the
    evaluations since the best one."""

    def __init__(self, monitor: str, mode: str = "min", min_delta: float = 0.0):
        self.monitor, self.mode, self.min_delta = monitor, mode, min_delta

    def improves(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        if self.mode == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta

    def on_evaluate(self, trainer, row):
        progress = trainer.state.progress
        value = row[self.monitor]
        if self.improves(value, progress.best["value"]):
            progress.best = {"value": value, "epoch": row["epoch"], "iteration": row["iteration"], "metrics": row}
            progress.bad_evals = 0
            trainer.save("best.npz")
        else:
            progress.bad_evals += 1


class EarlyStopping(Hook):
    """train.early_stopping: stop once ``patience`` evaluations in a row did not improve the
    monitored metric (BestCheckpoint counts them), at that very evaluation."""

    def __init__(self, options: dict, monitor: str):
        self.options, self.monitor = options, monitor

    def _check(self, trainer) -> None:
        progress = trainer.state.progress
        if progress.bad_evals >= self.options["patience"]:
            best = progress.best
            trainer.request_stop(STOP_EARLY, f"early stopping: {self.monitor} did not improve by more than "
                                             f"{self.options['min_delta']} for {self.options['patience']} "
                                             f"evaluations (best {best['value']:.6g} at epoch {best['epoch']:g})")

    def on_train_start(self, trainer):  # a resumed run that had already met the condition
        self._check(trainer)

    def on_evaluate(self, trainer, row):
        self._check(trainer)


class Checkpoints(Hook):
    """checkpoints/last.npz at each epoch end (after its evaluation) and every
    ``train.checkpoint_every`` iterations (0: only at epoch ends)."""

    def __init__(self, every: int = 0):
        self.every = every

    def on_step_end(self, trainer, step):
        if step.epoch_end or (self.every and step.iteration % self.every == 0):
            trainer.save("last.npz")


class CsvLogs(Hook):
    """metrics.csv (one row per evaluation) and iterations.csv (every ``log_every`` steps).
    On start and after a roll-back, rows logged past the state's iteration are dropped
    (a killed run may have logged past its last checkpoint)."""

    def __init__(self, log_every: int = 1):
        self.log_every = log_every
        self.metrics = self.iterations = None

    def _open(self, trainer) -> None:
        self.close()
        iteration = trainer.state.progress.iteration
        for name in ("metrics.csv", "iterations.csv"):
            truncate_csv(trainer.run_dir / name, iteration)
        self.metrics = CsvLog(trainer.run_dir / "metrics.csv", METRICS_COLUMNS)
        self.iterations = CsvLog(trainer.run_dir / "iterations.csv", ITERATION_COLUMNS)

    on_train_start = on_restore = _open

    def on_step_end(self, trainer, step):
        if step.iteration % self.log_every == 0:
            self.iterations.write({"iteration": step.iteration, "epoch": step.epoch, "lr": step.lr,
                                   "energy": step.energy, "loss": step.loss, "batch_error": step.batch_error})

    def on_evaluate(self, trainer, row):
        self.metrics.write(row)

    def close(self, trainer=None) -> None:
        for log in (self.metrics, self.iterations):
            if log is not None:
                log.close()
        self.metrics = self.iterations = None

    on_exit = close


class ConsoleLog(Hook):
    """One line per epoch (and the test result) through ``trainer.out``."""

    def on_evaluate(self, trainer, row):
        if not trainer.epoch_ending:
            return
        val = "" if row["val_error"] is None else f"  val_loss {row['val_loss']:.4f}  val_error {row['val_error']:.4f}"
        trainer.out(f"epoch {row['epoch']:g}/{trainer.total_iterations / trainer.iters_per_epoch:g}  "
                    f"energy {row['energy']:.4f}  train_error {row['train_error']:.4f}{val}  "
                    f"lr {row['lr']:.3g}  {row['seconds']:.1f}s")


class ProgressBar(Hook):
    """A tqdm bar per epoch on a terminal (stderr), with the batch energy and error."""

    def __init__(self):
        self.bar = None

    def on_epoch_start(self, trainer, epoch):
        from tqdm import tqdm

        start = trainer.state.progress.iteration - epoch * trainer.iters_per_epoch
        total = min(trainer.iters_per_epoch, trainer.total_iterations - epoch * trainer.iters_per_epoch)
        self.bar = tqdm(total=total, initial=start, desc=f"epoch {epoch + 1}", leave=False, unit="it",
                        dynamic_ncols=True, mininterval=0.5)

    def on_step_end(self, trainer, step):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(energy=f"{step.energy:.4f}", err=f"{step.batch_error:.3f}", refresh=False)

    def on_epoch_end(self, trainer, epoch):
        self.on_exit(trainer)

    def on_exit(self, trainer):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class StopAtIteration(Hook):
    """Behave like a Ctrl-C arriving just after ``iteration`` (for tests and the Python API)."""

    def __init__(self, iteration: int):
        self.iteration = iteration

    def on_step_end(self, trainer, step):
        if step.iteration == self.iteration:
            trainer.request_stop(STOP_INTERRUPTED, "stop requested")
