"""Sweeps: many runs of one experiment with some keys varied, on one machine or a cluster.

A sweep is a config file, fixed ``--set`` overrides, and a list of *trials*; each trial
is a list of extra overrides (``optimizer.lr=0.01``) and one run directory::

    --grid optimizer.lr=0.1,0.01 --grid train.batch_size=64,128   the Cartesian product
                                                                  (first key slowest)
    --random 20 --seed 0 --param "optimizer.lr=loguniform(1e-4,1e-1)"
                                                                  20 random draws
    both                                                          each draw x each grid point

Values are YAML, parsed exactly as ``--set`` parses them: the trial's override text is
passed to ``nntrain fit --set`` unchanged. Random draws are rounded to 4 significant
digits (so names and commands stay readable) and are a pure function of ``--seed``.

On disk::

    SWEEP/manifest.json      format, config, fixed overrides, grid / random spec, and per
                             trial: id, overrides, run_dir (relative), status, exit code
    SWEEP/commands.txt       one shell command per trial still to run (--print-commands)
    SWEEP/sweep.slurm        a Slurm job array over commands.txt (--emit slurm)
    SWEEP/logs/<trial>.log   the trial's output (local runner)
    SWEEP/<trial>/           the trial's run directory (see nntrain.rundir)

The run directory is the truth about a trial's state (``nntrain.rundir.trial_state``);
the manifest records what the runner saw.

Modules, one job each (``plan`` <- ``manifest``; ``commands`` <- both; ``runner`` <- all):

    plan.py       parse --grid / --param, expand into trials, name them, check every
                  trial's config up front (``plan_sweep``)
    manifest.py   SWEEP/manifest.json and the lock that keeps two runners off one sweep
    commands.py   what each trial needs next, its ``fit`` command line, commands.txt, sweep.slurm
    runner.py     the local runner: ``jobs`` worker processes, signals, result lines
"""

from __future__ import annotations

from .commands import (COMMANDS, SLURM_SCRIPT, THREAD_VARIABLES, blas_threads, fit_argv, next_action,
                       pending_commands, prepare_fresh, shell_command, write_commands, write_slurm)
from .manifest import MANIFEST, SweepLock, load_manifest, write_manifest
from .plan import (DISTRIBUTIONS, MAX_NAME, Distribution, Sweep, Trial, expand, float_text, parse_grid, parse_param,
                   plan_sweep, short_keys, split_values, trial_ids)
from .runner import result_line, run_local

__all__ = ["COMMANDS", "DISTRIBUTIONS", "MANIFEST", "MAX_NAME", "SLURM_SCRIPT", "THREAD_VARIABLES", "Distribution",
           "Sweep", "SweepLock", "Trial", "blas_threads", "expand", "fit_argv", "float_text", "load_manifest",
           "next_action", "parse_grid", "parse_param", "pending_commands", "plan_sweep", "prepare_fresh",
           "result_line", "run_local", "shell_command", "short_keys", "split_values", "trial_ids", "write_commands",
           "write_manifest", "write_slurm"]
