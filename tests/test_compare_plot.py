"""``nntrain compare`` and ``nntrain plot``: hand-made run directories with known numbers,
and one real tiny sweep."""

import csv
import io
import json
import struct
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from nntrain.cli import main
from nntrain.compare import flatten, format_seconds
from nntrain.rundir import METRICS_COLUMNS

from .conftest import REPO

QUICKSTART = REPO / "configs" / "quickstart.yaml"
TINY = ["data.limit.train=300", "data.limit.test=100", "data.validation=100", "train.max_iterations=4"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def make_run(path: Path, lr, batch_size, val_errors, *, test=None, stop="finished", width=10, wall=12.0):
    """A run directory as fit writes it: config.yaml, metrics.csv, summary.json (if ended)."""
    path.mkdir(parents=True)
    config = {"name": "q", "seed": 0, "data": {"dataset": "mnist_subset", "augment": []},
              "model": [{"type": "linear", "out_features": width, "name": "fc"}, {"type": "relu"}],
              "optimizer": {"type": "sgd", "lr": lr}, "train": {"batch_size": batch_size, "epochs": 3}}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    with open(path / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, METRICS_COLUMNS)
        w.writeheader()
        for i, v in enumerate(val_errors):
            w.writerow({"epoch": i + 1, "iteration": 10 * (i + 1), "lr": lr * (1 - i / 4), "energy": 2.0 / (i + 1),
                        "loss": 1.9 / (i + 1), "weight_decay": 0.1, "train_error": 0.5 / (i + 1),
                        "val_loss": "" if v is None else v * 3, "val_error": "" if v is None else v,
                        "seconds": wall * (i + 1) / len(val_errors)})
    (path / "checkpoints").mkdir()
    (path / "checkpoints" / "last.npz").write_bytes(b"")
    if stop is not None:
        (path / "summary.json").write_text(json.dumps({
            "stop_reason": stop, "epochs": float(len(val_errors)), "wall_time_s": wall,
            "test": None if test is None else {"error": test}}))
    return path


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    make_run(root / "a", 0.1, 64, [0.30, 0.20, 0.25], test=0.22, wall=30.0)
    make_run(root / "b", 0.01, 64, [0.40, 0.15, 0.15], test=0.16, stop="early_stopping", wall=4000.0)
    make_run(root / "c", 0.001, 128, [0.50], stop=None, wall=61.0)  # interrupted: no summary yet
    make_run(root / "d", 0.5, 64, [None, None], test=0.9)  # no validation split
    return root


def compare_json(*args):
    r = cli("compare", *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_compare_ranks_by_best_validation_error_with_missing_last(runs):
    rows = compare_json(runs)
    assert [r["run"] for r in rows] == ["b", "a", "c", "d"]
    assert [r["val_error"] for r in rows] == [0.15, 0.20, 0.50, None]
    assert [r["best_epoch"] for r in rows] == [2, 2, 1, None]  # the first epoch of the lowest value
    assert [r["test_error"] for r in rows] == [0.16, 0.22, None, 0.9]
    assert [r["status"] for r in rows] == ["early_stopping", "finished", "interrupted", "finished"]
    assert rows[2]["wall_time"] == 61.0 and rows[2]["epochs"] == 1  # unfinished: from metrics.csv
    # only the keys that differ, by their full dotted names
    assert [k for k in rows[0] if "." in k] == ["optimizer.lr", "train.batch_size"]
    assert [r["run"] for r in compare_json(runs, "--reverse")] == ["c", "a", "b", "d"]  # missing stays last
    assert [r["run"] for r in compare_json(runs, "--sort", "test_error")] == ["b", "a", "d", "c"]


def test_compare_sorts_by_any_column_and_suffix(runs):
    assert [r["run"] for r in compare_json(runs, "--sort", "lr")] == ["c", "b", "a", "d"]
    assert [r["run"] for r in compare_json(runs, "--sort", "train.batch_size", "-r")][0] == "c"
    assert [r["run"] for r in compare_json(runs, "--sort", "wall_time")] == ["d", "a", "c", "b"]
    r = cli("compare", runs, "--sort", "val_eror")
    assert r.exit_code == 2 and "no such column; did you mean 'val_error'" in r.output
    r = cli("compare", runs, "--sort", "bach_size")
    assert r.exit_code == 2 and "did you mean 'batch_size'" in r.output


def test_compare_layers_by_name_and_table_csv(runs):
    make_run(runs / "e", 0.1, 64, [0.1], width=20)
    rows = compare_json(runs)
    assert rows[0]["run"] == "e" and rows[0]["model.fc.out_features"] == 20 and rows[1]["model.fc.out_features"] == 10
    r = cli("compare", runs)
    lines = r.output.splitlines()
    assert lines[0].split() == ["run", "model.fc.out_features", "optimizer.lr", "train.batch_size", "val_error",
                                "best_epoch", "test_error", "epochs", "wall_time", "status"]
    assert lines[2].split() == ["e", "20", "0.1", "64", "0.1000", "1", "-", "1", "12.0s", "finished"]
    assert lines[3].split()[-2:] == ["1h06m", "early_stopping"]
    r = cli("compare", runs, "--csv")
    table = list(csv.DictReader(io.StringIO(r.output)))
    assert [t["run"] for t in table] == ["e", "b", "a", "c", "d"]
    assert table[1]["val_error"] == "0.15" and table[4]["val_error"] == "" and table[1]["path"].endswith("b")


def test_compare_expands_sweeps_with_pending_trials(tmp_path):
    sweep = tmp_path / "sweep"
    make_run(sweep / "lr=0.1", 0.1, 64, [0.3])
    make_run(sweep / "lr=0.01", 0.01, 64, [0.2])
    trials = [{"id": f"lr={lr}", "overrides": [f"optimizer.lr={lr}"], "run_dir": f"lr={lr}", "status": "finished"}
              for lr in ("0.1", "0.01", "0.001")]
    trials[2]["status"] = "pending"
    (sweep / "manifest.json").write_text(json.dumps({"format": "nntrain-sweep-1", "trials": trials}))
    other = make_run(tmp_path / "other" / "lr=0.1", 0.1, 32, [0.25])
    rows = compare_json(sweep, other)
    # a name that appears twice gets its folder
    assert [r["run"] for r in rows] == ["lr=0.01", "other/lr=0.1", "sweep/lr=0.1", "lr=0.001"]
    assert rows[-1]["status"] == "pending" and rows[-1]["optimizer.lr"] == 0.001
    assert rows[-1]["train.batch_size"] is None  # not known before it runs


def test_compare_says_what_is_wrong(tmp_path):
    (tmp_path / "empty").mkdir()
    r = cli("compare", tmp_path / "empty")
    assert r.exit_code == 2 and "not a run directory" in r.output and "Traceback" not in r.output
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{")
    r = cli("compare", tmp_path / "bad")
    assert r.exit_code == 2 and "unreadable sweep manifest" in r.output


def test_flatten_and_format_seconds():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "model": [{"type": "relu"}, {"type": "linear", "name": "fc"}],
                    "d": {}}) == {"a.b": 1, "a.c": [1, 2], "model.0.type": "relu", "model.fc.type": "linear",
                                  "model.fc.name": "fc", "d": {}}
    assert [format_seconds(s) for s in (1.234, 59.9, 61, 3599, 3600, 7321)] == \
        ["1.2s", "59.9s", "1m01s", "59m59s", "1h00m", "2h02m"]


# ----- a real sweep --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("real") / "sweep"
    args = ["sweep", QUICKSTART, "--grid", "optimizer.lr=0.1,0.01", "--grid", "train.batch_size=32,64",
            *[a for s in TINY for a in ("--set", s)], "--jobs", "2", "--sweep-dir", sweep, "--quiet"]
    r = cli(*args)
    assert r.exit_code == 0, r.output
    return sweep


def test_compare_ranks_a_real_sweep_like_its_summaries(real_sweep):
    rows = compare_json(real_sweep)
    manifest = json.loads((real_sweep / "manifest.json").read_text())
    summaries = {t["id"]: json.loads((real_sweep / t["run_dir"] / "summary.json").read_text())
                 for t in manifest["trials"]}
    order = sorted(summaries, key=lambda tid: summaries[tid]["best"]["value"])  # stable: manifest order on ties
    assert [r["run"] for r in rows] == order
    assert all(r["val_error"] == summaries[r["run"]]["best"]["value"] for r in rows)
    assert all(r["test_error"] == summaries[r["run"]]["test"]["error"] for r in rows)
    assert [k for k in rows[0] if "." in k] == ["optimizer.lr", "train.batch_size"]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_plot_writes_a_png(real_sweep, runs, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "figs" / "curves.png"
    r = cli("plot", real_sweep, "-o", out)
    assert r.exit_code == 0, r.output
    assert r.output.strip() == str(out)
    assert _png_size(out) == (1320, 825) and out.stat().st_size > 20_000
    r = cli("plot", runs / "d", runs / "a", "-o", tmp_path / "two.png", "--linear", "--title", "t")  # d: no val
    assert r.exit_code == 0, r.output


def test_plot_labels_runs_by_their_differing_keys(runs):
    from nntrain.compare import collect_runs, compare_rows
    from nntrain.plot import run_labels

    refs = collect_runs([runs / "a", runs / "c"])
    assert run_labels(refs, compare_rows(refs)) == ["lr=0.1 batch_size=64", "lr=0.001 batch_size=128"]
    refs = collect_runs([runs / "a"])
    assert run_labels(refs, compare_rows(refs)) == ["a"]  # nothing differs: the run's name


def test_plot_without_matplotlib_says_how_to_install_it(runs, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    r = cli("plot", runs / "a", "-o", tmp_path / "x.png")
    assert r.exit_code == 2
    assert "pip install 'nntrain[plot]'" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x.png").exists()


def test_plot_with_no_metrics_fails_clearly(tmp_path):
    run = tmp_path / "r"
    (run / "checkpoints").mkdir(parents=True)
    r = cli("plot", run, "-o", tmp_path / "x.png")
    assert r.exit_code == 2 and "nothing to plot" in r.output


@pytest.mark.parametrize("case", ["five runs, three differing keys", "names too long for one line"])
def test_plot_legend_and_title_lie_inside_the_figure(tmp_path, case):
    """Several runs' labels once ran off both edges of the PNG (4 columns, whatever their width)."""
    pytest.importorskip("matplotlib")
    from nntrain.plot import curves_figure, import_pyplot

    if case.startswith("five"):
        paths = [make_run(tmp_path / f"r{i}", lr, bs, [0.3, 0.2], width=10 + i)
                 for i, (lr, bs) in enumerate([(0.1, 64), (0.01, 128), (0.001, 256), (0.05, 32), (0.2, 512)])]
    else:
        paths = [make_run(tmp_path / ("long-run-directory-name-" * 8 + end), 0.1, 64, [0.3]) for end in ("a", "b")]
    fig = curves_figure(paths)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        page = fig.bbox
        for artist in [*fig.legends, fig._suptitle]:
            box = artist.get_window_extent(renderer)
            assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1, \
                (artist, box, page)
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        if case.startswith("five"):  # whole: the differing keys
            assert labels[1] == "out_features=11 lr=0.01 batch_size=128" and not any("..." in t for t in labels)
        else:  # the middle dropped, the ends that tell the runs apart kept
            assert [t[-1] for t in labels] == ["a", "b"] and all("..." in t for t in labels)
    finally:
        import_pyplot().close(fig)
