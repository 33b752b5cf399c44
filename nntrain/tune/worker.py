"""One ``tune`` process: claim a trial, train it in this process, tell the study; again
until the study has its trials.

Claiming (under STUDY/locks/study.lock, so processes sharing the study directory never
take one trial twice nor ask for more than ``--trials``)::

    complete + pruned >= N                       done
    a RUNNING trial whose lock can be taken       its process is gone (Ctrl-C, kill, crash):
                                                 take it over and resume its run directory
    complete + pruned + running < N              study.ask() a new trial (the sampler draws)
    otherwise                                    wait: the last trials run elsewhere (one
                                                 may still fail and need replacing)

A claimed trial's lock (STUDY/locks/trial-NNNN.lock) is held while it trains, and the
kernel drops it when the process dies, so a lock that can be taken marks an orphan. A
RUNNING trial that has no run directory yet lost its process between ``ask`` and the
claim (the study lock was free): it is marked FAIL. A trial whose process died
``MAX_CRASHES`` times (not counting Ctrl-C) is marked FAIL rather than retried forever.

Each trial is ``nntrain fit CONFIG --set ... --run-dir STUDY/trial-NNNN --resume-if-exists``
done in this process with the OptunaPruning hook: it starts, resumes, finishes the summary
of, or reads the result of its run directory. Told to the study: COMPLETE with the lowest
``--monitor`` value of the run (finished, early stopping, max_iterations), PRUNED, or FAIL
(diverged: the study goes on and draws another trial; an error such as a data or config
problem: the process stops with its message, as every trial would meet it). An interrupted
run stays RUNNING, to be resumed. More failed trials than ``--trials`` stop the process
(exit 1) rather than draw forever.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUN_FAILED, ConfigError, NNTrainError
from .study import FileLock, Tune, study_lock

MAX_CRASHES = 3


@dataclass
class Claim:
    """A trial this process will train: the Optuna trial, its run directory name, its held lock."""

    trial: object  # optuna.trial.Trial
    name: str
    lock: FileLock
    reported: set = field(default_factory=set)  # steps the trial already has (a take-over)


def run_worker(tune: Tune, study, *, echo=print, poll: float = 1.0) -> int:
    """Train trials until the study has ``tune.trials`` complete or pruned ones; the exit code:
    0; 130 after Ctrl-C / SIGTERM (the running trial keeps its checkpoint and resumes next
    time); 1 when more trials failed (diverged) than were asked for."""
    from .report import trial_line

    with _stop_signals() as stopping:
        while not stopping:
            claim = _claim(study, tune)
            if claim == DONE:
                return EXIT_OK
            if claim == FAILING:
                echo(f"stopping: more than {tune.trials} trials failed (see their run directories' events.log)")
                return EXIT_RUN_FAILED
            if claim == WAIT:
                time.sleep(poll)
                continue
            frozen = run_trial(study, tune, claim)
            echo(trial_line(frozen, tune))
            if frozen.state.name == "RUNNING":  # interrupted: stop here, as fit does
                return EXIT_INTERRUPTED
    return EXIT_INTERRUPTED


DONE, WAIT, FAILING = "done", "wait", "failing"


def _claim(study, tune: Tune):
    """A Claim, or DONE / WAIT / FAILING (see the module docstring)."""
    import optuna
    from optuna.trial import TrialState

    with study_lock(tune.directory):
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        if done >= tune.trials:
            return DONE
        if sum(t.state == TrialState.FAIL for t in trials) > tune.trials:
            return FAILING
        alive = 0
        for frozen in (t for t in trials if t.state == TrialState.RUNNING):
            name = frozen.user_attrs.get("run_dir")
            if name is None:  # its process died between ask() and claiming it
                study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)
                continue
            lock = FileLock(tune.directory / "locks" / f"{name}.lock")
            if not lock.acquire(wait=False):
                alive += 1
                continue
            frozen = _still_running(study, frozen.number)  # read again now that its lock is held
            if frozen is None:  # its owner told the study (then let go) after our first read
                lock.release()
                continue
            # FrozenTrial has no public id; Trial(study, id) continues a RUNNING trial as ask() made it
            trial = optuna.trial.Trial(study, frozen._trial_id)
            crashes = frozen.user_attrs.get("crashes", 0) + (not frozen.user_attrs.get("interrupted", False))
            if crashes >= MAX_CRASHES:
                trial.set_user_attr("error", f"its process died {crashes} times")
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                lock.release()
                continue
            _own(trial, name, crashes)
            return Claim(trial, name, lock, set(frozen.intermediate_values))
        if done + alive >= tune.trials:
            return WAIT
        trial = study.ask()
        name = f"trial-{trial.number:04d}"
        lock = FileLock(tune.directory / "locks" / f"{name}.lock")
        lock.acquire(wait=True)
        _own(trial, name, 0)
        return Claim(trial, name, lock)


def _still_running(study, number: int):
    """The trial as stored now if it is still RUNNING, else None (an owner tells the study
    before it releases the trial's lock, so once the lock is held this read is final)."""
    from optuna.trial import TrialState

    return next((t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.number == number),
                None)


def _own(trial, name: str, crashes: int) -> None:
    for key, value in (("run_dir", name), ("host", socket.gethostname()), ("pid", os.getpid()), ("crashes", crashes),
                       ("interrupted", False)):
        trial.set_user_attr(key, value)


def run_trial(study, tune: Tune, claim: Claim):
    """Train the claimed trial (start / resume / finish / read its run directory), tell the
    study, then release the trial's lock; the trial as stored afterwards (a FrozenTrial).
    An error (config, data, disk) fails the trial and is raised: every trial would meet it."""
    try:
        return _train_and_tell(study, tune, claim)
    finally:
        claim.lock.release()  # after telling: a free lock on a RUNNING trial means an orphan


def _train_and_tell(study, tune: Tune, claim: Claim):
    from optuna.trial import TrialState

    from ..rundir import COMPLETED_STOPS, STOP_INTERRUPTED, STOP_PRUNED

    trial = claim.trial
    try:
        summary = _train(tune, claim)
    except NNTrainError as exc:
        trial.set_user_attr("error", str(exc))
        study.tell(trial, state=TrialState.FAIL)
        raise
    except KeyboardInterrupt:  # a second Ctrl-C: leave the trial RUNNING, to be taken over
        trial.set_user_attr("interrupted", True)
        raise
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    stop = summary["stop_reason"]
    if stop == STOP_INTERRUPTED:
        trial.set_user_attr("interrupted", True)
        return _frozen(study, trial)
    if stop == STOP_PRUNED:
        return study.tell(trial, state=TrialState.PRUNED)
    value = best_value(tune.directory / claim.name, tune.monitor)
    if stop in COMPLETED_STOPS and value is not None:
        return study.tell(trial, value)
    trial.set_user_attr("error", stop if stop not in COMPLETED_STOPS else f"no finite {tune.monitor} in metrics.csv")
    return study.tell(trial, state=TrialState.FAIL)


def _frozen(study, trial):
    return next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)


def _train(tune: Tune, claim: Claim) -> dict:
    """``fit --run-dir STUDY/<name> --resume-if-exists`` in this process, with the pruning hook."""
    from .. import launch as plan_
    from ..experiment import build_experiment
    from ..rundir import read_summary
    from ..train import Trainer
    from .pruning import OptunaPruning
    from .space import trial_overrides

    run_dir = tune.directory / claim.name
    launch = plan_.plan(tune.config, tune.sets + trial_overrides(claim.trial, tune.space), run_dir=run_dir,
                        resume_if_exists=True)
    if launch.action == plan_.ENDED:  # its process ended the run but died before telling the study
        return read_summary(run_dir)
    path = plan_.start(launch, None) if launch.action == plan_.START else launch.run_dir
    ckpt = launch.checkpoint
    exp = build_experiment(launch.config, normalizer_state=ckpt.group("norm") if ckpt else None)
    if tune.monitor.startswith("val_") and not (exp.data.val is not None and len(exp.data.val)):
        raise ConfigError(f"--monitor {tune.monitor} needs a validation split, but data.validation is 0")
    hook = OptunaPruning(claim.trial, tune.monitor, claim.reported)
    trainer = Trainer(exp, path, quiet=True, resume=launch.action != plan_.START, hooks=[hook],
                      command=f"{tune.command}  # trial {claim.trial.number}")
    if launch.action == plan_.FINISH:
        return trainer.finalize(ckpt.meta["stop_reason"])
    return trainer.run()


def best_value(run_dir: Path, monitor: str) -> float | None:
    """The trial's value: the lowest finite ``monitor`` in its metrics.csv (None if none)."""
    from ..rundir import read_csv

    values = [r[monitor] for r in read_csv(run_dir / "metrics.csv") if isinstance(r.get(monitor), (int, float))]
    values = [float(x) for x in values if math.isfinite(x)]
    return min(values) if values else None


class _Flag:
    def __init__(self):
        self.raised = False

    def __bool__(self):
        return self.raised


@contextlib.contextmanager
def _stop_signals():
    """Between trials, Ctrl-C / SIGTERM stop the loop before the next claim (a second one
    aborts); during a trial the Trainer's own handler saves a checkpoint and stops it."""
    flag = _Flag()

    def handler(signum, frame):
        if flag.raised:
            raise KeyboardInterrupt
        flag.raised = True
        print(f"\n{signal.Signals(signum).name}: stopping after this step (again to abort)", file=sys.stderr,
              flush=True)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


__all__ = ["Claim", "MAX_CRASHES", "best_value", "run_trial", "run_worker"]
