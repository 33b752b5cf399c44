"""bench/speed.py runs (nntrain only: PyTorch is never a test dependency) and prints its table."""

import subprocess
import sys

from .conftest import REPO


def _speed(*args):
    out = subprocess.run([sys.executable, str(REPO / "bench" / "speed.py"), *args], capture_output=True,
                         text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_speed_prints_the_table_without_torch():
    text = _speed("--quick", "--no-fit", "--no-torch", "--nets", "mlp", "--markdown")
    assert "float32 matmul peak" in text
    rows = [line for line in text.splitlines() if line.startswith("| MLP 3072-512-256-10 | 100 |")]
    assert [r.split("|")[3].strip() for r in rows] == ["train", "infer"]
    assert all(float(r.split("|")[4]) > 0 for r in rows)  # images/s
    assert "nntrain --help start-up" in text


def test_speed_profile_of_an_inference_step():
    text = _speed("--profile", "mlp:infer")
    assert "infer step" in text and "linear_1" in text and "forward" in text and "backward" not in text
