"""TensorBoard logs read back with TensorBoard's own event reader and checked against the CSV logs,
including a run killed after its last checkpoint and resumed (no step written twice)."""

import shutil
import sys

import numpy as np
import pytest

pytest.importorskip("tensorboardX")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

from nntrain.config import load_config  # noqa: E402
from nntrain.errors import ConfigError  # noqa: E402
from nntrain.experiment import build_experiment  # noqa: E402
from nntrain.rundir import Checkpoint, read_csv  # noqa: E402
from nntrain.tensorboard import ITERATION_TAGS, METRICS_TAGS, TensorBoardHook, tensorboard_option  # noqa: E402
from nntrain.train import Trainer  # noqa: E402

OVERRIDES = ["train.eval_every=4", "train.log_every=2"]  # mid-epoch evaluations; every other step logged


def _trainer(config_path, run_dir, *, resume=False, stop_at=None, histograms=False):
    if resume:
        ckpt = Checkpoint(run_dir / "checkpoints" / "last.npz")
        exp = build_experiment(ckpt.config, normalizer_state=ckpt.group("norm"))
    else:
        exp = build_experiment(load_config(config_path, OVERRIDES))
    return Trainer(exp, run_dir, quiet=True, resume=resume, stop_at_iteration=stop_at,
                   hooks=[TensorBoardHook(histograms=histograms)])


def _scalars(run_dir) -> dict:
    """tag -> [(step, value)] as TensorBoard reads the run's tensorboard/ folder (purges applied)."""
    acc = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"), size_guidance={
        event_accumulator.SCALARS: 0, event_accumulator.HISTOGRAMS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}, acc


def _expected(run_dir) -> dict:
    """The same curves from metrics.csv and iterations.csv."""
    out = {}
    for name, tags in (("metrics", METRICS_TAGS), ("iterations", ITERATION_TAGS)):
        rows = read_csv(run_dir / f"{name}.csv")
        for tag in tags:
            points = [(r["iteration"], r[tag]) for r in rows if r[tag] is not None]
            if points:
                out[f"{name}/{tag}"] = points
    return out


def _assert_same_curves(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for tag, points in expected.items():
        steps = [s for s, _ in got[tag]]
        assert steps == [s for s, _ in points], tag  # same steps, in order, none twice
        np.testing.assert_allclose([v for _, v in got[tag]], [v for _, v in points], rtol=1e-6, err_msg=tag)


def test_scalars_equal_the_csv_logs_and_histograms_are_written(tiny_config, tmp_path):
    run = tmp_path / "run"
    summary = _trainer(tiny_config, run, histograms=True).run()
    got, acc = _scalars(run)
    expected = _expected(run)
    assert {"metrics/val_error", "metrics/weight_decay", "iterations/loss"} <= set(expected)
    # 3 epochs of 10 steps: evaluations at every 4th step and at the epoch ends (20 is both)
    assert [s for s, _ in expected["metrics/energy"]] == [4, 8, 10, 12, 16, 20, 24, 28, 30]
    assert [s for s, _ in expected["iterations/loss"]] == list(range(2, summary["iterations"] + 1, 2))
    _assert_same_curves(got, expected)
    histograms = acc.Tags()["histograms"]
    assert "weights/conv2d_1.weight" in histograms and "gradients/linear_1.bias" in histograms
    assert [e.step for e in acc.Histograms("weights/conv2d_1.weight")] == [10, 20, 30]


def test_a_run_killed_after_its_checkpoint_and_resumed_continues_the_same_curves(tiny_config, tmp_path):
    full = tmp_path / "full"
    _trainer(tiny_config, full).run()
    run = tmp_path / "run"
    _trainer(tiny_config, run, stop_at=7).run()  # interrupted at 7: last.npz at 7
    shutil.copy(run / "checkpoints" / "last.npz", tmp_path / "at7.npz")
    _trainer(tiny_config, run, resume=True, stop_at=18).run()  # logs 8..18
    # killed without saving at 18: the last checkpoint is still the one at 7 (as after a SIGKILL)
    shutil.copy(tmp_path / "at7.npz", run / "checkpoints" / "last.npz")
    _trainer(tiny_config, run, resume=True).run()  # logs 8..30 again
    assert len(list((run / "tensorboard").iterdir())) == 3
    got, _ = _scalars(run)
    _assert_same_curves(got, _expected(full))  # = the uninterrupted run's numbers, each step once
    assert _expected(run) == _expected(full)


def test_tensorboard_option():
    assert tensorboard_option(False) is None and tensorboard_option(None) is None
    assert tensorboard_option(True) == {"histograms": False}
    assert tensorboard_option({"histograms": True}) == {"histograms": True}
    for bad in ("yes", {"histogram": True}, {"histograms": 1}):
        with pytest.raises(ConfigError, match="train.tensorboard: expected true, false"):
            tensorboard_option(bad)


def test_without_tensorboardx_the_message_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ConfigError, match=r"pip install 'nntrain\[tensorboard\]'"):
        TensorBoardHook()
