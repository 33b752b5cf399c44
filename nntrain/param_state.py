"""Parameter lists, scratch buffers and saved per-parameter state: what the optimizers
(nntrain.optim) and the weight averagers (nntrain.averaging) share."""

from __future__ import annotations

import numpy as np

from .errors import CheckpointError
from .layers.base import Parameter


def named_params(params) -> list[tuple[str, Parameter]]:
    """``[(key, Parameter)]``: keys are the names if all are non-empty and unique, else "0", "1", ..."""
    pairs = []
    for item in params:
        name, p = item if isinstance(item, tuple) else (getattr(item, "name", ""), item)
        if not isinstance(p, Parameter):
            raise TypeError(f"expected Parameter objects or (name, Parameter) pairs, received {item!r}")
        pairs.append((str(name), p))
    if len({id(p) for _, p in pairs}) != len(pairs):
        raise ValueError("the same Parameter is listed twice (it would be updated twice per step)")
    names = [n for n, _ in pairs]
    if not (all(names) and len(set(names)) == len(names)):
        names = [str(i) for i in range(len(pairs))]
    return [(n, p) for n, (_, p) in zip(names, pairs)]


class Workspace:
    """Scratch arrays reused across parameters and steps: ``get(slot, like)`` is a view
    shaped like ``like`` into one buffer per (slot, dtype), sized for the largest parameter."""

    def __init__(self, size: int):
        self.size = size
        self._buffers: dict = {}

    def get(self, slot: int, like: np.ndarray) -> np.ndarray:
        key = (slot, like.dtype)
        buf = self._buffers.get(key)
        if buf is None or buf.size < like.size:
            buf = self._buffers[key] = np.empty(max(self.size, like.size), like.dtype)
        return buf[: like.size].reshape(like.shape)


def check_state_arrays(prefix: str, state: dict, expected: dict) -> None:
    missing = [k for k in expected if k not in state]
    if missing:
        raise CheckpointError(f"saved {prefix} state does not match: missing {', '.join(missing[:4])}"
                              + (" ..." if len(missing) > 4 else ""))
    for key, target in expected.items():
        if np.shape(state[key]) != target.shape:
            raise CheckpointError(f"saved {prefix} state does not match: {key} has shape {np.shape(state[key])}, "
                                  f"expected {target.shape}")


def saved_scalar(value, key: str, kind):
    """A saved counter (int >= 0) or rate (finite float > 0); CheckpointError otherwise."""
    a = np.asarray(value)
    ok = a.shape == () and a.dtype.kind in "biuf" and np.isfinite(a) and (a >= 0 if kind is int else a > 0)
    if not ok or (kind is int and a != int(a)):
        raise CheckpointError(f"saved optimizer state: {key} should be a single {'integer >= 0' if kind is int else 'number > 0'}")
    return kind(a)
