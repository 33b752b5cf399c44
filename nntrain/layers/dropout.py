"""Dropout (Srivastava et al. 2014), inverted: the expected activation is the same in
training and evaluation, so evaluation is the identity."""

from __future__ import annotations

import numpy as np

from .. import validate as v
from ..registry import LAYERS
from .base import Layer


@LAYERS.register("dropout")
class Dropout(Layer):
    """Training: y = x * m / (1 - rate), m_i ~ Bernoulli(1 - rate) drawn from ``self.rng``
    (the network's generator, so a seed fixes the masks); dx = dy * m / (1 - rate).
    Evaluation: y = x, dx = dy. ``rate`` is the probability of dropping a unit, 0 <= rate < 1
    (PyTorch's ``p``, Caffe's ``dropout_ratio``). Keeps the scaled mask, in x's dtype.
    """

    examples = [({"rate": 0.5}, [(6,)]), ({"rate": 0.2}, [(2, 3, 3)]), ({"rate": 0.0}, [(3,)])]

    def __init__(self, rate: float = 0.5):
        self.rate = v.probability(rate, "rate")
        self._cache_mask = None

    def build(self, input_shapes, rng, dtype):
        return tuple(input_shapes[0])

    def forward(self, x, training):
        if not training or self.rate == 0.0:
            self._cache_mask = None
            return x
        if self.rng is None:
            raise RuntimeError("dropout: no random generator; a Network sets layer.rng (set it when "
                               "using the layer on its own)")
        mask = self.rng.random(x.shape, dtype=x.dtype)
        # kept (u >= rate) -> 1/(1-rate), dropped -> 0, written into the uniform buffer
        np.greater_equal(mask, self.rate, out=mask, casting="unsafe")
        mask *= 1.0 / (1.0 - self.rate)
        self._cache_mask = mask
        return x * mask

    def backward(self, dy):
        if not self.needs_input_grad:
            return None
        return dy if self._cache_mask is None else dy * self._cache_mask
