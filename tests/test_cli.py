"""The command line as a user meets it: exit codes, messages, no tracebacks, signals."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from nntrain.cli import main
from nntrain.rundir import read_csv

from .conftest import REPO


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_fit_then_eval_json(tiny_config, tmp_path):
    r = run("fit", tiny_config, "--run-dir", tmp_path / "run", "--set", "train.epochs=1", "--quiet")
    assert r.exit_code == 0, r.output
    assert r.output.strip() == str(tmp_path / "run")  # quiet: just the run directory, for scripts
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    r = run("eval", tmp_path / "run", "--json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    assert result["error"] == summary["test"]["error"]
    assert len(result["per_class_accuracy"]) == 10
    r = run("eval", tmp_path / "run" / "checkpoints" / "last.npz", "--split", "val", "--tta", "flip")
    assert r.exit_code == 0, r.output
    assert "confusion matrix" in r.output and "per-class accuracy" in r.output


def test_fit_and_eval_average_the_views_logits_when_asked(tiny_config, tmp_path):
    """eval.tta_average: logits (airbench's TTA) in the run's final test, and eval --tta-average."""
    r = run("fit", tiny_config, "--run-dir", tmp_path / "run", "--quiet", "--set", "train.epochs=1",
            "--set", "eval={tta: crops, tta_average: logits}")
    assert r.exit_code == 0, r.output
    test = json.loads((tmp_path / "run" / "summary.json").read_text())["test"]
    assert test["tta"] == "crops" and test["tta_average"] == "logits"
    by_logits = json.loads(run("eval", tmp_path / "run", "--json").stdout)  # stderr: a TTA warning
    assert by_logits["tta_average"] == "logits" and by_logits["error"] == test["error"]
    by_probabilities = json.loads(run("eval", tmp_path / "run", "--json", "--tta-average", "probabilities").stdout)
    assert by_probabilities["tta_average"] == "probabilities" and by_probabilities["loss"] != by_logits["loss"]
    assert "mean of logits" in run("eval", tmp_path / "run").output


@pytest.mark.parametrize("args,pattern", [
    (["--set", "optimizer.lr=0"], "lr=0"),
    (["--set", "optimizer.momentum=1.5"], "momentum"),
    (["--set", "train.batch_size=0"], "batch_size=0"),
    (["--set", "train.batch_size=100000"], "larger than the training split"),
    (["--set", "optimizer.type=adamm"], "did you mean 'adam'"),
    (["--set", "model.0.type=conv3d"], "known:"),
    (["--set", "model.4.out_features=7"], r"output must be \(10,\) logits"),
    (["--set", "model.0.kernel=40"], r"model\[0\].*\(1, 28, 28\)"),
    (["--set", "data.path=/nonexistent/mnist"], "/nonexistent/mnist"),
    (["--set", "data.dataset=cifar10", "--set", "data.path=/nonexistent"], "cs.toronto.edu"),
])
def test_bad_input_exits_2_with_one_message(tiny_config, tmp_path, args, pattern):
    runs = tmp_path / "runs"
    r = run("fit", tiny_config, "--runs-root", runs, *args)
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and "Traceback" not in r.output
    assert re.search(pattern, r.output), r.output
    assert not runs.exists() or not any(runs.iterdir()), "a bad config must not leave a run directory"


@pytest.mark.parametrize("value", ["two", "0"])
def test_bad_thread_count_is_reported_before_anything_runs(tiny_config, tmp_path, monkeypatch, value):
    from nntrain.ops import parallel

    monkeypatch.setenv("NNTRAIN_THREADS", value)
    monkeypatch.setitem(parallel._state, "threads", None)
    r = run("fit", tiny_config, "--runs-root", tmp_path / "runs")
    assert r.exit_code == 2 and "NNTRAIN_THREADS must be a positive integer" in r.output, r.output
    assert not (tmp_path / "runs").exists()


def test_shape_mismatch_names_layer_line_and_shapes(tmp_path):
    cfg = tmp_path / "x.yaml"
    cfg.write_text("data: {dataset: mnist_subset, limit: {train: 200, test: 50}}\nmodel:\n"
                   "  - {type: conv2d, out_channels: 4, kernel: 3}\n"
                   "  - {name: skip, type: conv2d, out_channels: 8, kernel: 3, padding: 1}\n"
                   "  - {type: add, inputs: [skip, conv2d_1]}\n")
    r = run("show", cfg)
    assert r.exit_code == 2
    assert f"{cfg}:5" in r.output and "add_1" in r.output and "(8, 26, 26)" in r.output and "(4, 26, 26)" in r.output


def test_debug_shows_traceback(tiny_config, tmp_path):
    r = run("fit", tiny_config, "--runs-root", tmp_path, "--set", "optimizer.lr=0", "--debug")
    assert r.exit_code != 0 and r.exc_info is not None  # the exception propagates


def test_missing_config_file(tmp_path):
    r = run("fit", tmp_path / "nope.yaml")
    assert r.exit_code == 2 and "not found" in r.output


def test_show_prints_config_and_layer_table(tiny_config):
    r = run("show", tiny_config)
    assert r.exit_code == 0, r.output
    assert "optimizer:" in r.output and "conv2d_1" in r.output and "multiply-adds" in r.output


def test_gradcheck_command_passes_on_real_examples(tiny_config):
    r = run("gradcheck", tiny_config)
    assert r.exit_code == 0, r.output
    assert "conv2d_1.weight" in r.output and "pass" in r.output


def test_resume_a_finished_run_is_harmless(tiny_config, tmp_path):
    assert run("fit", tiny_config, "--run-dir", tmp_path / "r", "--set", "train.epochs=1", "-q").exit_code == 0
    r = run("fit", "--resume", tmp_path / "r")
    assert r.exit_code == 0 and "already ended" in r.output


def test_help_is_complete_and_imports_no_numpy():
    """--help stays fast by importing nothing heavy (its time is measured in bench/speed.py)."""
    r = run("--help")
    for command in ("fit", "eval", "show", "gradcheck", "data"):
        assert command in r.output
    out = subprocess.run([sys.executable, "-c", "import sys, nntrain.cli; print('numpy' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "importing the CLI must not import numpy (lazy imports)"


def test_commands_set_openblas_spin_timeout_before_numpy_loads():
    """OpenBLAS reads OPENBLAS_THREAD_TIMEOUT once, when numpy loads it (see nntrain.openblas_env)."""
    code = ("import os, sys\n"
            "from nntrain.cli.common import handle_errors\n"
            "@handle_errors\n"
            "def command(debug=False):\n"
            "    return os.environ.get('OPENBLAS_THREAD_TIMEOUT'), 'numpy' in sys.modules\n"
            "print(*command())")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["16", "True"]  # set, and numpy loaded after it (by the wrapper)
    env["OPENBLAS_THREAD_TIMEOUT"] = "25"  # a user's own setting wins
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split()[0] == "25"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_checkpoint_and_resume_finishes(tiny_config, tmp_path, sig):
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "nntrain.cli", "fit", str(tiny_config), "--run-dir", str(run_dir),
                             "--set", "train.epochs=200"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and not (run_dir / "iterations.csv").exists():
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err
    assert (run_dir / "checkpoints" / "last.npz").exists()
    done = len(read_csv(run_dir / "iterations.csv"))
    assert 0 < done < 200 * 10
    assert "interrupted" in (run_dir / "events.log").read_text()
    r = run("fit", "--resume", run_dir, "--quiet")  # continue; cut it short through a fresh signal-free path
    assert r.exit_code in (0,), r.output
    assert json.loads((run_dir / "summary.json").read_text())["stop_reason"] == "finished"
    assert len(read_csv(run_dir / "iterations.csv")) == 200 * 10


def test_resume_of_an_ended_run_without_summary_writes_it(tiny_config, tmp_path):
    assert run("fit", tiny_config, "--run-dir", tmp_path / "r", "--set", "train.epochs=1", "-q").exit_code == 0
    before = json.loads((tmp_path / "r" / "summary.json").read_text())
    (tmp_path / "r" / "summary.json").unlink()  # as if killed between the last checkpoint and the summary
    r = run("fit", "--resume", tmp_path / "r", "-q")
    assert r.exit_code == 0, r.output
    after = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert after["stop_reason"] == before["stop_reason"] and after["test"] == before["test"]


def test_resume_rejects_a_different_config(tiny_config, tmp_path):
    r = run("fit", tiny_config, "--run-dir", tmp_path / "r", "--set", "train.epochs=1", "-q")
    assert r.exit_code == 0
    other = Path(tmp_path / "other.yaml")
    other.write_text(tiny_config.read_text().replace("lr: 0.05", "lr: 0.07"))
    r = run("fit", other, "--resume", tmp_path / "r")
    assert r.exit_code == 2 and "optimizer.lr" in r.output


@pytest.mark.parametrize("args,option", [
    (["eval", "run", "--batch-size", "-5"], "--batch-size"),  # was a traceback
    (["eval", "run", "--batch-size", "0"], "--batch-size"),  # was silently the config's batch size
    (["gradcheck", "x.yaml", "--examples", "0"], "--examples"),
    (["gradcheck", "x.yaml", "--entries", "-1"], "--entries"),
    (["gradcheck", "x.yaml", "--tolerance", "-1e-5"], "--tolerance"),
])
def test_out_of_range_numbers_are_refused_before_anything_runs(args, option):
    r = run(*args)
    assert r.exit_code == 2 and f"Invalid value for '{option}'" in r.output and "range" in r.output, r.output
    assert "Traceback" not in r.output


def test_data_fetch_root_under_a_file_is_one_message(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    r = run("data", "fetch", "mnist", "--root", tmp_path / "file" / "mnist", "--base-url", "http://127.0.0.1:9/")
    assert r.exit_code == 2 and f"{tmp_path / 'file'} is a file, not a folder" in r.output, r.output
    assert "--root" in r.output and "Traceback" not in r.output
    monkeypatch.setenv("NNTRAIN_DATA", str(tmp_path / "file"))  # the default folder: the same, naming --root
    r = run("data", "fetch", "mnist", "--base-url", "http://127.0.0.1:9/")
    assert r.exit_code == 2 and r.output.startswith("error: ") and "is a file, not a folder" in r.output, r.output
    assert "--root" in r.output and "Traceback" not in r.output
