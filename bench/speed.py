"""nntrain speed benchmark, side by side with PyTorch CPU when it is importable.

usage: python bench/speed.py [--repeats 5] [--quick] [--markdown] [--no-fit] [--threads N] [--profile NET]

Measures, for each network below: training images/s (forward + backward + SGD momentum
update, float32), inference images/s, and the achieved GFLOP/s, counted from the
network's multiply-adds (``Network.macs_per_sample``): a training step is taken as
3 x forward MACs x 2 FLOP, inference as 1 x forward MACs x 2 FLOP. (Counted from the
direct convolution, so an FFT convolution doing fewer multiplies shows as more GFLOP/s.)

- ``quick``: Caffe's cifar10_quick, written as configs/cifar10_quick.yaml writes it; batch 100.
- ``mlp``: 3072-512-256-10 with ReLU; batch 100.
- ``bn``: the airbench94 network (/work/shared/bench/torch_ref.py ``airbench``) at half width
  (32/128/128), as configs/cifar10_fast.yaml: BN without scale, tanh-GELU, 1/9 head; batch 256.

With PyTorch (run this file with a Python that has torch: its own venv, never a
dependency of nntrain) each repeat times nntrain and PyTorch back to back on the same
batch (PyTorch first in every other repeat), so both see the same machine load; the
table shows each one's median images/s over the repeats and the median over the repeats
of the ratio nntrain / PyTorch (each repeat's pair of blocks compared; drift of the
machine's load between repeats cancels out). Also reported: the float32 matmul peak (n=2048, best of several),
the cost of augmenting 256 CIFAR images (flip + crop pad 4) next to one cifar10_quick
step, a full-size CIFAR-10 ``nntrain fit`` of cifar10_quick for one epoch (peak RSS,
epoch wall time vs its bare step time x steps), and ``nntrain --help`` start-up time.

The machine may be shared: read the ratios taken in the same run, not absolute numbers.
On a busy machine, ``--threads 1`` (one thread for BLAS, OpenMP and nntrain's pool, in
both frameworks) gives the steadiest comparison of the work each one does.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


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

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    if THREADS:
        torch.set_num_threads(THREADS)
except ImportError:  # nntrain numbers only
    torch = None

CIFAR = Path(os.environ.get("NNTRAIN_CIFAR10", Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-10-python.tar.xz"))

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


def torch_quick():
    return nn.Sequential(
        nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True), nn.ReLU(),
        nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 64), nn.Linear(64, 10))


def torch_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(3072, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                         nn.Linear(256, 10))


class _Scale(nn.Module if torch else object):
    def forward(self, x):
        return x * (1 / 9)


def torch_bn(widths=(32, 128, 128)):
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2), _bn(cout),
                nn.GELU(approximate="tanh"), nn.Conv2d(cout, cout, 3, padding=1, bias=False), _bn(cout),
                nn.GELU(approximate="tanh")]
    return nn.Sequential(nn.Conv2d(3, 24, 2), nn.GELU(approximate="tanh"), *block(24, widths[0]),
                         *block(widths[0], widths[1]), *block(widths[1], widths[2]),
                         nn.MaxPool2d(3), nn.Flatten(), nn.Linear(widths[2], 10, bias=False), _Scale())


def _bn(c):
    """BatchNorm2d with a learnable bias and its scale frozen at 1 (nntrain's ``weight: false``)."""
    bn = nn.BatchNorm2d(c)
    bn.weight.requires_grad_(False)
    return bn


NETWORKS = {  # name: (nntrain spec, torch builder, batch, description)
    "quick": (QUICK, torch_quick, 100, "cifar10_quick"),
    "mlp": (MLP, torch_mlp, 100, "MLP 3072-512-256-10"),
    "bn": (bn_net(), torch_bn, 256, "airbench net, half width (BN)"),
}
TARGETS = {("quick", "train"): 0.8, ("mlp", "train"): 0.9, ("bn", "train"): 0.7,
           ("quick", "infer"): 0.9, ("mlp", "infer"): 0.9, ("bn", "infer"): 0.9}
SGD = {"type": "sgd", "lr": 0.001, "momentum": 0.9, "weight_decay": 0.004}


# ----- steps ----------------------------------------------------------------------------------
class NntrainNet:
    def __init__(self, spec, batch, seed=0):
        keep_freed_memory()  # as `nntrain fit` does (it affects PyTorch's allocations too: same malloc)
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


class TorchNet:
    def __init__(self, builder, batch, seed=0):
        torch.manual_seed(seed)
        self.net = builder()
        self.opt = torch.optim.SGD(self.net.parameters(), lr=SGD["lr"], momentum=SGD["momentum"],
                                   weight_decay=SGD["weight_decay"])
        self.x = torch.randn(batch, 3, 32, 32)
        self.y = torch.randint(0, 10, (batch,))

    def train_step(self):
        self.net.train()
        self.opt.zero_grad()
        F.cross_entropy(self.net(self.x), self.y).backward()
        self.opt.step()

    def infer_step(self):
        self.net.eval()
        with torch.no_grad():
            self.net(self.x)


def _time(fn, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t) / steps


def interleaved(fns: dict, repeats: int, seconds: float) -> dict:
    """Seconds per call of each fn in every repeat (lists); within a repeat the fns run back
    to back, in reversed order every other repeat (so neither always runs first)."""
    steps = {}
    for name, fn in fns.items():  # warm up (buffers, caches) and size each repeat to ~``seconds``
        fn()
        steps[name] = max(1, min(50, int(seconds / max(_time(fn, 1), 1e-6))))
    times = {name: [] for name in fns}
    order = list(fns)
    for r in range(repeats):
        for name in order if r % 2 == 0 else order[::-1]:
            times[name].append(_time(fns[name], steps[name]))
    return times


def matmul_peak(repeats: int = 5, n: int = 2048) -> float:
    """float32 GFLOP/s of an n x n matmul, best of ``repeats``."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = a.T.copy()
    a @ b
    best = min(_time(lambda: a @ b, 1) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def bench_networks(names, repeats, seconds, use_torch) -> list[dict]:
    rows = []
    for name in names:
        spec, builder, batch, desc = NETWORKS[name]
        ours = NntrainNet(spec, batch)
        macs = ours.net.macs_per_sample
        theirs = TorchNet(builder, batch) if use_torch else None
        for mode, flops in (("train", 6 * macs), ("infer", 2 * macs)):
            fns = {"nntrain": getattr(ours, f"{mode}_step")}
            if theirs is not None:
                fns["torch"] = getattr(theirs, f"{mode}_step")
            times = interleaved(fns, repeats, seconds)
            med = {k: statistics.median(v) for k, v in times.items()}
            row = {"net": name, "desc": desc, "batch": batch, "mode": mode,
                   "nntrain": batch / med["nntrain"], "step_ms": med["nntrain"] * 1e3}
            row["gflops"] = row["nntrain"] * flops / 1e9
            if "torch" in med:
                row["torch"] = batch / med["torch"]
                row["torch_gflops"] = row["torch"] * flops / 1e9
                # the median of the per-repeat ratios: each compares blocks timed back to back,
                # under the same machine load (load drifting between repeats cancels out)
                row["ratio"] = statistics.median(t / o for o, t in zip(times["nntrain"], times["torch"]))
            rows.append(row)
            _progress(f"{name} {mode}: nntrain {row['nntrain']:.0f} img/s"
                      + (f", torch {row['torch']:.0f} img/s, ratio {row['ratio']:.2f}" if "torch" in row else ""))
    return rows


def bench_augment(quick_step_s: float, repeats: int) -> dict:
    """Flip + crop (pad 4) of a batch of 256 CIFAR-sized images vs one cifar10_quick step."""
    from nntrain.data import make_augmentation

    aug = make_augmentation([{"type": "hflip"}, {"type": "random_crop", "size": 32, "padding": 4}])
    x = np.random.default_rng(0).standard_normal((256, 3, 32, 32), dtype=np.float32)
    rng = np.random.default_rng(1)
    aug(x, rng)
    t = statistics.median(_time(lambda: aug(x, rng), 10) for _ in range(repeats))
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
    if not config.exists():  # the spec of cifar10_quick as the configs write it
        config = tmp / "cifar10_quick.yaml"
        config.write_text(json.dumps({"name": "cifar10_quick", "data": {"dataset": "cifar10", "validation": 0,
                                      "normalize": "per_pixel_mean"}, "model": QUICK,
                                      "optimizer": SGD, "train": {"epochs": 10, "batch_size": 100}}))
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


# ----- profile --------------------------------------------------------------------------------
def profile(name: str, steps: int = 10) -> None:
    """Per-layer forward / backward milliseconds of one training step (median of ``steps``);
    ``NET:infer`` profiles an inference step instead."""
    name, _, mode = name.partition(":")
    mode = mode or "train"
    spec, _, batch, desc = NETWORKS[name]
    bench = NntrainNet(spec, batch)
    times: dict = {}
    for node in bench.net.order:
        for method in ("forward", "backward"):
            inner = getattr(node.layer, method)

            def timed(*args, _inner=inner, _key=(node.name, method)):
                t = time.perf_counter()
                out = _inner(*args)
                times.setdefault(_key, []).append(time.perf_counter() - t)
                return out
            setattr(node.layer, method, timed)
    run_step = bench.train_step if mode == "train" else bench.infer_step
    for _ in range(2):
        run_step()
    times.clear()
    step = statistics.median(_time(run_step, 1) for _ in range(steps))
    print(f"{desc}, batch {batch}: {mode} step {step * 1e3:.1f} ms (median of {steps})")
    rows = sorted(((statistics.median(ts), key) for key, ts in times.items()), reverse=True)
    for t, (layer, method) in rows:
        print(f"  {layer:<16} {method:<9} {t * 1e3:8.2f} ms  {100 * t / step:5.1f}%")
    print(f"  {'(outside layers)':<26} {(step - sum(t for t, _ in rows)) * 1e3:8.2f} ms")


# ----- report ---------------------------------------------------------------------------------
def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def environment() -> dict:
    info = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "python": platform.python_version(),
            "numpy": np.__version__, "cpu": machine_info()["cpu"], "cores": len(os.sched_getaffinity(0)),
            "load": " ".join(f"{x:.1f}" for x in os.getloadavg())}
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
    if torch is not None:
        info["torch"] = f"{torch.__version__}, {torch.get_num_threads()} threads"
    return info


def table(rows, peak, extras, markdown: bool) -> str:
    head = ["network", "batch", "mode", "nntrain img/s", "GFLOP/s", "PyTorch img/s", "PyTorch GFLOP/s",
            "nntrain/PyTorch", "target"]
    lines = []
    for r in rows:
        target = TARGETS.get((r["net"], r["mode"]))
        ratio = r.get("ratio")
        verdict = "" if ratio is None else (" met" if ratio >= target else " MISSED")
        lines.append([r["desc"], str(r["batch"]), r["mode"], f"{r['nntrain']:.0f}", f"{r['gflops']:.1f}",
                      f"{r['torch']:.0f}" if "torch" in r else "-",
                      f"{r['torch_gflops']:.1f}" if "torch" in r else "-",
                      f"{ratio:.2f}" if ratio is not None else "-", f">= {target}{verdict}"])
    quick_train = next((r for r in rows if r["net"] == "quick" and r["mode"] == "train"), None)
    if quick_train:
        share = quick_train["gflops"] / peak
        lines.append(["cifar10_quick step vs matmul peak", "", "", "", f"{quick_train['gflops']:.1f}", "", "",
                      f"{100 * share:.0f}% of {peak:.0f}", f">= 50%{' met' if share >= 0.5 else ' MISSED'}"])
    for label, value, target in extras:
        lines.append([label, "", "", "", "", "", "", value, target])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(line) for line in lines])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7, help="interleaved repeats per measurement (median)")
    ap.add_argument("--quick", action="store_true", help="fewer repeats, shorter runs, a short fit")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown (for RESULTS.md)")
    ap.add_argument("--nets", default="quick,mlp,bn", help="comma-separated subset of: " + ", ".join(NETWORKS))
    ap.add_argument("--no-torch", action="store_true", help="nntrain numbers only, even if torch is importable")
    ap.add_argument("--no-fit", action="store_true", help="skip the full CIFAR-10 fit (RSS, epoch wall time)")
    ap.add_argument("--fit-iterations", type=int, default=500, help="fit length (500 = one epoch at batch 100)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for every library (BLAS, OpenMP, nntrain's pool); default: their own")
    ap.add_argument("--profile", metavar="NET[:infer]",
                    choices=[f"{n}{m}" for n in NETWORKS for m in ("", ":infer")],
                    help="print per-layer forward/backward times of one network's training (or "
                         "inference) step and exit")
    args = ap.parse_args(argv)
    if args.profile:
        profile(args.profile)
        return
    repeats = 3 if args.quick else args.repeats
    seconds = 0.3 if args.quick else 1.0
    names = [n.strip() for n in args.nets.split(",") if n.strip()]
    unknown = [n for n in names if n not in NETWORKS]
    if unknown:
        ap.error(f"unknown network(s) {', '.join(unknown)}; choose from {', '.join(NETWORKS)}")
    use_torch = torch is not None and not args.no_torch
    env = environment()
    _progress("environment: " + json.dumps(env))
    peak = matmul_peak()
    _progress(f"float32 matmul peak (n=2048): {peak:.1f} GFLOP/s")
    rows = bench_networks(names, repeats, seconds, use_torch)
    extras = []
    quick_step = next((r["step_ms"] / 1e3 for r in rows if r["net"] == "quick" and r["mode"] == "train"), None)
    if quick_step is None:
        quick_step = statistics.median(interleaved({"q": NntrainNet(QUICK, 100).train_step}, repeats, seconds)["q"])
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
    print(("" if args.markdown else "\n") + "\n".join(f"- {k}: {v}" for k, v in env.items()) + "\n")
    print(f"float32 matmul peak (n=2048, best of 5): {peak:.1f} GFLOP/s\n")
    print(table(rows, peak, extras, args.markdown))


if __name__ == "__main__":
    main()
