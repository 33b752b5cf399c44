"""Fully connected layer."""

from __future__ import annotations

import numpy as np

from .. import validate as v
from ..initializers import make_initializer
from .base import Layer, Parameter, expect_rank
from ..registry import LAYERS


@LAYERS.register("linear")
class Linear(Layer):
    """y = x W^T + b.  x: (N, F_in) -> y: (N, out_features); W: (out_features, F_in).

    Default init: He (fan_in) normal for W, zeros for b.
    """

    examples = [
        ({"out_features": 4}, [(5,)]),
        ({"out_features": 3, "bias": False, "init": {"type": "gaussian", "std": 0.1}}, [(6,)]),
    ]

    def __init__(self, out_features: int, bias: bool = True, init="he", bias_init="constant"):
        self.out_features = v.positive_int(out_features, "out_features")
        self.use_bias = v.boolean(bias, "bias")
        self.init = make_initializer(init, "init")
        self.bias_init = make_initializer(bias_init, "bias_init")
        self.weight = self.bias = None
        self._cache_x = None

    def param_shapes(self, input_shapes):
        (shape,) = input_shapes
        expect_rank(shape, 1, "a flat (features) — add a flatten layer before it —")
        shapes = {"weight": (self.out_features, shape[0])}
        return {**shapes, "bias": (self.out_features,)} if self.use_bias else shapes

    def build(self, input_shapes, rng, dtype):
        shapes = self.param_shapes(input_shapes)
        fan_in = input_shapes[0][0]
        self.weight = Parameter(self.init(shapes["weight"], fan_in, self.out_features, rng, dtype))
        if self.use_bias:
            self.bias = Parameter(self.bias_init(shapes["bias"], fan_in, self.out_features, rng, dtype),
                                  decay=False)
        return (self.out_features,)

    def params(self):
        return {"weight": self.weight, "bias": self.bias} if self.use_bias else {"weight": self.weight}

    def macs(self, input_shapes, output_shape):
        return input_shapes[0][0] * self.out_features

    def input_rows(self, x):
        return x.reshape(len(x), -1)

    def forward(self, x, training):
        self._cache_x = x
        # y^T = W x^T, returned as its transposed view: OpenBLAS runs the product faster with
        # the features, not the batch, as output rows (bench/RESULTS.md), and a next linear
        # layer then gets a contiguous x^T. OpenBLAS's own threads, not ops.parallel.matmul:
        # here the shared operand (the batch, or the weights) is as large as the split one,
        # and each block would pack it again (slower split).
        y = np.matmul(self.weight.value, x.T).T
        if self.use_bias:
            y += self.bias.value
        return y

    def backward(self, dy):
        x = self._cache_x
        np.matmul(dy.T, x, out=self.weight.grad)
        if self.use_bias:
            dy.sum(axis=0, out=self.bias.grad)
        if not self.needs_input_grad:
            return None
        if x.T.flags.c_contiguous:  # x came from a linear layer as a transposed view: dx alike, as y^T above
            return np.matmul(self.weight.value.T, dy.T).T  # (elementwise backward of mixed layouts is ~10x slower)
        return dy @ self.weight.value
