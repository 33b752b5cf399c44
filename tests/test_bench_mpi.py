"""bench/mpi_scaling.py runs under mpiexec and prints its tables (skipped without the [mpi]
extra on a developer's machine, run in CI, which installs it, as tests/test_mpi.py)."""

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

from nntrain.config import load_config

from .conftest import REPO

HAVE_MPI = shutil.which("mpiexec") is not None and importlib.util.find_spec("mpi4py") is not None


def _tables(text: str) -> list[list[list[str]]]:
    """The markdown tables of ``text``: each a list of rows (cells), its header first."""
    tables, current = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            current = None
            continue
        if current is None:
            current = []
            tables.append(current)
        if not line.startswith("|---"):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return tables


def _airbench_parameters(w1, w2, w3):
    """The 2x2 stem (3->24, with bias), six 3x3 convs without bias, BN biases, a 10-way head without bias."""
    convs = 24 * w1 + w1 * w1 + w1 * w2 + w2 * w2 + w2 * w3 + w3 * w3
    return (3 * 4 * 24 + 24) + 9 * convs + 2 * (w1 + w2 + w3) + 10 * w3


@pytest.mark.skipif(not HAVE_MPI and not os.environ.get("CI"),
                    reason="the [mpi] extra is not installed (CI installs it)")
def test_mpi_scaling_prints_the_measured_tables_and_the_model():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "mpi_scaling.py"), "--quick", "--cores", "2",
                          "--oversubscribe"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "machine load (1, 5, 15 min) at the start:" in text and "; at the end:" in text
    scaling, params, compute, fast, full = _tables(text)
    assert scaling[0][2:5] == ["1 process x 2 threads: img/s", "2 ranks x 1 thread: img/s", "ratio (2 x 1) / (1 x 2)"]
    assert [row[:2] for row in scaling[1:]] == [["cifar10_quick", "100"], ["airbench net, half width (BN)", "256"]]
    assert all(float(cell) > 0 for row in scaling[1:] for cell in row[2:5])
    nets = ["cifar10_quick", "airbench net, half width (BN)", "airbench net, full width (BN)"]
    quick = 3 * 25 * 32 + 32 + 32 * 25 * 32 + 32 + 32 * 25 * 64 + 64 + 1024 * 64 + 64 + 64 * 10 + 10  # by hand
    counts = [quick, _airbench_parameters(32, 128, 128), _airbench_parameters(64, 256, 256)]
    assert [row[:3] for row in params[1:]] == [[n, f"{c:,}", f"{4 * c / 1e6:.2f} MB"] for n, c in zip(nets, counts)]
    assert all(float(cell) > 0 for row in params[1:] for cell in row[3:])  # all-reduce ms
    assert compute[0][1:] == ["core-ms per image, batch 32", "core-ms per image, batch 128", "batch 32 / batch 128"]
    assert [row[0] for row in compute[1:]] == nets and all(float(c) > 0 for row in compute[1:] for c in row[1:])
    fast_train = load_config(REPO / "configs" / "cifar10_fast.yaml")["train"]  # the model follows the config
    steps = int(fast_train["epochs"]) * (50_000 // 1024 + 1)
    assert (f"#### cifar10_fast (half width): batch 1024, {fast_train['epochs']:g} epochs of 50,000 images "
            f"({steps} steps") in text
    assert "#### airbench94, full width (64/256/256): batch 1024, 9.9 epochs of 50,000 images (486 steps" in text
    for table in (fast, full):
        assert table[0][:4] == ["nodes", "batch per node", "compute ms/step", "10 Gb/s: all-reduce ms"]
        assert [(row[0], row[1]) for row in table[1:]] == [("1", "1024"), ("2", "512"), ("4", "256"), ("8", "128"),
                                                             ("16", "64"), ("32", "32")]
        assert table[1][3:5] == ["0.0", "1.00x (100%)"] and table[1][6:8] == ["0.0", "1.00x (100%)"]
        for link in (4, 7):  # the speed-up columns of 10 and 25 Gb/s
            speedups = [float(row[link].split("x")[0]) for row in table[1:]]
            assert speedups == sorted(speedups) and speedups[-1] < 32
    assert text.count("a step's compute falls below that all-reduce under a per-node batch of") == 4
