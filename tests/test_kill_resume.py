"""SIGKILL and Ctrl-C at random moments (before the first checkpoint, mid-epoch, during a
checkpoint write), with and without --quiet: resuming (or starting over) always ends with
the uninterrupted run's numbers."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from nntrain.rundir import read_csv

from .conftest import REPO, TINY, write_yaml

CONFIG = {**TINY, "train": {**TINY["train"], "batch_size": 8, "eval_every": 7, "checkpoint_every": 5,
                            "ema": {"decay": 0.9}, "lookahead": {"k": 3, "alpha": 0.5}}}
ENV = dict(os.environ, PYTHONPATH=str(REPO), NNTRAIN_THREADS="1")


def _fit(*args, quiet=True):
    return [sys.executable, "-m", "nntrain.cli", "fit", *map(str, args)] + (["-q"] if quiet else [])


def _rows(path):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_csv(path)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    config = write_yaml(tmp / "c.yaml", CONFIG)
    subprocess.run(_fit(config, "--run-dir", tmp / "ref"), check=True, env=ENV, capture_output=True, timeout=300)
    return config, tmp / "ref"


@pytest.mark.parametrize("seed", range(3))
def test_killed_or_interrupted_at_random_moments_then_resumed_equals_uninterrupted(reference, tmp_path, seed):
    config, ref = reference
    rng = random.Random(seed)
    run_dir = tmp_path / "run"
    command = _fit(config, "--run-dir", run_dir, quiet=rng.random() < 0.5)
    stops = 0
    for _ in range(12):
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
        target = len(read_csv(run_dir / "iterations.csv")) + rng.randint(1, 40)
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline and len(read_csv(run_dir / "iterations.csv")) < target:
            time.sleep(rng.uniform(0.001, 0.02))
        sig = rng.choice([signal.SIGKILL, signal.SIGKILL, signal.SIGINT])
        if proc.poll() is None:
            proc.send_signal(sig)
            stops += 1
        out, err = proc.communicate(timeout=120)
        assert b"Traceback" not in out + err, err.decode()
        assert proc.returncode in (0, 130, -signal.SIGKILL), (proc.returncode, err.decode())
        summary = run_dir / "summary.json"
        if summary.exists() and json.loads(summary.read_text())["stop_reason"] == "finished":
            break
        command = _fit("--resume", run_dir, quiet=rng.random() < 0.5)
    assert stops > 0
    assert _rows(run_dir / "metrics.csv") == _rows(ref / "metrics.csv")
    assert read_csv(run_dir / "iterations.csv") == read_csv(ref / "iterations.csv")
    got, want = (json.loads((d / "summary.json").read_text()) for d in (run_dir, ref))
    assert got["test"] == want["test"] and got["iterations"] == want["iterations"]
