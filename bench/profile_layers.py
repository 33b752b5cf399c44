"""Per-layer profile of one network's step (``bench/speed.py --profile NET[:infer]``).

nntrain's side: every layer's ``forward`` and ``backward`` wrapped in a timer, medians over
the profiled steps. PyTorch's side comes from ``torch.profiler`` in PyTorch's own process
(``bench/torch_side.layer_profile``). The two networks are written layer for layer alike
(but for a ``Flatten`` PyTorch may need where nntrain has none), so their rows pair up by position; ``profile_rows`` lays
them out side by side, then the totals per layer type (convolutions, batch norm, GELU,
max-pool, ...), the time outside the layers (loss, optimizer) and the whole step.
"""

from __future__ import annotations

import statistics
import time


def nntrain_layer_times(bench, mode: str, steps: int) -> dict:
    """``{"step_ms", "layers": [[label, type, forward ms, backward ms or None], ...]}`` for
    ``bench`` (speed.NntrainNet): medians over ``steps`` steps after two warm-up steps."""
    times: dict = {}
    nodes = bench.net.order
    for node in nodes:
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
    step = []
    for _ in range(steps):
        t = time.perf_counter()
        run_step()
        step.append(time.perf_counter() - t)
    for node in nodes:  # unwrap
        for method in ("forward", "backward"):
            del node.layer.__dict__[method]
    layers = []
    for node in nodes:
        fwd = statistics.median(times[(node.name, "forward")]) * 1e3
        bwd = times.get((node.name, "backward"))
        layers.append([_label(node), node.layer.type_name, fwd,
                       statistics.median(bwd) * 1e3 if bwd else None])
    return {"step_ms": statistics.median(step) * 1e3, "layers": layers}


def _label(node) -> str:
    """The node's name, and for a convolution its channels, input size and algorithm (of
    the last forward pass, which its backward follows)."""
    layer = node.layer
    if layer.type_name != "conv2d":
        return node.name
    cin, h, _ = node.input_shapes[0]
    kh, kw = layer.kernel
    used = f" ({layer.last_algorithm})" if getattr(layer, "last_algorithm", None) else ""
    return f"{node.name} {cin}->{layer.out_channels} {kh}x{kw} @{h}{used}"


def _ms(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ratio(ours: float, theirs: float) -> str:
    return f"{theirs / ours:.2f}" if ours > 0 and theirs > 0 else "-"


def profile_rows(ours: dict, theirs: dict | None, mode: str) -> tuple[list, list]:
    """(header, rows) of the side-by-side table; ``theirs`` None gives nntrain's columns only.

    The ratio column is PyTorch's time / nntrain's (fwd + bwd): above 1, nntrain is faster.
    """
    train = mode == "train"
    head = ["layer", "nntrain fwd ms"] + (["nntrain bwd ms"] if train else [])
    if theirs is not None and len(theirs["layers"]) != len(ours["layers"]):  # e.g. the BN net's global
        theirs = {**theirs, "layers": [r for r in theirs["layers"] if r[0] != "Flatten"]}  # max-pool: 2 in PyTorch
    paired = theirs is not None and len(theirs["layers"]) == len(ours["layers"])
    if paired:
        head += ["PyTorch layer", "PyTorch fwd ms"] + (["PyTorch bwd ms"] if train else []) + \
                ["PyTorch time / nntrain time"]
    rows, by_type = [], {}
    pairs = zip(ours["layers"], theirs["layers"] if paired else [None] * len(ours["layers"]))
    for (label, kind, fwd, bwd), other in pairs:
        row = [label, _ms(fwd)] + ([_ms(bwd)] if train else [])
        total = by_type.setdefault(kind, [0.0, 0.0, 0.0, 0.0])
        total[0] += fwd
        total[1] += bwd or 0.0
        if other is not None:
            _, t_fwd, t_bwd = other
            total[2] += t_fwd
            total[3] += t_bwd or 0.0
            row += [other[0], _ms(t_fwd)] + ([_ms(t_bwd)] if train else [])
            row.append(_ratio(fwd + (bwd or 0.0), t_fwd + (t_bwd or 0.0)))
        rows.append(row)
    for kind, (fwd, bwd, t_fwd, t_bwd) in by_type.items():
        row = [f"all {kind}", _ms(fwd)] + ([_ms(bwd)] if train else [])
        if paired:
            row += ["", _ms(t_fwd)] + ([_ms(t_bwd)] if train else []) + [_ratio(fwd + bwd, t_fwd + t_bwd)]
        rows.append(row)
    inside = sum(f + b for f, b, _, _ in by_type.values())
    pad = [""] if train else []  # under the backward columns
    outside = [f"outside layers ({'loss, optimizer, ' if train else ''}bookkeeping)", _ms(ours["step_ms"] - inside)]
    step = [f"{mode} step", _ms(ours["step_ms"])]
    if paired:
        t_inside = sum(tf + tb for _, _, tf, tb in by_type.values())
        outside += pad + ["", _ms(theirs["step_ms"] - t_inside)] + pad + [
            _ratio(ours["step_ms"] - inside, theirs["step_ms"] - t_inside)]
        step += pad + ["", _ms(theirs["step_ms"])] + pad + [_ratio(ours["step_ms"], theirs["step_ms"])]
    else:
        outside += pad
        step += pad
    return head, rows + [outside, step]
