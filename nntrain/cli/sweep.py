"""``nntrain sweep`` (many runs of one experiment), ``compare`` (a table of runs) and
``plot`` (their curves in one PNG).

Only click and the standard library are imported here; the work happens in
nntrain.sweep, nntrain.compare and nntrain.plot, imported when a command runs.
"""

from __future__ import annotations

import sys

import click

from .common import debug_option, handle_errors


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--grid", "grids", multiple=True, metavar="KEY=V1,V2,...",
              help="Try each value (YAML, as --set); several --grid give the Cartesian product.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Fixed override for every trial.")
@click.option("--random", "n_random", type=int, default=0, metavar="N",
              help="Draw N random trials from the --param distributions (x each grid point).")
@click.option("--param", "params", multiple=True, metavar="KEY=DIST",
              help="A distribution for --random: uniform(a,b), loguniform(a,b), int(a,b), logint(a,b), "
                   "choice(v1,v2,...). Floats are rounded to 4 significant digits.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --random draws.")
@click.option("--jobs", "-j", type=int, default=None,
              help="Trials run at once [default: 1]; each gets cores/jobs threads (NNTRAIN_THREADS and BLAS).")
@click.option("--sweep-dir", type=click.Path(file_okay=False),
              help="Where the sweep lives [default: sweeps/<name>-<hash of config and sweep>].")
@click.option("--print-commands", is_flag=True,
              help="Print one shell command per trial still to run (and write SWEEP/commands.txt) "
                   "instead of running; with --jobs, each sets its threads (NNTRAIN_THREADS and BLAS) to cores/jobs.")
@click.option("--emit", type=click.Choice(["slurm"]),
              help="Write SWEEP/commands.txt and SWEEP/sweep.slurm (a job array, one trial per task) "
                   "instead of running.")
@click.option("--quiet", "-q", is_flag=True, help="Only the one-line result of each trial and the total.")
@debug_option
@handle_errors
def sweep(config, grids, overrides, n_random, params, seed, jobs, sweep_dir, print_commands, emit, quiet, debug):
    """Run CONFIG many times with keys varied (grid / random search).

    \b
    nntrain sweep configs/quickstart.yaml --grid optimizer.lr=0.1,0.01 --grid train.batch_size=64,128 -j 2
    nntrain sweep configs/quickstart.yaml --random 20 --param "optimizer.lr=loguniform(1e-4,1e-1)"

    Each trial runs `nntrain fit` into SWEEP/<trial>/, named from its overrides
    (lr=0.01_batch_size=64); SWEEP/manifest.json records them. Every trial's config
    is checked before anything runs. Run the same command again to continue an
    interrupted sweep: finished trials are skipped, interrupted ones resumed.
    Exit code: 0 if every trial finished, 1 if any did not, 130 if interrupted.

    \b
    Other executors:
      nntrain sweep ... --print-commands | xargs -d '\\n' -n 1 -P 2 sh -c
      nntrain sweep ... --print-commands > /dev/null; parallel -j 2 < SWEEP/commands.txt
      nntrain sweep ... --emit slurm; sbatch SWEEP/sweep.slurm
    """
    from .. import validate as v
    from ..sweep import (blas_threads, pending_commands, plan_sweep, run_local, write_commands, write_manifest,
                         write_slurm)

    if jobs is not None:
        v.positive_int(jobs, "--jobs")
    plan = plan_sweep(config, overrides, grids, params, n_random, seed, sweep_dir)
    note = f" ({plan.dropped} duplicate random draws dropped)" if plan.dropped else ""
    if print_commands or emit:
        plan.directory.mkdir(parents=True, exist_ok=True)
        threads = blas_threads(jobs) if (jobs and print_commands and not emit) else None
        commands, counts = pending_commands(plan, threads)
        write_manifest(plan)
        path = write_commands(plan, commands)
        if print_commands:
            for _, cmd in commands:
                click.echo(cmd)
        summary = ", ".join(f"{n} {s}" for s, n in counts.items())
        click.echo(f"sweep {plan.directory}: {len(plan.trials)} trials ({summary}){note}; "
                   f"{len(commands)} to run in {path}", err=True)
        if emit == "slurm":
            if commands:
                click.echo(f"wrote {write_slurm(plan, len(commands))}; submit it with sbatch", err=True)
            else:
                click.echo("nothing left to run: no Slurm script written", err=True)
        return
    if note and not quiet:
        click.echo(note.strip(" ()"))
    sys.exit(run_local(plan, jobs or 1, quiet=quiet, echo=click.echo))


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--sort", "sort_by", default="val_error", show_default=True,
              help="Column to sort by: a result column or a config key (a unique last part is enough: lr).")
@click.option("--reverse", "-r", is_flag=True, help="Largest first (missing values stay last).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout (all columns, full precision, run paths).")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout (a list of runs).")
@debug_option
@handle_errors
def compare(paths, sort_by, reverse, as_csv, as_json, debug):
    """Table of runs: differing config keys and results.

    One row per run: the config keys whose values differ between the runs, the lowest
    validation error and its epoch, test error, wall time, and stop reason or status.

    PATHS are run directories, sweep directories (all their trials) or folders of them.
    """
    import csv
    import json

    from ..compare import collect_runs, compare_rows, format_table, plain, resolve_column, sort_rows, table_columns
    from ..errors import ConfigError

    if as_csv and as_json:
        raise ConfigError("--csv and --json: choose one output format")
    refs = collect_runs(paths)
    differing, rows = compare_rows(refs)
    columns = table_columns(differing)
    rows = sort_rows(rows, resolve_column(sort_by, columns), descending=reverse)
    if as_json:
        click.echo(json.dumps(plain(rows, columns), indent=2, default=str))
    elif as_csv:
        out = plain(rows, columns)
        writer = csv.DictWriter(sys.stdout, fieldnames=list(out[0]) if out else columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if val is None else json.dumps(val) if isinstance(val, (list, dict)) else val)
                          for k, val in r.items()} for r in out)
    else:
        click.echo(format_table(columns, rows))


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--output", "-o", default=None, type=click.Path(dir_okay=False),
              help="The PNG to write [default: curves.png, or filters.png with --filters].")
@click.option("--title", default=None, help="Figure title [default: the runs].")
@click.option("--linear", is_flag=True, help="Error panels on a linear axis from 0 [default: log].")
@click.option("--filters", is_flag=True, help="Instead: the first convolution's filters of one run (nntrain.pictures).")
@debug_option
@handle_errors
def plot(paths, output, title, linear, filters, debug):
    """Training curves of runs, overlaid, in one PNG.

    Energy, training error, validation error and learning rate against the epoch
    (needs matplotlib: pip install 'nntrain[plot]').

    PATHS are run directories, sweep directories (all their trials) or folders of them.
    With --filters, one run: its model's first convolution filters as an image grid.
    """
    if filters:
        from ..pictures import plot_filters

        click.echo(str(plot_filters(paths, output or "filters.png", title=title)))
        return
    from ..plot import plot_runs

    click.echo(str(plot_runs(paths, output or "curves.png", title=title, log_errors=not linear)))
