"""``nntrain data``: data set utilities (``data fetch``)."""

from __future__ import annotations

import click

from .common import debug_option, handle_errors


@click.group()
def data():
    """Data set utilities."""


@data.command()
@click.argument("name", type=click.Choice(["cifar10", "cifar100", "mnist", "fashion_mnist"]))
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Where to put the files (default: $NNTRAIN_DATA/NAME, else ~/.cache/nntrain/NAME).")
@click.option("--base-url", default=None, help="Download from this mirror instead of the official address.")
@debug_option
@handle_errors
def fetch(name, root, base_url, debug):
    """Download an official data set and verify its SHA-256."""
    from ..data.fetch import default_root, fetch_dataset

    target = root or default_root(name)
    paths = fetch_dataset(name, target, base_url=base_url)
    for p in paths:
        click.echo(str(p))

