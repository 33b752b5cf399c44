"""The float32 matrix products of the benchmark networks, numpy's BLAS against PyTorch's.

nntrain's layers reduce to matrix products that numpy hands to its BLAS (OpenBLAS in the
PyPI wheels); PyTorch brings its own (MKL on x86). Which of the two is faster on a machine
decides a large part of ``speed.py``'s ratios, so this times the same products in both,
each in its own process, 2 threads each (``--threads``), alternating (``--rounds``), and
prints GFLOP/s per product, medians of 7 timings::

    python bench/blas_products.py --torch-python /tmp/torchenv/bin/python

Shapes (m x k @ k x n): a square product (the matmul peak), the MLP's first layer forward
and weight gradient at batch 100, and im2col products of the airbench net's 3x3
convolutions (k = Cin x 9; n = a chunk of output pixels, or a whole batch's).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

SHAPES = [("square 2048", 2048, 2048, 2048),
          ("MLP fc1 forward (100x3072 @ 3072x512)", 100, 3072, 512),
          ("MLP fc1 weight gradient (3072x100 @ 100x512)", 3072, 100, 512),
          ("conv 128->128 3x3, 455 columns (one chunk)", 128, 1152, 455),
          ("conv 24->32 3x3, 2048 columns", 32, 216, 2048),
          ("conv 128->128 3x3, 12544 columns (batch 256 at 7x7)", 128, 1152, 12544)]


def measure(lib: str, threads: int) -> list[float]:
    """GFLOP/s of every shape with ``lib`` (numpy or torch) in this process."""
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")  # as nntrain sets it (nntrain/openblas_env.py)
    os.environ["OPENBLAS_NUM_THREADS"] = str(threads)  # read when numpy loads, below
    import numpy as np

    if lib == "torch":
        import torch

        torch.set_num_threads(threads)
        make, product = torch.randn, torch.mm
    else:
        rng = np.random.default_rng(0)
        make, product = (lambda m, k: rng.standard_normal((m, k), dtype=np.float32)), np.matmul
    out = []
    for _, m, k, n in SHAPES:
        a, b = make(m, k), make(k, n)
        calls = max(3, int(2e9 / (2 * m * k * n)))  # ~2 GFLOP a timing
        for _ in range(3):
            product(a, b)
        times = []
        for _ in range(7):
            t = time.perf_counter()
            for _ in range(calls):
                product(a, b)
            times.append((time.perf_counter() - t) / calls)
        out.append(2 * m * k * n / statistics.median(times) / 1e9)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torch-python", default=sys.executable, help="the Python that has torch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="numpy, torch alternations")
    ap.add_argument("--child", choices=["numpy", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(" ".join(f"{g:.1f}" for g in measure(args.child, args.threads)))
        return
    rates = {"numpy": [], "torch": []}
    for _ in range(args.rounds):
        for lib, python in (("numpy", sys.executable), ("torch", args.torch_python)):
            out = subprocess.run([python, __file__, "--child", lib, "--threads", str(args.threads)],
                                 capture_output=True, text=True, check=True).stdout
            rates[lib].append([float(g) for g in out.split()])
    print("| product (m x k @ k x n) | numpy (OpenBLAS) GFLOP/s | PyTorch GFLOP/s | numpy / PyTorch |")
    print("|---|---|---|---|")
    for i, (name, *_) in enumerate(SHAPES):
        ours, theirs = [r[i] for r in rates["numpy"]], [r[i] for r in rates["torch"]]
        print(f"| {name} | {' / '.join(f'{g:.0f}' for g in ours)} | {' / '.join(f'{g:.0f}' for g in theirs)} | "
              f"{statistics.median(ours) / statistics.median(theirs):.2f} |")


if __name__ == "__main__":
    main()
