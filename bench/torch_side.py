"""The PyTorch side of bench/speed.py: the same networks in PyTorch, their timed steps, a
per-layer profile from ``torch.profiler``, and a worker that serves them to speed.py from
a process of its own.

Needs torch (in its own venv: torch is never a dependency of nntrain); speed.py imports
this module only when it times PyTorch in its own process (``--torch-mode inline``), and
otherwise starts it as a separate process::

    TORCH_PYTHON bench/torch_side.py      # reads one JSON command a line on stdin
    TORCH_PYTHON bench/torch_side.py --threads N

Commands (one JSON object a line; one JSON answer a line):

- ``{"cmd": "build", "key": K, "kind": "quick"|"mlp"|"bn", "widths": [..], "batch": B}``
  builds a network and its batch under the name K (dropping the one before) -> ``{"ok": true}``
- ``{"cmd": "time", "key": K, "mode": "train"|"infer", "steps": S}`` runs S steps ->
  ``{"seconds": seconds per step}``
- ``{"cmd": "profile", "key": K, "mode": M, "steps": S}`` -> ``{"step_ms": .., "layers":
  [[label, forward ms, backward ms], ...]}`` (``layer_profile``)
- ``{"cmd": "info"}`` -> the torch version and its thread count

The worker answers on the stdout it was started with, and points file descriptor 1 at
stderr, so nothing torch prints can mix with the answers. While nntrain's block runs, it
waits on a blocking read of stdin (no CPU). It runs PyTorch as a user would: its default
allocator, and its default threads unless speed.py's ``--threads N`` passes ``--threads N`` on.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SGD = {"lr": 0.001, "momentum": 0.9, "weight_decay": 0.004}  # as speed.SGD


def torch_quick():
    return nn.Sequential(
        nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True), nn.ReLU(),
        nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 64), nn.Linear(64, 10))


def torch_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(3072, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                         nn.Linear(256, 10))


class Scale(nn.Module):
    def forward(self, x):
        return x * (1 / 9)


def _bn(c):
    """BatchNorm2d with a learnable bias and its scale frozen at 1 (nntrain's ``weight: false``)."""
    bn = nn.BatchNorm2d(c)
    bn.weight.requires_grad_(False)
    return bn


def torch_bn(widths=(32, 128, 128)):
    """speed.bn_net in PyTorch (airbench94's network, /work/shared/bench/torch_ref.py)."""
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2), _bn(cout),
                nn.GELU(approximate="tanh"), nn.Conv2d(cout, cout, 3, padding=1, bias=False), _bn(cout),
                nn.GELU(approximate="tanh")]
    return nn.Sequential(nn.Conv2d(3, 24, 2), nn.GELU(approximate="tanh"), *block(24, widths[0]),
                         *block(widths[0], widths[1]), *block(widths[1], widths[2]),
                         nn.MaxPool2d(3), nn.Flatten(), nn.Linear(widths[2], 10, bias=False), Scale())


def build_module(kind: str, widths=None) -> nn.Module:
    if kind == "bn":
        return torch_bn(tuple(widths))
    return {"quick": torch_quick, "mlp": torch_mlp}[kind]()


class TorchNet:
    def __init__(self, kind: str, widths, batch: int, seed: int = 0):
        torch.manual_seed(seed)
        self.net = build_module(kind, widths)
        self.opt = torch.optim.SGD(self.net.parameters(), **SGD)
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

    def time(self, mode: str, steps: int) -> float:
        fn = getattr(self, f"{mode}_step")
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        return (time.perf_counter() - t) / steps


# ----- per-layer profile ----------------------------------------------------------------------
def layer_profile(bench: TorchNet, mode: str = "train", steps: int = 5) -> dict:
    """Per-layer forward / backward milliseconds of ``bench``'s steps, from ``torch.profiler``.

    Each top-level module's forward runs inside a ``record_function`` range (module hooks);
    an autograd node carries the sequence number of the forward op that made it, so its
    backward event (``autograd::engine::evaluate_function: ...``) is charged to the layer
    whose range held that op. Parameter-gradient accumulation (no sequence number) and the
    optimizer step stay outside the layers. Medians over ``steps`` profiled steps (after
    two warm-up steps), each step in its own range; ``step_ms`` is the median step.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    modules = list(bench.net)
    ranges, handles = {}, []
    for i, m in enumerate(modules):
        def pre(_m, _inp, i=i):
            ranges[i] = record_function(f"bench-layer{i}")
            ranges[i].__enter__()

        def post(_m, _inp, _out, i=i):
            ranges[i].__exit__(None, None, None)
        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    fn = bench.train_step if mode == "train" else bench.infer_step
    try:
        for _ in range(2):
            fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for k in range(steps):
                with record_function(f"bench-step{k}"):
                    fn()
    finally:
        for h in handles:
            h.remove()
    return _per_layer(prof.events(), modules, steps)


def _per_layer(events, modules, steps: int) -> dict:
    step_of = lambda e: _enclosing(e, "bench-step")  # noqa: E731
    seq_layer, fwd, bwd, step_ms = {}, {}, {}, {}
    for e in events:
        if e.name.startswith("bench-step"):
            step_ms[int(e.name[len("bench-step"):])] = e.cpu_time_total / 1e3
        elif e.name.startswith("bench-layer"):
            i = int(e.name[len("bench-layer"):])
            fwd.setdefault(i, {})[step_of(e)] = e.cpu_time_total / 1e3
    for e in events:  # forward ops inside a layer range, at any depth (aten::linear holds aten::addmm,
        layer = _enclosing(e.cpu_parent, "bench-layer")  # which has its own sequence number)
        if e.sequence_nr >= 0 and layer is not None:
            seq_layer[(e.fwd_thread or e.thread, e.sequence_nr)] = layer
    for e in events:
        if e.name.startswith("autograd::engine::evaluate_function") and e.sequence_nr >= 0:
            i = seq_layer.get((e.fwd_thread or e.thread, e.sequence_nr))
            if i is not None:
                per_step = bwd.setdefault(i, {})
                s = step_of(e)
                per_step[s] = per_step.get(s, 0.0) + e.cpu_time_total / 1e3
    rows = []
    for i, m in enumerate(modules):
        f = [fwd.get(i, {}).get(k, 0.0) for k in range(steps)]
        b = [bwd.get(i, {}).get(k, 0.0) for k in range(steps)]
        rows.append([_label(m), statistics.median(f), statistics.median(b) if i in bwd else None])
    return {"step_ms": statistics.median(step_ms.values()), "layers": rows}


def _enclosing(event, prefix: str):
    """k of the ``prefix<k>`` range holding ``event`` or being it (None outside any)."""
    e = event
    while e is not None:
        if e.name.startswith(prefix):
            return int(e.name[len(prefix):])
        e = e.cpu_parent
    return None


def _label(m: nn.Module) -> str:
    if isinstance(m, nn.Conv2d):
        return f"Conv2d {m.in_channels}->{m.out_channels} {m.kernel_size[0]}x{m.kernel_size[1]}"
    if isinstance(m, nn.MaxPool2d):
        return f"MaxPool2d {m.kernel_size}"
    return type(m).__name__


# ----- the worker -----------------------------------------------------------------------------
def info() -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads()}


def serve(inp, out) -> None:
    nets = {}
    for line in inp:
        request = json.loads(line)
        cmd = request["cmd"]
        if cmd == "build":
            nets.clear()  # one network at a time (the full-width one at batch 1024 is large)
            nets[request["key"]] = TorchNet(request["kind"], request.get("widths"), request["batch"])
            answer = {"ok": True}
        elif cmd == "time":
            answer = {"seconds": nets[request["key"]].time(request["mode"], request["steps"])}
        elif cmd == "profile":
            answer = layer_profile(nets[request["key"]], request["mode"], request["steps"])
        elif cmd == "info":
            answer = info()
        else:
            answer = {"error": f"unknown command {cmd!r}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--threads":  # speed.py --threads N
        torch.set_num_threads(int(sys.argv[2]))
    out = os.fdopen(os.dup(1), "w")  # the answers; fd 1 itself goes to stderr from here on
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(sys.stdin, out)


if __name__ == "__main__":
    main()
