"""Training curves of one or more runs in one PNG (matplotlib, an optional extra).

Four panels against the epoch: the energy (the regularised training objective, log
scale), the training error and the validation error (the three curves to watch: energy
and training error falling while validation error rises is overfitting), and the
learning rate actually used (per iteration from iterations.csv, else per evaluation).
Runs are overlaid, one colour per run; the legend names each run by the config keys
that differ between them (``lr=0.01 batch_size=64``), else by its name; it sits below
the panels in as many columns as fit the figure, and a label (or the title) too wide for
the figure loses its middle, never its ends. A star marks each run's lowest validation error.

matplotlib is imported only here, with the Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError

DPI = 110  # with figsize (12, 7.5): a 1320 x 825 PNG
INSTALL_HINT = ("nntrain plot needs matplotlib, an optional extra: install it with\n"
                "    pip install 'nntrain[plot]'\n"
                "(or: pip install matplotlib)")


def import_pyplot():
    """matplotlib.pyplot on the Agg backend, or a ConfigError saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def run_labels(refs, rows_keys: tuple[list[str], list[dict]]) -> list[str]:
    """``lr=0.01 batch_size=64`` from the differing config keys, else the run label."""
    from .compare import _MISSING
    from .sweep import short_keys

    differing, rows = rows_keys
    short = short_keys(differing)
    labels = []
    for ref, row in zip(refs, rows):
        parts = [f"{short[k]}={_value_text(row[k])}" for k in differing if row.get(k, _MISSING) is not _MISSING]
        text = " ".join(parts)
        labels.append(text if parts and len(text) <= 60 else ref.label)
    return labels


def _value_text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _curve(rows: list[dict], column: str):
    pts = [(r["epoch"], r[column]) for r in rows
           if isinstance(r.get("epoch"), (int, float)) and isinstance(r.get(column), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_runs(paths, output="curves.png", title: str | None = None, log_errors: bool = True) -> Path:
    """Write the curves of the runs (run / sweep directories) to ``output``; its path.

    ``log_errors``: training and validation error on a log axis (else linear from 0).
    """
    fig = curves_figure(paths, title=title, log_errors=log_errors)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=DPI)
    import_pyplot().close(fig)
    return output


def curves_figure(paths, title: str | None = None, log_errors: bool = True):
    """The matplotlib figure that ``plot_runs`` saves (the caller closes it)."""
    from .compare import collect_runs, compare_rows
    from .rundir import read_csv

    refs = collect_runs(paths)
    series = [(ref, read_csv(ref.path / "metrics.csv"), read_csv(ref.path / "iterations.csv")) for ref in refs]
    kept = [(ref, m, it) for ref, m, it in series if m]
    if not kept:
        raise ConfigError(f"nothing to plot: no metrics.csv rows in {', '.join(str(r.path) for r in refs)}")
    refs = [ref for ref, _, _ in kept]
    labels = run_labels(refs, compare_rows(refs))
    plt = import_pyplot()  # after the inputs are checked: a bad path is reported first

    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), sharex=True, layout="constrained")
    (ax_energy, ax_lr), (ax_train, ax_val) = axes
    colours = _colours(plt, len(kept))
    energies = []
    for (ref, metrics, iterations), label, colour in zip(kept, labels, colours):
        x, y = _curve(metrics, "energy")
        energies += y
        ax_energy.plot(x, y, color=colour, marker="o" if len(x) < 30 else None, ms=3, lw=1.5, label=label)
        x, y = _curve(metrics, "train_error")
        ax_train.plot(x, y, color=colour, marker="o" if len(x) < 30 else None, ms=3, lw=1.5)
        x, y = _curve(metrics, "val_error")
        if x:
            ax_val.plot(x, y, color=colour, marker="o" if len(x) < 30 else None, ms=3, lw=1.5)
            best = min(range(len(y)), key=y.__getitem__)
            ax_val.plot([x[best]], [y[best]], color=colour, marker="*", ms=12, mec="black", mew=0.6, zorder=5)
        x, y = _curve(iterations or metrics, "lr")
        ax_lr.plot(x, y, color=colour, lw=1.5)

    if energies and min(energies) > 0:
        _log_axis(ax_energy)
    ax_energy.set_title("energy (training objective: loss + weight decay)")
    ax_lr.set_title("learning rate")
    ax_train.set_title("training error (running average over the epoch)")
    ax_val.set_title("validation error (star: lowest)")
    if not ax_val.lines:
        ax_val.text(0.5, 0.5, "no validation split (data.validation: 0)", ha="center", va="center",
                    transform=ax_val.transAxes, color="gray")
    _share_error_axis(ax_train, ax_val, log=log_errors)
    for ax in axes.flat:
        ax.grid(True, alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    _legend_below(fig, *ax_energy.get_legend_handles_labels())
    _fit(fig, fig.suptitle(title or _default_title(refs, paths)))
    return fig


def _legend_below(fig, handles, labels) -> None:
    """The runs' legend below the panels, in as many columns (at most 4) as fit the
    figure's width; labels still too wide for one column lose their middle."""
    fontsize = "small" if len(labels) > 6 else "medium"
    for ncol in range(min(len(labels), 4), 0, -1):
        legend = fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=fontsize, frameon=False)
        if ncol == 1 or _width(fig, legend) <= fig.bbox.width:
            break
        legend.remove()
    overhead = _width(fig, legend) - max(_width(fig, text) for text in legend.get_texts())  # markers, padding
    for text in legend.get_texts():
        _fit(fig, text, room=fig.bbox.width - overhead)


def _fit(fig, text, room: float | None = None) -> None:
    """Drop the middle of a matplotlib Text wider than ``room`` pixels (default: the figure)."""
    room = fig.bbox.width if room is None else room
    width, content = _width(fig, text), text.get_text()
    if width > room:
        keep = max(9, int(len(content) * room / width) - 2)  # characters that fit, less a margin
        head = (keep - 3) // 2
        text.set_text(f"{content[:head]}...{content[len(content) - (keep - 3 - head):]}")


def _width(fig, artist) -> float:
    return artist.get_window_extent(fig.canvas.get_renderer()).width


def _colours(plt, n: int) -> list:
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    cmap = plt.get_cmap("viridis")
    return [cmap(i / max(1, n - 1)) for i in range(n)]


def _share_error_axis(ax_train, ax_val, log: bool) -> None:
    """Training and validation error on one scale, so the gap between them reads directly.

    Log scale by default: the runs worth comparing differ at 1-5 % error, which a linear
    axis that also holds a failed run's 90 % squeezes flat. Zero errors are drawn at the
    axis floor.
    """
    values = [y for ax in (ax_train, ax_val) for line in ax.lines for y in line.get_ydata()]
    positive = [y for y in values if y > 0]
    for ax in (ax_train, ax_val):
        if log and positive:
            lo = min(positive) / 1.5
            for line in ax.lines:
                line.set_ydata([max(y, lo) for y in line.get_ydata()])
            ax.set_ylim(lo, min(1.0, max(positive) * 1.5))
            _log_axis(ax)
        elif values:
            ax.set_ylim(0.0, max(values) * 1.05 or 1.0)


def _log_axis(ax) -> None:
    """Log scale with plain tick labels (0.3, not 3 x 10^-1), thinned when the range is wide."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    decades = math.log10(hi / lo)
    keep = (2, 3, 4, 5, 6, 7, 8, 9) if decades < 0.7 else (2, 3, 5) if decades < 1.6 else (2, 5) if decades < 3 else ()

    def label(value, _):
        mantissa = round(value / 10 ** math.floor(math.log10(value) + 1e-9))
        return f"{value:g}" if mantissa == 1 or mantissa in keep else ""

    ax.yaxis.set_major_locator(LogLocator(base=10))
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(2, 10))))
    ax.yaxis.set_major_formatter(FuncFormatter(label))
    ax.yaxis.set_minor_formatter(FuncFormatter(label))


def _default_title(refs, paths) -> str:
    if len(refs) == 1:
        return f"nntrain run {refs[0].path}"
    return f"nntrain: {len(refs)} runs from {', '.join(str(p) for p in paths)}"


__all__ = ["INSTALL_HINT", "curves_figure", "import_pyplot", "plot_runs", "run_labels"]
