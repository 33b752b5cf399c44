"""bench/speed.py's handle on PyTorch: in a process of its own (``TorchProcess``, running
bench/torch_side.py under the Python that has torch) or in this one (``TorchInline``).
Both give a timer per network and mode, ``timer(steps) -> seconds per step``. This module
does not import torch."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def has_torch(python: str) -> bool:
    """Whether ``python`` can import torch (without importing it into this process)."""
    if python == sys.executable:
        return importlib.util.find_spec("torch") is not None
    return subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0


class TorchProcess:
    """PyTorch in a process of its own: bench/torch_side.py run by ``python`` (its protocol is
    in that module's docstring). It waits on a blocking read while nntrain runs."""

    def __init__(self, python: str, threads: int | None):
        cmd = [python, str(HERE / "torch_side.py")] + (["--threads", str(threads)] if threads else [])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=HERE.parent)

    def ask(self, **request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the PyTorch process exited ({self.proc.wait()}) on {request}: see its stderr above")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the PyTorch process: {answer['error']}")
        return answer

    def build(self, name: str, bench) -> None:
        """PyTorch's version of ``bench`` (a speed.Bench), for the timers and profiles of ``name``."""
        self.ask(cmd="build", key=name, kind=bench.kind, widths=bench.widths, batch=bench.batch)

    def timer(self, name: str, mode: str):
        return lambda steps: self.ask(cmd="time", key=name, mode=mode, steps=steps)["seconds"]

    def profile(self, name: str, mode: str, steps: int) -> dict:
        return self.ask(cmd="profile", key=name, mode=mode, steps=steps)

    def info(self) -> str:
        answer = self.ask(cmd="info")
        return f"{answer['torch']}, {answer['threads']} threads, own process"

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


class TorchInline:
    """PyTorch in this process (``--torch-mode inline``): bench/torch_side.py imported."""

    def __init__(self, threads: int | None):
        sys.path.insert(0, str(HERE))
        import torch_side

        if threads:
            torch_side.torch.set_num_threads(threads)
        self.side, self.nets = torch_side, {}

    def build(self, name: str, bench) -> None:
        self.nets.clear()  # one network at a time, as in the worker
        self.nets[name] = self.side.TorchNet(bench.kind, bench.widths, bench.batch)

    def timer(self, name: str, mode: str):
        return lambda steps: self.nets[name].time(mode, steps)

    def info(self) -> str:
        answer = self.side.info()
        return f"{answer['torch']}, {answer['threads']} threads, in nntrain's process"

    def close(self) -> None:
        self.nets.clear()
