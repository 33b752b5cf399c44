"""Per-layer times of each convolution algorithm on the airbench net's 3x3 layers, per pass.

usage: python bench/conv_algorithms.py [--widths 32,128,128] [--batch 256] [--repeats 5]
       [--algorithms im2col,fourier,winograd] [--cpu]

For each 3x3 "same" convolution of the airbench net (bench/speed.py ``bn_net``: Cin -> Cout
at 31x31, 15x15, 15x15, 7x7, 3x3), times a training forward, its backward (with the input
gradient, as inside the network) and an inference forward, by each algorithm
(``conv2d``'s ``algorithm`` option). The algorithms alternate within every repeat (order
reversed every other repeat), so all see the same machine load; the table gives medians
in ms. This is what ``algorithm: auto``'s per-pass choice is checked against.

``--cpu``: one thread for everything and the thread's CPU time instead of wall time -- the
steadiest measure of the work on a machine shared with other processes (wall-clock times
there are not results). The load average is printed with the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

if "--cpu" in sys.argv:  # before numpy loads OpenBLAS
    os.environ["NNTRAIN_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nntrain.openblas_env import set_openblas_environment  # noqa: E402

set_openblas_environment()

import numpy as np  # noqa: E402

from nntrain.ops.memory import keep_freed_memory  # noqa: E402
from nntrain.registry import LAYERS  # noqa: E402


def layers_of(widths) -> list:
    """(Cin, Cout, size) of the airbench net's 3x3 convolutions."""
    w1, w2, w3 = widths
    return [(24, w1, 31), (w1, w1, 15), (w1, w2, 15), (w2, w2, 7), (w2, w3, 7), (w3, w3, 3)]


def time_layer(cin, cout, size, batch, algorithms, repeats, clock) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((cin, batch, size, size), dtype=np.float32)
    dy = rng.standard_normal((cout, batch, size, size), dtype=np.float32)
    layers = {}
    for name in algorithms:
        layer = LAYERS.get("conv2d").from_config({"out_channels": cout, "kernel": 3, "padding": 1, "bias": False,
                                                  "algorithm": name})
        layer.build([(cin, size, size)], np.random.default_rng(1), np.float32)
        layer.needs_input_grad = True
        layers[name] = layer
    times = {name: {"forward": [], "backward": [], "inference": []} for name in algorithms}
    for r in range(repeats + 1):  # the first round warms up (buffers, weight transforms)
        for name in algorithms if r % 2 == 0 else algorithms[::-1]:
            layer = layers[name]
            t0 = clock()
            layer.forward(x, True)
            t1 = clock()
            layer.backward(dy)
            t2 = clock()
            layer.forward(x, False)
            t3 = clock()
            if r:
                for key, t in (("forward", t1 - t0), ("backward", t2 - t1), ("inference", t3 - t2)):
                    times[name][key].append(t * 1e3)
    return {name: {k: statistics.median(v) for k, v in passes.items()} for name, passes in times.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--widths", default="32,128,128", help="block widths (64,256,256: full width)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--algorithms", default="im2col,fourier,winograd")
    ap.add_argument("--cpu", action="store_true", help="one thread, CPU time (see the module docstring)")
    args = ap.parse_args(argv)
    keep_freed_memory()  # as `nntrain fit` does
    widths = tuple(int(w) for w in args.widths.split(","))
    algorithms = args.algorithms.split(",")
    clock = time.thread_time if args.cpu else time.perf_counter
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"batch {args.batch}, widths {widths}, medians of {args.repeats}, ms "
          f"({'CPU time, 1 thread' if args.cpu else 'wall time'}); load at the start {load}\n")
    head = ["conv"] + [f"{p} ({'/'.join(algorithms)})" for p in ("train forward", "backward with dx", "inference")]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    seen = set()
    for cin, cout, size in layers_of(widths):
        if (cin, cout, size) in seen:
            continue
        seen.add((cin, cout, size))
        t = time_layer(cin, cout, size, args.batch, algorithms, args.repeats, clock)
        cells = [" / ".join(f"{t[a][p]:.1f}" for a in algorithms) for p in ("forward", "backward", "inference")]
        print(f"| {cin}->{cout} 3x3 @{size} | " + " | ".join(cells) + " |", flush=True)
    print(f"\nload at the end {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
