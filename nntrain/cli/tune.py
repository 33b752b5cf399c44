"""``nntrain tune``: hyperparameter search with Optuna (nntrain.tune does the work).

Only click and the standard library are imported here (and nntrain.tune's constants);
Optuna and numpy are imported when the command runs.
"""

from __future__ import annotations

import shlex
import sys

import click

from ..tune import MONITORS, PRUNERS, SAMPLERS
from .common import EXIT_INTERRUPTED, POSITIVE_INT, debug_option, handle_errors, set_option


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--param", "params", multiple=True, metavar="KEY=DIST",
              help="A key to tune and its range, as for sweep: uniform(a,b), loguniform(a,b), int(a,b), "
                   "logint(a,b), choice(v1,v2,...) (repeatable).")
@set_option
@click.option("--trials", type=POSITIVE_INT, default=20, show_default=True,
              help="Complete + pruned trials the study should have; running the command again continues "
                   "the study until it has them.")
@click.option("--jobs", "-j", type=POSITIVE_INT, default=1, show_default=True,
              help="Worker processes, each with cores/jobs threads (NNTRAIN_THREADS and BLAS).")
@click.option("--study-dir", type=click.Path(file_okay=False),
              help="Where the trials' run directories go [default: sweeps/<name>-tune]; the Optuna study is "
                   "named after it.")
@click.option("--storage", metavar="URL",
              help="Optuna storage [default: sqlite:///STUDY/study.db]: any RDB URL (postgresql://..., "
                   "mysql://...) or journal:PATH (a journal file, for a shared file system).")
@click.option("--sampler", type=click.Choice(SAMPLERS), default="tpe", show_default=True,
              help="How trials are proposed (cmaes needs the cmaes package).")
@click.option("--pruner", type=click.Choice(PRUNERS), default="median", show_default=True,
              help="How hopeless trials are stopped (asha: successive halving).")
@click.option("--monitor", type=click.Choice(MONITORS), default="val_error", show_default=True,
              help="The metrics.csv column minimised: reported after every evaluation; a trial's value is "
                   "its lowest.")
@click.option("--startup-trials", type=click.IntRange(min=0), default=5, show_default=True,
              help="Trials before the sampler models the results and the median pruner prunes.")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Seed of the sampler (worker k of --jobs uses seed+k) [default: random].")
@click.option("--quiet", "-q", is_flag=True, help="Only a line per trial and the best trial.")
@debug_option
@handle_errors
def tune(config, params, overrides, trials, jobs, study_dir, storage, sampler, pruner, monitor, startup_trials,
         seed, quiet, debug):
    """Search hyperparameters of CONFIG with Optuna (pip install 'nntrain[tune]').

    \b
    nntrain tune configs/mnist_mlp.yaml --param "optimizer.lr=loguniform(1e-3,0.3)" \\
        --param "optimizer.momentum=uniform(0.5,0.99)" --trials 30 --jobs 2

    Each trial is a `nntrain fit` run directory STUDY/trial-NNNN (compare, plot and eval work
    on it). The monitored metric is reported after every evaluation and the pruner stops
    hopeless trials (stop reason `pruned`). The study is stored in STUDY/study.db, or
    --storage: several `tune` processes, on this machine or others sharing the study
    directory, work on one study without running a trial twice. Run the same command
    again to continue: an interrupted trial resumes from its checkpoint. At the end (and
    on Ctrl-C): the best trial and STUDY/best.yaml, its config for `nntrain fit`.
    Exit code: 0, 2 bad input, 1 more trials failed than asked for, 130 interrupted.
    """
    from ..tune.report import finish, study_line
    from ..tune.study import open_study, plan_tune

    plan = plan_tune(config, overrides, params, trials=trials, study_dir=study_dir, storage=storage,
                     sampler=sampler, pruner=pruner, monitor=monitor, startup=startup_trials, seed=seed,
                     command="nntrain " + shlex.join(sys.argv[1:]))
    study = open_study(plan)
    if not quiet:
        from ..sweep.commands import blas_threads

        click.echo(study_line(study, plan, jobs, blas_threads(jobs) if jobs > 1 else None))
    try:
        if jobs > 1:
            from ..tune.jobs import run_jobs

            code = run_jobs(plan, study, jobs, echo=click.echo)
        else:
            from ..tune.worker import run_worker

            code = run_worker(plan, study, echo=click.echo)
    except KeyboardInterrupt:  # a second Ctrl-C: still say where the study stands
        code = EXIT_INTERRUPTED
    finish(study, plan, click.echo)
    if code == EXIT_INTERRUPTED:
        click.echo("interrupted: run the same nntrain tune command again to continue the study")
    sys.exit(code)
