"""The ``nntrain`` command: thin click commands over the library.

Exit codes: 0 success; 2 bad input (config, data, checkpoint: one clear message, no
traceback unless --debug); 1 a failure during a run (e.g. divergence that could not be
recovered, a failed gradient check); 130 interrupted (a checkpoint was saved).

Heavy imports (numpy and the engine) happen inside the commands, so ``--help`` is fast.
"""

from __future__ import annotations

import functools
import json
import shlex
import sys
from pathlib import Path

import click

EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 1
EXIT_INTERRUPTED = 130


def _handle_errors(fn):
    """Turn nntrain errors into one message and an exit code (a traceback only with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = kwargs.get("debug", False)
        from .openblas_env import set_openblas_environment

        set_openblas_environment()  # before the first numpy import (the next line's)
        from .errors import NNTrainError

        try:
            from .ops.memory import keep_freed_memory
            from .ops.parallel import num_threads

            num_threads()  # a bad NNTRAIN_THREADS is reported now, not at the first kernel
            keep_freed_memory()
            return fn(*args, **kwargs)
        except NNTrainError as exc:
            if debug:
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            if debug:
                raise
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except MemoryError:
            if debug:
                raise
            click.echo("error: out of memory; try a smaller train.batch_size or eval.batch_size", err=True)
            sys.exit(EXIT_RUN_FAILED)

    return wrapper


debug_option = click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
set_option = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                          help="Override a config key, e.g. --set optimizer.lr=0.01 (repeatable; "
                               "values are YAML; list items by index or layer name: model.conv1.out_channels=64).")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="nntrain", message="nntrain %(version)s")
def main():
    """Train neural networks written from scratch on numpy, from YAML experiment files.

    \b
    nntrain fit configs/quickstart.yaml            train; writes runs/<name>-<time>/
    nntrain eval runs/RUN/checkpoints/best.npz     score a saved model
    nntrain show configs/cifar10_quick.yaml        resolved config and layer table
    nntrain gradcheck configs/quickstart.yaml      finite-difference check of the network
    nntrain data fetch cifar10                     download an official data set
    nntrain sweep exp.yaml --grid optimizer.lr=0.1,0.01 --jobs 2
    nntrain compare sweeps/exp-*/ --sort val_error
    nntrain plot runs/a runs/b -o curves.png
    """


# ----- fit --------------------------------------------------------------------------------
@main.command()
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
@_handle_errors
def fit(config, overrides, run_dir, runs_root, resume_dir, quiet, as_json, debug):
    """Train the experiment CONFIG (a YAML file).

    Writes the resolved config, metrics.csv (energy, training and validation error per
    epoch), iterations.csv, checkpoints/{best,last}.npz and summary.json into a new run
    directory. Ctrl-C saves a checkpoint; continue with --resume RUN_DIR.
    """
    from .config import load_config
    from .errors import ConfigError
    from .experiment import build_experiment
    from .rundir import create_run_dir
    from .train import STOP_DIVERGED, STOP_INTERRUPTED, Trainer, check_resumable

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


# ----- eval -------------------------------------------------------------------------------
@main.command("eval")
@click.argument("checkpoint", type=click.Path())
@click.option("--data", "data_path", type=click.Path(), help="Another path for the data set files.")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--tta", type=click.Choice(["none", "flip", "crops", "translate", "airbench", "config"]), default="config",
              show_default=True, help="Test-time augmentation: average the softmax over views "
                                      "(config: the checkpoint's eval.tta).")
@click.option("--batch-size", type=int, default=None, help="Default: the config's eval.batch_size.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@debug_option
@_handle_errors
def eval_(checkpoint, data_path, split, tta, batch_size, as_json, debug):
    """Score a saved model (a checkpoint .npz, or a run directory: its best.npz) on a split.

    Prints error, accuracy, loss, per-class accuracy and the confusion matrix. The
    checkpoint carries the weights, config, normalisation and class names; only the
    data files are read again.
    """
    from .evaluate import evaluate_checkpoint, format_report

    result = evaluate_checkpoint(checkpoint, split=split, tta=None if tta == "config" else tta,
                                 data_path=data_path, batch_size=batch_size)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(format_report(result))


# ----- show -------------------------------------------------------------------------------
@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@set_option
@click.option("--no-data", is_flag=True, help="Do not read the data set (input shape from the known data sets).")
@debug_option
@_handle_errors
def show(config, overrides, no_data, debug):
    """Print the resolved config and the layer table (shapes, parameters, multiply-adds)."""
    from .config import dump_yaml, load_config
    from .experiment import build_experiment, build_network, check_output, network_input_shape

    cfg = load_config(config, overrides)
    click.echo(dump_yaml(cfg).rstrip())
    click.echo()
    if no_data:
        from .data.datasets import known_input_shape

        shape, classes = known_input_shape(cfg["data"])
        net = build_network(cfg, network_input_shape(cfg, shape))
        check_output(net, classes)
    else:
        exp = build_experiment(cfg)
        click.echo(f"data: {exp.data.describe()}")
        net = exp.network
    click.echo(net.format_summary())


# ----- gradcheck --------------------------------------------------------------------------
@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@set_option
@click.option("--examples", default=4, show_default=True, help="How many real training examples.")
@click.option("--entries", default=20, show_default=True, help="Entries checked per tensor (random subset).")
@click.option("--tolerance", default=1e-5, show_default=True, help="Largest relative error that passes.")
@debug_option
@_handle_errors
def gradcheck(config, overrides, examples, entries, tolerance, debug):
    """Finite-difference check of the whole network (float64) on a few real examples.

    Prints the relative error of the analytic gradient for the input and every
    parameter; exits 1 if any exceeds --tolerance.
    """
    import numpy as np

    from .config import load_config
    from .experiment import build_experiment, build_network
    from .gradcheck import check_network

    cfg = load_config(config, overrides)
    exp = build_experiment(cfg)
    net = build_network(cfg, exp.network.input_shape, dtype=np.float64)  # ok: finite differences need float64
    x = exp.augment.for_eval()(exp.normalizer.apply(exp.data.train.x[:examples]), None).astype(np.float64)  # ok: gradcheck input
    y = exp.data.train.y[:examples]
    errors = check_network(net, exp.loss, x, y, max_entries=entries)
    worst = max(errors.values())
    width = max(len(k) for k in errors)
    for name, err in errors.items():
        click.echo(f"{name:<{width}}  {err:.2e}  {'ok' if err <= tolerance else 'FAIL'}")
    click.echo(f"worst relative error {worst:.2e} (tolerance {tolerance:g}): {'pass' if worst <= tolerance else 'FAIL'}")
    if worst > tolerance:
        sys.exit(EXIT_RUN_FAILED)


# ----- data -------------------------------------------------------------------------------
@main.group()
def data():
    """Data set utilities."""


@data.command()
@click.argument("name", type=click.Choice(["cifar10", "cifar100", "mnist", "fashion_mnist"]))
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Where to put the files (default: $NNTRAIN_DATA/NAME, else ~/.cache/nntrain/NAME).")
@click.option("--base-url", default=None, help="Download from this mirror instead of the official address.")
@debug_option
@_handle_errors
def fetch(name, root, base_url, debug):
    """Download an official data set and verify its SHA-256."""
    from .data.fetch import default_root, fetch_dataset

    target = root or default_root(name)
    paths = fetch_dataset(name, target, base_url=base_url)
    for p in paths:
        click.echo(str(p))


from .cli_sweep import compare, plot, sweep  # noqa: E402  (click commands; light imports only)

main.add_command(sweep)
main.add_command(compare)
main.add_command(plot)


if __name__ == "__main__":
    main()
