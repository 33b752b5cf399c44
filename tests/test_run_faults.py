"""Hostile inputs and faults around a run (issue 19): run directories, checkpoints that are
malformed inside, edits before a resume, a full disk, Ctrl-C, --json, and the loop's
promises (early stopping, events). Each asserts the exit code, one message, no traceback."""

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from nntrain.cli import main
from nntrain.config import load_config
from nntrain.experiment import build_experiment
from nntrain.rundir import Checkpoint, read_csv
from nntrain.train import Trainer

from .conftest import REPO, TINY, write_yaml


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error(result, code: int = 2) -> str:
    """The one 'error: ...' line of a failed command (and no traceback)."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def tiny(tmp_path, name="tiny.yaml", **train):
    cfg = {**TINY, "train": {**TINY["train"], **train}}
    return write_yaml(tmp_path / name, cfg)


def fit_quiet(config, run_dir, *sets):
    r = run("fit", config, "--run-dir", run_dir, "-q", *[a for s in sets for a in ("--set", s)])
    assert r.exit_code == 0, r.output
    return json.loads((run_dir / "summary.json").read_text())


# ----- class 1: the end of a run that has no evaluation yet -----------------------------------
def test_diverging_run_without_quiet_ends_with_a_message_not_a_crash(tmp_path):
    config = tiny(tmp_path, divergence={"action": "stop"})
    r = run("fit", config, "--run-dir", tmp_path / "r", "--set", "optimizer.lr=1e6")
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and "done: diverged after" in r.output and "no evaluation yet" in r.output


@pytest.mark.parametrize("quiet", [False, True])
def test_ctrl_c_in_the_first_epoch_exits_130_without_traceback(tmp_path, quiet):
    config = tiny(tmp_path, epochs=1, batch_size=1)  # 300 steps in the first epoch
    run_dir = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "nntrain.cli", "fit", str(config), "--run-dir", str(run_dir)]
                            + (["-q"] if quiet else []), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=tmp_path)
    deadline = time.time() + 60
    while time.time() < deadline and not read_csv(run_dir / "iterations.csv"):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err + out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stop_reason"] == "interrupted" and summary["best"]["value"] is None
    if not quiet:
        assert b"no evaluation yet" in out


# ----- class 4: run directories ---------------------------------------------------------------
@pytest.mark.parametrize("name,pattern", [
    ("a\nb", "control characters"), ("a\x00b", "control characters"), ("x" * 300, "at most 200"),
])
def test_run_names_no_file_system_holds_are_refused(tmp_path, name, pattern):
    config = write_yaml(tmp_path / "c.yaml", {**TINY, "name": name})
    r = CliRunner().invoke(main, ["fit", str(config), "--runs-root", str(tmp_path / "runs")])
    assert pattern in one_error(r)
    assert not any((tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else True


def test_run_dir_under_a_file_or_a_broken_link(tmp_path):
    (tmp_path / "file").write_text("x")
    assert "is a file, not a folder" in one_error(run("fit", tiny(tmp_path), "--run-dir", tmp_path / "file" / "r"))
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    assert "broken symbolic link" in one_error(run("fit", tiny(tmp_path), "--run-dir", tmp_path / "link"))
    long = tmp_path / ("y" * 300)
    assert "255" in one_error(run("fit", tiny(tmp_path), "--run-dir", long))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_run_dir_in_a_read_only_folder(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    assert "cannot create it" in one_error(run("fit", tiny(tmp_path), "--run-dir", tmp_path / "ro" / "r"))


def test_a_run_killed_before_its_first_checkpoint_is_no_dead_end(tmp_path):
    config = tiny(tmp_path, epochs=1)
    full = fit_quiet(config, tmp_path / "full")
    # what a SIGKILL before the first checkpoint leaves: the run files, no checkpoint, a stale temporary
    run_dir = tmp_path / "r"
    assert run("fit", config, "--run-dir", run_dir, "-q", "--set", "train.max_iterations=2").exit_code == 0
    for name in ("summary.json", "checkpoints/last.npz", "checkpoints/best.npz"):
        (run_dir / name).unlink()
    (run_dir / "checkpoints" / ".last.npz.abc.tmp").write_bytes(b"half")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(Checkpoint(tmp_path / "full" / "checkpoints" /
                                                                    "last.npz").config))
    msg = one_error(run("fit", config, "--run-dir", run_dir))
    assert f"nntrain fit --resume {run_dir} starts it over" in msg
    r = run("fit", "--resume", run_dir, "-q")
    assert r.exit_code == 0, r.output
    assert json.loads((run_dir / "summary.json").read_text())["test"] == full["test"]
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))


def test_stale_temporaries_are_removed_on_resume_and_files_are_readable_by_others(tmp_path):
    run_dir = tmp_path / "r"
    Trainer(build_experiment(load_config(tiny(tmp_path))), run_dir, quiet=True, stop_at_iteration=3).run()
    (run_dir / "checkpoints" / ".last.npz.x1.tmp").write_bytes(b"partial")
    r = run("fit", "--resume", run_dir, "-q")
    assert r.exit_code == 0, r.output
    assert not list(run_dir.rglob("*.tmp"))
    umask = os.umask(0)
    os.umask(umask)
    for name in ("summary.json", "config.yaml", "checkpoints/last.npz"):
        mode = stat.S_IMODE((run_dir / name).stat().st_mode)
        assert mode == 0o666 & ~umask, (name, oct(mode))


def test_events_log_exists_from_the_start(tmp_path):
    run_dir = tmp_path / "r"
    fit_quiet(tiny(tmp_path, epochs=1), run_dir)
    assert (run_dir / "events.log").is_file() and (run_dir / "events.log").read_text() == ""


# ----- class 7: checkpoints malformed inside ----------------------------------------------------
@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt")
    Trainer(build_experiment(load_config(tiny(tmp, epochs=1))), tmp / "r", quiet=True).run()
    return tmp / "r" / "checkpoints" / "last.npz"


def _rewrite(src, dst, meta=None, **arrays):
    data = dict(np.load(src))
    if meta is not None:
        data["meta"] = np.array(json.dumps(meta) if not isinstance(meta, np.ndarray) else meta)
    data.update(arrays)
    np.savez(dst, **data)
    return dst


@pytest.mark.parametrize("change,pattern", [
    (lambda m, a: {"meta": 3}, "JSON int, not a mapping"),
    (lambda m, a: {"meta": [1, 2]}, "JSON list, not a mapping"),
    (lambda m, a: {"meta": {k: v for k, v in m.items() if k != "config"}}, "no config mapping"),
    (lambda m, a: {"meta": {**m, "config": {**m["config"], "optimizer": {"type": "nope"}}}},
     "embedded config is invalid"),
    (lambda m, a: {"meta": m, next(k for k in a if k.startswith("param/")): np.array(["w"] * 4)}, "not numbers"),
    (lambda m, a: {"meta": {k: v for k, v in m.items() if k != "sums"}}, "lacks sums"),  # only resume needs them
    (lambda m, a: {"meta": m, "optim/nothing/momentum_buffer": np.zeros(2, np.float32),
                   **{k: v for k, v in a.items() if not k.startswith("optim/")}}, "optim"),
])
def test_malformed_checkpoints_are_one_clear_error(good_checkpoint, tmp_path, change, pattern):
    data = dict(np.load(good_checkpoint))
    meta = json.loads(str(data["meta"]))
    changes = change(meta, data)
    if pattern in ("lacks sums", "optim"):
        data = {k: v for k, v in data.items() if not k.startswith("optim/")} if pattern == "optim" else data
        np.savez(tmp_path / "base.npz", **data)
        good_checkpoint = tmp_path / "base.npz"
    bad = _rewrite(good_checkpoint, tmp_path / "bad.npz", **{k: v for k, v in changes.items() if k != "meta"},
                   meta=changes["meta"])
    commands = [["fit", "--resume", _as_run(bad, tmp_path)]]
    if pattern not in ("lacks sums", "optim"):
        commands.append(["eval", bad])
    for command in commands:
        msg = one_error(run(*command))
        assert "not a valid nntrain checkpoint" in msg and pattern in msg, msg


def _as_run(checkpoint, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints" / "last.npz").write_bytes(checkpoint.read_bytes())
    return run_dir


def test_corrupt_deflate_block_is_one_clear_error(good_checkpoint, tmp_path):
    data = dict(np.load(good_checkpoint))
    path = tmp_path / "c.npz"
    np.savez_compressed(path, **data)
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 64] = bytes(64)
    path.write_bytes(bytes(raw))
    assert "nntrain checkpoint" in one_error(run("eval", path))


# ----- class 8: an edited config.yaml before a resume -------------------------------------------
def test_resume_refuses_an_edited_config_yaml_with_the_difference(tmp_path):
    run_dir = tmp_path / "r"
    Trainer(build_experiment(load_config(tiny(tmp_path))), run_dir, quiet=True, stop_at_iteration=3).run()
    text = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(text.replace("lr: 0.05", "lr: 0.5"))
    msg = one_error(run("fit", "--resume", run_dir))
    assert "was edited" in msg and "optimizer.lr: 0.05 in the run, 0.5 in the file" in msg
    (run_dir / "config.yaml").write_text(text)
    assert run("fit", "--resume", run_dir, "-q").exit_code == 0


# ----- class 9: a full disk ----------------------------------------------------------------------
def test_disk_full_is_one_message_and_the_last_good_checkpoint_is_kept(tmp_path, monkeypatch):
    import nntrain.rundir as rundir

    run_dir = tmp_path / "r"
    Trainer(build_experiment(load_config(tiny(tmp_path))), run_dir, quiet=True, stop_at_iteration=10).run()
    good = (run_dir / "checkpoints" / "last.npz").read_bytes()
    real = rundir.save_npz

    def full(path, arrays):
        if str(path).endswith("last.npz"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, arrays)

    monkeypatch.setattr(rundir, "save_npz", full)
    msg = one_error(run("fit", "--resume", run_dir), code=1)
    assert "no space left on device at" in msg and f"nntrain fit --resume {run_dir}" in msg
    assert (run_dir / "checkpoints" / "last.npz").read_bytes() == good
    monkeypatch.setattr(rundir, "save_npz", real)
    assert run("fit", "--resume", run_dir, "-q").exit_code == 0


# ----- class 11: promises of the README ----------------------------------------------------------
def test_json_output_is_only_json(tmp_path):
    r = CliRunner().invoke(main, ["fit", str(tiny(tmp_path, epochs=1)), "--run-dir", str(tmp_path / "r"), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["stop_reason"] == "finished"
    assert "run directory:" in r.stderr and "epoch 1/1" in r.stderr


def _evaluations(run_dir):
    """metrics.csv without its wall-clock column."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in read_csv(run_dir / "metrics.csv")]


@pytest.mark.parametrize("patience", [1, 2, 3])
def test_early_stopping_stops_at_the_best_evaluation_plus_patience(tmp_path, patience):
    """Mid-epoch evaluations (eval_every) count: the run stops at exactly the evaluation
    that is ``patience`` after the best one, not at the next epoch start."""
    config = tiny(tmp_path, epochs=6, eval_every=3, early_stopping={"monitor": "val_error", "patience": patience,
                                                                      "min_delta": 0.0})
    summary = fit_quiet(config, tmp_path / "r", "optimizer.lr=0.002")
    rows = _evaluations(tmp_path / "r")
    errors = [r["val_error"] for r in rows]
    best_at = min(range(len(errors)), key=lambda i: (errors[i], i))  # first of the minima
    assert summary["stop_reason"] == "early_stopping"
    assert len(rows) == best_at + 1 + patience
    assert summary["iterations"] == rows[-1]["iteration"]
    events = (tmp_path / "r" / "events.log").read_text()
    assert f"for {patience} evaluations" in events


def test_early_stopping_honours_min_delta(tmp_path):
    """With a min_delta larger than any improvement, the first evaluation stays the best."""
    config = tiny(tmp_path, epochs=6, early_stopping={"monitor": "val_error", "patience": 2, "min_delta": 0.5})
    summary = fit_quiet(config, tmp_path / "r")
    rows = _evaluations(tmp_path / "r")
    assert len(rows) == 3 and summary["best"]["epoch"] == 1.0
    assert summary["stop_reason"] == "early_stopping"
    assert rows[2]["val_error"] < rows[0]["val_error"]  # better, but not by min_delta


def test_divergence_event_names_the_iteration_where_it_happened(tmp_path):
    config = tiny(tmp_path, divergence={"explode_factor": 1.5, "max_retries": 1})
    run_dir = tmp_path / "r"
    r = run("fit", config, "--run-dir", run_dir, "-q", "--set", "optimizer.lr=3.0", "--set", "optimizer.momentum=0.99")
    events = (run_dir / "events.log").read_text().splitlines()
    assert events, r.output
    first = events[0]
    iteration = int(first.split("[iteration ")[1].split(",")[0])
    assert iteration > 0 and "rolled back to iteration 0" in first


def test_eval_warns_when_the_tta_shows_views_training_never_did(tmp_path):
    fit_quiet(tiny(tmp_path, epochs=1), tmp_path / "r")  # trained with translate, without hflip
    r = CliRunner().invoke(main, ["eval", str(tmp_path / "r"), "--tta", "flip"])
    assert r.exit_code == 0, r.output
    assert "warning: tta flip shows the model mirrored images" in r.stderr and "warning" not in r.stdout
    r = CliRunner().invoke(main, ["eval", str(tmp_path / "r"), "--tta", "translate", "--json"])
    assert r.exit_code == 0 and "warning" not in r.stderr and json.loads(r.stdout)["warnings"] == []


# ----- fit --resume-if-exists (requeued Slurm jobs, re-run sweep commands) -------------------------
def test_resume_if_exists_starts_resumes_or_reports(tmp_path):
    config = tiny(tmp_path)
    full = fit_quiet(config, tmp_path / "full")
    run_dir = tmp_path / "r"
    args = ["fit", config, "--run-dir", run_dir, "--resume-if-exists", "-q"]
    # 1. new: started (here interrupted at iteration 7, as a preempted job)
    Trainer(build_experiment(load_config(config)), run_dir, quiet=True, stop_at_iteration=7).run()
    assert json.loads((run_dir / "summary.json").read_text())["stop_reason"] == "interrupted"
    # 2. interrupted: resumed, to the uninterrupted run's numbers
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert json.loads((run_dir / "summary.json").read_text())["test"] == full["test"]
    assert _evaluations(run_dir) == _evaluations(tmp_path / "full")
    # 3. finished: reported, exit 0, nothing rewritten
    before = (run_dir / "checkpoints" / "last.npz").stat().st_mtime_ns
    r = CliRunner().invoke(main, [str(a) for a in ["fit", config, "--run-dir", run_dir, "--resume-if-exists"]])
    assert r.exit_code == 0 and "already ended (finished)" in r.output
    assert (run_dir / "checkpoints" / "last.npz").stat().st_mtime_ns == before
    # an empty or missing directory: started
    (tmp_path / "empty").mkdir()
    assert run("fit", config, "--run-dir", tmp_path / "empty", "--resume-if-exists", "-q").exit_code == 0
    assert json.loads((tmp_path / "empty" / "summary.json").read_text())["test"] == full["test"]
    # another config for an existing run: refused with the difference
    other = write_yaml(tmp_path / "other.yaml", {**TINY, "seed": 4})
    assert "seed: 3 in the run, 4 in the file" in one_error(run("fit", other, "--run-dir", run_dir,
                                                                "--resume-if-exists"))
    assert "needs CONFIG and --run-dir" in one_error(run("fit", config, "--resume-if-exists"))


def test_printed_sweep_commands_can_run_again(tmp_path):
    """Each printed command uses --resume-if-exists: run twice (a requeued job), it reports."""
    config = tiny(tmp_path, epochs=1)
    r = run("sweep", config, "--grid", "optimizer.lr=0.05,0.02", "--sweep-dir", tmp_path / "s", "--print-commands")
    assert r.exit_code == 0, r.output
    lines = (tmp_path / "s" / "commands.txt").read_text().splitlines()
    assert len(lines) == 2 and all("--resume-if-exists" in line for line in lines)
    for _ in range(2):
        done = subprocess.run(["bash", "-c", lines[0]], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr


# ----- class 12: build errors say where the layer (or the option) came from -----------------------
def test_cycle_output_and_shape_errors_name_the_line_or_the_set_option(tmp_path):
    data = {"dataset": "mnist_subset", "limit": {"train": 100, "test": 50}, "validation": 20}
    cycle = tmp_path / "cycle.yaml"
    cycle.write_text(yaml.safe_dump({"name": "c", "data": data, "model": [
        {"name": "a", "type": "relu", "inputs": ["b"]}, {"name": "b", "type": "relu", "inputs": ["a"]},
        {"type": "flatten"}, {"type": "linear", "out_features": 10}]}, sort_keys=False))
    msg = one_error(run("show", cycle))
    assert f"{cycle}:" in msg and "form a cycle: a -> b -> a" in msg
    wrong = write_yaml(tmp_path / "out.yaml", {"name": "o", "data": data, "model": [
        {"type": "flatten"}, {"type": "linear", "out_features": 7}]})
    msg = one_error(run("show", wrong))
    lines = wrong.read_text().splitlines()
    last_layer_line = max(i for i, line in enumerate(lines, 1) if line.startswith("- type: linear"))
    assert msg.startswith(f"error: {wrong}:{last_layer_line}:") and "must be (10,) logits" in msg
    conv = write_yaml(tmp_path / "k.yaml", {"name": "k", "data": data, "model": [
        {"type": "conv2d", "out_channels": 4, "kernel": 3}, {"type": "flatten"}, {"type": "linear", "out_features": 10}]})
    msg = one_error(run("show", conv, "--set", "model.conv2d_1.kernel=40"))
    assert msg.startswith("error: --set model.conv2d_1.kernel=40: ") and "does not fit" in msg


def test_fit_tensorboard_writes_event_files_and_keeps_the_setting_for_resume(tmp_path):
    pytest.importorskip("tensorboardX")
    run_dir = tmp_path / "r"
    r = run("fit", tiny(tmp_path, epochs=1), "--run-dir", run_dir, "--tensorboard", "-q")
    assert r.exit_code == 0, r.output
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["tensorboard"] == {"histograms": False}
    off = load_config(tiny(tmp_path, "off.yaml", epochs=1, tensorboard=False))
    assert "tensorboard" not in off["train"]  # off is left out: recorded config hashes hold
