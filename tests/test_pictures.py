"""The filter and confusion pictures: the arrays they draw (exact), and the PNGs (read back)."""

import copy
import json
import sys

import numpy as np
import pytest
import yaml

pytest.importorskip("matplotlib")

from matplotlib.image import imread  # noqa: E402

from nntrain.errors import ConfigError  # noqa: E402
from nntrain.evaluate import evaluate_checkpoint  # noqa: E402
from nntrain.graph import Network  # noqa: E402
from nntrain.pictures import (DPI, MAX_ANNOTATED_CLASSES, filter_tiles, filters_figure,  # noqa: E402
                              first_convolution, plot_confusion, plot_filters, scale_each, tile_grid)

from .conftest import TINY  # noqa: E402
from .test_cli import run  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_BYTES = 200_000


def _train(tmp_path, config) -> str:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    r = run("fit", path, "--run-dir", tmp_path / "run", "--set", "train.max_iterations=5", "--quiet")
    assert r.exit_code == 0, r.output
    return tmp_path / "run"


@pytest.fixture(scope="module")
def grey_run(tmp_path_factory):
    """The tiny MNIST experiment: a first convolution of 4 filters 3x3 on 1 channel."""
    return _train(tmp_path_factory.mktemp("grey"), TINY)


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    """Random 3-channel 8x8 images in an npz: a first convolution on RGB."""
    tmp = tmp_path_factory.mktemp("colour")
    rng = np.random.default_rng(0)
    np.savez(tmp / "d.npz", x=rng.integers(0, 256, (200, 3, 8, 8), dtype=np.uint8), y=np.arange(200) % 3,
             x_test=rng.integers(0, 256, (30, 3, 8, 8), dtype=np.uint8), y_test=np.arange(30) % 3,
             classes=np.array(["cat", "dog", "ship"]))
    config = copy.deepcopy(TINY)
    config["data"] = {"dataset": "npz", "path": str(tmp / "d.npz"), "validation": 20, "normalize": "per_channel"}
    config["model"] = [{"type": "conv2d", "out_channels": 6, "kernel": 3, "padding": 1}, {"type": "relu"},
                       {"type": "flatten"}, {"type": "linear", "out_features": 3}]
    return _train(tmp, config)


def _check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and 5_000 < len(data) < MAX_BYTES, len(data)
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4) and min(image.shape[:2]) >= 200, image.shape
    return image[..., :3]


# ----- the arrays ----------------------------------------------------------------------------------
def test_scale_each_maps_every_filter_onto_0_1():
    w = np.array([[[[-2.0, 0.0], [2.0, 1.0]]], [[[3.0, 3.0], [3.0, 3.0]]]])  # (2, 1, 2, 2)
    np.testing.assert_allclose(scale_each(w), [[[[0.0, 0.5], [1.0, 0.75]]], [[[0.5, 0.5], [0.5, 0.5]]]])


def test_filter_tiles_rgb_and_grey():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 3, 4, 2))
    tiles, colour = filter_tiles(w)
    assert colour and tiles.shape == (5, 4, 2, 3)
    np.testing.assert_allclose(tiles[2, :, :, 1], scale_each(w)[2, 1])  # channel 1 is green
    w = rng.standard_normal((5, 2, 3, 3))
    tiles, colour = filter_tiles(w)
    assert not colour and tiles.shape == (10, 3, 3)
    np.testing.assert_allclose(tiles[7], scale_each(w)[3, 1])  # filter 3, input channel 1
    assert tiles[6].min() == 0.0 or tiles[7].min() == 0.0  # scaled per filter, not per channel


def test_tile_grid_places_tiles_row_by_row_with_white_gaps():
    tiles = np.arange(5 * 2 * 2, dtype=float).reshape(5, 2, 2) / 20
    grid = tile_grid(tiles, columns=3)
    assert grid.shape == (2 * 2 + 1, 3 * 2 + 2)
    np.testing.assert_array_equal(grid[3:5, 3:5], tiles[4])  # row 1, column 1
    np.testing.assert_array_equal(grid[2], 1.0)  # the gap between the rows
    np.testing.assert_array_equal(grid[3:5, 6:8], 1.0)  # no sixth tile: background


def test_a_network_without_convolution_has_no_filters_to_draw():
    with pytest.raises(ConfigError, match="no conv2d layer"):
        first_convolution(Network([{"type": "linear", "out_features": 2}], (3,)))


# ----- the pictures --------------------------------------------------------------------------------
def test_grey_filters_picture(grey_run, tmp_path):
    image = _check_png(plot_filters(grey_run, tmp_path / "f.png"))
    assert np.allclose(image[..., 0], image[..., 1]) and np.allclose(image[..., 1], image[..., 2])  # grey
    assert image.min() < 0.05  # each filter's minimum is black


def test_colour_filters_picture(colour_run, tmp_path):
    image = _check_png(plot_filters(colour_run, tmp_path / "f.png"))
    assert np.abs(image[..., 0] - image[..., 1]).max() > 0.2  # colour tiles


def test_filters_of_a_two_channel_input_one_row_per_filter(tmp_path):
    net = Network([{"type": "conv2d", "out_channels": 3, "kernel": [3, 2]}], (2, 6, 6))
    fig = filters_figure(net)
    assert "2 input channels, a row per filter" in fig.texts[0].get_text()
    fig.savefig(tmp_path / "f.png", dpi=DPI)
    image = _check_png(tmp_path / "f.png")
    assert image.shape[0] > image.shape[1] * 0.5  # 3 rows of 2 tiles, each 3 high and 2 wide


def test_confusion_picture(grey_run, tmp_path):
    result = evaluate_checkpoint(grey_run)
    image = _check_png(plot_confusion(result, tmp_path / "c.png"))
    blue = (image[..., 2] > image[..., 0] + 0.2)  # the heat map's cells (Blues colour map)
    assert blue.mean() > 0.05


def test_confusion_picture_of_many_classes_drops_the_counts(tmp_path):
    k = MAX_ANNOTATED_CLASSES + 30
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 5, (k, k)) + np.diag(rng.integers(20, 40, k))
    classes = [f"c{i}" for i in range(k)]
    result = {"checkpoint": "runs/x/checkpoints/best.npz", "split": "test", "n": int(cm.sum()), "tta": "none",
              "accuracy": float(np.trace(cm) / cm.sum()), "classes": classes, "confusion_matrix": cm.tolist(),
              "per_class_accuracy": {c: float(cm[i, i] / cm[i].sum()) for i, c in enumerate(classes)}}
    _check_png(plot_confusion(result, tmp_path / "c.png"))


def test_without_matplotlib_the_message_says_how_to_install(grey_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ConfigError, match=r"pip install 'nntrain\[plot\]'"):
        plot_filters(grey_run, tmp_path / "f.png")


# ----- the command line ----------------------------------------------------------------------------
def test_plot_filters_and_eval_confusion_commands(grey_run, tmp_path):
    r = run("plot", grey_run, "--filters", "-o", tmp_path / "f.png")
    assert r.exit_code == 0, r.output
    assert r.output.strip() == str(tmp_path / "f.png")
    _check_png(tmp_path / "f.png")
    r = run("eval", grey_run, "--json", "--confusion", tmp_path / "c.png")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["n"] == 100  # with --json, stdout stays JSON (the picture's path on stderr)
    _check_png(tmp_path / "c.png")
    r = run("plot", grey_run, grey_run, "--filters", "-o", tmp_path / "g.png")
    assert r.exit_code == 2 and "one run, received 2" in r.output, r.output
