"""Sweeps: expansion and names, up-front validation, the manifest, the local runner
(workers, resume, failures, Ctrl-C), and the xargs / Slurm routes, on tiny quickstart runs."""

import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from nntrain import sweep as sw
from nntrain.cli import main
from nntrain.config import parse_override
from nntrain.errors import ConfigError
from nntrain.ops.parallel import available_cores
from nntrain.rundir import COMPLETED_STOPS, trial_state

from .conftest import REPO

QUICKSTART = REPO / "configs" / "quickstart.yaml"
TINY = ["data.limit.train=300", "data.limit.test=100", "data.validation=100", "train.max_iterations=4"]
GRID4 = ["--grid", "optimizer.lr=0.1,0.01", "--grid", "train.batch_size=32,64"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def sets(extra=()):
    return [a for s in [*TINY, *extra] for a in ("--set", s)]


def manifest(directory):
    return json.loads((Path(directory) / "manifest.json").read_text())


def env_with_package():
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))


# ----- parsing ---------------------------------------------------------------------------
def test_split_values_respects_brackets_and_quotes():
    assert sw.split_values("0.1, 0.01") == ["0.1", "0.01"]
    assert sw.split_values('[1,2],{a: 1, b: 2},"x,y",3') == ["[1,2]", "{a: 1, b: 2}", '"x,y"', "3"]


@pytest.mark.parametrize("parse,text,pattern", [
    *[(sw.parse_grid, text, pattern) for text, pattern in [
        ("optimizer.lr", "expected KEY=VALUES"), ("optimizer.lr=", "comma-separated values"),
        ("optimizer.lr=0.1,,0.2", "comma-separated values"), ("optimizer.lr=0.1,0.1", "value 0.1 is repeated"),
        ("optimizer..lr=0.1", "bad key")]],
    *[(sw.parse_param, text, pattern) for text, pattern in [
        ("optimizer.lr=logunifrm(1e-4,1e-1)", "did you mean 'loguniform'"),
        ("optimizer.lr=loguniform(0,1)", "positive low bound"), ("optimizer.lr=uniform(1,1)", "low < high"),
        ("optimizer.lr=uniform(2,1)", "low < high"), ("optimizer.lr=uniform(1)", "two bounds"),
        ("train.batch_size=int(16,x)", "must be integers"), ("train.batch_size=choice()", "choice needs values"),
        ("optimizer.lr=0.1", "expected KEY=DISTRIBUTION")]],
])
def test_parse_grid_and_param_errors(parse, text, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse(text)


def test_distributions_sample_within_their_ranges():
    rng = random.Random(0)
    _, logu = sw.parse_param("optimizer.lr=loguniform(1e-4,1e-1)")
    xs = [parse_override(f"k={logu.sample(rng)}")[1] for _ in range(2000)]
    assert all(isinstance(x, float) and 1e-4 * 0.9999 <= x <= 1e-1 * 1.0001 for x in xs)
    below = sum(x < (1e-4 * 1e-1) ** 0.5 for x in xs) / len(xs)  # log-uniform: half below the geometric mean
    assert 0.45 < below < 0.55
    assert all(len(f"{x:.10g}".replace(".", "").lstrip("0").split("e")[0]) <= 4 for x in xs)  # 4 digits
    _, uni = sw.parse_param("optimizer.momentum=uniform(0.5,0.99)")
    assert all(0.5 <= float(uni.sample(rng)) <= 0.99 for _ in range(200))
    _, ints = sw.parse_param("train.batch_size=int(16,18)")
    assert {ints.sample(rng) for _ in range(200)} == {"16", "17", "18"}  # both ends included
    _, logint = sw.parse_param("model.0.out_channels=logint(4,64)")
    drawn = [int(logint.sample(rng)) for _ in range(2000)]
    assert min(drawn) >= 4 and max(drawn) <= 64 and 0.4 < sum(d < 16 for d in drawn) / 2000 < 0.6
    _, choice = sw.parse_param("optimizer.type=choice(sgd, adam)")
    assert {choice.sample(rng) for _ in range(100)} == {"sgd", "adam"}


@pytest.mark.parametrize("x", [0.1, 1e-05, 1.5e-07, 3e20, 2.0, 123.4])
def test_float_text_reads_back_as_the_same_float_in_any_yaml(x):
    import yaml

    text = sw.float_text(x)
    assert parse_override(f"k={text}")[1] == x
    assert yaml.safe_load(text) == x  # PyYAML's YAML 1.1 rules too (1e-05 would be a string there)


# ----- expansion and names -----------------------------------------------------------------
def test_grid_is_the_product_first_key_slowest():
    grid = [sw.parse_grid("optimizer.lr=0.1,0.01"), sw.parse_grid("train.batch_size=64,128")]
    points, dropped = sw.expand(grid)
    assert points == [[("optimizer.lr", "0.1"), ("train.batch_size", "64")],
                      [("optimizer.lr", "0.1"), ("train.batch_size", "128")],
                      [("optimizer.lr", "0.01"), ("train.batch_size", "64")],
                      [("optimizer.lr", "0.01"), ("train.batch_size", "128")]] and dropped == 0
    assert sw.trial_ids(points) == ["lr=0.1_batch_size=64", "lr=0.1_batch_size=128",
                                    "lr=0.01_batch_size=64", "lr=0.01_batch_size=128"]


def test_random_trials_are_reproducible_and_combine_with_the_grid():
    params = [sw.parse_param("optimizer.lr=loguniform(1e-4,1e-1)"), sw.parse_param("train.batch_size=int(16,256)")]
    grid = [sw.parse_grid("seed=0,1")]
    a, _ = sw.expand(grid, params, 5, seed=7)
    b, _ = sw.expand(grid, params, 5, seed=7)
    c, _ = sw.expand(grid, params, 5, seed=8)
    assert a == b and a != c and len(a) == 10
    assert [p[0] for p in a[:2]] == [("seed", "0"), ("seed", "1")] and a[0][1:] == a[1][1:]
    points, dropped = sw.expand([], [sw.parse_param("optimizer.type=choice(sgd,adam)")], 20, seed=0)
    assert sorted(p[0][1] for p in points) == ["adam", "sgd"] and dropped == 18  # duplicates would be identical runs


def test_trial_ids_are_short_unique_and_safe():
    keys = sw.short_keys(["model.conv1.out_channels", "model.conv2.out_channels", "optimizer.lr"])
    assert keys == {"model.conv1.out_channels": "conv1.out_channels",
                    "model.conv2.out_channels": "conv2.out_channels", "optimizer.lr": "lr"}
    ids = sw.trial_ids([[("data.augment", "[]")], [("data.augment", "[{type: hflip}]")],
                        [("data.augment", "a/b")], [("data.augment", "a-b")]])
    assert ids[:2] == ["augment=empty", "augment=type-hflip"]
    assert len(set(ids)) == 4 and all("/" not in i and " " not in i for i in ids)  # a/b and a-b told apart
    long = sw.trial_ids([[("model.conv1.out_channels", "1" * 100)], [("model.conv1.out_channels", "1" * 99)]])
    assert all(len(i) <= sw.MAX_NAME for i in long) and long[0] != long[1]
    assert long == sw.trial_ids([[("model.conv1.out_channels", "1" * 100)], [("model.conv1.out_channels", "1" * 99)]])


def test_blas_threads_keep_workers_times_threads_within_the_cores():
    assert sw.blas_threads(2, 2) == 1 and sw.blas_threads(1, 4) == 4 and sw.blas_threads(3, 8) == 2
    assert sw.blas_threads(4, 2) == 1


# ----- up-front validation ---------------------------------------------------------------
@pytest.mark.parametrize("args,pattern", [
    (["--grid", "optimzer.lr=0.1,0.01"], r"--grid optimzer\.lr=0\.1: unknown key 'optimzer'; did you mean 'optimizer'"),
    (["--grid", "optimizer.lrr=0.1,0.01"], r"unknown option 'lrr'; did you mean 'lr'"),
    (["--grid", "train.epochz=1,2"], r"did you mean 'epochs'"),
    (["--grid", "train.batch_size=32,0"], r"trial batch_size=0: .*positive integer"),
    (["--grid", "model.9.out_features=10,7"], r"trial out_features=7: .*output must be \(10,\)"),
    (["--grid", "optimizer.lr=0.1,0.01", "--set", "optimizer.lr=0.5"], "both fixed by --set and swept"),
    (["--set", "optimizer.lr=0.5"], "nothing to sweep"),
    (["--param", "optimizer.lr=uniform(0,1)"], "--param needs --random"),
    (["--random", "3"], "--random needs at least one --param"),
    (["--random", "3", "--param", "optimizer.lrr=uniform(0.1,0.2)"], "did you mean 'lr'"),
    (["--grid", "optimizer.lr=0.1", "--jobs", "0"], "positive integer, received --jobs=0"),
])
def test_bad_sweeps_fail_up_front_with_exit_2(tmp_path, args, pattern):
    import re

    r = cli("sweep", QUICKSTART, *args, "--sweep-dir", tmp_path / "sweep")
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and re.search(pattern, r.output), r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "sweep").exists()  # nothing ran, nothing written


def test_default_sweep_dir_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = sw.plan_sweep(QUICKSTART, TINY, ["optimizer.lr=0.1,0.01"])
    b = sw.plan_sweep(QUICKSTART, TINY, ["optimizer.lr=0.1,0.01"])
    c = sw.plan_sweep(QUICKSTART, TINY, ["optimizer.lr=0.1,0.02"])
    d = sw.plan_sweep(QUICKSTART, [*TINY, "seed=1"], ["optimizer.lr=0.1,0.01"])
    assert a.directory == b.directory and a.directory.parent == tmp_path / "sweeps"
    assert a.directory.name.startswith("quickstart-")
    assert len({a.directory, c.directory, d.directory}) == 3


def test_a_sweep_dir_of_another_config_is_refused(tmp_path):
    plan = sw.plan_sweep(QUICKSTART, TINY, ["optimizer.lr=0.1,0.01"], sweep_dir=tmp_path / "s")
    plan.directory.mkdir()
    sw.write_manifest(plan)
    with pytest.raises(ConfigError, match="another configuration"):
        sw.plan_sweep(QUICKSTART, [*TINY, "seed=5"], ["optimizer.lr=0.1,0.01"], sweep_dir=tmp_path / "s")
    again = sw.plan_sweep(QUICKSTART, TINY, ["optimizer.lr=0.1,0.01,0.001"], sweep_dir=tmp_path / "s")
    assert [t.record.get("status") for t in again.trials] == ["pending", "pending", None]  # extended grid


# ----- trial state ---------------------------------------------------------------------------
def test_trial_state_from_the_run_directory(tmp_path):
    run = tmp_path / "t"
    assert trial_state(run) == ("pending", "")
    run.mkdir()
    assert trial_state(run)[0] == "pending"
    (run / "config.yaml").write_text("name: x\n")
    assert trial_state(run) == ("failed", "stopped before its first checkpoint")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.npz").write_bytes(b"x")
    assert trial_state(run)[0] == "interrupted"
    (run / "summary.json").write_text(json.dumps({"stop_reason": "interrupted"}))
    assert trial_state(run) == ("interrupted", "interrupted")
    for stop in COMPLETED_STOPS:
        (run / "summary.json").write_text(json.dumps({"stop_reason": stop}))
        assert trial_state(run) == ("finished", stop)
    (run / "summary.json").write_text(json.dumps({"stop_reason": "diverged"}))
    assert trial_state(run) == ("failed", "diverged")
    import socket

    alive = {"status": "running", "pid": os.getpid(), "host": socket.gethostname()}
    assert trial_state(run, alive)[0] == "running"
    assert trial_state(run, {**alive, "host": "elsewhere"})[0] == "failed"  # a stale record


def test_a_failed_run_dir_is_cleared_only_of_files_nntrain_writes(tmp_path):
    run = tmp_path / "t"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "model.txt", "metrics.csv"):
        (run / name).write_text("x")
    sw.prepare_fresh(run)
    assert list(run.iterdir()) == []
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="notes.txt"):
        sw.prepare_fresh(run)
    assert (run / "notes.txt").exists()


# ----- commands ----------------------------------------------------------------------------
def test_commands_are_complete_and_quoted(tmp_path):
    plan = sw.plan_sweep(QUICKSTART, TINY, ['data.augment=[],[{type: hflip}]'], sweep_dir=tmp_path / "s w")
    cmd = sw.shell_command(plan, plan.trials[1], resume=False, threads=3)
    words = shlex.split(cmd)
    assert words[:3] == ["cd", os.getcwd(), "&&"]
    assert "OMP_NUM_THREADS=3" in words and "OPENBLAS_NUM_THREADS=3" in words and "MKL_NUM_THREADS=3" in words
    fit = words[words.index(sys.executable):]
    assert fit[:5] == [sys.executable, "-m", "nntrain.cli", "fit", str(QUICKSTART)]
    assert fit[-3:] == ["--run-dir", str(tmp_path / "s w" / "augment=type-hflip"), "--quiet"]
    assert "data.augment=[{type: hflip}]" in fit and all(Path(w).is_absolute() for w in fit[:5:4])
    resume = shlex.split(sw.shell_command(plan, plan.trials[0], resume=True))
    assert resume[-4:] == ["fit", "--resume", str(tmp_path / "s w" / "augment=empty"), "--quiet"]



def test_workers_get_their_share_of_threads_on_every_route(tmp_path, monkeypatch):
    """-j 2 on 4 cores: each worker gets 2 threads, for nntrain's own pool (NNTRAIN_THREADS, once
    missing: each worker ran a pool as large as the machine) as for the BLAS libraries."""
    from nntrain.sweep import commands, runner

    threads = ("NNTRAIN_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    for name in threads:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(commands, "available_cores", lambda: 4)
    monkeypatch.setattr(runner, "available_cores", lambda: 4)
    started = []

    class Process:  # records the environment a worker would start with, and ends at once
        pid, returncode = 0, 0

        def __init__(self, argv, env, **kwargs):
            started.append(env)

        def poll(self):
            return 0

    monkeypatch.setattr(runner, "subprocess", SimpleNamespace(Popen=Process, STDOUT=subprocess.STDOUT,
                                                              DEVNULL=subprocess.DEVNULL))
    plan = sw.plan_sweep(QUICKSTART, TINY, ["optimizer.lr=0.1,0.01"], sweep_dir=tmp_path / "s")
    sw.run_local(plan, jobs=2, quiet=True, echo=lambda text: None)  # the local runner
    assert len(started) == 2 and all(env.get(name) == "2" for env in started for name in threads)

    r = cli("sweep", QUICKSTART, "--grid", "optimizer.lr=0.1,0.01", *sets(), "--sweep-dir", tmp_path / "s",
            "--print-commands", "--jobs", "2")
    assert r.exit_code == 0, r.output
    lines = (tmp_path / "s" / "commands.txt").read_text().splitlines()
    assert len(lines) == 2 and all(f"{name}=2" in shlex.split(line) for line in lines for name in threads)

    if shutil.which("bash") is None:
        pytest.skip("no bash")
    script = sw.write_slurm(plan, 1)  # a task's threads: its --cpus-per-task, seen by a command printing its env
    (tmp_path / "s" / "commands.txt").write_text("env\n")
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, SLURM_ARRAY_TASK_ID="0", SLURM_CPUS_PER_TASK="3"))
    assert r.returncode == 0, r.stderr
    assert all(f"{name}=3" in r.stdout.splitlines() for name in threads), r.stdout


# ----- running: the local runner ------------------------------------------------------------
def _interrupted_trial(run_dir, overrides):
    """A real interrupted run (as after Ctrl-C): checkpoint at iteration 2, stop_reason interrupted."""
    from nntrain.config import load_config
    from nntrain.experiment import build_experiment
    from nntrain.train import Trainer

    exp = build_experiment(load_config(QUICKSTART, [*TINY, *overrides]))
    Trainer(exp, run_dir, quiet=True, stop_at_iteration=2).run()
    assert json.loads((run_dir / "summary.json").read_text())["stop_reason"] == "interrupted"


def test_grid_sweep_with_two_workers_resumes_without_rerunning(tmp_path):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    _interrupted_trial(sweep_dir / "lr=0.1_batch_size=64", ["optimizer.lr=0.1", "train.batch_size=64"])

    r = cli("sweep", QUICKSTART, *GRID4, *sets(), "--jobs", "2", "--sweep-dir", sweep_dir)
    assert r.exit_code == 0, r.output
    assert "2 worker(s) x 1 BLAS thread(s)" in r.output or available_cores() != 2
    assert "[start] lr=0.1_batch_size=64 (resume)" in r.output
    results = [ln for ln in r.output.splitlines() if ln.startswith("finished ")]
    assert len(results) == 4 and "4 finished" in r.output.splitlines()[-1]
    m = manifest(sweep_dir)
    assert [t["id"] for t in m["trials"]] == ["lr=0.1_batch_size=32", "lr=0.1_batch_size=64",
                                             "lr=0.01_batch_size=32", "lr=0.01_batch_size=64"]
    assert all(t["status"] == "finished" and t["exit_code"] == 0 for t in m["trials"])
    assert m["trials"][0]["overrides"] == ["optimizer.lr=0.1", "train.batch_size=32"]
    resumed = sweep_dir / "lr=0.1_batch_size=64"
    assert "--resume" in (sweep_dir / "logs" / "lr=0.1_batch_size=64.log").read_text()
    assert "interrupted" in (resumed / "events.log").read_text()
    assert json.loads((resumed / "summary.json").read_text())["iterations"] == 4
    for t in m["trials"]:  # each trial ran with its own overrides
        cfg = (sweep_dir / t["run_dir"] / "config.yaml").read_text()
        assert f"lr: {parse_override(t['overrides'][0])[1]}" in cfg

    # lose one trial; run again: only that one runs, the finished ones are not touched
    shutil.rmtree(sweep_dir / "lr=0.01_batch_size=32")
    mtimes = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("*/summary.json")}
    r = cli("sweep", QUICKSTART, *GRID4, *sets(), "--jobs", "2", "--sweep-dir", sweep_dir, "--quiet")
    assert r.exit_code == 0, r.output
    assert r.output.count("[skip] finished") == 3 and "[start]" not in r.output  # --quiet: results only
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert (sweep_dir / "lr=0.01_batch_size=32" / "summary.json").exists()
    logs = (sweep_dir / "logs" / "lr=0.1_batch_size=32.log").read_text()
    assert logs.count("=== ") == 1  # ran once


def test_two_runners_never_share_a_sweep(tmp_path):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    with sw.SweepLock(sweep_dir):
        for extra in ([], ["--print-commands"]):
            r = cli("sweep", QUICKSTART, "--grid", "optimizer.lr=0.1,0.01", *sets(), "--sweep-dir", sweep_dir, *extra)
            assert r.exit_code == 2 and "another nntrain sweep is running in" in r.output, r.output
    assert not list(sweep_dir.glob("lr=*"))


def test_a_failed_trial_never_stops_the_others(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = ["--grid", "optimizer.lr=0.01,1.0e5", "--grid", "train.batch_size=32,500",
            *sets(["train.divergence.action=stop"]), "--jobs", "2", "--sweep-dir", sweep_dir]
    r = cli("sweep", QUICKSTART, *args)
    assert r.exit_code == 1, r.output
    lines = {ln.split()[1]: ln for ln in r.output.splitlines() if ln.split()[0] in ("finished", "failed", "pending")}
    assert lines["lr=0.01_batch_size=32"].startswith("finished")
    assert lines["lr=1.0e5_batch_size=32"].startswith("failed") and "diverged" in lines["lr=1.0e5_batch_size=32"]
    too_big = lines["lr=0.01_batch_size=500"]
    assert too_big.startswith("failed") and "exit 2" in too_big and "larger than the training split" in too_big
    status = {t["id"]: (t["status"], t["exit_code"]) for t in manifest(sweep_dir)["trials"]}
    assert status["lr=0.01_batch_size=32"] == ("finished", 0) and status["lr=1.0e5_batch_size=32"] == ("failed", 1)
    # again: the config error is retried (and fails again), the diverged run is not (it is deterministic)
    r = cli("sweep", QUICKSTART, *args)
    assert r.exit_code == 1
    assert "[start] lr=0.01_batch_size=500" in r.output and "[start] lr=1.0e5_batch_size=32" not in r.output


def test_ctrl_c_stops_the_workers_with_checkpoints_and_the_sweep_resumes(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [sys.executable, "-m", "nntrain.cli", "sweep", str(QUICKSTART), "--grid", "optimizer.lr=0.02,0.01",
            *sets(["train.epochs=100", "train.max_iterations=150", "train.early_stopping=null"]), "--jobs", "2",
            "--sweep-dir", str(sweep_dir)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env_with_package())
    logs = [sweep_dir / name / "iterations.csv" for name in ("lr=0.02", "lr=0.01")]
    deadline = time.monotonic() + 60
    while not all(p.exists() and p.stat().st_size > 60 for p in logs):  # both workers are training
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "run the same nntrain sweep command again" in out
    trials = manifest(sweep_dir)["trials"]
    assert [t["status"] for t in trials] == ["interrupted", "interrupted"], out
    assert all(t["exit_code"] == 130 for t in trials)
    for t in trials:
        summary = json.loads((sweep_dir / t["run_dir"] / "summary.json").read_text())
        assert summary["stop_reason"] == "interrupted" and summary["iterations"] < 150
        assert (sweep_dir / t["run_dir"] / "checkpoints" / "last.npz").exists()

    r = subprocess.run(args, capture_output=True, text=True, env=env_with_package(), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("(resume)") == 2
    for t in manifest(sweep_dir)["trials"]:
        assert json.loads((sweep_dir / t["run_dir"] / "summary.json").read_text())["iterations"] == 150


# ----- running elsewhere: xargs and Slurm ---------------------------------------------------------
def test_printed_commands_run_under_xargs(tmp_path):
    if shutil.which("xargs") is None:
        pytest.skip("no xargs")
    sweep_dir = tmp_path / "sweep"
    sweep = shlex.join([sys.executable, "-m", "nntrain.cli", "sweep", str(QUICKSTART), *GRID4, *sets(),
                        "--sweep-dir", str(sweep_dir), "--print-commands", "--jobs", "2"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = subprocess.run(f"{sweep} | xargs -d '\\n' -n 1 -P 2 sh -c", shell=True, cwd=elsewhere, capture_output=True,
                       text=True, env=env_with_package(), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 trials (4 pending); 4 to run" in r.stderr
    assert len(r.stdout.split()) == 4  # fit --quiet prints each run directory
    commands = (sweep_dir / "commands.txt").read_text().splitlines()
    assert len(commands) == 4 and all("OMP_NUM_THREADS=" in c for c in commands)
    assert all(trial_state(sweep_dir / t["run_dir"])[0] == "finished" for t in manifest(sweep_dir)["trials"])
    # nothing left: no commands
    r = cli("sweep", QUICKSTART, *GRID4, *sets(), "--sweep-dir", sweep_dir, "--print-commands")
    assert r.exit_code == 0 and "4 finished" in r.output and "0 to run" in r.output
    assert (sweep_dir / "commands.txt").read_text() == ""


def test_emit_slurm_writes_a_job_array_over_the_commands(tmp_path):
    sweep_dir = tmp_path / "sweep"
    r = cli("sweep", QUICKSTART, "--grid", "optimizer.lr=0.1,0.01,0.001", *sets(), "--sweep-dir", sweep_dir,
            "--emit", "slurm")
    assert r.exit_code == 0, r.output
    script = (sweep_dir / "sweep.slurm").read_text()
    assert "#SBATCH --array=0-2\n" in script and str(sweep_dir / "commands.txt") in script
    assert os.access(sweep_dir / "sweep.slurm", os.X_OK)
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    # what one array task does, without Slurm: task 1 runs line 2
    r = subprocess.run(["bash", str(sweep_dir / "sweep.slurm")], capture_output=True, text=True, timeout=120,
                       env=dict(env_with_package(), SLURM_ARRAY_TASK_ID="1", SLURM_CPUS_PER_TASK="1"))
    assert r.returncode == 0, r.stdout + r.stderr
    states = [trial_state(sweep_dir / t["run_dir"])[0] for t in manifest(sweep_dir)["trials"]]
    assert states == ["pending", "finished", "pending"]
    r = subprocess.run(["bash", str(sweep_dir / "sweep.slurm")], capture_output=True, text=True,
                       env=dict(os.environ, SLURM_ARRAY_TASK_ID="7"))
    assert r.returncode == 2 and "no command on line 8" in r.stderr
