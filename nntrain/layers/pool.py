"""Pooling layers: max / average over windows (``nntrain.ops.pool``) and global pooling.

Window rules are PyTorch's (``nn.MaxPool2d`` / ``nn.AvgPool2d``):

- Ho = floor((H + 2P - K) / S) + 1, or with ``ceil_mode`` ceil(...) + 1 where a last
  window that would start past the input and its left padding is dropped. Caffe's
  ``cifar10_quick`` needs ceil mode: kernel 3 stride 2 maps 32 -> 16 -> 8 -> 4.
- ``padding`` is at most kernel/2, so every window overlaps the input.
- average pooling divides by the window clipped to the padded input (padding counts,
  a ceil-mode overhang does not) with ``count_include_pad: true``, the default, which
  is also exactly Caffe's AVE pooling; with ``false`` by the part inside the input.

Caffe differs from PyTorch only in the ceil-mode output size without padding: it keeps
a last window that starts past the input (e.g. H=5, K=1, S=3: Caffe 3, PyTorch 2).
nntrain follows PyTorch; for every recipe in the docs (K >= S) the two agree.
"""

from __future__ import annotations

import numpy as np

from .. import validate as v
from ..errors import ConfigError
from ..ops.im2col import pad, pool_output_size, window
from ..ops.parallel import matmul
from ..ops.pool import (avg_pool_backward, avg_pool_forward, avg_pool_inverse_counts, avg_pool_matrix,
                        max_pool_backward, max_pool_forward, pool_pads)
from ..registry import LAYERS
from .base import Layer, expect_rank, tie_tolerance


class _Pool2d(Layer):
    """Options and output-shape logic shared by max and average pooling."""

    def __init__(self, kernel, stride=None, padding=0, ceil_mode: bool = False):
        self.kernel = v.pair(kernel, "kernel", min_value=1)
        self.stride = self.kernel if stride is None else v.pair(stride, "stride", min_value=1)
        self.padding = v.pair(padding, "padding", min_value=0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel)):
            raise ConfigError(f"expected padding <= kernel/2 (so every window overlaps the input), "
                              f"received padding={padding!r} with kernel={kernel!r}")
        self.ceil_mode = v.boolean(ceil_mode, "ceil_mode")
        self._work = {}  # max pooling's reused padded-input buffer

    def build(self, input_shapes, rng, dtype):
        (shape,) = input_shapes
        expect_rank(shape, 3, "an image (C, H, W)")
        c, h, w = shape
        (kh, kw), (ph, pw) = self.kernel, self.padding
        if kh > h + 2 * ph or kw > w + 2 * pw:
            raise ConfigError(f"kernel {kh}x{kw} does not fit the padded input {h + 2 * ph}x{w + 2 * pw} "
                              f"(input shape {tuple(shape)}, padding {ph}x{pw})")
        self.in_hw = (h, w)
        self.out_hw = tuple(pool_output_size(size, k, s, p, self.ceil_mode)
                            for size, k, s, p in zip((h, w), self.kernel, self.stride, self.padding))
        return (c, *self.out_hw)


@LAYERS.register("maxpool2d")
class MaxPool2d(_Pool2d):
    """y = max over each kernel window (padding never wins); the gradient goes to the
    window's first maximum in row-major order. (C, H, W) -> (C, Ho, Wo); see the module doc."""

    examples = [
        ({"kernel": 3, "stride": 2}, [(2, 5, 5)]),
        ({"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True}, [(2, 6, 6)]),
        ({"kernel": [2, 3], "ceil_mode": True}, [(2, 5, 7)]),
    ]

    def __init__(self, kernel, stride=None, padding=0, ceil_mode: bool = False):
        super().__init__(kernel, stride, padding, ceil_mode)
        self._cache_x = self._cache_arg = None

    def forward(self, x, training):
        # The argmax costs two extra passes per offset: only training needs it up front;
        # a backward after an evaluation forward recomputes it from the kept input.
        y, self._cache_arg = max_pool_forward(x, self.kernel, self.stride, self.padding, self.out_hw,
                                              with_argmax=training, work=self._work)
        self._cache_x = x
        return y

    def backward(self, dy):
        if not self.needs_input_grad:
            return None
        if self._cache_arg is None:
            _, self._cache_arg = max_pool_forward(self._cache_x, self.kernel, self.stride, self.padding,
                                                  self.out_hw, with_argmax=True, work=self._work)
        return max_pool_backward(dy, self._cache_arg, self._cache_x.shape, self.kernel, self.stride,
                                 self.padding)

    def branch_signature(self):
        """Each window's entries within a rounding-sized tie (``tie_tolerance``) of its max:
        mathematically equal values that a Fourier-domain convolution computed ~1e-14
        apart are one branch, whichever of them rounding made the first maximum."""
        x = self._cache_x
        y, _ = max_pool_forward(x, self.kernel, self.stride, self.padding, self.out_hw, with_argmax=False)
        y -= tie_tolerance(x)
        xp = pad(x, pool_pads(x.shape[2:], self.kernel, self.stride, self.padding, self.out_hw), -np.inf)
        kh, kw = self.kernel
        return np.stack([window(xp, i, j, self.out_hw, self.stride) >= y for i in range(kh) for j in range(kw)])


@LAYERS.register("avgpool2d")
class AvgPool2d(_Pool2d):
    """y = mean over each kernel window, divisor per ``count_include_pad`` (see the module doc).
    (C, H, W) -> (C, Ho, Wo). Planes of at most ``MATRIX_MAX_PIXELS`` pixels are pooled as
    one matrix product (``nntrain.ops.pool.avg_pool_matrix``), larger ones offset by offset."""

    MATRIX_MAX_PIXELS = 256

    examples = [
        ({"kernel": 2}, [(2, 4, 4)]),
        ({"kernel": 3, "stride": 2, "ceil_mode": True}, [(2, 6, 6)]),
        ({"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False}, [(2, 6, 5)]),
    ]

    def __init__(self, kernel, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True):
        super().__init__(kernel, stride, padding, ceil_mode)
        self.count_include_pad = v.boolean(count_include_pad, "count_include_pad")
        self.inverse_counts = self._cache_shape = self._matrix = None

    def build(self, input_shapes, rng, dtype):
        out = super().build(input_shapes, rng, dtype)
        self.inverse_counts = avg_pool_inverse_counts(self.in_hw, self.kernel, self.stride, self.padding,
                                                      self.out_hw, self.count_include_pad, dtype)
        self._matrix = None
        if self.in_hw[0] * self.in_hw[1] <= self.MATRIX_MAX_PIXELS:
            self._matrix = avg_pool_matrix(self.in_hw, self.kernel, self.stride, self.padding, self.out_hw,
                                           self.inverse_counts)
        return out

    def forward(self, x, training):
        self._cache_shape = x.shape
        if self._matrix is not None:
            c, n, h, w = x.shape
            return matmul(x.reshape(c * n, h * w), self._matrix).reshape(c, n, *self.out_hw)
        return avg_pool_forward(x, self.kernel, self.stride, self.padding, self.out_hw, self.inverse_counts)

    def backward(self, dy):
        if not self.needs_input_grad:
            return None
        if self._matrix is not None:
            c, n, h, w = self._cache_shape
            return matmul(dy.reshape(c * n, -1), self._matrix.T).reshape(c, n, h, w)
        return avg_pool_backward(dy, self._cache_shape, self.kernel, self.stride, self.padding,
                                 self.inverse_counts)


class _GlobalPool(Layer):
    """(C, H, W) -> (C,): one value per channel."""

    def build(self, input_shapes, rng, dtype):
        (shape,) = input_shapes
        expect_rank(shape, 3, "an image (C, H, W)")
        return (shape[0],)


@LAYERS.register("global_avgpool")
class GlobalAvgPool(_GlobalPool):
    """(C, H, W) -> (C,): y[n, c] = mean over (h, w) of x[n, c, h, w]."""

    examples = [({}, [(3, 4, 5)])]

    def __init__(self):
        self._cache_shape = None

    def forward(self, x, training):
        c, n, h, w = self._cache_shape = x.shape
        y = x.reshape(c, n, h * w).sum(axis=2)
        y *= 1.0 / (h * w)
        return np.ascontiguousarray(y.T)  # (N, C)

    def backward(self, dy):
        if not self.needs_input_grad:
            return None
        c, n, h, w = self._cache_shape
        dx = np.empty((c, n, h, w), dy.dtype)
        dx[...] = (dy.T * (1.0 / (h * w)))[:, :, None, None]
        return dx


@LAYERS.register("global_maxpool")
class GlobalMaxPool(_GlobalPool):
    """(C, H, W) -> (C,): y[n, c] = max over (h, w) of x[n, c, h, w]; the gradient goes to
    the first maximum in row-major order."""

    examples = [({}, [(3, 4, 5)])]

    def __init__(self):
        self._cache_shape = self._cache_arg = None

    def forward(self, x, training):
        c, n, h, w = self._cache_shape = x.shape
        flat = x.reshape(c, n, h * w)
        self._cache_arg = arg = flat.argmax(axis=2)[:, :, None]  # argmax picks the first maximum
        return np.ascontiguousarray(np.take_along_axis(flat, arg, axis=2)[:, :, 0].T)  # (N, C)

    def backward(self, dy):
        if not self.needs_input_grad:
            return None
        c, n, h, w = self._cache_shape
        dx = np.zeros((c, n, h * w), dy.dtype)
        np.put_along_axis(dx, self._cache_arg, dy.T[:, :, None], axis=2)
        return dx.reshape(c, n, h, w)

    def branch_signature(self):
        # exact (this layer keeps no input to compare): a tie within rounding counts as a
        # kink, which only makes a gradient check skip an entry it could have used
        return self._cache_arg
