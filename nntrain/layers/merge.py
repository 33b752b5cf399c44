"""Layers with several inputs: elementwise sum (residual connections) and concatenation.

``forward`` receives a list of arrays and ``backward`` returns a list of gradients, one
per input, in the order of the node's ``inputs``.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..registry import LAYERS
from .base import Layer


def _shapes_text(input_shapes) -> str:
    return ", ".join(str(tuple(s)) for s in input_shapes)


@LAYERS.register("add")
class Add(Layer):
    """y = x_1 + x_2 + ... + x_k (all of one shape); dx_i = dy for every i.

    backward returns the received ``dy`` object itself for every input, with no copy:
    this is safe because no layer modifies a ``dy`` it receives, and the graph sums the
    gradients of a fan-out out of place.
    """

    n_inputs = None
    examples = [({}, [(4,), (4,)]), ({}, [(2, 2, 3), (2, 2, 3), (2, 2, 3)])]

    def build(self, input_shapes, rng, dtype):
        shapes = [tuple(s) for s in input_shapes]
        if any(s != shapes[0] for s in shapes):
            raise ConfigError(f"add needs inputs of one shape, received shapes {_shapes_text(shapes)}")
        self._k = len(shapes)
        return shapes[0]

    def forward(self, x, training):
        if len(x) == 1:
            return x[0]
        y = x[0] + x[1]  # a new array: the inputs are never written
        for xi in x[2:]:
            y += xi
        return y

    def backward(self, dy):
        return [dy] * self._k


@LAYERS.register("concat")
class Concat(Layer):
    """Concatenate along the channel axis (axis 0 of each per-sample shape).

    (C_i, H, W) inputs give (sum C_i, H, W) (H, W must agree); (F_i,) inputs give
    (sum F_i,). In the internal layout the channel axis is array axis 0 of a
    (C, N, H, W) batch, so each input is one contiguous block of the output and each
    gradient a contiguous slice of dy; for (N, F, ...) batches it is array axis 1.
    """

    n_inputs = None
    examples = [({}, [(3,), (2,)]), ({}, [(1, 2, 3), (2, 2, 3)]), ({}, [(2, 2), (1, 2), (3, 2)])]

    def build(self, input_shapes, rng, dtype):
        shapes = [tuple(s) for s in input_shapes]
        if any(len(s) != len(shapes[0]) or s[1:] != shapes[0][1:] for s in shapes) or not shapes[0]:
            raise ConfigError(f"concat needs inputs that differ only in their first (channel) axis, "
                              f"received shapes {_shapes_text(shapes)}")
        self._axis = 0 if len(shapes[0]) == 3 else 1
        self._splits = np.cumsum([s[0] for s in shapes])[:-1].tolist()
        return (sum(s[0] for s in shapes), *shapes[0][1:])

    def forward(self, x, training):
        return np.concatenate(x, axis=self._axis)

    def backward(self, dy):
        parts = np.split(dy, self._splits, axis=self._axis)
        # slices along axis 0 are contiguous; along axis 1 copy them so downstream gets
        # the contiguous arrays every layer produces
        return parts if self._axis == 0 else [np.ascontiguousarray(p) for p in parts]
