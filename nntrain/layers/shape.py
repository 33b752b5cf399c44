"""Layers that move values without arithmetic: flatten, reshape, identity; and scale.

Per-sample order is the public one, PyTorch's and Caffe's: flattening a (C, H, W)
sample gives its values in C, H, W order, so a network's weights match theirs. Inside a
network a (C, H, W) batch is channel-major (C, N, H, W), so a reshape to or from rank 3
goes through the public (N, ...) layout: one transposing copy. Between other ranks it is
a view.
"""

from __future__ import annotations

import math

import numpy as np

from .. import validate as v
from ..errors import ConfigError
from ..registry import LAYERS
from .base import Layer, batch_size_of, to_internal, to_public


def relayout(x: np.ndarray, sample_shape: tuple) -> np.ndarray:
    """An internal batch reshaped, sample by sample, to ``sample_shape`` (internal layout)."""
    n = batch_size_of(x)
    return to_internal(to_public(x).reshape((n, *sample_shape)))


class _Reshape(Layer):
    """Shared forward/backward: y = x with each sample reshaped (in public C, H, W order)."""

    _in_shape: tuple = ()
    _out_shape: tuple = ()

    def forward(self, x, training):
        return relayout(x, self._out_shape)

    def backward(self, dy):
        return relayout(dy, self._in_shape) if self.needs_input_grad else None


@LAYERS.register("flatten")
class Flatten(_Reshape):
    """(C, H, W) -> (C*H*W,) in C, H, W order (torch.flatten(x, 1), Caffe's Flatten).

    Internally ``x.transpose(1, 0, 2, 3).reshape(N, -1)``: a copy, since the batch is
    stored channel-major. Any other per-sample shape is flattened the same way (a view).
    """

    examples = [({}, [(2, 3, 2)]), ({}, [(2, 3)]), ({}, [(5,)])]

    def build(self, input_shapes, rng, dtype):
        (shape,) = input_shapes
        self._in_shape = tuple(shape)
        self._out_shape = (math.prod(shape),)
        return self._out_shape


@LAYERS.register("reshape")
class Reshape(_Reshape):
    """Reshape each sample to ``shape`` (without the batch axis), like x.reshape(N, *shape).

    One entry may be -1 (inferred). Values keep their public per-sample order (C, H, W
    for images), whatever the internal layout of the input and the output.
    """

    examples = [({"shape": [3, 2, 2]}, [(12,)]), ({"shape": [2, -1, 2]}, [(3, 2, 2)]),
                ({"shape": [4, 3]}, [(2, 3, 2)])]

    def __init__(self, shape: list):
        dims = v.int_list(shape, "shape")
        if not dims or any(d == 0 or d < -1 for d in dims) or dims.count(-1) > 1:
            raise ConfigError(f"expected a non-empty list of positive integers with at most one -1, "
                              f"received shape={shape!r}")
        self.shape = dims

    def build(self, input_shapes, rng, dtype):
        (shape,) = input_shapes
        size = math.prod(shape)
        known = math.prod(d for d in self.shape if d != -1)
        out = list(self.shape)
        if -1 in out:
            if size % known:
                raise ConfigError(f"cannot reshape {tuple(shape)} ({size} values) to {self.shape}")
            out[out.index(-1)] = size // known
        elif known != size:
            raise ConfigError(f"cannot reshape {tuple(shape)} ({size} values) to {tuple(self.shape)} "
                              f"({known} values)")
        self._in_shape, self._out_shape = tuple(shape), tuple(out)
        return self._out_shape


@LAYERS.register("identity")
class Identity(Layer):
    """y = x (returns the same array; a named junction point in a graph)."""

    examples = [({}, [(4,)]), ({}, [(2, 2, 3)])]

    def build(self, input_shapes, rng, dtype):
        return tuple(input_shapes[0])

    def forward(self, x, training):
        return x

    def backward(self, dy):
        return dy if self.needs_input_grad else None


@LAYERS.register("scale")
class Scale(Layer):
    """y = factor * x, a fixed constant (airbench scales its logits by 1/9); dx = factor * dy."""

    examples = [({"factor": 0.5}, [(4,)]), ({"factor": -2.0}, [(2, 2, 3)])]

    def __init__(self, factor: float):
        self.factor = v.real(factor, "factor")

    def build(self, input_shapes, rng, dtype):
        return tuple(input_shapes[0])

    def forward(self, x, training):
        return x * self.factor

    def backward(self, dy):
        return dy * self.factor if self.needs_input_grad else None
