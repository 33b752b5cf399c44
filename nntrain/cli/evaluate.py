"""``nntrain eval`` (score a saved model) and ``nntrain show`` (resolved config, layer table)."""

from __future__ import annotations

import json

import click

from .common import POSITIVE_INT, debug_option, handle_errors, set_option


@click.command("eval")
@click.argument("checkpoint", type=click.Path())
@click.option("--data", "data_path", type=click.Path(), help="Another path for the data set files.")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--tta", type=click.Choice(["none", "flip", "crops", "translate", "airbench", "config"]), default="config",
              show_default=True, help="Test-time augmentation: average the predictions over views "
                                      "(config: the checkpoint's eval.tta).")
@click.option("--tta-average", type=click.Choice(["probabilities", "logits", "config"]), default="config",
              show_default=True, help="What the views average: their softmaxes, or their logits (airbench's way; "
                                      "config: the checkpoint's eval.tta_average).")
@click.option("--batch-size", type=POSITIVE_INT, default=None, help="Default: the config's eval.batch_size.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--confusion", type=click.Path(dir_okay=False), metavar="PNG",
              help="Also draw the confusion matrix as a heat map with per-class accuracy (needs matplotlib).")
@debug_option
@handle_errors
def eval_(checkpoint, data_path, split, tta, tta_average, batch_size, as_json, confusion, debug):
    """Score a saved model (a checkpoint .npz, or a run directory: its best.npz) on a split.

    Prints error, accuracy, loss, per-class accuracy and the confusion matrix. The
    checkpoint carries the weights, config, normalisation and class names; only the
    data files are read again.
    """
    from ..evaluate import evaluate_checkpoint, format_report

    if confusion:
        from ..plot import import_pyplot

        import_pyplot()  # a missing matplotlib is reported before the evaluation
    result = evaluate_checkpoint(checkpoint, split=split, tta=None if tta == "config" else tta,
                                 data_path=data_path, batch_size=batch_size,
                                 average=None if tta_average == "config" else tta_average)
    for warning in result["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(format_report(result))
    if confusion:
        from ..pictures import plot_confusion

        click.echo(f"confusion matrix: {plot_confusion(result, confusion)}", err=as_json)


@click.command()
@click.argument("config", type=click.Path(dir_okay=False))
@set_option
@click.option("--no-data", is_flag=True, help="Do not read the data set (input shape from the known data sets).")
@debug_option
@handle_errors
def show(config, overrides, no_data, debug):
    """Print the resolved config and the layer table (shapes, parameters, multiply-adds)."""
    from ..config import dump_yaml, load_config
    from ..experiment import build_experiment, build_network, check_output, network_input_shape

    cfg = load_config(config, overrides)
    click.echo(dump_yaml(cfg).rstrip())
    click.echo()
    if no_data:
        from ..data.datasets import known_input_shape

        shape, classes = known_input_shape(cfg["data"])
        net = build_network(cfg, network_input_shape(cfg, shape))
        check_output(net, classes)
    else:
        exp = build_experiment(cfg)
        click.echo(f"data: {exp.data.describe()}")
        net = exp.network
    click.echo(net.format_summary())
    click.echo(net.memory.describe(cfg["train"]["batch_size"], cfg["eval"]["batch_size"]))
