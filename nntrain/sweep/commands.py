"""The trials still to run as commands: what each needs (resume or a fresh start), its
``nntrain fit`` command line, and the files for other executors::

    SWEEP/commands.txt   one shell command per trial still to run (--print-commands):
                         cd to where the sweep was made, the environment it needs
                         (PYTHONPATH, threads per worker), then python -m nntrain.cli fit ...
    SWEEP/sweep.slurm    a Slurm job array over commands.txt (--emit slurm): task i runs line i+1

The local runner (``nntrain.sweep.runner``) starts the same ``fit`` command lines.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from ..ops.parallel import available_cores
from ..rundir import STATE_FINISHED, STATE_RUNNING, STOP_DIVERGED, clear_unstarted_run, trial_state
from .manifest import SweepLock
from .plan import Sweep, Trial, sanitise

COMMANDS = "commands.txt"
SLURM_SCRIPT = "sweep.slurm"
# threads per worker: nntrain's own pool (nntrain.ops.parallel) and the BLAS libraries'; all four, or a
# worker would still start a pool as large as the machine and -j workers would oversubscribe the cores
THREAD_VARIABLES = ("NNTRAIN_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# ----- what a trial needs ------------------------------------------------------------------
def next_action(run_dir, record: dict | None = None) -> str | None:
    """What a trial needs: None (finished, running, or diverged: training is deterministic,
    it would diverge again), "resume" (it has a checkpoint) or "fresh"."""
    status, detail = trial_state(run_dir, record)
    if status in (STATE_FINISHED, STATE_RUNNING) or detail == STOP_DIVERGED:
        return None
    return "resume" if (Path(run_dir) / "checkpoints" / "last.npz").is_file() else "fresh"


def prepare_fresh(run_dir: Path) -> None:
    """``fit --run-dir`` needs a new or empty directory: clear one that failed before its first
    checkpoint (only files nntrain writes; anything else is an error naming it)."""
    if run_dir.is_dir() and any(run_dir.iterdir()):
        clear_unstarted_run(run_dir)


# ----- command lines -----------------------------------------------------------------------
def blas_threads(jobs: int, cores: int | None = None) -> int:
    """Threads per worker (nntrain's and BLAS's) so that workers x threads <= cores (at least 1)."""
    cores = cores or available_cores()
    return max(1, cores // max(1, jobs))


def package_path() -> str | None:
    """The folder to put on PYTHONPATH so a child ``python -m nntrain.cli`` finds this nntrain
    (None when it is installed in site-packages, where every interpreter of the environment finds it)."""
    import site

    root = Path(__file__).resolve().parents[2]  # nntrain/sweep/commands.py -> the folder holding nntrain
    installed = {Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()]}
    return None if root in installed else str(root)


def fit_argv(sweep: Sweep, trial: Trial, resume: bool | None) -> list[str]:
    """The ``nntrain fit`` command line of a trial (absolute paths): a fresh start, a resume,
    or (``resume=None``) ``--resume-if-exists``, right however often it runs (printed commands,
    requeued Slurm tasks): it starts, resumes or reports the trial as its directory says."""
    head = [sys.executable, "-m", "nntrain.cli", "fit"]
    if resume:
        return [*head, "--resume", str(sweep.run_dir(trial)), "--quiet"]
    sets = [a for s in sweep.sets + trial.overrides for a in ("--set", s)]
    tail = ["--resume-if-exists"] if resume is None else []
    return [*head, str(sweep.config), *sets, "--run-dir", str(sweep.run_dir(trial)), *tail, "--quiet"]


def shell_command(sweep: Sweep, trial: Trial, resume: bool | None, threads: int | None = None) -> str:
    """One complete shell command: cd to where the sweep was made (relative data paths), the
    environment it needs, then ``python -m nntrain.cli fit ...``; every word shlex-quoted."""
    env = []
    pkg = package_path()
    if pkg:
        env.append(f"PYTHONPATH={shlex.quote(pkg)}")
    if threads:
        env += [f"{name}={threads}" for name in THREAD_VARIABLES]
    return " ".join([f"cd {shlex.quote(os.getcwd())} &&", *env, shlex.join(fit_argv(sweep, trial, resume))])


# ----- commands.txt and sweep.slurm ---------------------------------------------------------
def pending_commands(sweep: Sweep, threads: int | None = None) -> tuple[list[tuple[Trial, str]], dict[str, int]]:
    """Commands for the trials still to run, and counts by status. Each command is
    ``fit ... --resume-if-exists``: run again after a preemption or a requeue, it resumes
    its trial (or starts it over if it stopped before its first checkpoint, or reports it
    finished) instead of failing on a non-empty run directory."""
    out, counts = [], {}
    sweep.directory.mkdir(parents=True, exist_ok=True)
    with SweepLock(sweep.directory):  # not while a local runner works on this sweep
        for trial in sweep.trials:
            run_dir = sweep.run_dir(trial)
            status, _ = trial_state(run_dir, trial.record)
            trial.record["status"] = status
            counts[status] = counts.get(status, 0) + 1
            if next_action(run_dir, trial.record):
                out.append((trial, shell_command(sweep, trial, None, threads)))
    return out, counts


def write_commands(sweep: Sweep, commands: list[tuple[Trial, str]]) -> Path:
    """SWEEP/commands.txt: one command a line (empty when nothing is left to run)."""
    from ..fileio import atomic_open

    path = sweep.directory / COMMANDS
    with atomic_open(path, "w") as f:
        f.write("".join(cmd + "\n" for _, cmd in commands))
    return path


def write_slurm(sweep: Sweep, n: int, cpus: int = 2) -> Path:
    """``SWEEP/sweep.slurm``: array task i runs line i+1 of commands.txt."""
    from ..fileio import atomic_open

    commands = sweep.directory / COMMANDS
    logs = sweep.directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    text = f"""#!/bin/bash
# nntrain sweep {sweep.name}: one trial per array task; task i runs line i+1 of
#   {commands}
# Submit with: sbatch {sweep.directory / SLURM_SCRIPT}   (add --partition, --time, --mem for your cluster)
# Each command uses `fit --resume-if-exists`, so a preempted or requeued task (sbatch --requeue)
# resumes its trial from its last checkpoint. Running the same `nntrain sweep ... --emit slurm`
# again rewrites commands.txt with only the trials still to run, and this array.
#SBATCH --job-name=nntrain-{sanitise(sweep.name)}
#SBATCH --array=0-{n - 1}
#SBATCH --cpus-per-task={cpus}
#SBATCH --output={logs}/slurm-%A_%a.log
set -euo pipefail
export {' '.join(f'{v}="${{SLURM_CPUS_PER_TASK:-1}}"' for v in THREAD_VARIABLES)}
line=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(str(commands))})
if [ -z "$line" ]; then
    echo "no command on line $((SLURM_ARRAY_TASK_ID + 1)) of {commands}" >&2
    exit 2
fi
echo "$line"
exec bash -c "$line"
"""
    path = sweep.directory / SLURM_SCRIPT
    with atomic_open(path, "w") as f:
        f.write(text)
    path.chmod(0o755)
    return path
