"""The benchmark's rows beyond the network steps (bench/speed.py): data augmentation next to
a cifar10_quick step, a full-size CIFAR-10 ``nntrain fit`` (peak RSS, epoch wall time), and
``nntrain --help`` start-up time."""

from __future__ import annotations

import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CIFAR = Path(os.environ.get("NNTRAIN_CIFAR10", REPO.parent / "shared" / "data" / "cifar-10-python.tar.xz"))


def _seconds(fn, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t) / steps


def bench_augment(quick_step_s: float, repeats: int) -> dict:
    """Flip + crop (pad 4) of a batch of 256 CIFAR-sized images vs one cifar10_quick step."""
    from nntrain.data import make_augmentation

    aug = make_augmentation([{"type": "hflip"}, {"type": "random_crop", "size": 32, "padding": 4}])
    x = np.random.default_rng(0).standard_normal((256, 3, 32, 32), dtype=np.float32)
    rng = np.random.default_rng(1)
    aug(x, rng)
    t = statistics.median(_seconds(lambda: aug(x, rng), 10) for _ in range(repeats))
    return {"augment_ms": t * 1e3, "fraction": t / quick_step_s}


# ----- the command line tool ------------------------------------------------------------------
def nntrain_command() -> list[str]:
    beside = Path(sys.executable).parent / "nntrain"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("nntrain")
    return [found] if found else [sys.executable, "-c", "from nntrain.cli import main; main()"]


def bench_help(repeats: int) -> float:
    cmd = nntrain_command() + ["--help"]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_fit(iterations: int, quick_step_s: float) -> dict:
    """One ``nntrain fit`` of cifar10_quick on the full CIFAR-10 for ``iterations`` steps."""
    if not CIFAR.exists():
        return {"skipped": f"no CIFAR-10 archive at {CIFAR} (set NNTRAIN_CIFAR10)"}
    tmp = Path(tempfile.mkdtemp(prefix="nntrain-bench-"))
    config = REPO / "configs" / "cifar10_quick.yaml"
    run_dir = tmp / "run"
    cmd = nntrain_command() + ["fit", str(config), "--run-dir", str(run_dir), "--quiet",
                               "--set", f"data.path={CIFAR}", "--set", f"train.max_iterations={iterations}",
                               "--set", "train.test_at_end=false"]
    # The fit runs under a small launcher that reports its child's peak RSS: a child started
    # straight from this process would be charged this process's memory (torch included)
    # between fork and exec.
    launcher = ("import json, resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
                "print(json.dumps([p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", launcher, *cmd], cwd=REPO, capture_output=True, text=True)
    total = time.perf_counter() - t
    returncode, rss_kb = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else (-1, 0)
    if returncode != 0:
        return {"skipped": f"nntrain fit failed ({returncode}): {proc.stderr.strip()[-300:]}"}
    summary = json.loads((run_dir / "summary.json").read_text())
    with open(run_dir / "metrics.csv") as f:
        first = next(csv.DictReader(f))
    steps = summary["iterations"]
    epoch_iters = min(steps, summary["iterations_per_epoch"])
    wall = float(first["seconds"])  # training-loop time up to the end of the first epoch's row
    share = epoch_iters / steps
    shutil.rmtree(tmp, ignore_errors=True)
    return {"rss_mb": rss_kb / 1024, "process_s": total,
            "iterations": epoch_iters, "epoch_wall_s": wall,
            "in_fit_steps_s": summary["train_time_s"] * share,
            "bench_steps_s": quick_step_s * epoch_iters}
