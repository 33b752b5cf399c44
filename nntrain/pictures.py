"""Pictures of a trained model: the first convolution's filters, and the confusion matrix.

- ``plot_filters(run, "filters.png")`` (``nntrain plot RUN --filters``): every filter of
  the network's first convolution as a tile of a grid, in colour when it sees 3 input
  channels (RGB), else one grey tile per input channel. Each filter is min-max scaled on
  its own (its smallest weight black, its largest white), so the tiles show shapes, not
  magnitudes; the figure says so.
- ``plot_confusion(result, "confusion.png")`` (``nntrain eval CKPT --confusion``): the
  confusion matrix of an ``evaluate_checkpoint`` result as a heat map, each row divided
  by the count of its true class (so the diagonal is the per-class accuracy), the counts
  written in the cells when there are at most 20 classes, and the per-class accuracy
  beside each row.

matplotlib is imported lazily with the Agg backend (``nntrain.plot.import_pyplot``): a
missing matplotlib is one message saying how to install it (exit 2).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .errors import ConfigError

DPI = 100
TILE_INCHES = 0.8  # a filter tile's side (smaller when the grid would exceed MAX_INCHES)
MAX_INCHES = 12.0
MAX_ANNOTATED_CLASSES = 20
MAX_LABELLED_CLASSES = 40


def first_convolution(network):
    """The first conv2d node of ``network`` in evaluation order; ConfigError if there is none."""
    for node in network.order:
        if node.layer.type_name == "conv2d":
            return node
    raise ConfigError("--filters: the network has no conv2d layer "
                      f"(layers: {', '.join(n.layer.type_name for n in network.order)})")


def scale_each(weight: np.ndarray) -> np.ndarray:
    """Each filter (first axis) mapped linearly onto [0, 1] by its own min and max (0.5 if constant)."""
    w = np.asarray(weight, dtype=np.float64)  # ok: one small picture, not a hot path
    axes = tuple(range(1, w.ndim))
    lo, hi = w.min(axis=axes, keepdims=True), w.max(axis=axes, keepdims=True)
    span = hi - lo
    return np.where(span > 0, (w - lo) / np.where(span > 0, span, 1.0), 0.5)


def filter_tiles(weight: np.ndarray) -> tuple[np.ndarray, bool]:
    """(tiles, colour): the filters of a (Cout, Cin, Kh, Kw) weight as images scaled to [0, 1].

    Cin == 3: (Cout, Kh, Kw, 3) RGB tiles. Otherwise (Cout * Cin, Kh, Kw) grey tiles, each
    filter's channels side by side in the grid order, scaled together per filter.
    """
    scaled = scale_each(weight)
    cout, cin, kh, kw = scaled.shape
    if cin == 3:
        return scaled.transpose(0, 2, 3, 1), True
    return scaled.reshape(cout * cin, kh, kw), False


def tile_grid(tiles: np.ndarray, columns: int, gap: int = 1) -> np.ndarray:
    """The tiles (n, h, w[, 3]) in rows of ``columns``, ``gap`` pixels apart, on a white background."""
    n, h, w = tiles.shape[:3]
    rows = math.ceil(n / columns)
    grid = np.ones((rows * (h + gap) - gap, columns * (w + gap) - gap, *tiles.shape[3:]))
    for i in range(n):
        r, c = divmod(i, columns)
        grid[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tiles[i]
    return grid


def _grid_columns(n: int, cin: int, colour: bool) -> int:
    """One filter's input channels per row when they fit (up to 16), else a near-square grid."""
    if not colour and 1 < cin <= 16:
        return cin
    return max(1, math.ceil(math.sqrt(n)))


def filters_figure(network, title: str = ""):
    """The matplotlib figure of ``network``'s first convolution filters (the caller closes it)."""
    from .plot import import_pyplot

    node = first_convolution(network)
    weight = node.layer.weight.value
    tiles, colour = filter_tiles(weight)
    cout, cin, kh, kw = weight.shape
    columns = _grid_columns(len(tiles), cin, colour)
    grid = tile_grid(tiles, columns)  # drawn at ``tile`` inches per filter, nearest-neighbour upscaled
    rows = math.ceil(len(tiles) / columns)
    plt = import_pyplot()
    tile = min(TILE_INCHES, MAX_INCHES / max(rows * kh / kw, columns))
    fig_w = max(4.5, columns * tile + 0.4)
    fig_h = rows * tile * kh / kw + 1.1
    fig, ax = plt.subplots(figsize=(fig_w, fig_h), layout="constrained")
    ax.imshow(grid, cmap=None if colour else "gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    if colour or cin == 1:
        what = "RGB" if colour else "grey"
    else:
        what = f"{cin} input channels, " + ("a row per filter" if columns == cin else "a tile each")
    fig.suptitle(f"{title + ': ' if title else ''}{node.name}\n{cout} filters {kh}x{kw}, {what}\n"
                 "each scaled to its own min (black) .. max (white)", fontsize="medium")
    return fig


def _save(fig, output) -> Path:
    from .plot import import_pyplot

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=DPI)
    import_pyplot().close(fig)
    return output


def plot_filters(run, output="filters.png", *, title: str | None = None, data_path=None) -> Path:
    """Draw the first convolution's filters of a run (its best.npz) or checkpoint; the PNG's path.

    ``run`` may be a list of one path (the command line's PATHS). The model is loaded as
    ``nntrain eval`` loads it (evaluation weights: the average when the run evaluated with one)."""
    from .evaluate import load_model
    from .plot import import_pyplot

    if isinstance(run, (list, tuple)):
        if len(run) != 1:
            raise ConfigError(f"--filters draws the filters of one run, received {len(run)}: {', '.join(map(str, run))}")
        (run,) = run
    import_pyplot()  # a missing matplotlib is reported before the model is loaded
    exp, ckpt = load_model(run, data_path=data_path, read_data=False)
    if title is None:
        title = f"{exp.config.get('name', '')} (iteration {ckpt.meta.get('iteration')})"
    return _save(filters_figure(exp.network, title), output)


def confusion_figure(result: dict):
    """The heat map of an ``evaluate_checkpoint`` result (the caller closes the figure)."""
    from .plot import import_pyplot

    classes = list(result["classes"])
    cm = np.asarray(result["confusion_matrix"], dtype=np.int64)
    k = len(classes)
    totals = cm.sum(axis=1)
    rates = cm / np.maximum(totals, 1)[:, None]
    plt = import_pyplot()
    side = min(MAX_INCHES, max(5.0, 0.45 * k + 2.5))
    fig, ax = plt.subplots(figsize=(side * 1.3, side), layout="constrained")
    # a power norm: a 1-in-200 confusion is still visibly blue next to the ~1.0 diagonal
    image = ax.imshow(rates, cmap="Blues", norm=plt.matplotlib.colors.PowerNorm(0.4, vmin=0.0, vmax=1.0))
    if k <= MAX_ANNOTATED_CLASSES:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize="small",
                            color="white" if rates[i, j] > 0.3 else "black")
    labelled = k <= MAX_LABELLED_CLASSES
    ticks = np.arange(k) if labelled else []
    ax.set_xticks(ticks, classes if labelled else [], rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(ticks, classes if labelled else [])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = ax.secondary_yaxis("right")
    accuracy.set_yticks(ticks, [f"{result['per_class_accuracy'][c]:.1%}" for c in classes] if labelled else [])
    accuracy.set_ylabel("per-class accuracy (the diagonal)")
    fig.colorbar(image, ax=ax, shrink=0.8, pad=0.02, label="fraction of the true class")
    ax.set_title(f"{_model_name(result['checkpoint'])}: {result['split']} "
                 f"split, {result['n']:,} images, accuracy {result['accuracy']:.2%} (tta {result['tta']})",
                 fontsize="medium")
    return fig


def _model_name(checkpoint) -> str:
    """The run's folder name for RUN/checkpoints/x.npz, else the file name."""
    path = Path(checkpoint)
    return path.parent.parent.name if path.parent.name == "checkpoints" else path.name


def plot_confusion(result: dict, output="confusion.png") -> Path:
    """Write the confusion heat map of an ``evaluate_checkpoint`` result to ``output``; its path."""
    return _save(confusion_figure(result), output)
