"""``nntrain fit``: train an experiment, or resume an interrupted run."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from .common import EXIT_INTERRUPTED, EXIT_RUN_FAILED, debug_option, handle_errors, set_option


@click.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@set_option
@click.option("--run-dir", type=click.Path(file_okay=False), help="Write the run here (must be new or empty).")
@click.option("--runs-root", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Parent folder of the default run directory runs/<name>-<timestamp>.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False),
              help="Continue an interrupted run from RUN/checkpoints/last.npz, exactly.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output (for sweeps); the run directory is still printed.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON at the end.")
@debug_option
@handle_errors
def fit(config, overrides, run_dir, runs_root, resume_dir, quiet, as_json, debug):
    """Train the experiment CONFIG (a YAML file).

    Writes the resolved config, metrics.csv (energy, training and validation error per
    epoch), iterations.csv, checkpoints/{best,last}.npz and summary.json into a new run
    directory. Ctrl-C saves a checkpoint; continue with --resume RUN_DIR.
    """
    from ..config import load_config
    from ..errors import ConfigError
    from ..experiment import build_experiment
    from ..rundir import create_run_dir
    from ..train import STOP_DIVERGED, STOP_INTERRUPTED, Trainer, check_resumable

    command = "nntrain " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if resume_dir:
        ckpt = check_resumable(resume_dir)
        cfg = ckpt.config
        if config or overrides:
            wanted = load_config(config, overrides) if config else None
            if overrides and not config:
                raise ConfigError("--set cannot change a resumed run; it continues with its own config.yaml")
            if wanted is not None and wanted != cfg:
                diff = _config_diff(cfg, wanted)
                raise ConfigError(f"--resume: {config} differs from the run's config ({diff}); "
                                  "resume without CONFIG to continue the run as it was")
        ended = ckpt.meta.get("stop_reason") not in (None, STOP_INTERRUPTED)
        if ended and (Path(resume_dir) / "summary.json").exists():
            click.echo(f"{resume_dir}: the run already ended ({ckpt.meta['stop_reason']}); nothing to resume")
            return
        exp = build_experiment(cfg, normalizer_state=ckpt.group("norm"))
        path = resume_dir
        trainer = Trainer(exp, path, quiet=quiet, resume=True, command=command)
        if ended:  # killed after its last checkpoint but before its summary: just finish it
            summary = trainer.finalize(ckpt.meta["stop_reason"])
            click.echo(str(path) if quiet else f"{path}: finished the summary of the ended run")
            return
    else:
        if not config:
            raise ConfigError("fit needs a CONFIG file (or --resume RUN_DIR)")
        cfg = load_config(config, overrides)
        exp = build_experiment(cfg)
        path = create_run_dir(cfg["name"], runs_root, run_dir)
        trainer = Trainer(exp, path, quiet=quiet, command=command)
    if not quiet:
        click.echo(f"run directory: {path}")
        click.echo(f"data: {exp.data.describe()}")
        click.echo(f"model: {sum(p.size for p in exp.network.parameters()):,} parameters, "
                   f"{exp.network.macs_per_sample:,} multiply-adds per image; "
                   f"{trainer.iters_per_epoch} iterations per epoch")
    summary = trainer.run()
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    elif not quiet:
        best = summary["best"]
        click.echo(f"done: {summary['stop_reason']} after {summary['iterations']} iterations "
                   f"({summary['wall_time_s']:.1f}s); best {best['monitor']} {best['value']:.4f} "
                   f"at epoch {best['epoch']:g}; run directory: {path}")
    else:
        click.echo(str(path))
    if summary["stop_reason"] == STOP_DIVERGED:
        sys.exit(EXIT_RUN_FAILED)
    if summary["stop_reason"] == STOP_INTERRUPTED:
        sys.exit(EXIT_INTERRUPTED)


def _config_diff(a: dict, b: dict, prefix: str = "") -> str:
    keys = sorted(set(a) | set(b), key=str)
    for k in keys:
        path = f"{prefix}{k}"
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            d = _config_diff(a[k], b[k], path + ".")
            if d:
                return d
        elif a.get(k) != b.get(k):
            return f"{path}: {a.get(k)!r} in the run, {b.get(k)!r} in the file"
    return ""
