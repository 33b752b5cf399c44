"""Data-parallel training over MPI: measured on this machine, and a cost model past it.

usage: python bench/mpi_scaling.py [--quick] [--repeats 5] [--cores C] [--latency-us 30] [--oversubscribe]

Prints markdown for bench/RESULTS.md (the tables, the date and the machine's load before
and after). Run it on an idle machine: it times two configurations against each other.
C is the number of cores this process may use (2 on the benchmark machine).

1. Measured here: training images/s (float32, synthetic CIFAR-shaped data, forward +
   backward + SGD momentum step) of cifar10_quick (batch 100) and the airbench net at
   half width (BN, batch 256), the networks of bench/speed.py, for 1 process x C threads
   and for C ranks x 1 thread under ``mpiexec -n C`` (this script starts itself there with
   ``--worker``). The ranks take the step ``Trainer._step`` takes under data parallelism
   (``DataParallelStep``): each rank its slice of the global batch, the loss and error sums
   all-reduced, the loss gradient scaled by the rank's share, one all-reduce of the flat
   gradient buffer (``MPIDataParallel.sum_gradients``), the update, the stop flag agreed on.
   Each repeat runs the two configurations back to back (in alternating order); the table
   gives the medians of images/s and of the per-repeat ratios (C x 1) / (1 x C).
2. Cost-model inputs, measured here: the trainable parameters (float32 bytes) of
   cifar10_quick and of the airbench net at half (32/128/128) and full (64/256/256) width;
   the time of ``sum_gradients`` over each parameter list between 2 local ranks and of a
   bare ``Allreduce`` of a buffer of that size (medians of many); the core-seconds per
   image of a one-process step at small and large batches (1 process x C threads: C x
   step time / batch), which shows how BLAS efficiency drops as the batch shrinks; and the
   core-seconds to prepare one global batch as cifar10_fast does (gather, normalise,
   alternating flip, 2 px reflect crop; single-threaded numpy), which every rank does for the whole global batch
   before keeping its slice (so all ranks see the same augmented batch).
3. The model, for N nodes of this machine (C cores, one rank of C threads each: the Slurm
   script in the README), a global batch B and a per-node batch b = B / N::

       step(N) = (b c(b) + d(B)) / C                        compute and data, on C cores
               + t_local + 2 (N-1)/N P / W + 2 (N-1) a      the ring all-reduce (N > 1)
               + 2 ceil(log2 N) a                           the two scalar all-reduces (N > 1)

   c(b): core-seconds per image at per-node batch b (interpolated in log b between the
   measured batches, held constant outside them); d(B): core-seconds to prepare a global
   batch; P: parameter bytes; W: link bandwidth (10 and 25 Gb/s at line rate); a: latency
   per message (``--latency-us``, default 30 us: MPI over kernel TCP on 10/25 GbE without
   RDMA typically takes 15-50 us one way for a small message, depending on the NIC and its
   interrupt coalescing; not the low end, as every step of a ring also waits for the
   slowest rank); t_local: the measured 2-local-rank ``sum_gradients`` (the flattening, summing and
   copying back, which the network transfer does not hide: nntrain all-reduces once, after
   the backward pass). Training time = steps x step(N), steps = ceil(epochs x ceil(n / B))
   (the last, smaller batch of an epoch counted as full; evaluation and start-up not
   counted). Predicted for configs/cifar10_fast.yaml (its batch, epochs and training
   split) and for airbench94 at full width (9.9 epochs of 50,000 images at batch 1024;
   94% in airbench's runs, issue 17) at N = 1, 2, 4, 8, 16, 32.

``--quick`` (2 repeats, short timing blocks, batches 32 and 128 instead of 32 and 512)
checks that everything runs (tests/test_bench_mpi.py); its numbers are not for the record.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

WORKER = "--worker" in sys.argv


def _early_cores(argv) -> int:
    """``--cores C`` (default: the cores this process may use), read before numpy loads."""
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--cores=") else (
            argv[i + 1] if arg == "--cores" and i + 1 < len(argv) else None)
        if value is not None and value.isdigit() and int(value) > 0:
            return int(value)
    return len(os.sched_getaffinity(0))


CORES = _early_cores(sys.argv[1:])
# OpenBLAS reads its thread count once, when numpy loads it: one thread per rank, C in one process.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NNTRAIN_THREADS"):
    os.environ[_var] = "1" if WORKER else str(CORES)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from speed import QUICK, REPO, NntrainNet, bn_net, seconds_per_call  # noqa: E402  (speed.py sets OpenBLAS's env, then loads numpy)

import numpy as np  # noqa: E402

from nntrain.distributed import INSTALL_HINT, SingleProcess  # noqa: E402
from nntrain.graph import Network  # noqa: E402
from nntrain.losses import error_rate  # noqa: E402
from nntrain.machine import machine_info  # noqa: E402

NETS = {  # name: (description, spec, global batch of the 1 x C / C x 1 comparison), as bench/speed.py
    "quick": ("cifar10_quick", QUICK, 100),
    "bn": ("airbench net, half width (BN)", bn_net((32, 128, 128)), 256),
    "full": ("airbench net, full width (BN)", bn_net((64, 256, 256)), 1024),
}
SCALED = ("quick", "bn")  # measured 1 x C against C x 1
NODES = (1, 2, 4, 8, 16, 32)
LINKS_GBIT = (10, 25)
AIRBENCH94 = {"title": "airbench94, full width (64/256/256)", "net": "full", "batch": 1024, "epochs": 9.9,
              "images": 50000, "result": "94% in airbench's runs"}


class DataParallelStep:
    """One training step as ``Trainer._step`` takes it under data parallelism (with
    ``SingleProcess`` every collective is the identity: the one-process step). Calling it
    adds the seconds of its phases to ``phases``."""

    def __init__(self, bench: NntrainNet, dist):
        self.bench, self.dist = bench, dist
        n = len(bench.y)
        part = dist.shard(n)
        self.x, self.y = bench.x[part], bench.y[part]
        self.share = np.float32(len(self.y) / n)
        self.phases = dict.fromkeys(("compute", "all-reduce", "update"), 0.0)
        dist.broadcast_network(bench.net)

    def __call__(self):
        net, loss, dist, n_here = self.bench.net, self.bench.loss, self.dist, len(self.y)
        t0 = time.perf_counter()
        logits = net.forward(self.x, training=True)
        value = loss.forward(logits, self.y)
        dist.sum([value * n_here, error_rate(logits, self.y) * n_here, n_here])
        grad = loss.backward()
        if dist.size > 1:
            grad *= self.share
        net.backward(grad)
        t1 = time.perf_counter()
        dist.sum_gradients(net.named_parameters())
        t2 = time.perf_counter()
        self.bench.opt.step()
        net.clear()
        dist.any(False)
        t3 = time.perf_counter()
        for key, dt in zip(self.phases, (t1 - t0, t2 - t1, t3 - t2)):
            self.phases[key] += dt


def steps_per_block(fn, seconds: float) -> int:
    """Steps in a timing block of about ``seconds``, sized by one call of ``fn`` (its warm-up)."""
    return max(1, min(50, int(seconds / max(seconds_per_call(fn, 1), 1e-6))))


def trainable(spec) -> list:
    return [(k, p) for k, p in Network(spec, (3, 32, 32), seed=0).named_parameters() if p.trainable]


# ----- the ranks (under mpiexec) ----------------------------------------------------------------
def worker(job: dict) -> None:
    """One rank: times the data-parallel step of each network in ``job["nets"]`` and the
    all-reduce of each network's parameters; rank 0 prints the results as JSON."""
    import mpi4py
    from mpi4py import MPI

    from nntrain import distributed

    dist = distributed.context()
    library = MPI.Get_library_version().split(",")[0].strip()
    out = {"mpi": f"{library}; mpi4py {mpi4py.__version__}", "ranks": dist.size, "steps": {}, "allreduce": {}}
    for name in job["nets"]:
        _, spec, batch = NETS[name]
        step = DataParallelStep(NntrainNet(spec, batch), dist)
        steps = dist.broadcast_object(steps_per_block(step, job["seconds"]))  # the same on every rank
        step.phases = dict.fromkeys(step.phases, 0.0)
        dist.barrier()
        t = time.perf_counter()
        for _ in range(steps):
            step()
        dist.barrier()
        out["steps"][name] = {"step_s": (time.perf_counter() - t) / steps,
                              **{k: v / steps for k, v in step.phases.items()}}
    for name in NETS:
        params = trainable(NETS[name][1])
        flat = np.zeros(sum(p.size for _, p in params), np.float32)
        times = {"sum_gradients": [], "Allreduce": []}
        for _ in range(job["allreduce"]):
            for key, fn in (("sum_gradients", lambda: dist.sum_gradients(params)),
                            ("Allreduce", lambda: dist.comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM))):
                dist.barrier()
                t = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t)
        out["allreduce"][name] = times
    if dist.is_main:
        print(json.dumps(out), flush=True)


def run_ranks(job: dict, args) -> dict:
    command = [args.mpiexec, "-n", str(CORES), *(["--oversubscribe"] if args.oversubscribe else []),
               sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    env = dict(os.environ)
    if os.geteuid() == 0:  # Open MPI refuses to run as root without both
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{' '.join(command[:4])} ... failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


# ----- measurements in this process (1 process x C threads) -------------------------------------
def measure_scaling(args) -> tuple[dict, dict]:
    """Images/s of each SCALED net for 1 x C and C x 1, repeat by repeat, and the rank runs'
    raw results (phases, all-reduce times, MPI version)."""
    one = {name: DataParallelStep(NntrainNet(NETS[name][1], NETS[name][2]), SingleProcess()) for name in SCALED}
    steps = {}
    for name, step in one.items():
        steps[name] = steps_per_block(step, args.seconds)
    rates = {name: {"one": [], "ranks": []} for name in SCALED}
    ranks = {"steps": {name: [] for name in SCALED}, "allreduce": {name: {} for name in NETS}}
    job = {"nets": list(SCALED), "seconds": args.seconds, "allreduce": args.allreduce}
    for r in range(args.repeats):
        for which in ("one", "ranks") if r % 2 == 0 else ("ranks", "one"):
            if which == "one":
                for name, step in one.items():
                    rates[name]["one"].append(NETS[name][2] / seconds_per_call(step, steps[name]))
                continue
            result = run_ranks(job, args)
            ranks["mpi"] = result["mpi"]
            for name in SCALED:
                ranks["steps"][name].append(result["steps"][name])
                rates[name]["ranks"].append(NETS[name][2] / result["steps"][name]["step_s"])
            for name, times in result["allreduce"].items():
                for key, values in times.items():
                    ranks["allreduce"][name].setdefault(key, []).extend(values)
        _progress(f"repeat {r + 1}/{args.repeats}: " + ", ".join(
            f"{name} {rates[name]['one'][-1]:.0f} / {rates[name]['ranks'][-1]:.0f} img/s" for name in SCALED))
    return rates, ranks


def measure_compute(batches, args) -> dict:
    """c[name][b]: core-seconds per image of a one-process step at batch b (C threads)."""
    c = {}
    for name in NETS:
        c[name] = {}
        for b in batches:
            step = DataParallelStep(NntrainNet(NETS[name][1], b), SingleProcess())
            steps = steps_per_block(step, args.seconds)
            t = statistics.median(seconds_per_call(step, steps) for _ in range(args.curve_repeats))
            c[name][b] = CORES * t / b
            _progress(f"{name} batch {b}: {1e3 * t:.1f} ms a step")
            del step
    return c


def measure_data(config: dict, batch: int, repeats: int) -> float:
    """Core-seconds to prepare one global batch as ``config`` does (from 10,000 synthetic images)."""
    from nntrain.data import BatchLoader, make_augmentation
    from nntrain.data.normalize import Normalizer
    from nntrain.data.splits import Split

    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (10000, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 10000))
    loader = BatchLoader(split, batch, normalizer=Normalizer.fit(config["data"]["normalize"], split.x[:1000]),
                         augment=make_augmentation(config["data"]["augment"]), seed=0, drop_last=True,
                         prefetch=False)
    order = loader.order(1)
    loader.batch(1, 0, order)
    return statistics.median(seconds_per_call(lambda i=i: loader.batch(1, i % len(loader), order), 1)
                             for i in range(max(3, 2 * repeats)))


# ----- the model --------------------------------------------------------------------------------
class CostModel:
    """step(N) of the module docstring for one network and recipe."""

    def __init__(self, c: dict, data_s: float, param_bytes: int, local_s: float, latency_s: float):
        self.batches = sorted(c)
        self.log_b, self.c = np.log(self.batches), np.array([c[b] for b in self.batches])
        self.data_s, self.bytes, self.local_s, self.latency = data_s, param_bytes, local_s, latency_s

    def per_image(self, b: float) -> float:
        return float(np.interp(math.log(b), self.log_b, self.c))  # held constant outside the measured batches

    def compute(self, b: int) -> float:
        return (b * self.per_image(b) + self.data_s) / CORES

    def allreduce(self, nodes: int, gbit: float) -> float:
        if nodes == 1:
            return 0.0
        ring = 2 * (nodes - 1) / nodes * self.bytes / (gbit * 1e9 / 8) + 2 * (nodes - 1) * self.latency
        return self.local_s + ring + 2 * math.ceil(math.log2(nodes)) * self.latency

    def step(self, batch: int, nodes: int, gbit: float) -> float:
        return self.compute(batch // nodes) + self.allreduce(nodes, gbit)

    def break_even_batch(self, nodes: int, gbit: float) -> int:
        """The smallest per-node batch whose step compute (without data) reaches the all-reduce."""
        comm, b = self.allreduce(nodes, gbit), 1
        while b * self.per_image(b) / CORES < comm:
            b += 1
        return b


def model_table(recipe: dict, model: CostModel) -> str:
    """The predicted speed-up and training time at each N, and where it stops paying."""
    batch = recipe["batch"]
    steps = math.ceil(recipe["epochs"] * math.ceil(recipe["images"] / batch) - 1e-9)
    nodes = [n for n in NODES if batch % n == 0]  # nntrain needs N to divide the global batch
    one = {g: model.step(batch, 1, g) for g in LINKS_GBIT}
    head, rows = ["nodes", "batch per node", "compute ms/step"], []
    for g in LINKS_GBIT:
        head += [f"{g} Gb/s: all-reduce ms", "speed-up (efficiency)", "training time"]
    for n in nodes:
        row = [str(n), str(batch // n), f"{1e3 * model.compute(batch // n):.0f}"]
        for g in LINKS_GBIT:
            speedup = one[g] / model.step(batch, n, g)
            row += [f"{1e3 * model.allreduce(n, g):.1f}", f"{speedup:.2f}x ({100 * speedup / n:.0f}%)",
                    f"{steps * one[g] / speedup / 60:.1f} min"]
        rows.append(row)
    n, b, g0 = nodes[-1], batch // nodes[-1], LINKS_GBIT[0]
    shares = " and ".join(f"{1e3 * model.allreduce(n, g):.1f} ms on {g} Gb/s "
                          f"({100 * model.allreduce(n, g) / model.step(batch, n, g):.1f}% of the step)"
                          for g in LINKS_GBIT)
    notes = [f"at N = {n} (per-node batch {b}) the all-reduce takes {shares}; an image costs "
             f"{model.per_image(b) / model.per_image(batch):.2f}x the compute it costs at batch {batch} (BLAS "
             f"efficiency); preparing the global batch, which every rank does, is "
             f"{100 * model.data_s / CORES / model.step(batch, n, g0):.1f}% of the step"]
    for g in LINKS_GBIT:
        even = model.break_even_batch(n, g)
        notes.append(f"{g} Gb/s: a step's compute falls below that all-reduce under a per-node batch of {even} "
                     f"image{'s' * (even > 1)} (beyond {batch // even} nodes at this global batch)")
    low = next((k for k in nodes if one[g0] / model.step(batch, k, g0) / k < 0.5), None)
    notes.append(f"parallel efficiency ({g0} Gb/s) falls below 50% at {low} nodes" if low else
                 f"parallel efficiency ({g0} Gb/s) stays at or above 50% up to {n} nodes")
    title = (f"{recipe['title']}: batch {batch}, {recipe['epochs']:g} epochs of {recipe['images']:,} images "
             f"({steps} steps; {recipe['result']})")
    return "\n".join([f"#### {title}", "", markdown(head, rows), "", *(f"- {note}" for note in notes)])


# ----- report -----------------------------------------------------------------------------------
def markdown(head, rows) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(row) + " |" for row in rows])


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def environment() -> dict:
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    return {**machine_info(), "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "load": " ".join(f"{x:.1f}" for x in os.getloadavg()), "blas": f"{blas.get('name')} {blas.get('version')}"}


def _ms(values) -> str:
    return f"{1e3 * statistics.median(values):.2f}"


def report(args, env, rates, ranks, c, data_s, fast, load_end) -> str:
    one_x, x_one = f"1 process x {CORES} threads", f"{CORES} ranks x 1 thread"
    out = [f"## Data-parallel training over MPI: {x_one} against {one_x}, and a cost model ({env['date']})", "",
           f"- machine load (1, 5, 15 min) at the start: {env['load']}; at the end: {load_end}",
           f"- {env['cpu']}, {env['cores']} cores; Python {env['python']}, numpy {env['numpy']}, {env['blas']}",
           f"- {ranks['mpi']}; mpiexec -n {CORES}{' --oversubscribe' if args.oversubscribe else ''}",
           f"- command: python bench/mpi_scaling.py {' '.join(sys.argv[1:])}".rstrip(), "",
           f"### Measured: training images/s, {x_one} against {one_x}", ""]
    rows = []
    for name in SCALED:
        ratio = statistics.median(b / a for a, b in zip(rates[name]["one"], rates[name]["ranks"]))
        share = statistics.median(s["all-reduce"] / s["step_s"] for s in ranks["steps"][name])
        rows.append([NETS[name][0], str(NETS[name][2]), f"{statistics.median(rates[name]['one']):.0f}",
                     f"{statistics.median(rates[name]['ranks']):.0f}", f"{ratio:.2f}", f"{100 * share:.0f}%"])
    out += [markdown(["network", "global batch", f"{one_x}: img/s", f"{x_one}: img/s",
                      f"ratio ({CORES} x 1) / (1 x {CORES})", "sum_gradients share of a rank's step"], rows), "",
            f"Medians of {args.repeats} repeats (the ratio: of the per-repeat ratios; each repeat runs the two "
            "back to back, in alternating order). float32, synthetic CIFAR-shaped data.", "",
            "### Cost-model inputs", ""]
    counts = {name: sum(p.size for _, p in trainable(NETS[name][1])) for name in NETS}
    rows = [[NETS[name][0], f"{counts[name]:,}", f"{4 * counts[name] / 1e6:.2f} MB",
             _ms(ranks["allreduce"][name]["sum_gradients"]), _ms(ranks["allreduce"][name]["Allreduce"])]
            for name in NETS]
    samples = len(ranks["allreduce"]["quick"]["Allreduce"])
    out += [markdown(["network", "trainable parameters", "float32 bytes", "sum_gradients, 2 local ranks: ms",
                      "bare Allreduce of as many floats: ms"], rows), "",
            f"Medians of {samples} all-reduces (a barrier before each).", ""]
    small, large = min(args.batches), max(args.batches)
    rows = [[NETS[name][0], *(f"{1e3 * c[name][b]:.2f}" for b in args.batches),
             f"{c[name][small] / c[name][large]:.2f}"] for name in NETS]
    out += [markdown(["network", *(f"core-ms per image, batch {b}" for b in args.batches),
                      f"batch {small} / batch {large}"], rows), "",
            f"One process, {CORES} threads: core-ms per image = {CORES} x step time / batch (medians of "
            f"{args.curve_repeats}); the last column is the BLAS efficiency lost at the small batch. Preparing one "
            f"global batch of {fast['batch']} as cifar10_fast does (gather, {fast['normalize']} normalisation, "
            f"{' + '.join(a['type'] for a in fast['augment'])}): {1e3 * data_s:.1f} core-ms, on every rank.", "",
            f"### Predicted: N nodes of this machine ({CORES} cores, 1 rank x {CORES} threads each)", "",
            "step(N) = (b c(b) + d(B)) / C + t_local + 2 (N-1)/N P / W + 2 (N-1) a + 2 ceil(log2 N) a "
            f"(bench/mpi_scaling.py); C = {CORES}, a = {args.latency_us:g} us per message, W at line rate, "
            "t_local, P, c and d from the tables above. Speed-up against one node on the same link; efficiency = "
            "speed-up / N; training time without evaluation and start-up.", ""]
    local = {name: statistics.median(ranks["allreduce"][name]["sum_gradients"]) for name in NETS}
    for recipe in (fast, AIRBENCH94):
        net = recipe["net"]
        model = CostModel(c[net], data_s, 4 * counts[net], local[net], args.latency_us * 1e-6)
        out += [model_table(recipe, model), ""]
    return "\n".join(out)


def fast_recipe() -> dict:
    from nntrain.config import load_config

    config = load_config(REPO / "configs" / "cifar10_fast.yaml")
    data, train = config["data"], config["train"]
    return {"title": "cifar10_fast (half width)", "net": "bn", "batch": train["batch_size"],
            "epochs": train["epochs"], "images": 50000 - (data.get("validation") or 0),  # CIFAR-10's training set
            "result": "about 90% test accuracy, README", "config": config, "normalize": data["normalize"]["type"],
            "augment": data["augment"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="alternating repeats of the 1 x C / C x 1 comparison")
    ap.add_argument("--quick", action="store_true", help="2 repeats, short blocks, batches 32 and 128 (a check)")
    ap.add_argument("--cores", type=int, default=CORES, help="C: threads of the one process, ranks of the other")
    ap.add_argument("--latency-us", type=float, default=30.0, help="the model's latency per message (us)")
    ap.add_argument("--oversubscribe", action="store_true", help="pass --oversubscribe to mpiexec")
    ap.add_argument("--mpiexec", default=shutil.which("mpiexec"), help="the mpiexec to use (default: on PATH)")
    args = ap.parse_args(argv)
    if not args.mpiexec or importlib.util.find_spec("mpi4py") is None:
        sys.exit(f"mpiexec and mpi4py are needed: {INSTALL_HINT}")
    args.repeats = 2 if args.quick else args.repeats
    args.seconds, args.allreduce = (0.3, 10) if args.quick else (1.0, 100)
    args.batches, args.curve_repeats = ((32, 128), 2) if args.quick else ((32, 512), 5)
    env = environment()
    rates, ranks = measure_scaling(args)
    c = measure_compute(args.batches, args)
    fast = fast_recipe()
    data_s = measure_data(fast["config"], fast["batch"], args.curve_repeats)
    load_end = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(report(args, env, rates, ranks, c, data_s, fast, load_end))


if __name__ == "__main__":
    if WORKER:
        worker(json.loads(sys.argv[sys.argv.index("--worker") + 1]))
    else:
        main()
