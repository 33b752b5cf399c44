"""Memory a network needs, estimated while it is built, against the memory this process may use.

Why: ``out_features: 1000000000000`` or ``train.batch_size: 100000`` pass every type
check, and numpy would then try to allocate terabytes: a MemoryError deep inside a layer,
or the kernel's OOM killer once the pages are touched. The estimate refuses such a network
with the numbers, before anything large is allocated.

What is counted, in bytes = elements x itemsize (4 for float32): what a step needs *at
least*, so that only a network that cannot run is refused.

- parameters: every parameter tensor and its gradient, 2 x its elements, taken from
  ``Layer.param_shapes`` *before* the layer allocates them. Optimizer state (momentum 1x,
  Adam 2x) comes on top and is not counted.
- one training step at batch size B: the input of every layer with parameters, kept from
  the forward pass until the backward pass computes that layer's parameter gradient from
  it (a tensor feeding several such layers once); plus the backward pass's peak, at least
  one layer's output gradient and input gradients at once:

      B x (sum over kept tensors + max over layers of (output + inputs))

  (per-example element counts), plus each layer's per-thread scratch
  (``Layer.workspace_bytes``: the convolution's im2col chunk) times the thread count.
- evaluation at batch size B: forward only, B x max over layers of (output + inputs),
  plus the same scratch.

What else layers keep (ReLU's output, max-pool indices, dropout masks) is not counted, so
a real step needs more, typically up to twice the activations counted: a network that is
refused cannot run; one that is accepted may still run out of memory, and the command
line's MemoryError message then says what was being allocated (``memory_error_message``).

The limit (``memory_limit``) is the smallest of the physical memory, the cgroup's
``memory.max`` (a container) and ``RLIMIT_AS`` (``ulimit -v``).
"""

from __future__ import annotations

import math
import os
import resource
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

_CGROUP_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")
_last: dict = {}  # the estimate of the last batch size checked in this process (memory_error_message)


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units, 3 significant digits: 512 bytes, 1.50 KiB, 24.0 GiB."""
    n = float(n)
    for unit in _UNITS:
        if n < 1024 or unit == _UNITS[-1]:
            break
        n /= 1024
    if unit == "bytes":
        return f"{int(n)} bytes"
    return f"{n:.3g} {unit}" if n < 1000 else f"{n:,.0f} {unit}"


def memory_limit() -> tuple[int, str]:
    """(bytes, who sets it) of the memory this process may use at most: the smallest of
    physical memory ("this machine has"), a cgroup limit ("this container may use") and
    RLIMIT_AS ("this process may address (ulimit -v)")."""
    limits = []
    try:
        limits.append((os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "this machine has"))
    except (ValueError, OSError, AttributeError):  # not POSIX: no limit known from here
        pass
    for path in _CGROUP_FILES:
        try:
            text = Path(path).read_text()[:64].strip()
        except OSError:
            continue
        if text.isdigit():  # "max" (v2) or a huge number (v1) mean no limit
            limits.append((int(text), "this container may use"))
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft != resource.RLIM_INFINITY and soft > 0:
        limits.append((soft, "this process may address (ulimit -v)"))
    return min(limits) if limits else (2**63, "no limit known")


def _elements(shape) -> int:
    return math.prod(int(d) for d in shape)


def _shape_text(shape) -> str:
    return " x ".join(str(d) for d in shape)


@dataclass
class Estimate:
    """What a network needs at least (see the module docstring), recorded layer by layer by
    ``Network`` while it is built.

    ``params``: [(qualified name, shape)]; ``outputs``: {tensor name: per-example output
    shape} (the input too); ``kept``: names of the tensors the backward pass needs;
    ``peak``: [(layer, per-example elements of its output and inputs)].
    """

    itemsize: int
    input_shape: tuple
    threads: int = 1
    params: list = field(default_factory=list)
    outputs: dict = field(default_factory=dict)
    kept: set = field(default_factory=set)
    peak: list = field(default_factory=list)
    workspace: int = 0  # bytes: the largest per-thread scratch of a layer
    limit: tuple = field(default_factory=lambda: memory_limit())  # (bytes, who) when the network was built

    # ----- totals ------------------------------------------------------------------------
    @property
    def param_bytes(self) -> int:
        """Parameters and their gradients."""
        return 2 * self.itemsize * sum(_elements(s) for _, s in self.params)

    def per_example_bytes(self, training: bool = True) -> int:
        """Activation bytes of one example in a training step (or an evaluation pass)."""
        peak = max((both for _, both in self.peak), default=_elements(self.input_shape))
        if not training:
            return self.itemsize * peak
        return self.itemsize * (sum(_elements(self._shape(t)) for t in self.kept) + peak)

    def activation_bytes(self, batch_size: int, training: bool = True) -> int:
        return batch_size * self.per_example_bytes(training) + self.workspace * self.threads

    def total_bytes(self, batch_size: int, training: bool = True) -> int:
        return self.param_bytes + self.activation_bytes(batch_size, training)

    def max_batch_size(self, limit: int, training: bool = True) -> int:
        """The largest batch whose estimate fits in ``limit`` bytes (0: not even one)."""
        room = limit - self.param_bytes - self.workspace * self.threads
        return max(0, room // max(1, self.per_example_bytes(training)))

    def _shape(self, tensor: str) -> tuple:
        return self.outputs.get(tensor, self.input_shape)

    # ----- who dominates -----------------------------------------------------------------
    def largest_param(self) -> str:
        if not self.params:
            return "no parameters"
        name, shape = max(self.params, key=lambda p: _elements(p[1]))
        return f"{name}: {_shape_text(shape)}"

    def largest_output(self) -> str:
        if not self.outputs:
            return "the input"
        name = max(self.outputs, key=lambda t: _elements(self.outputs[t]))
        return f"{name}'s output {self.outputs[name]} per example"

    def describe(self, batch_size: int | None = None, eval_batch_size: int | None = None) -> str:
        """Lines for ``nntrain show``: parameters, activations per batch, the limit."""
        limit, who = memory_limit()
        lines = [f"memory: parameters and gradients {format_bytes(self.param_bytes)} "
                 f"(largest {self.largest_param()})"]
        for what, b, training in (("training", batch_size, True), ("evaluation", eval_batch_size, False)):
            if b:
                lines.append(f"  {what} at batch size {b}: at least {format_bytes(self.total_bytes(b, training))} "
                             f"(activations {format_bytes(self.activation_bytes(b, training))}; largest "
                             f"{self.largest_output()})")
        lines.append(f"  limit: {who} {format_bytes(limit)}")
        return "\n".join(lines)

    # ----- checks, called while the network is built -------------------------------------
    def add_parameters(self, layer: str, shapes: dict) -> None:
        """Record a layer's parameter shapes; ConfigError if the parameters no longer fit."""
        self.params.extend((f"{layer}.{k}", tuple(int(d) for d in s)) for k, s in shapes.items())
        limit, who = self.limit
        if self.param_bytes > limit:
            raise ConfigError(f"the parameters need {format_bytes(self.param_bytes)} with their gradients "
                              f"(largest {self.largest_param()}) but {who} {format_bytes(limit)}")

    def add_output(self, layer: str, inputs: list[str], output_shape: tuple, *, has_params: bool,
                   workspace: int) -> None:
        """Record a layer's output; ConfigError if one training example no longer fits."""
        self.outputs[layer] = tuple(int(d) for d in output_shape)
        if has_params:
            self.kept.update(inputs)
        both = _elements(output_shape) + sum(_elements(self._shape(t)) for t in inputs)
        self.peak.append((layer, both))
        self.workspace = max(self.workspace, int(workspace))
        limit, who = self.limit
        need = self.total_bytes(1)
        if need > limit:
            raise ConfigError(f"one training example needs at least {format_bytes(need)} (largest "
                              f"{self.largest_output()}; {format_bytes(self.param_bytes)} of parameters) "
                              f"but {who} {format_bytes(limit)}")


def check_batch_memory(estimate: Estimate, batch_size: int, *, training: bool = True,
                       option: str = "train.batch_size") -> None:
    """ConfigError if a step at ``batch_size`` cannot fit in memory, naming ``option``, the
    numbers and the largest batch size that fits. Remembers the estimate for
    ``memory_error_message``."""
    _last.update(estimate=estimate, batch_size=batch_size, training=training, option=option)
    limit, who = memory_limit()
    need = estimate.total_bytes(batch_size, training)
    if need <= limit:
        return
    fits = estimate.max_batch_size(limit, training)
    what = "a training step" if training else "an evaluation pass"
    raise ConfigError(f"{option} {batch_size}: {what} needs at least {format_bytes(need)} "
                      f"({format_bytes(estimate.activation_bytes(batch_size, training))} of activations, "
                      f"largest {estimate.largest_output()}; {format_bytes(estimate.param_bytes)} of "
                      f"parameters) but {who} {format_bytes(limit)}: "
                      + (f"try a smaller {option} (at most {fits} can fit)" if fits
                         else "the model is too large for even one example"))


def memory_error_message(exc: BaseException) -> str:
    """One line for a MemoryError: what could not be allocated (numpy says so), the
    network's estimate when one was checked in this process, and a way forward that
    follows from them (a smaller batch only when the activations dominate)."""
    parts = ["out of memory"]
    size, shape, dtype = (getattr(exc, a, None) for a in ("_total_size", "shape", "dtype"))
    if size is not None and shape is not None:
        parts[0] += f" allocating {format_bytes(size)} (an array of shape {tuple(shape)}, {dtype})"
    limit, who = memory_limit()
    est = _last.get("estimate")
    if est is None:
        parts.append(f"{who} {format_bytes(limit)}")
        return "; ".join(parts)
    b, training, option = _last["batch_size"], _last["training"], _last["option"]
    acts = est.activation_bytes(b, training)
    parts.append(f"the network needs at least {format_bytes(est.param_bytes)} of parameters and "
                 f"{format_bytes(acts)} of activations at {option} {b}, and {who} {format_bytes(limit)}")
    if acts >= est.param_bytes:
        parts.append("try a smaller train.batch_size or eval.batch_size")
    else:
        parts.append("the parameters take most of it: try a smaller model")
    return "; ".join(parts)
