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

    Prints the relative error of the analytic gradient for the input and every
    parameter; exits 1 if any exceeds --tolerance.
    """
    import numpy as np

    from ..config import load_config
    from ..experiment import build_experiment, build_network
    from ..gradcheck import check_network

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
