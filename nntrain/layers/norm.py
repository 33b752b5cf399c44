"""Normalisation layers: batch norm (1-D and 2-D), layer norm, local response norm.

All work on the internal layout (see ``nntrain.layers.base``): a (C, H, W) batch is
(C, N, H, W), so batch norm's statistics of one channel are one contiguous block and the
whole batch is viewed as a (C, N*H*W) matrix with no copy.
"""

from __future__ import annotations

import numpy as np

from .. import distributed
from .. import validate as v
from ..errors import ConfigError
from ..ops.parallel import parallel_for
from ..registry import LAYERS
from .base import Layer, Parameter, batch_shape, expect_rank, to_public


class _BatchNorm(Layer):
    """Shared code of batchnorm1d and batchnorm2d on a 2-D view ``x2`` of the batch.

    Training, per channel c over its M values (M = N, or N*H*W):
        mean_c, var_c = batch mean and biased variance
        xhat = (x - mean_c) / sqrt(var_c + eps),   y = weight_c * xhat + bias_c
        running_mean = (1 - momentum) * running_mean + momentum * mean_c
        running_var  = (1 - momentum) * running_var  + momentum * var_c * M / (M - 1)
    (PyTorch's convention: momentum weighs the new batch, and the running variance uses the
    unbiased batch variance. Keras' momentum and Caffe's moving_average_fraction weigh the
    old value instead: their 0.99 is momentum 0.01 here.) Training needs M >= 2.
    Eval: y = weight_c * (x - running_mean_c) / sqrt(running_var_c + eps) + bias_c.
    Backward (training), with k_c = weight_c / sqrt(var_c + eps):
        dx = k_c * (dy - mean_c(dy) - xhat * mean_c(dy * xhat))
        dweight_c = sum_c(dy * xhat),   dbias_c = sum_c(dy)
    ``affine: false`` drops both weight (fixed 1) and bias (fixed 0), like PyTorch;
    ``weight: false`` or ``bias: false`` drops one (airbench uses BN with ``weight: false``).
    """

    _rank = 0  # per-sample rank of the input, set by subclasses
    CHUNK = 1 << 16  # elements of a row array per piece of a thread's block (``_channels``)

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5, affine: bool = True,
                 weight: bool = True, bias: bool = True, sync: bool = False):
        self.momentum = v.real(momentum, "momentum", min_value=0.0, max_value=1.0)
        self.sync = v.boolean(sync, "sync")
        self.eps = v.positive(eps, "eps")
        affine, weight, bias = (v.boolean(val, name) for val, name in
                                ((affine, "affine"), (weight, "weight"), (bias, "bias")))
        self.use_weight = affine and weight
        self.use_bias = affine and bias
        self.weight = self.bias = None
        self.running_mean = self.running_var = None
        self._cache_xhat = self._cache_x = self._cache_inv_std = None

    # 2-D view of the batch and the axis to reduce over; per-channel vectors broadcast via _col
    def _view(self, x):
        raise NotImplementedError

    def _col(self, vec):
        raise NotImplementedError

    def param_shapes(self, input_shapes):
        (shape,) = input_shapes
        expect_rank(shape, self._rank, self._what)
        used = (("weight", self.use_weight), ("bias", self.use_bias))
        return {name: (shape[0],) for name, use in used if use}

    def build(self, input_shapes, rng, dtype):
        self.param_shapes(input_shapes)  # checks the rank
        (shape,) = input_shapes
        c = shape[0]
        if self.use_weight:
            self.weight = Parameter(np.ones(c, dtype=dtype), decay=False)
        if self.use_bias:
            self.bias = Parameter(np.zeros(c, dtype=dtype), decay=False)
        self.running_mean = np.zeros(c, dtype=dtype)
        self.running_var = np.ones(c, dtype=dtype)
        return tuple(shape)

    def params(self):
        out = {}
        if self.use_weight:
            out["weight"] = self.weight
        if self.use_bias:
            out["bias"] = self.bias
        return out

    def buffers(self):
        return {"running_mean": self.running_mean, "running_var": self.running_var}

    def macs(self, input_shapes, output_shape):
        return int(np.prod(output_shape))  # one multiply-add per element (y = k x + b)

    def _channels(self, n_channels: int, fn, work: int, row: int | None = None) -> None:
        """``fn(lo, hi)`` over channel blocks: on all cores for batchnorm2d, whose channels
        are contiguous rows (each block computes exactly what one call would), and each
        thread's block in pieces of about ``CHUNK`` elements a row array, so that the several
        passes ``fn`` makes run over data still in cache (as ``activations._elementwise_blocks``);
        ``row``: the elements of one channel (None: no pieces, for a single pass)."""
        if self._rank != 3:
            fn(0, n_channels)
            return
        step = n_channels if row is None else max(1, self.CHUNK // max(1, row))

        def block(lo, hi):
            for start in range(lo, hi, step):
                fn(start, min(hi, start + step))

        parallel_for(n_channels, block, work)

    def _rows(self, a, lo, hi):
        """Channels [lo, hi) of a 2-D view."""
        return a[lo:hi] if self._rank == 3 else a[:, lo:hi]

    def forward(self, x, training):
        x2, axis = self._view(x)
        col, rows = self._col, self._rows
        if not training:
            inv_std = 1.0 / np.sqrt(self.running_var + self.eps)
            scale = inv_std * self.weight.value if self.use_weight else inv_std
            shift = -self.running_mean * scale
            if self.use_bias:
                shift += self.bias.value
            self._cache_x, self._cache_inv_std, self._cache_xhat = x, inv_std, None
            y = np.empty_like(x2)

            def affine(lo, hi):
                ys = rows(y, lo, hi)
                np.multiply(rows(x2, lo, hi), col(scale[lo:hi]), out=ys)
                ys += col(shift[lo:hi])

            self._channels(len(scale), affine, 2 * x2.size)
            return y.reshape(x.shape)
        if self.sync and distributed.current().size > 1:
            return self._forward_synced(x, x2, axis)
        m = x2.shape[axis]
        if m < 2:
            raise ConfigError(f"{self.type_name}: training needs more than one value per channel to "
                              f"normalise, received a batch of shape {to_public(x).shape}")
        c = x2.shape[1 - axis]
        mean, var, inv_std = (np.empty(c, x2.dtype) for _ in range(3))
        xhat, y = np.empty_like(x2), np.empty_like(x2)

        def normalise(lo, hi):
            xs, xh, ys = rows(x2, lo, hi), rows(xhat, lo, hi), rows(y, lo, hi)
            mu = mean[lo:hi] = xs.mean(axis=axis)
            np.subtract(xs, col(mu), out=xh)
            np.square(xh, out=ys)  # scratch for the variance, then the output
            sigma2 = var[lo:hi] = ys.mean(axis=axis)
            inv = inv_std[lo:hi] = 1.0 / np.sqrt(sigma2 + self.eps)
            xh *= col(inv)
            if self.use_weight:
                np.multiply(xh, col(self.weight.value[lo:hi]), out=ys)
                if self.use_bias:
                    ys += col(self.bias.value[lo:hi])
            elif self.use_bias:
                np.add(xh, col(self.bias.value[lo:hi]), out=ys)
            else:
                np.copyto(ys, xh)

        self._channels(c, normalise, 4 * x2.size, m)
        self._update_running(mean, var, m)
        self._cache_xhat, self._cache_inv_std, self._cache_x = xhat, inv_std, None
        return y.reshape(x.shape)

    def _update_running(self, mean, var, m):
        mom = self.momentum
        self.running_mean *= 1.0 - mom
        self.running_mean += mom * mean
        self.running_var *= 1.0 - mom
        self.running_var += (mom * m / (m - 1)) * var  # unbiased batch variance (m >= 2)

    def _forward_synced(self, x, x2, axis):
        """Training forward with statistics over the global batch of all MPI ranks
        (nntrain.distributed): two all-reduces, of the per-channel sums then of the
        centred squares, so the variance keeps the two-pass accuracy of one process."""
        col, comm = self._col, distributed.current()
        m = comm.sum([x2.shape[axis]])[0]
        if m < 2:
            raise ConfigError(f"{self.type_name}: training needs more than one value per channel to normalise")
        mean = comm.sum_array(x2.sum(axis=axis)) / x2.dtype.type(m)
        xhat = x2 - col(mean)
        var = comm.sum_array(np.square(xhat).sum(axis=axis)) / x2.dtype.type(m)
        inv_std = (1.0 / np.sqrt(var + self.eps)).astype(x2.dtype)
        xhat *= col(inv_std)
        y = xhat * col(self.weight.value) if self.use_weight else xhat.copy()
        if self.use_bias:
            y += col(self.bias.value)
        self._update_running(mean, var, m)
        self._cache_xhat, self._cache_inv_std, self._cache_x, self._synced_m = xhat, inv_std, None, m
        return y.reshape(x.shape)

    def _backward_synced(self, dy, dy2, axis):
        """dx from the global sums of dy and dy * xhat (one all-reduce); the parameter
        gradients stay this rank's sums (the trainer's gradient all-reduce adds them up)."""
        col, xhat, m = self._col, self._cache_xhat, self._synced_m
        sum_dy, sum_dy_xhat = dy2.sum(axis=axis), (dy2 * xhat).sum(axis=axis)
        both = distributed.current().sum_array(np.concatenate([sum_dy, sum_dy_xhat]))
        k = self._cache_inv_std * self.weight.value if self.use_weight else self._cache_inv_std
        if self.use_weight:
            self.weight.grad[...] = sum_dy_xhat
        if self.use_bias:
            self.bias.grad[...] = sum_dy
        if not self.needs_input_grad:
            return None
        c = len(sum_dy)
        dx = dy2 - col(both[:c] / m) - xhat * col(both[c:] / m)
        dx *= col(k)
        return dx.reshape(dy.shape)

    def backward(self, dy):
        dy2, axis = self._view(dy)
        if self._cache_xhat is not None and self.sync and distributed.current().size > 1:
            return self._backward_synced(dy, dy2, axis)
        col, rows = self._col, self._rows
        xhat = self._cache_xhat
        if xhat is None:  # forward ran in eval mode: an affine map with fixed statistics
            x2, _ = self._view(self._cache_x)
            xhat = (x2 - col(self.running_mean)) * col(self._cache_inv_std)
        m, c = dy2.shape[axis], dy2.shape[1 - axis]
        sum_dy_xhat, sum_dy = np.empty(c, dy2.dtype), np.empty(c, dy2.dtype)
        k = self._cache_inv_std * self.weight.value if self.use_weight else self._cache_inv_std
        t = np.empty_like(dy2)
        trained = self._cache_xhat is not None

        def gradients(lo, hi):
            d, xh, ts = rows(dy2, lo, hi), rows(xhat, lo, hi), rows(t, lo, hi)
            np.multiply(d, xh, out=ts)
            sdx = sum_dy_xhat[lo:hi] = ts.sum(axis=axis)
            sd = sum_dy[lo:hi] = d.sum(axis=axis)
            if not self.needs_input_grad:
                return
            if not trained:
                np.multiply(d, col(k[lo:hi]), out=ts)
                return
            np.multiply(xh, col(sdx / m), out=ts)
            ts += col(sd / m)
            np.subtract(d, ts, out=ts)
            ts *= col(k[lo:hi])

        self._channels(c, gradients, 4 * dy2.size, m)
        if self.use_weight:
            self.weight.grad[...] = sum_dy_xhat
        if self.use_bias:
            self.bias.grad[...] = sum_dy
        return t.reshape(dy.shape) if self.needs_input_grad else None


@LAYERS.register("batchnorm2d")
class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (C, H, W) inputs, statistics per channel over N, H, W.

    Internally (C, N, H, W) is viewed as (C, N*H*W). See ``_BatchNorm`` for the maths.
    """

    _rank = 3
    _what = "an image (C, H, W)"
    examples = [({}, [(2, 3, 3)]), ({"affine": False}, [(2, 2, 3)]),
                ({"weight": False, "momentum": 0.2, "eps": 1e-3}, [(3, 2, 2)]),
                ({"sync": True}, [(2, 3, 3)])]  # one process: the same as sync: false

    def _view(self, x):
        return x.reshape(x.shape[0], -1), 1

    def _col(self, vec):
        return vec[:, None]


@LAYERS.register("batchnorm1d")
class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (F,) inputs, statistics per feature over N.

    See ``_BatchNorm`` for the maths.
    """

    _rank = 1
    _what = "a flat (features)"
    examples = [({}, [(4,)]), ({"bias": False}, [(3,)])]

    def _view(self, x):
        return x, 0

    def _col(self, vec):
        return vec


@LAYERS.register("layernorm")
class LayerNorm(Layer):
    """Normalise each sample over all its axes (Ba et al. 2016), as torch.nn.LayerNorm(shape).

    For a sample x with D values: xhat = (x - mean(x)) / sqrt(var(x) + eps) (biased
    variance), y = weight * xhat + bias with weight, bias of the per-sample shape.
    Same in training and eval. Backward, with g = dy * weight:
        dx = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + eps)   (means per sample)
        dweight = sum over the batch of dy * xhat,   dbias = sum over the batch of dy
    For a (C, H, W) sample the batch is internally (C, N, H, W): per-sample statistics
    reduce over axes (0, 2, 3), and the (C, H, W) parameters broadcast as (C, 1, H, W).
    """

    examples = [({}, [(5,)]), ({}, [(2, 2, 3)]), ({"affine": False, "eps": 1e-3}, [(3, 2, 2)])]

    def __init__(self, eps: float = 1e-5, affine: bool = True):
        self.eps = v.positive(eps, "eps")
        self.affine = v.boolean(affine, "affine")
        self.weight = self.bias = None
        self._cache_xhat = self._cache_inv_std = None

    def param_shapes(self, input_shapes):
        return {"weight": tuple(input_shapes[0]), "bias": tuple(input_shapes[0])} if self.affine else {}

    def build(self, input_shapes, rng, dtype):
        (shape,) = input_shapes
        self._shape = tuple(shape)
        self._batch_axis = 1 if len(self._shape) == 3 else 0  # (C, N, H, W) or (N, ...)
        self._axes = tuple(i for i in range(len(self._shape) + 1) if i != self._batch_axis)
        if self.affine:
            self.weight = Parameter(np.ones(self._shape, dtype=dtype), decay=False)
            self.bias = Parameter(np.zeros(self._shape, dtype=dtype), decay=False)
        return self._shape

    def params(self):
        return {"weight": self.weight, "bias": self.bias} if self.affine else {}

    def _bc(self, p):
        """A per-sample-shaped parameter as a view that broadcasts against the batch."""
        return p.value.reshape(batch_shape(self._shape, 1))

    def forward(self, x, training):
        xhat = x - x.mean(axis=self._axes, keepdims=True)
        y = np.square(xhat)  # scratch for the variance, then the output
        inv_std = 1.0 / np.sqrt(y.mean(axis=self._axes, keepdims=True) + self.eps)
        xhat *= inv_std
        self._cache_xhat, self._cache_inv_std = xhat, inv_std
        if not self.affine:
            np.copyto(y, xhat)
            return y
        np.multiply(xhat, self._bc(self.weight), out=y)
        y += self._bc(self.bias)
        return y

    def backward(self, dy):
        xhat, inv_std = self._cache_xhat, self._cache_inv_std
        g = dy
        if self.affine:
            t = dy * xhat
            np.sum(t, axis=self._batch_axis, out=self.weight.grad)
            np.sum(dy, axis=self._batch_axis, out=self.bias.grad)
            if not self.needs_input_grad:
                return None
            g = dy * self._bc(self.weight)
            np.multiply(g, xhat, out=t)
        elif not self.needs_input_grad:
            return None
        else:
            t = g * xhat
        dx = np.multiply(xhat, t.mean(axis=self._axes, keepdims=True), out=t)
        dx += g.mean(axis=self._axes, keepdims=True)
        np.subtract(g, dx, out=dx)
        dx *= inv_std
        return dx


@LAYERS.register("lrn")
class LRN(Layer):
    """Local response normalisation across channels (Krizhevsky et al. 2012; Caffe ACROSS_CHANNELS).

    For a (C, H, W) input a, with the sum over the ``size`` channels centred on c
    (zero-padded at the ends):
        s_c = k + (alpha / size) * sum_{j=c-size//2}^{c+size//2} a_j^2,   b_c = a_c * s_c^(-beta)
    alpha is divided by ``size`` as in Caffe and torch.nn.LocalResponseNorm (cuda-convnet's
    layer files give the alpha before division). The window is symmetric, so
        da_i = db_i * s_i^(-beta) - (2 alpha beta / size) * a_i * sum_{c in window(i)} db_c * b_c / s_c.
    Vectorised over N, H, W; a loop over the ``size`` window offsets only.
    """

    examples = [({"size": 3}, [(4, 2, 3)]), ({"size": 5, "alpha": 0.5, "beta": 0.75, "k": 2.0}, [(3, 2, 2)])]

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        self.size = v.positive_int(size, "size")
        if self.size % 2 == 0:
            raise ConfigError(f"expected an odd positive integer, received size={size!r}")
        self.alpha = v.non_negative(alpha, "alpha")
        self.beta = v.non_negative(beta, "beta")
        self.k = v.positive(k, "k")
        self._cache_x = self._cache_s = self._cache_p = None

    def build(self, input_shapes, rng, dtype):
        (shape,) = input_shapes
        expect_rank(shape, 3, "an image (C, H, W)")
        return tuple(shape)

    def _window_sum(self, a):
        """out_c = sum of a_j for |j - c| <= size//2 along axis 0, zero-padded (a new array)."""
        out = a.copy()
        for d in range(1, min(self.size // 2, a.shape[0] - 1) + 1):
            out[d:] += a[:-d]
            out[:-d] += a[d:]
        return out

    def forward(self, x, training):
        s = self._window_sum(np.square(x))
        s *= self.alpha / self.size
        s += self.k
        p = np.power(s, -self.beta)  # kept: a power costs as much as the rest together
        self._cache_x, self._cache_s, self._cache_p = x, s, p
        return x * p

    def backward(self, dy):
        if not self.needs_input_grad:
            return None
        x, s, p = self._cache_x, self._cache_s, self._cache_p
        t = dy * x
        t *= p
        t /= s  # db_c * b_c / s_c
        w = self._window_sum(t)
        w *= x
        w *= 2.0 * self.alpha * self.beta / self.size
        np.multiply(dy, p, out=t)
        t -= w
        return t
