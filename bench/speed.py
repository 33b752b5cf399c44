"""nntrain speed benchmark, side by side with PyTorch CPU (when a Python with torch is at hand).

usage: python bench/speed.py [--repeats 7] [--quick] [--markdown] [--nets quick,mlp,bn,...] [--no-fit]
       [--threads N] [--torch-python PATH] [--torch-mode process|inline|both] [--profile NET[:infer]]

Measures, for each network below: training images/s (forward + backward + SGD momentum
update, float32), inference images/s, and the achieved GFLOP/s, counted from the
network's multiply-adds (``Network.macs_per_sample``): a training step is taken as
3 x forward MACs x 2 FLOP, inference as 1 x forward MACs x 2 FLOP. (Counted from the
direct convolution, so an FFT or Winograd convolution doing fewer multiplies shows as
more GFLOP/s.)

- ``quick``: Caffe's cifar10_quick, written as configs/cifar10_quick.yaml writes it; batch 100.
- ``mlp``: 3072-512-256-10 with ReLU; batch 100.
- ``bn``: the airbench94 network (/work/shared/bench/torch_ref.py ``airbench``) at half width
  (32/128/128), as configs/cifar10_fast.yaml: BN without scale, tanh-GELU, 1/9 head; batch 256.
- ``bn1024``: the same at batch 1024 (what configs/cifar10_fast.yaml trains with).
- ``full``: airbench94's network at full width (64/256/256), batch 1024.

PyTorch (torch 2.13 CPU in its own venv, never a dependency of nntrain; ``--torch-python``
names its interpreter, default this one) is timed two ways (``--torch-mode``):

- ``process``: PyTorch runs in a process of its own (bench/torch_side.py), idle on a
  blocking read while nntrain's block runs in this process, which never imports torch.
  This is the ratio that counts: each framework alone in its process, with its own
  thread pool and allocator, as a user runs it.
- ``inline``: both in one process (a child ``speed.py`` run by the torch Python), as the
  earlier sessions measured: two thread pools and one malloc (tuned by nntrain's
  ``keep_freed_memory``) in one process, which can handicap PyTorch.
- ``both`` (default): the two, one after the other; the table shows both ratios.

Within a mode, each repeat times nntrain and PyTorch back to back on the same batch
(PyTorch first in every other repeat), so both see the same machine load; the table shows
each one's median images/s over the repeats and the median over the repeats of the ratio
nntrain / PyTorch (each repeat's pair of blocks compared; drift of the machine's load
between repeats cancels out). Also reported: the float32 matmul peak (n=2048, best of
several), the cifar10_quick and BN-net training steps against it, the cost of augmenting
256 CIFAR images (flip + crop pad 4) next to one cifar10_quick step, a full-size CIFAR-10
``nntrain fit`` of cifar10_quick for one epoch (peak RSS, epoch wall time vs its bare step
time x steps), and ``nntrain --help`` start-up time.

``--profile NET`` prints per-layer forward / backward milliseconds of one training (or
``NET:infer`` inference) step, beside PyTorch's own per-op profile (``torch.profiler``,
bench/torch_side.py) of the same network when PyTorch is at hand, with totals per layer type.

The machine may be shared: read the ratios taken in the same run, not absolute numbers.
On a busy machine, ``--threads 1`` (one thread for BLAS, OpenMP and nntrain's pool, in
both frameworks) gives the steadiest comparison of the work each one does.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple


def _early_threads(argv) -> int | None:
    """``--threads N`` must reach OpenBLAS / OpenMP before numpy or torch is imported."""
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--threads=") else (
            argv[i + 1] if arg == "--threads" and i + 1 < len(argv) else None)
        if value is not None and value.isdigit() and int(value) > 0:
            for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NNTRAIN_THREADS"):
                os.environ[var] = value
            return int(value)
    return None


THREADS = _early_threads(sys.argv[1:])
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nntrain.openblas_env import set_openblas_environment  # noqa: E402

set_openblas_environment()  # as `nntrain` commands do: before numpy loads OpenBLAS

import numpy as np  # noqa: E402

from nntrain.graph import Network  # noqa: E402
from nntrain.losses import make_loss  # noqa: E402
from nntrain.optim import make_optimizer  # noqa: E402
from nntrain.ops.memory import keep_freed_memory  # noqa: E402
from nntrain.machine import machine_info  # noqa: E402

from extras import bench_augment, bench_fit, bench_help  # noqa: E402  (bench/, this script's directory)
from torch_client import TorchInline, TorchProcess, has_torch  # noqa: E402

HERE = Path(__file__).resolve().parent

# ----- the networks ---------------------------------------------------------------------------
QUICK = [
    {"type": "conv2d", "out_channels": 32, "kernel": 5, "padding": 2},
    {"type": "maxpool2d", "kernel": 3, "stride": 2, "ceil_mode": True},
    {"type": "relu"},
    {"type": "conv2d", "out_channels": 32, "kernel": 5, "padding": 2},
    {"type": "relu"},
    {"type": "avgpool2d", "kernel": 3, "stride": 2, "ceil_mode": True},
    {"type": "conv2d", "out_channels": 64, "kernel": 5, "padding": 2},
    {"type": "relu"},
    {"type": "avgpool2d", "kernel": 3, "stride": 2, "ceil_mode": True},
    {"type": "flatten"},
    {"type": "linear", "out_features": 64},
    {"type": "linear", "out_features": 10},
]

MLP = [
    {"type": "flatten"},
    {"type": "linear", "out_features": 512}, {"type": "relu"},
    {"type": "linear", "out_features": 256}, {"type": "relu"},
    {"type": "linear", "out_features": 10},
]


def bn_net(widths=(32, 128, 128)) -> list:
    """airbench94's network without its training tricks, as in configs/cifar10_fast.yaml."""
    def block(cout):
        bn = {"type": "batchnorm2d", "weight": False}
        gelu = {"type": "gelu", "approximate": "tanh"}
        return [{"type": "conv2d", "out_channels": cout, "kernel": 3, "padding": 1, "bias": False},
                {"type": "maxpool2d", "kernel": 2}, bn, gelu,
                {"type": "conv2d", "out_channels": cout, "kernel": 3, "padding": 1, "bias": False}, bn, gelu]
    return [{"type": "conv2d", "out_channels": 24, "kernel": 2}, {"type": "gelu", "approximate": "tanh"},
            *block(widths[0]), *block(widths[1]), *block(widths[2]),
            {"type": "global_maxpool"}, {"type": "linear", "out_features": 10, "bias": False},
            {"type": "scale", "factor": 1 / 9}]


class Bench(NamedTuple):
    spec: list  # nntrain's network
    kind: str  # the same network in bench/torch_side.py: quick, mlp or bn (with widths)
    widths: tuple | None
    batch: int
    desc: str


HALF, FULL = (32, 128, 128), (64, 256, 256)
NETWORKS = {
    "quick": Bench(QUICK, "quick", None, 100, "cifar10_quick"),
    "mlp": Bench(MLP, "mlp", None, 100, "MLP 3072-512-256-10"),
    "bn": Bench(bn_net(HALF), "bn", HALF, 256, "airbench net, half width (BN)"),
    "bn1024": Bench(bn_net(HALF), "bn", HALF, 1024, "airbench net, half width (BN)"),
    "full": Bench(bn_net(FULL), "bn", FULL, 1024, "airbench94 net, full width (BN)"),
}
TARGET = 1.0  # nntrain / PyTorch, every row (issue 18)
PEAK_TARGETS = {"quick": 0.5, "bn": 0.7}  # training step GFLOP/s / matmul peak
SGD = {"type": "sgd", "lr": 0.001, "momentum": 0.9, "weight_decay": 0.004}


# ----- steps ----------------------------------------------------------------------------------
class NntrainNet:
    def __init__(self, spec, batch, seed=0):
        keep_freed_memory()  # as `nntrain fit` does (it affects PyTorch's allocations too when inline: same malloc)
        self.net = Network(spec, (3, 32, 32), seed=seed)
        self.loss = make_loss({"type": "softmax_cross_entropy"})
        self.opt = make_optimizer(SGD, self.net.named_parameters())
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal((batch, 3, 32, 32), dtype=np.float32)
        self.y = rng.integers(0, 10, batch)

    def train_step(self):
        net = self.net
        self.loss.forward(net.forward(self.x, training=True), self.y)
        net.backward(self.loss.backward())
        self.opt.step()
        net.clear()

    def infer_step(self):
        self.net.forward(self.x, training=False)
        self.net.clear()


def seconds_per_call(fn, steps: int) -> float:
    """Wall seconds per call of ``fn``, over ``steps`` calls back to back."""
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t) / steps


def interleaved(timers: dict, repeats: int, seconds: float) -> dict:
    """Seconds per step of each timer in every repeat (lists); ``timers[name](steps)`` runs
    ``steps`` steps and returns the seconds per step. Within a repeat the timers run back to
    back, in reversed order every other repeat (so neither always runs first)."""
    steps = {}
    for name, timer in timers.items():  # warm up (buffers, caches) and size each repeat to ~``seconds``
        timer(1)
        steps[name] = max(1, min(50, int(seconds / max(timer(1), 1e-6))))
    times = {name: [] for name in timers}
    order = list(timers)
    for r in range(repeats):
        for name in order if r % 2 == 0 else order[::-1]:
            times[name].append(timers[name](steps[name]))
    return times


def matmul_peak(repeats: int = 5, n: int = 2048) -> float:
    """float32 GFLOP/s of an n x n matmul, best of ``repeats``."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = a.T.copy()
    a @ b
    best = min(seconds_per_call(lambda: a @ b, 1) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def bench_networks(names, repeats, seconds, torch_side) -> list[dict]:
    """A row per network and mode; with ``torch_side`` (TorchProcess / TorchInline) PyTorch's
    images/s and the paired ratio too."""
    rows = []
    for name in names:
        b = NETWORKS[name]
        ours = NntrainNet(b.spec, b.batch)
        macs = ours.net.macs_per_sample
        if torch_side is not None:
            torch_side.build(name, b)
        for mode, flops in (("train", 6 * macs), ("infer", 2 * macs)):
            timers = {"nntrain": lambda steps, fn=getattr(ours, f"{mode}_step"): seconds_per_call(fn, steps)}
            if torch_side is not None:
                timers["torch"] = torch_side.timer(name, mode)
            times = interleaved(timers, repeats, seconds)
            med = {k: statistics.median(v) for k, v in times.items()}
            row = {"net": name, "desc": b.desc, "batch": b.batch, "mode": mode,
                   "nntrain": b.batch / med["nntrain"], "step_ms": med["nntrain"] * 1e3}
            row["gflops"] = row["nntrain"] * flops / 1e9
            if "torch" in med:
                row["torch"] = b.batch / med["torch"]
                # the median of the per-repeat ratios: each compares blocks timed back to back,
                # under the same machine load (load drifting between repeats cancels out)
                row["ratio"] = statistics.median(t / o for o, t in zip(times["nntrain"], times["torch"]))
            rows.append(row)
            _progress(f"{name} {mode}: nntrain {row['nntrain']:.0f} img/s"
                      + (f", torch {row['torch']:.0f} img/s, ratio {row['ratio']:.2f}" if "torch" in row else ""))
        del ours
    return rows


def inline_rows(args, names, torch_python: str) -> list[dict]:
    """The in-process comparison, from a child ``speed.py`` run by the torch Python (this
    process never imports torch)."""
    with tempfile.TemporaryDirectory(prefix="nntrain-bench-") as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [torch_python, str(HERE / "speed.py"), "--inline-rows", str(out), "--nets", ",".join(names),
               "--repeats", str(args.repeats)] + (["--quick"] if args.quick else []) + (
               ["--threads", str(args.threads)] if args.threads else [])
        subprocess.run(cmd, check=True, cwd=REPO)
        return json.loads(out.read_text())


def merge_inline(rows: list[dict], inline: list[dict]) -> list[dict]:
    """Add the in-process PyTorch numbers to the rows measured with PyTorch in its own process
    (or take the inline rows as they are when there are none)."""
    if not rows:
        return [{**r, "inline": True} for r in inline]
    by_key = {(r["net"], r["mode"]): r for r in inline}
    for r in rows:
        other = by_key.get((r["net"], r["mode"]), {})
        if "torch" in other:
            r["torch_inline"], r["ratio_inline"] = other["torch"], other["ratio"]
    return rows


# ----- profile --------------------------------------------------------------------------------
def profile(name: str, torch_python: str | None, markdown: bool, steps: int = 10) -> None:
    """Per-layer forward / backward milliseconds of one training step (``NET:infer``: an
    inference step), medians of ``steps``, beside PyTorch's profile when ``torch_python``."""
    from profile_layers import nntrain_layer_times, profile_rows

    name, _, mode = name.partition(":")
    mode = mode or "train"
    b = NETWORKS[name]
    ours = nntrain_layer_times(NntrainNet(b.spec, b.batch), mode, steps)
    theirs = None
    if torch_python:
        side = TorchProcess(torch_python, THREADS)
        try:
            side.build(name, b)
            theirs = side.profile(name, mode, steps)
        finally:
            side.close()
    print(f"{b.desc}, batch {b.batch}: {mode} step {ours['step_ms']:.1f} ms (median of {steps})"
          + (f"; PyTorch {theirs['step_ms']:.1f} ms (torch.profiler, own process)" if theirs else "")
          + f"; load {_load()}\n")
    print(format_table(*profile_rows(ours, theirs, mode), markdown))


# ----- report ---------------------------------------------------------------------------------
def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def environment(torch_info: str | None) -> dict:
    info = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "python": platform.python_version(),
            "numpy": np.__version__, "cpu": machine_info()["cpu"], "cores": len(os.sched_getaffinity(0)),
            "load": _load()}
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = "; ".join(f"{p.get('internal_api')} {p.get('version')} {p.get('architecture', '')} "
                                 f"{p.get('num_threads')} threads" for p in threadpool_info())
    except ImportError:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["blas"] = f"{cfg.get('name')} {cfg.get('version')} (threadpoolctl not installed)"
    info["env"] = " ".join(f"{k}={os.environ[k]}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                              "OPENBLAS_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT",
                                                              "OMP_NUM_THREADS")
                           if k in os.environ) or "no OPENBLAS_*/OMP_* variables set"
    if torch_info:
        info["torch"] = torch_info
    return info


def format_table(head: list, lines: list, markdown: bool) -> str:
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(out + ["| " + " | ".join(line) + " |" for line in lines])
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines])


def table(rows, peak, extras, markdown: bool) -> str:
    """The results table. With PyTorch in both modes, the own-process ratio decides the target."""
    own = any("torch" in r and not r.get("inline") for r in rows)
    both = any("torch_inline" in r for r in rows)
    head = ["network", "batch", "mode", "nntrain img/s", "GFLOP/s"]
    if own:
        head += ["PyTorch img/s (own process)", "nntrain/PyTorch (own process)"]
    if both or not own:
        head += ["PyTorch img/s (same process)", "nntrain/PyTorch (same process)"]
    head.append("target")
    cell = lambda r, key, fmt: format(r[key], fmt) if key in r else "-"  # noqa: E731
    lines = []
    for r in rows:
        line = [r["desc"], str(r["batch"]), r["mode"], f"{r['nntrain']:.0f}", f"{r['gflops']:.1f}",
                cell(r, "torch", ".0f"), cell(r, "ratio", ".2f")]
        if both:
            line += [cell(r, "torch_inline", ".0f"), cell(r, "ratio_inline", ".2f")]
        ratio = r.get("ratio")
        line.append(f">= {TARGET}" + ("" if ratio is None else " met" if ratio >= TARGET else " MISSED"))
        lines.append(line)
    blank = [""] * (len(head) - 7)
    for net, share_target in PEAK_TARGETS.items():
        train = next((r for r in rows if r["net"] == net and r["mode"] == "train"), None)
        if train:
            share = train["gflops"] / peak
            lines.append([f"{train['desc']} step vs matmul peak", "", "", "", f"{train['gflops']:.1f}", *blank,
                          f"{100 * share:.0f}% of {peak:.0f}",
                          f">= {100 * share_target:.0f}%{' met' if share >= share_target else ' MISSED'}"])
    for label, value, target in extras:
        lines.append([label, "", "", "", "", *blank, value, target])
    return format_table(head, lines, markdown)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7, help="interleaved repeats per measurement (median)")
    ap.add_argument("--quick", action="store_true", help="fewer repeats, shorter runs, a short fit")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown (for RESULTS.md)")
    ap.add_argument("--nets", default=",".join(NETWORKS), help="comma-separated subset of: " + ", ".join(NETWORKS))
    ap.add_argument("--no-torch", action="store_true", help="nntrain numbers only, even if torch is at hand")
    ap.add_argument("--torch-python", metavar="PATH", default=None,
                    help="the Python that has torch (its own venv); default: this one")
    ap.add_argument("--torch-mode", choices=("process", "inline", "both"), default="both",
                    help="PyTorch in its own process (the ratio that counts), in this one, or both (default)")
    ap.add_argument("--no-fit", action="store_true", help="skip the full CIFAR-10 fit (RSS, epoch wall time)")
    ap.add_argument("--fit-iterations", type=int, default=500, help="fit length (500 = one epoch at batch 100)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for every library (BLAS, OpenMP, nntrain's pool); default: their own")
    ap.add_argument("--profile", metavar="NET[:infer]",
                    choices=[f"{n}{m}" for n in NETWORKS for m in ("", ":infer")],
                    help="print per-layer forward/backward times of one network's training (or "
                         "inference) step, beside PyTorch's (torch.profiler) when torch is at hand, and exit")
    ap.add_argument("--inline-rows", metavar="FILE", help=argparse.SUPPRESS)  # the child of --torch-mode inline
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.nets.split(",") if n.strip()]
    unknown = [n for n in names if n not in NETWORKS]
    if unknown:
        ap.error(f"unknown network(s) {', '.join(unknown)}; choose from {', '.join(NETWORKS)}")
    repeats = 3 if args.quick else args.repeats
    seconds = 0.3 if args.quick else 1.0
    if args.inline_rows:  # a child run by the torch Python: both frameworks in this process
        side = TorchInline(THREADS)
        _progress(f"PyTorch in nntrain's process: {side.info()}")
        Path(args.inline_rows).write_text(json.dumps(bench_networks(names, repeats, seconds, side)))
        return
    torch_python = args.torch_python or sys.executable
    if args.no_torch or not has_torch(torch_python):
        if not args.no_torch:
            _progress(f"no torch importable by {torch_python}: nntrain numbers only (see --torch-python)")
        torch_python = None
    if args.profile:
        profile(args.profile, torch_python, args.markdown)
        return
    side = TorchProcess(torch_python, THREADS) if torch_python and args.torch_mode != "inline" else None
    env = environment(side.info() if side else None)
    _progress("environment: " + json.dumps(env))
    peak = matmul_peak()
    _progress(f"float32 matmul peak (n=2048): {peak:.1f} GFLOP/s")
    rows = []
    if side or not torch_python:
        rows = bench_networks(names, repeats, seconds, side)
        if side:
            side.close()
    if torch_python and args.torch_mode != "process":
        _progress("PyTorch in nntrain's process (a child speed.py run by the torch Python) ...")
        rows = merge_inline(rows, inline_rows(args, names, torch_python))
    extras = []
    quick_step = next((r["step_ms"] / 1e3 for r in rows if r["net"] == "quick" and r["mode"] == "train"), None)
    if quick_step is None:
        nets = NntrainNet(QUICK, 100)
        quick_step = statistics.median(interleaved({"q": lambda s: seconds_per_call(nets.train_step, s)}, repeats, seconds)["q"])
    aug = bench_augment(quick_step, repeats)
    extras.append(("augment 256 images (flip+crop) / quick step",
                   f"{aug['augment_ms']:.1f} ms = {100 * aug['fraction']:.0f}%", "hidden by prefetch"))
    if not args.no_fit:
        _progress("running nntrain fit on CIFAR-10 ...")
        fit = bench_fit(100 if args.quick else args.fit_iterations, quick_step)
        if "skipped" in fit:
            extras.append(("nntrain fit (CIFAR-10)", fit["skipped"], ""))
        else:
            rss_ok = " met" if fit["rss_mb"] <= 1024 else " MISSED"
            extras.append(("peak RSS, full CIFAR-10 fit", f"{fit['rss_mb']:.0f} MB", "<= 1024 MB" + rss_ok))
            over = fit["epoch_wall_s"] / fit["in_fit_steps_s"]
            extras.append((f"fit wall / its steps ({fit['iterations']} it)",
                           f"{fit['epoch_wall_s']:.1f} s / {fit['in_fit_steps_s']:.1f} s = {over:.2f}x",
                           "<= 1.10x" + (" met" if over <= 1.10 else " MISSED")))
            extras.append(("fit wall / bench step x steps", f"{fit['epoch_wall_s'] / fit['bench_steps_s']:.2f}x",
                           "(other process, other moment)"))
    help_s = bench_help(7 if not args.quick else 3)
    extras.append(("nntrain --help start-up (median)", f"{help_s:.2f} s", "< 0.5 s" + (" met" if help_s < 0.5 else
                                                                                       " MISSED")))
    env["load at the end"] = _load()
    print(("" if args.markdown else "\n") + "\n".join(f"- {k}: {v}" for k, v in env.items()) + "\n")
    print(f"float32 matmul peak (n=2048, best of 5): {peak:.1f} GFLOP/s\n")
    print(table(rows, peak, extras, args.markdown))


if __name__ == "__main__":
    main()
