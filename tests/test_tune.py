"""nntrain tune: the search space as Optuna suggestions, a small study on the embedded data
(pruning, continuing, two processes on one storage, Ctrl-C and resume, best.yaml), and the
one-message errors (bad --param / --storage, Optuna missing)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from nntrain.cli import main

from .conftest import REPO

try:
    import optuna
except ImportError:  # the test extra brings it; without it only the install hint is testable
    optuna = None
needs_optuna = pytest.mark.skipif(optuna is None, reason="needs optuna: pip install -e '.[tune]'")

SPACE = ["--param", "optimizer.lr=loguniform(1e-3,0.8)", "--param", "optimizer.momentum=uniform(0.0,0.95)"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def tune_argv(config, study_dir, *extra):
    return [sys.executable, "-m", "nntrain.cli", "tune", str(config), *SPACE, "--study-dir", str(study_dir),
            "--startup-trials", "2", *map(str, extra)]


def env_with_package(threads=1):
    paths = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=paths, NNTRAIN_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))


def load(study_dir, storage=None):
    storage = storage or f"sqlite:///{study_dir}/study.db"
    return optuna.load_study(study_name=Path(study_dir).name, storage=storage)


def summary(study_dir, trial):
    return json.loads((Path(study_dir) / trial.user_attrs["run_dir"] / "summary.json").read_text())


def done(study):
    return [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]


# ----- the search space -----------------------------------------------------------------------
@needs_optuna
def test_each_distribution_becomes_its_optuna_suggestion():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from nntrain.tune.space import params_overrides, parse_space, trial_overrides

    space = parse_space(["a.lr=loguniform(1e-4,0.1)", "a.m=uniform(0.5,0.9)", "a.n=int(2,5)", "a.w=logint(8,512)",
                         "a.act=choice(relu,tanh)", "a.aug=choice([],[{type: hflip}])"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        overrides = trial_overrides(trial, space)
        d = trial.distributions
        assert d["a.lr"] == FloatDistribution(1e-4, 0.1, log=True) and d["a.m"] == FloatDistribution(0.5, 0.9)
        assert d["a.n"] == IntDistribution(2, 5) and d["a.w"] == IntDistribution(8, 512, log=True)
        assert d["a.act"] == CategoricalDistribution(["relu", "tanh"])
        values = dict(o.split("=", 1) for o in overrides)
        assert float(values["a.lr"]) == trial.params["a.lr"] and 1e-4 <= float(values["a.lr"]) <= 0.1
        assert values["a.n"] in {"2", "3", "4", "5"} and values["a.aug"] in ("[]", "[{type: hflip}]")
        assert params_overrides(trial.params, space) == overrides  # what best.yaml is made from
        study.tell(trial, 0.0)


# ----- a small study: pruning, continuing, best.yaml ---------------------------------------------
@needs_optuna
def test_a_study_prunes_continues_and_its_best_config_trains(tiny_config, tmp_path):
    study_dir = tmp_path / "study"
    args = ["tune", tiny_config, *SPACE, "--jobs", 2, "--startup-trials", 2, "--seed", 0, "--study-dir", study_dir]
    r = cli(*args, "--trials", 10)
    assert r.exit_code == 0, r.output
    study = load(study_dir)
    trials = done(study)
    assert len(trials) == 10 and len(study.trials) == 10
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert pruned and complete, r.output
    for t in pruned:  # stopped early and cleanly, checkpoints kept
        s = summary(study_dir, t)
        assert s["stop_reason"] == "pruned" and s["epochs"] < 3
        assert (study_dir / t.user_attrs["run_dir"] / "checkpoints" / "last.npz").is_file()
        assert "pruned by the study's pruner" in (study_dir / t.user_attrs["run_dir"] / "events.log").read_text()
    for t in complete:
        s = summary(study_dir, t)
        assert s["epochs"] == 3 and t.value == pytest.approx(min(t.intermediate_values.values()))
        assert sorted(t.intermediate_values) == [1, 2, 3]  # one report per evaluation (epoch)
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # both workers trained trials
    assert sum(ln.startswith("trial ") for ln in r.output.splitlines()) == 10
    best = study.best_trial
    assert f"best: trial {best.number}, val_error {best.value:.4f}" in r.output

    table = cli("compare", study_dir)
    assert table.exit_code == 0 and table.output.count(" pruned") == len(pruned), table.output

    # the same command again: nothing runs; with --trials 12, two more trials, nothing repeated
    mtimes = {p: p.stat().st_mtime_ns for p in study_dir.glob("trial-*/summary.json")}
    r = cli(*args, "--trials", 10)
    assert r.exit_code == 0 and not any(ln.startswith("trial ") for ln in r.output.splitlines()), r.output
    r = cli(*args, "--trials", 12)
    assert r.exit_code == 0, r.output
    study = load(study_dir)
    assert len(done(study)) == 12 and len(study.trials) == 12
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    # another search in the same directory is refused
    r = cli("tune", tiny_config, "--param", "optimizer.lr=uniform(0.01,0.1)", "--study-dir", study_dir)
    assert r.exit_code == 2 and "holds another tuning study" in r.output

    # best.yaml is the best trial's resolved config, and trains
    best = study.best_trial
    text = (study_dir / "best.yaml").read_text()
    assert f"lr: {best.params['optimizer.lr']!r}" in text
    r = cli("fit", study_dir / "best.yaml", "--run-dir", tmp_path / "again", "--quiet")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "again" / "summary.json").read_text())["stop_reason"] == "finished"


@needs_optuna
def test_two_processes_share_one_journal_storage(tiny_config, tmp_path):
    study_dir = tmp_path / "study"
    storage = f"journal:{tmp_path / 'journal.log'}"
    argv = tune_argv(tiny_config, study_dir, "--trials", 6, "--storage", storage, "--quiet")
    procs = [subprocess.Popen(argv + ["--seed", str(k)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env_with_package()) for k in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = load(study_dir, JournalStorage(JournalFileBackend(str(tmp_path / "journal.log"))))
    assert len(done(study)) == 6 and len(study.trials) == 6  # N in all, none twice, none extra
    run_dirs = [t.user_attrs["run_dir"] for t in study.trials]
    assert len(set(run_dirs)) == 6
    assert len({t.user_attrs["pid"] for t in study.trials}) == 2
    for name in run_dirs:  # each trained once: one start in its log, rows without repeats
        rows = (study_dir / name / "metrics.csv").read_text().splitlines()[1:]
        assert len(rows) == len(set(rows)) == json.loads((study_dir / name / "summary.json").read_text())["epochs"]


@needs_optuna
def test_ctrl_c_keeps_the_trial_which_resumes_on_the_next_run(tiny_config, tmp_path):
    study_dir = tmp_path / "study"
    argv = tune_argv(tiny_config, study_dir, "--trials", 2, "--pruner", "none", "--set", "train.epochs=40")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env_with_package())
    log = study_dir / "trial-0000" / "iterations.csv"
    deadline = time.monotonic() + 60
    while not (log.exists() and log.stat().st_size > 200):  # training has begun
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "trial 0     interrupted" in out and "run the same nntrain tune command again" in out
    study = load(study_dir)
    assert [t.state.name for t in study.trials] == ["RUNNING"] and study.trials[0].user_attrs["interrupted"]
    first = summary(study_dir, study.trials[0])
    assert first["stop_reason"] == "interrupted" and first["epochs"] < 40

    r = subprocess.run(argv, capture_output=True, text=True, env=env_with_package(), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    study = load(study_dir)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    resumed = summary(study_dir, study.trials[0])
    assert resumed["epochs"] == 40 and "interrupted" in (study_dir / "trial-0000" / "events.log").read_text()
    assert sorted(study.trials[0].intermediate_values) == list(range(1, 41))  # each evaluation reported once


@needs_optuna
def test_a_trial_whose_process_died_before_claiming_it_is_marked_failed(tiny_config, tmp_path):
    from nntrain.tune.study import open_study, plan_tune
    from nntrain.tune.worker import DONE, _claim

    tune = plan_tune(tiny_config, ["train.epochs=1"], SPACE[1::2], trials=1, study_dir=tmp_path / "s")
    study = open_study(tune)
    lost = study.ask()  # asked, then its process died: no run directory, no lock
    claim = _claim(study, tune)
    assert claim.name == "trial-0001" and study.trials[lost.number].state.name == "FAIL"
    claim.lock.release()
    study.tell(claim.trial, 0.5)
    assert _claim(study, tune) == DONE


# ----- errors: one message, exit 2 -----------------------------------------------------------------
@needs_optuna
@pytest.mark.parametrize("extra, pattern", [
    (["--param", "optimizer.lr=loguniform(0,1)"], "loguniform needs a positive low bound"),
    (["--param", "optimizer.lr=normal(0,1)"], "unknown distribution 'normal'"),
    (["--param", "optimizer.nope=uniform(0,1)"], "unknown option 'nope'"),
    (["--param", "optimizer.lr=uniform(0,1)", "--param", "optimizer.lr=uniform(0,2)"], "given twice"),
    ([], "nothing to tune"),
    (["--param", "optimizer.lr=uniform(0.01,1)", "--storage", "nonsense"], "expected an Optuna storage URL"),
    (["--param", "optimizer.lr=uniform(0.01,1)", "--storage", "nosuchdb://x/y"], "cannot open it as an Optuna storage"),
    (["--param", "optimizer.lr=uniform(0.01,1)", "--storage", "journal:"], "expected journal:PATH"),
])
def test_bad_param_and_storage_values_are_one_message(tiny_config, tmp_path, extra, pattern):
    r = cli("tune", tiny_config, *extra, "--study-dir", tmp_path / "s")
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and r.output.count("\n") == 1 and pattern in r.output, r.output
    assert not list((tmp_path / "s").glob("trial-*"))


def test_without_optuna_the_command_says_how_to_install_it(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    r = cli("tune", tiny_config, *SPACE, "--study-dir", tmp_path / "s")
    assert r.exit_code == 2 and "pip install 'nntrain[tune]'" in r.output and r.output.count("\n") == 1
