"""The local runner: the trials still to run, ``jobs`` at a time, each a ``nntrain fit``
worker process with its output in SWEEP/logs/<trial>.log.

Each worker runs in its own session, so a terminal's Ctrl-C reaches only this runner,
which forwards exactly one SIGINT to each worker (a second one would make fit abort
without its checkpoint). The manifest is rewritten whenever a worker starts or ends.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ..errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUN_FAILED
from ..ops.parallel import available_cores
from ..rundir import (STATE_FAILED, STATE_FINISHED, STATE_INTERRUPTED, STATE_PENDING, STATE_RUNNING, STOP_DIVERGED,
                      read_summary, trial_state)
from .commands import THREAD_VARIABLES, blas_threads, fit_argv, next_action, package_path, prepare_fresh
from .manifest import SweepLock, now, write_manifest
from .plan import Sweep, Trial


@dataclass
class Worker:
    """A trial being run: its ``fit`` process, its open log, and the SIGINTs forwarded to it."""

    process: subprocess.Popen
    trial: Trial
    log: IO[str]
    signals_sent: int = 0


def run_local(sweep: Sweep, jobs: int = 1, *, quiet: bool = False, echo=None, poll: float = 0.1) -> int:
    """Run the trials still to run with ``jobs`` worker processes; the exit code (0 all finished).

    Each worker is ``python -m nntrain.cli fit ...`` with its threads (NNTRAIN_THREADS and
    OMP / OpenBLAS / MKL) set to cores // jobs. Finished trials are skipped; interrupted
    ones resumed; one that failed before its first checkpoint is cleared and started
    again; a diverged one is reported, not re-run. SIGINT / SIGTERM / SIGHUP stop the
    workers (they save checkpoints) and return 130; running the same sweep again continues it.
    """
    from .. import validate as v

    echo = echo or (lambda text: print(text, flush=True))
    jobs = v.positive_int(jobs, "--jobs")
    cores = available_cores()
    threads = blas_threads(jobs, cores)
    env = dict(os.environ, **{name: str(threads) for name in THREAD_VARIABLES})
    pkg = package_path()
    if pkg:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg, os.environ.get("PYTHONPATH")) if p)
    sweep.directory.mkdir(parents=True, exist_ok=True)
    (sweep.directory / "logs").mkdir(exist_ok=True)
    with SweepLock(sweep.directory):
        queue = []
        for trial in sweep.trials:  # "running": a worker of an earlier runner that was killed still runs
            trial.record["status"] = trial_state(sweep.run_dir(trial), trial.record)[0]
            action = next_action(sweep.run_dir(trial), trial.record)
            if action is None:
                echo(f"[skip] {result_line(sweep, trial)}")
            else:
                queue.append((trial, action))
        write_manifest(sweep)
        if not quiet:
            note = " (more workers than cores: trials will compete)" if jobs > cores else ""
            echo(f"sweep {sweep.directory}: {len(sweep.trials)} trials, {len(queue)} to run; {jobs} worker(s) x "
                 f"{threads} BLAS thread(s) on {cores} core(s){note}; logs in {sweep.directory / 'logs'}")
        interrupted = _run_queue(sweep, queue, jobs, env, quiet=quiet, echo=echo, poll=poll)
        statuses = [trial_state(sweep.run_dir(t), t.record)[0] for t in sweep.trials]
        for trial, status in zip(sweep.trials, statuses):
            trial.record["status"] = status
        write_manifest(sweep)
    counts = {s: statuses.count(s) for s in dict.fromkeys(statuses)}
    echo(f"sweep {sweep.directory}: {', '.join(f'{n} {s}' for s, n in counts.items())}; "
         f"table: nntrain compare {shlex.quote(str(sweep.directory))}")
    if interrupted:
        echo("interrupted: run the same nntrain sweep command again to continue")
        return EXIT_INTERRUPTED
    return EXIT_OK if counts.get(STATE_FINISHED, 0) == len(statuses) else EXIT_RUN_FAILED


def _run_queue(sweep: Sweep, queue: list[tuple[Trial, str]], jobs: int, env: dict, *, quiet: bool, echo,
               poll: float) -> bool:
    """Start the queued trials, at most ``jobs`` at once, until all have ended; whether a
    stop signal came (then nothing new starts and each worker gets one SIGINT per signal)."""
    signals = []  # SIGINT / SIGTERM / SIGHUP received; the loop forwards each one to every worker
    running: dict[str, Worker] = {}

    def on_signal(signum, frame):
        signals.append(signum)

    stoppers = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {s: signal.signal(s, on_signal) for s in stoppers}
    try:
        while queue or running:
            while queue and len(running) < jobs and not signals:
                trial, action = queue.pop(0)
                running[trial.id] = _launch(sweep, trial, action, env)
                if not quiet:
                    echo(f"[start] {trial.id}{' (resume)' if action == 'resume' else ''}")
                write_manifest(sweep)
            if signals:
                queue.clear()
            for worker in running.values():
                while worker.signals_sent < len(signals) and worker.process.poll() is None:
                    worker.process.send_signal(signal.SIGINT)  # fit saves a checkpoint; a second one aborts
                    worker.signals_sent += 1
            done = [tid for tid, worker in running.items() if worker.process.poll() is not None]
            for tid in done:
                worker = running.pop(tid)
                _record_end(sweep, worker)
                echo(result_line(sweep, worker.trial))
            if not done:
                time.sleep(poll)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for worker in running.values():  # only if this loop itself failed
            worker.process.send_signal(signal.SIGINT)
            worker.process.wait()
            worker.log.close()
    return bool(signals)


def _launch(sweep: Sweep, trial: Trial, action: str, env: dict) -> Worker:
    """Start ``fit`` for a trial ("fresh" or "resume"), its output appended to its log."""
    if action == "fresh":
        prepare_fresh(sweep.run_dir(trial))
    argv = fit_argv(sweep, trial, resume=action == "resume")
    log = open(sweep.log_path(trial), "a")
    log.write(f"=== {now()} {shlex.join(argv)}\n")
    log.flush()
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                               start_new_session=True)
    trial.record.update(status=STATE_RUNNING, exit_code=None, pid=process.pid, host=socket.gethostname(),
                        started=now(), ended=None)
    return Worker(process, trial, log)


def _record_end(sweep: Sweep, worker: Worker) -> None:
    """Record an ended worker's state and exit code in the manifest."""
    worker.log.close()
    trial, code = worker.trial, worker.process.returncode
    status, _ = trial_state(sweep.run_dir(trial))
    if code == EXIT_INTERRUPTED and status in (STATE_PENDING, STATE_FAILED):
        status = STATE_INTERRUPTED  # stopped before training started: nothing to resume
    elif code and status == STATE_PENDING:
        status = STATE_FAILED  # e.g. a data error: the directory stayed empty
    trial.record.update(status=status, exit_code=code, ended=now())
    trial.record.pop("pid", None)
    trial.record.pop("host", None)
    write_manifest(sweep)


def result_line(sweep: Sweep, trial: Trial) -> str:
    """``finished     lr=0.1_batch_size=64   val_error 0.0420 @ epoch 5  test_error 0.0410  ...``."""
    status, detail = trial_state(sweep.run_dir(trial), trial.record)
    summary = read_summary(sweep.run_dir(trial)) or {}
    width = max(len(t.id) for t in sweep.trials)
    parts = [f"{status:<11}", f"{trial.id:<{width}}"]
    if status == STATE_FINISHED or detail == STOP_DIVERGED:
        best = summary.get("best") or {}
        if best.get("val_error") is not None:
            parts.append(f"val_error {best['val_error']:.4f} @ epoch {best.get('epoch', 0):.4g}")
        if (summary.get("test") or {}).get("error") is not None:
            parts.append(f"test_error {summary['test']['error']:.4f}")
        parts.append(f"{summary.get('stop_reason')}, {summary.get('wall_time_s', 0):.1f}s")
    else:
        code = trial.record.get("exit_code")
        if code not in (None, 0) and not detail.startswith("exit"):
            parts.append(f"exit {code}")
        if detail:
            parts.append(detail)
        if status == STATE_FAILED or code not in (None, EXIT_OK, EXIT_INTERRUPTED):
            parts.append(last_error(sweep.log_path(trial)))
    return "  ".join(p for p in parts if p)


def last_error(log: Path) -> str:
    """The last ``error:`` line of the trial's latest attempt in its log (else its last line)."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    starts = [i for i, ln in enumerate(lines) if ln.startswith("=== ")]
    lines = lines[starts[-1] + 1:] if starts else lines  # this attempt only
    errors = [ln for ln in lines if ln.startswith("error:")] or lines[-1:]
    return f"{errors[-1] if errors else 'no output'} (log: {log})"
