"""``nntrain fit``: train an experiment, resume an interrupted run, or either (--resume-if-exists)."""

from __future__ import annotations

import functools
import json
import shlex
import sys
from pathlib import Path

import click

from .common import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUN_FAILED, debug_option, handle_errors, set_option


@click.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@set_option
@click.option("--run-dir", type=click.Path(file_okay=False), help="Write the run here (must be new or empty).")
@click.option("--runs-root", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Parent folder of the default run directory runs/<name>-<timestamp>.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False),
              help="Continue an interrupted run from RUN/checkpoints/last.npz, exactly (a run killed before "
                   "its first checkpoint starts over).")
@click.option("--resume-if-exists", is_flag=True,
              help="With --run-dir D: start D if new or empty, resume it if interrupted, report it (exit 0) "
                   "if it already finished. For requeued Slurm jobs and re-run sweep commands.")
@click.option("--tensorboard", is_flag=True,
              help="Log the curves for TensorBoard in RUN/tensorboard/ (as --set train.tensorboard=true; "
                   "pip install 'nntrain[tensorboard]').")
@click.option("--quiet", "-q", is_flag=True, help="No progress output (for sweeps); the run directory is still printed.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the summary as JSON at the end: stdout holds only the JSON, progress goes to stderr.")
@debug_option
@handle_errors
def fit(config, overrides, run_dir, runs_root, resume_dir, resume_if_exists, tensorboard, quiet, as_json, debug):
    """Train the experiment CONFIG (a YAML file).

    Writes the resolved config, metrics.csv (energy, training and validation error per
    epoch), iterations.csv, events.log, checkpoints/{best,last}.npz and summary.json into
    a new run directory. Ctrl-C saves a checkpoint; continue with --resume RUN_DIR.
    """
    from .. import distributed
    from .. import launch as plan_
    from ..experiment import build_experiment
    from ..rundir import STOP_DIVERGED, STOP_INTERRUPTED, read_summary
    from ..train import Trainer

    dist = distributed.context()
    quiet = quiet or not dist.is_main  # under MPI rank 0 alone talks
    say = functools.partial(click.echo, err=as_json)  # with --json, stdout is for the JSON alone
    command = "nntrain " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if tensorboard:
        overrides = (*overrides, "train.tensorboard=true")
    launch = None
    if dist.is_main:  # rank 0 decides; the other ranks follow
        launch = plan_.plan(config, overrides, run_dir=run_dir, resume_dir=resume_dir,
                            resume_if_exists=resume_if_exists)
    launch = plan_.follow(dist, launch)
    if launch.action == plan_.ENDED:
        summary = read_summary(launch.run_dir)
        if dist.is_main:
            click.echo(json.dumps(summary, indent=2) if as_json else (str(launch.run_dir) if quiet else launch.note))
        sys.exit(EXIT_RUN_FAILED if summary.get("stop_reason") == STOP_DIVERGED else EXIT_OK)
    ckpt = launch.checkpoint
    exp = build_experiment(launch.config, normalizer_state=ckpt.group("norm") if ckpt else None)
    out = functools.partial(click.echo, err=as_json)
    fresh = launch.action == plan_.START
    trainer = Trainer(exp, None if fresh else launch.run_dir, quiet=quiet, resume=not fresh, command=command, out=out)
    # only now, with the config, data and trainer known good, is a run directory made
    path = plan_.start(launch, runs_root) if dist.is_main and fresh else launch.run_dir
    path = trainer.run_dir = Path(dist.broadcast_object(str(path)))
    if launch.note and not quiet:
        say(launch.note)
    if launch.action == plan_.FINISH:
        summary = trainer.finalize(ckpt.meta["stop_reason"])
    else:
        if not quiet:
            say(f"run directory: {path}")
            say(f"data: {exp.data.describe()}")
            say(f"model: {sum(p.size for p in exp.network.parameters()):,} parameters, "
                f"{exp.network.macs_per_sample:,} multiply-adds per image; "
                f"{trainer.iters_per_epoch} iterations per epoch")
        summary = trainer.run()
    if dist.is_main:
        click.echo(json.dumps(summary, indent=2, default=str) if as_json
                   else str(path) if quiet else done_line(summary, path))
    if summary["stop_reason"] == STOP_DIVERGED:
        sys.exit(EXIT_RUN_FAILED)
    if summary["stop_reason"] == STOP_INTERRUPTED:
        sys.exit(EXIT_INTERRUPTED)


def done_line(summary: dict, path) -> str:
    """The last line of a run: how it stopped, its best evaluation (if there was one yet)."""
    best = summary["best"]
    best_text = (f"best {best['monitor']} {best['value']:.4f} at epoch {best['epoch']:g}"
                 if best["value"] is not None else "no evaluation yet")
    return (f"done: {summary['stop_reason']} after {summary['iterations']} iterations "
            f"({summary['wall_time_s']:.1f}s); {best_text}; run directory: {path}")
