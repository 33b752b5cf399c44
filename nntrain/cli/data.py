"""``nntrain data``: data set utilities (``data fetch``)."""

from __future__ import annotations

from pathlib import Path

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

    target = Path(root).expanduser() if root else default_root(name)
    _create_folder(target, given=root is not None)
    paths = fetch_dataset(name, target, base_url=base_url)
    for p in paths:
        click.echo(str(p))


def _create_folder(target: Path, given: bool) -> None:
    """Create the download folder now, so that a path under a file or in a read-only
    place is one message (exit 2) before anything is downloaded."""
    from ..errors import ConfigError

    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in [target, *target.parents] if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker else exc.strerror or str(exc)
        if given:
            raise click.BadParameter(f"cannot create the folder {target}: {why}", param_hint="'--root'") from None
        raise ConfigError(f"cannot create the data folder {target} ($NNTRAIN_DATA/NAME, else ~/.cache/nntrain/NAME): "
                          f"{why}; choose another with --root") from None
