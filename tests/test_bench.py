"""bench/speed.py runs (nntrain only: PyTorch is never a test dependency) and prints its table.

With ``NNTRAIN_BENCH_TORCH_PYTHON`` pointing at a Python that has torch (its own venv), the
PyTorch side is run too: in its own process, in nntrain's process, and its per-op profile.
"""

import os
import subprocess
import sys

import pytest

from .conftest import REPO

TORCH_PYTHON = os.environ.get("NNTRAIN_BENCH_TORCH_PYTHON")


def _speed(*args):
    out = subprocess.run([sys.executable, str(REPO / "bench" / "speed.py"), *args], capture_output=True,
                         text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def _rows(text, prefix):
    return [[cell.strip() for cell in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith(prefix)]


def test_speed_prints_the_table_without_torch():
    text = _speed("--quick", "--no-fit", "--no-torch", "--nets", "mlp", "--markdown").stdout
    assert "float32 matmul peak" in text
    rows = _rows(text, "| MLP 3072-512-256-10 | 100 |")
    assert [r[2] for r in rows] == ["train", "infer"]
    assert all(float(r[3]) > 0 for r in rows)  # images/s
    assert all(r[5:7] == ["-", "-"] for r in rows)  # no PyTorch numbers
    assert "nntrain --help start-up" in text


def test_speed_without_torch_at_the_given_python_says_so():
    """--torch-python naming a Python without torch (this one): a note, nntrain's numbers."""
    out = _speed("--quick", "--no-fit", "--nets", "mlp", "--torch-python", sys.executable, "--markdown")
    assert "no torch importable by" in out.stderr
    assert len(_rows(out.stdout, "| MLP 3072-512-256-10 | 100 |")) == 2


def test_speed_profile_of_an_inference_step():
    text = _speed("--profile", "mlp:infer", "--no-torch").stdout
    assert "infer step" in text and "linear_1" in text and "fwd" in text and "bwd" not in text


def test_speed_profile_of_a_training_step_in_markdown():
    text = _speed("--profile", "mlp", "--no-torch", "--markdown").stdout
    head = _rows(text, "| layer |")[0]
    assert head == ["layer", "nntrain fwd ms", "nntrain bwd ms"]
    rows = {r[0]: r for r in _rows(text, "| ")[1:]}
    assert {"linear_1", "relu_1", "all linear", "all relu", "train step"} <= set(rows)
    assert float(rows["all linear"][1]) == pytest.approx(sum(float(rows[f"linear_{k}"][1]) for k in (1, 2, 3)),
                                                         abs=0.02)
    assert float(rows["train step"][1]) >= float(rows["all linear"][1])


def test_profile_rows_pair_the_layers_and_total_them_by_type():
    sys.path.insert(0, str(REPO / "bench"))
    from profile_layers import profile_rows

    ours = {"step_ms": 12.0, "layers": [["conv2d_1 3->8 3x3 @32", "conv2d", 2.0, 4.0], ["gelu_1", "gelu", 1.0, 1.0],
                                        ["conv2d_2 8->8 3x3 @32", "conv2d", 1.0, 1.0]]}
    theirs = {"step_ms": 20.0, "layers": [["Conv2d 3->8 3x3", 3.0, 3.0], ["GELU", 1.0, 3.0], ["Conv2d 8->8 3x3", 2.0, 2.0]]}
    head, rows = profile_rows(ours, theirs, "train")
    assert head[-1] == "PyTorch time / nntrain time"
    by_label = {r[0]: r for r in rows}
    assert by_label["conv2d_1 3->8 3x3 @32"] == ["conv2d_1 3->8 3x3 @32", "2.00", "4.00", "Conv2d 3->8 3x3", "3.00",
                                                 "3.00", "1.00"]
    assert by_label["all conv2d"] == ["all conv2d", "3.00", "5.00", "", "5.00", "5.00", "1.25"]
    assert by_label["all gelu"][-1] == "2.00"
    assert rows[-1] == ["train step", "12.00", "", "", "20.00", "", "1.67"]
    assert rows[-2][1:] == ["2.00", "", "", "6.00", "", "3.00"]  # outside the layers: 12 - 10, 20 - 14
    head, rows = profile_rows(ours, None, "infer")  # nntrain only, an inference step
    assert head == ["layer", "nntrain fwd ms"] and all(len(r) == 2 for r in rows)


def test_table_shows_both_ratios_and_judges_by_the_own_process_one():
    sys.path.insert(0, str(REPO / "bench"))
    import speed

    row = {"net": "bn", "desc": "airbench net, half width (BN)", "batch": 256, "mode": "train", "nntrain": 600.0,
           "gflops": 120.0, "step_ms": 426.7, "torch": 700.0, "ratio": 0.86}
    rows = speed.merge_inline([dict(row)], [{**row, "torch": 500.0, "ratio": 1.2}])
    text = speed.table(rows, 200.0, [], markdown=True)
    head = _rows(text, "| network |")[0]
    assert head[5:9] == ["PyTorch img/s (own process)", "nntrain/PyTorch (own process)",
                         "PyTorch img/s (same process)", "nntrain/PyTorch (same process)"]
    line = _rows(text, "| airbench net, half width (BN) | 256 |")[0]
    assert line[5:] == ["700", "0.86", "500", "1.20", ">= 1.0 MISSED"]
    peak = _rows(text, "| airbench net, half width (BN) step vs matmul peak |")[0]
    assert peak[-2:] == ["60% of 200", ">= 70% MISSED"] and len(peak) == len(head)


@pytest.mark.skipif(not TORCH_PYTHON, reason="set NNTRAIN_BENCH_TORCH_PYTHON to a Python with torch")
def test_speed_against_torch_in_its_own_process_and_in_ours():
    out = _speed("--quick", "--no-fit", "--nets", "mlp", "--torch-python", TORCH_PYTHON, "--markdown")
    rows = _rows(out.stdout, "| MLP 3072-512-256-10 | 100 |")
    assert len(rows) == 2 and all(float(r[5]) > 0 and float(r[6]) > 0 and float(r[7]) > 0 for r in rows)
    text = _speed("--profile", "mlp", "--torch-python", TORCH_PYTHON, "--markdown").stdout
    rows = {r[0]: r for r in _rows(text, "| ")}
    assert rows["linear_1"][3] == "Linear" and float(rows["linear_1"][4]) > 0 and float(rows["linear_1"][5]) > 0
    assert float(rows["train step"][4]) > 0


def test_blas_products_times_every_shape_with_numpy():
    """bench/blas_products.py's numpy side (the PyTorch side: the same code with torch.mm)."""
    out = subprocess.run([sys.executable, str(REPO / "bench" / "blas_products.py"), "--child", "numpy",
                          "--threads", "1"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    sys.path.insert(0, str(REPO / "bench"))
    from blas_products import SHAPES

    rates = [float(g) for g in out.stdout.split()]
    assert len(rates) == len(SHAPES) and all(g > 0 for g in rates)


@pytest.mark.skipif(not TORCH_PYTHON, reason="set NNTRAIN_BENCH_TORCH_PYTHON to a Python with torch")
def test_blas_products_table_against_torch():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "blas_products.py"), "--torch-python", TORCH_PYTHON,
                          "--rounds", "1", "--threads", "1"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = _rows(out.stdout, "| ")[1:]  # below the header
    assert len(rows) == 6 and all(float(r[1]) > 0 and float(r[2]) > 0 and float(r[3]) > 0 for r in rows)
