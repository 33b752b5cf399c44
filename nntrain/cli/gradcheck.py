"""``nntrain gradcheck``: finite-difference check of a whole network on real examples."""

from __future__ import annotations

import sys

import click

from .common import EXIT_RUN_FAILED, POSITIVE_INT, debug_option, handle_errors, set_option


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@set_option
@click.option("--examples", default=4, show_default=True, type=POSITIVE_INT, help="How many real training examples.")
@click.option("--entries", default=20, show_default=True, type=POSITIVE_INT,
              help="Entries checked per tensor (random subset).")
@click.option("--tolerance", default=1e-5, show_default=True, type=click.FloatRange(min=0.0),
              help="Largest relative error that passes.")
@debug_option
@handle_errors
def gradcheck(config, overrides, examples, entries, tolerance, debug):
    """Finite-difference check of the whole network (float64) on a few real examples.

    Checks the input and every parameter in evaluation mode and in training mode (batch
    statistics, one fixed dropout mask). An entry whose +-h step crosses a kink (a ReLU
    sign, a max-pool maximum changes) is retried with smaller steps, else skipped and
    counted, and another entry is drawn. Exits 1 if an error exceeds --tolerance or a
    tensor could not be checked at all.
    """
    from ..config import load_config
    from ..experiment import build_experiment
    from ..gradcheck import check_experiment

    report = check_experiment(build_experiment(load_config(config, overrides)), examples=examples, entries=entries)
    for line in report.lines(tolerance):
        click.echo(line)
    if not report.passed(tolerance):
        sys.exit(EXIT_RUN_FAILED)
