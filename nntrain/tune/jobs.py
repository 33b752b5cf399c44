"""``--jobs J``: J ``tune`` worker processes on one study, each with cores / J threads.

Each worker is ``python -m nntrain.cli tune ... --jobs 1 --quiet`` (the same command, so
it is exactly another process sharing the study: the claiming rules of nntrain.tune.worker
keep the workers apart), with NNTRAIN_THREADS and the BLAS thread variables set as
``sweep`` sets them, ``--seed S+k`` for worker k, its output in STUDY/logs/worker-k.log and
its own session: a terminal's Ctrl-C reaches only this process, which forwards exactly one
SIGINT per signal to each worker (each saves its trial's checkpoint). Meanwhile this
process prints a line for each trial that ends, read from the study.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time

from ..errors import EXIT_INTERRUPTED, EXIT_OK
from .study import Tune


def worker_argv(tune: Tune, worker: int) -> list[str]:
    """The command line of worker ``worker``: this tune with one job, quiet."""
    argv = [sys.executable, "-m", "nntrain.cli", "tune", str(tune.config)]
    argv += [a for s in tune.sets for a in ("--set", s)]
    argv += [a for key, dist in tune.space for a in ("--param", f"{key}={dist.text}")]
    argv += ["--trials", str(tune.trials), "--jobs", "1", "--study-dir", str(tune.directory), "--storage",
             tune.storage, "--sampler", tune.sampler, "--pruner", tune.pruner, "--monitor", tune.monitor,
             "--startup-trials", str(tune.startup), "--quiet"]
    if tune.seed is not None:
        argv += ["--seed", str(tune.seed + worker)]
    return argv


def run_jobs(tune: Tune, study, jobs: int, *, echo=print, poll: float = 0.5) -> int:
    """Run ``jobs`` worker processes on the (opened, so checked) study until they end; the
    exit code (130 if a stop signal came, else the first worker's failure, else 0)."""
    from ..sweep.commands import THREAD_VARIABLES, blas_threads, package_path
    from ..sweep.manifest import now

    threads = blas_threads(jobs)
    env = dict(os.environ, **{name: str(threads) for name in THREAD_VARIABLES})
    if package_path():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_path(), os.environ.get("PYTHONPATH")) if p)
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    (tune.directory / "logs").mkdir(parents=True, exist_ok=True)
    logs, workers = [], []
    for k in range(jobs):
        argv = worker_argv(tune, k)
        log = open(tune.directory / "logs" / f"worker-{k}.log", "a")
        log.write(f"=== {now()} {shlex.join(argv)}\n")
        log.flush()
        logs.append(log)
        workers.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=env, start_new_session=True))
    signals = _wait(workers, lambda: _echo_new(study, tune, seen, echo), poll)
    for log in logs:
        log.close()
    _echo_new(study, tune, seen, echo, interrupted=True)
    if signals:
        return EXIT_INTERRUPTED
    return _first_failure(tune, workers, echo)


def _wait(workers: list, tick, poll: float) -> list:
    """Call ``tick`` every ``poll`` s until every worker has exited, forwarding each SIGINT /
    SIGTERM / SIGHUP received as one SIGINT to every worker still running; the signals."""
    signals = []
    stoppers = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {s: signal.signal(s, lambda signum, frame: signals.append(signum)) for s in stoppers}
    sent = [0] * len(workers)
    try:
        while any(w.poll() is None for w in workers):
            for i, w in enumerate(workers):
                while sent[i] < len(signals) and w.poll() is None:
                    w.send_signal(signal.SIGINT)  # the worker saves its trial's checkpoint; a second one aborts
                    sent[i] += 1
            tick()
            time.sleep(poll)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for w in workers:  # only if this loop itself failed
            if w.poll() is None:
                w.send_signal(signal.SIGINT)
                w.wait()
    return signals


def _echo_new(study, tune: Tune, seen: set, echo, interrupted: bool = False) -> None:
    """A line for each trial that ended since the last call (and, at the end, each interrupted one)."""
    from .report import trial_line

    for t in study.get_trials(deepcopy=False):
        ended = t.state.is_finished() or (interrupted and t.user_attrs.get("interrupted"))
        if ended and t.number not in seen:
            seen.add(t.number)
            echo(trial_line(t, tune))


def _first_failure(tune: Tune, workers: list, echo) -> int:
    from ..sweep.runner import last_error

    for k, w in enumerate(workers):
        if w.returncode not in (EXIT_OK, EXIT_INTERRUPTED):
            echo(f"worker {k} failed (exit {w.returncode}): {last_error(tune.directory / 'logs' / f'worker-{k}.log')}")
            return w.returncode
    return EXIT_OK
