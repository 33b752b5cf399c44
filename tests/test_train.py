"""The training loop: run directory, exact resume, early stopping, divergence, checkpoints."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from nntrain.config import load_config
from nntrain.errors import CheckpointError, ConfigError
from nntrain.evaluate import evaluate_checkpoint
from nntrain.experiment import build_experiment
from nntrain.rundir import Checkpoint, create_run_dir, read_csv
from nntrain.train import Trainer


def _train(config_path, run_dir, overrides=(), **kwargs):
    cfg = load_config(config_path, list(overrides))
    trainer = Trainer(build_experiment(cfg), run_dir, quiet=True, **kwargs)
    return trainer.run()


def _without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_run_directory_is_complete(tiny_config, tmp_path):
    run = tmp_path / "run"
    summary = _train(tiny_config, run)
    for name in ("config.yaml", "model.txt", "metrics.csv", "iterations.csv", "summary.json",
                 "checkpoints/best.npz", "checkpoints/last.npz"):
        assert (run / name).is_file(), name
    with open(run / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert header[:10] == ["epoch", "iteration", "lr", "energy", "loss", "weight_decay", "train_error",
                           "val_loss", "val_error", "seconds"]
    rows = read_csv(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1.0, 2.0, 3.0]
    for r in rows:  # energy = data loss + weight-decay term
        assert r["energy"] == pytest.approx(r["loss"] + r["weight_decay"], rel=1e-9)
        assert r["weight_decay"] > 0
    iters = read_csv(run / "iterations.csv")
    assert len(iters) == summary["iterations"] == 3 * 10  # 300 train images / 32 -> 10 batches
    assert summary["stop_reason"] == "finished"
    assert summary["test"]["n"] == 100
    assert json.loads((run / "summary.json").read_text()) == json.loads(json.dumps(summary, default=str))
    assert rows[1]["lr"] == pytest.approx(0.05) and rows[2]["lr"] == pytest.approx(0.025)  # multistep at epoch 2
    assert rows[-1]["energy"] < rows[0]["energy"]


def test_wall_time_includes_the_final_test(tiny_config, tmp_path, monkeypatch):
    """summary.json's wall_time_s is the whole run: the final test evaluation (TTA) too."""
    import time

    score = Trainer._score

    def slow_score(self, split, **options):
        if split is self.exp.data.test:
            time.sleep(0.3)
        return score(self, split, **options)

    monkeypatch.setattr(Trainer, "_score", slow_score)
    summary = _train(tiny_config, tmp_path / "run")
    saved = Checkpoint(tmp_path / "run" / "checkpoints" / "last.npz").meta["elapsed"]
    assert summary["wall_time_s"] >= saved + 0.3


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the kernel's VmHWM")
def test_summary_reports_the_peak_resident_size_in_mib(tiny_config, tmp_path):
    summary = _train(tiny_config, tmp_path / "run")
    hwm_kib = int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
    assert summary["peak_rss_mib"] == pytest.approx(hwm_kib / 1024, rel=0.05)  # the kernel's own peak


def test_eval_reproduces_reported_test_error_exactly(tiny_config, tmp_path):
    summary = _train(tiny_config, tmp_path / "run")
    result = evaluate_checkpoint(tmp_path / "run" / "checkpoints" / summary["test"]["checkpoint"])
    assert result["error"] == summary["test"]["error"]
    assert result["loss"] == summary["test"]["loss"]
    assert sum(map(sum, result["confusion_matrix"])) == 100


@pytest.mark.parametrize("stop_at", [5, 10, 16])  # mid-epoch, exactly at an epoch end, late
def test_interrupted_and_resumed_equals_uninterrupted(tiny_config, tmp_path, stop_at):
    overrides = ["train.ema={decay: 0.9}", "train.eval_every=4", "schedule={type: plateau, patience: 1}",
                 "train.lookahead={k: 3, decay: 0.9, power: 2, start_epoch: 0.5}"]
    if stop_at == 10:  # early stopping that fires at the interrupted epoch end's evaluation
        overrides += ["train.early_stopping={patience: 1, min_delta: 0.5}", "train.epochs=5",
                      "train.eval_every=5"]  # evaluations at 5 and 10: patience acts at once
    full = _train(tiny_config, tmp_path / "full", overrides)
    part = _train(tiny_config, tmp_path / "part", overrides, stop_at_iteration=stop_at)
    assert part["stop_reason"] == "interrupted" and part["iterations"] == stop_at
    cfg = Checkpoint(tmp_path / "part" / "checkpoints" / "last.npz").config
    resumed = Trainer(build_experiment(cfg, normalizer_state=Checkpoint(
        tmp_path / "part" / "checkpoints" / "last.npz").group("norm")), tmp_path / "part", quiet=True,
        resume=True).run()
    assert resumed["stop_reason"] == full["stop_reason"] == ("early_stopping" if stop_at == 10 else "finished")
    assert _without_seconds(read_csv(tmp_path / "part" / "metrics.csv")) == \
        _without_seconds(read_csv(tmp_path / "full" / "metrics.csv"))
    assert read_csv(tmp_path / "part" / "iterations.csv") == read_csv(tmp_path / "full" / "iterations.csv")
    a = Checkpoint(tmp_path / "full" / "checkpoints" / "last.npz").arrays
    b = Checkpoint(tmp_path / "part" / "checkpoints" / "last.npz").arrays
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert resumed["test"] == full["test"]


def test_early_stopping_restores_best(tiny_config, tmp_path):
    # a learning rate this small barely moves: validation error stalls, patience runs out
    summary = _train(tiny_config, tmp_path / "run", ["train.epochs=30", "optimizer.lr=1e-6",
                                                      "optimizer.momentum=0", "train.early_stopping={patience: 2}"])
    assert summary["stop_reason"] == "early_stopping"
    assert summary["epochs"] < 30
    assert summary["test"]["checkpoint"] == "best.npz"
    best = Checkpoint(tmp_path / "run" / "checkpoints" / "best.npz")
    assert best.meta["iteration"] == summary["best"]["iteration"]
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    assert min(r["val_error"] for r in rows) == summary["best"]["value"]


def test_divergence_rolls_back_and_cuts_the_learning_rate(tiny_config, tmp_path):
    summary = _train(tiny_config, tmp_path / "run", ["optimizer.lr=1e4", "train.epochs=1",
                                                      "train.divergence={max_retries: 12, lr_factor: 0.1}"])
    assert summary["divergence_retries"] >= 1
    assert summary["lr_scale"] == pytest.approx(0.1 ** summary["divergence_retries"])
    assert summary["stop_reason"] == "finished"
    assert "rolled back" in (tmp_path / "run" / "events.log").read_text()
    iters = read_csv(tmp_path / "run" / "iterations.csv")
    assert [r["iteration"] for r in iters] == list(range(1, len(iters) + 1))  # no duplicated rows
    assert all(np.isfinite(r["energy"]) for r in iters)


def test_divergence_stop_action(tiny_config, tmp_path):
    summary = _train(tiny_config, tmp_path / "run", ["optimizer.lr=1e6", "train.divergence={action: stop}"])
    assert summary["stop_reason"] == "diverged"
    assert summary["test"] is None


def test_batch_larger_than_training_set(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match="larger than the training split"):
        _train(tiny_config, tmp_path / "run", ["train.batch_size=5000"])


def test_run_dirs_never_clobber(tmp_path):
    a = create_run_dir("x", tmp_path)
    b = create_run_dir("x", tmp_path)
    assert a != b and a.is_dir() and b.is_dir()
    (a / "file").write_text("keep")
    with pytest.raises(ConfigError, match="not empty"):
        create_run_dir("x", tmp_path, run_dir=a)


def test_corrupt_or_truncated_checkpoint_is_a_clear_error(tiny_config, tmp_path):
    _train(tiny_config, tmp_path / "run", ["train.epochs=1"])
    good = (tmp_path / "run" / "checkpoints" / "last.npz").read_bytes()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        Checkpoint(bad)
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(CheckpointError):
        evaluate_checkpoint(bad)
    np.savez(bad, x=np.zeros(3))
    with pytest.raises(CheckpointError, match="not an nntrain checkpoint"):
        Checkpoint(bad)


def test_checkpoint_never_needs_pickle(tiny_config, tmp_path):
    _train(tiny_config, tmp_path / "run", ["train.epochs=1"])
    with np.load(tmp_path / "run" / "checkpoints" / "last.npz", allow_pickle=False) as data:
        assert all(data[k].dtype != object for k in data.files)


def test_max_iterations_and_mid_epoch_evaluation(tiny_config, tmp_path):
    summary = _train(tiny_config, tmp_path / "run", ["train.max_iterations=10", "train.eval_every=3"])
    assert summary["iterations"] == 10 and summary["stop_reason"] == "max_iterations"
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    assert [r["iteration"] for r in rows] == [3, 6, 9, 10]


def test_lookahead_sets_the_slow_weights_at_each_epoch_end(tiny_config, tmp_path):
    summary = _train(tiny_config, tmp_path / "run", ["train.lookahead={k: 4, alpha: 0.5, start_epoch: 1}"])
    ckpt = Checkpoint(tmp_path / "run" / "checkpoints" / "last.npz")
    assert bool(ckpt.arrays["lookahead/started"]) and int(ckpt.arrays["lookahead/steps"]) == 2 * 10  # steps 11..30
    for key, slow in ckpt.group("lookahead/slow").items():  # the run ended on the slow weights
        np.testing.assert_array_equal(ckpt.arrays[f"param/{key}"], slow, err_msg=key)
    plain = _train(tiny_config, tmp_path / "plain")
    assert summary["final"]["energy"] != plain["final"]["energy"]


def test_whitening_layer_is_computed_from_the_training_data(tiny_config, tmp_path):
    cfg = load_config(tiny_config, ["model=[{type: conv2d, out_channels: 18, kernel: 3, "
                                    "init: {type: pca_whitening, eps: 0, samples: 200}, "
                                    "params: {weight: {trainable: false}}}, {type: relu}, {type: flatten}, "
                                    "{type: linear, out_features: 10}]"])
    exp = build_experiment(cfg)
    conv = exp.network.order[0].layer
    x = exp.augment.for_eval()(exp.normalizer.apply(exp.data.train.x[:200]), None)
    rows = conv.input_rows(np.ascontiguousarray(x.transpose(1, 0, 2, 3)))
    z = rows.astype(np.float64) @ conv.weight.value.reshape(18, 9)[:9].T.astype(np.float64)
    np.testing.assert_allclose(z.T @ z / len(z), np.eye(9), atol=2e-3)  # whitened
    np.testing.assert_array_equal(conv.weight.value[9:], -conv.weight.value[:9])
    before = conv.weight.value.copy()
    summary = Trainer(exp, tmp_path / "run", quiet=True).run()
    np.testing.assert_array_equal(conv.weight.value, before)  # frozen
    # evaluating the checkpoint rebuilds the network without data and loads the whitening weights
    result = evaluate_checkpoint(tmp_path / "run" / "checkpoints" / summary["test"]["checkpoint"])
    assert result["error"] == summary["test"]["error"]


def test_checkpoint_of_format_1_resumes_to_the_uninterrupted_numbers(tmp_path):
    """tests/data/v1_checkpoint: a run (EMA, Lookahead, mid-epoch evaluations) interrupted at
    iteration 9 by nntrain before the TrainState (checkpoint format 1), and the metrics and
    test result of the same run uninterrupted, both made with NNTRAIN_THREADS=1 by that code."""
    import shutil
    import subprocess
    import sys

    from tests.conftest import REPO

    fixture = REPO / "tests" / "data" / "v1_checkpoint"
    run = tmp_path / "run"
    shutil.copytree(fixture / "run", run)
    assert json.loads(str(np.load(run / "checkpoints" / "last.npz")["meta"]))["format"] == "nntrain-checkpoint-1"
    env = {**__import__("os").environ, "NNTRAIN_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "nntrain.cli", "fit", "--resume", str(run), "--quiet"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    expected = json.loads((fixture / "expected.json").read_text())
    assert _without_seconds(read_csv(run / "metrics.csv")) == expected["metrics"]
    assert json.loads((run / "summary.json").read_text())["test"] == expected["test"]
    assert Checkpoint(run / "checkpoints" / "last.npz").meta["format"] == "nntrain-checkpoint-2"


def test_checkpoint_of_an_unknown_format_names_it(tiny_config, tmp_path):
    _train(tiny_config, tmp_path / "run", ["train.epochs=1"])
    path = tmp_path / "run" / "checkpoints" / "last.npz"
    arrays = dict(np.load(path))
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.array(json.dumps({**meta, "format": "nntrain-checkpoint-9", "nntrain_version": "9.0"}))
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match=r"format 'nntrain-checkpoint-9' \(written by nntrain 9.0\)"):
        Checkpoint(path)
