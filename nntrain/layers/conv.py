"""2-D convolution layer (the maths and the kernels are in ``nntrain.ops.conv``)."""

from __future__ import annotations

import numpy as np

from .. import validate as v
from ..errors import ConfigError
from ..initializers import make_initializer
from ..ops.conv import CHUNK_BYTES, conv2d_backward, conv2d_forward
from ..ops.fourier import fourier_conv_backward, fourier_conv_forward, fourier_macs
from ..ops.winograd import winograd_applies, winograd_conv_backward, winograd_conv_forward, winograd_workspace_bytes
from ..ops.im2col import conv_output_size
from ..registry import LAYERS
from .base import Layer, Parameter, expect_rank


@LAYERS.register("conv2d")
class Conv2d(Layer):
    """Convolution (cross-correlation) with stride, zero padding, dilation and groups.

    (Cin, H, W) -> (out_channels, Ho, Wo), Ho = floor((H + 2P - D(K-1) - 1) / S) + 1:

        y[n, o, oh, ow] = b[o] + sum_{c, i, j} W[o, c, i, j] * xpad[n, g*Cin/G + c, oh*S + i*D, ow*S + j*D]

    with g = o // (Cout/G) the group of output channel o. ``groups = Cin`` is a depthwise
    convolution. ``kernel``, ``stride``, ``padding``, ``dilation``: an int or [h, w].
    Weight (Cout, Cin/G, Kh, Kw), He (fan_in = Cin/G*Kh*Kw) by default; bias (Cout,),
    zeros, no weight decay. The im2col route works chunk by chunk of samples
    (``nntrain.ops.conv``) and keeps only the input for the backward pass.

    ``algorithm``: ``im2col`` (one matrix product over the unfolded windows, any options),
    ``fourier`` (per-frequency channel products, ``nntrain.ops.fourier``; stride 1,
    dilation 1, one group), ``winograd`` (Winograd F(2x2, 3x3), ``nntrain.ops.winograd``:
    3x3 kernel, stride 1, dilation 1, one group, padding <= 2; chosen only when asked for:
    on the shapes measured it was not faster than the better of the other two,
    bench/RESULTS.md), or ``auto`` (default): fourier where it applies and its
    multiply-adds are at most a share of the direct ones -- 0.8 for a training step that
    also needs the input gradient (``FOURIER_SHARE``), 1/2 for a forward pass alone or
    with the weight gradient only (``FOURIER_SHARE_NO_DX``: without the input gradient's
    product the transforms weigh more). Both shares were set from per-layer timings of the
    two routes (``bench/RESULTS.md``). So 5x5 "same" convolutions with 32+ input channels
    go by fourier, and a first layer with 1-3 input channels by im2col. The
    choice is made per pass from the mode and ``needs_input_grad``, never from timings,
    so a run stays reproducible. Both compute the same function (to float rounding);
    ``macs`` always counts the direct multiply-adds.
    """

    examples = [
        ({"out_channels": 3, "kernel": 3}, [(2, 5, 5)]),
        ({"out_channels": 4, "kernel": [3, 2], "stride": 2, "padding": [1, 0]}, [(2, 5, 6)]),
        ({"out_channels": 4, "kernel": 3, "padding": 2, "dilation": 2, "groups": 2, "bias": False}, [(2, 5, 5)]),
        ({"out_channels": 4, "kernel": 3, "padding": 1, "groups": 2}, [(2, 4, 4)]),  # depthwise, multiplier 2
        ({"out_channels": 3, "kernel": 1, "init": {"type": "gaussian", "std": 0.1}}, [(2, 3, 3)]),  # pointwise
        ({"out_channels": 2, "kernel": 1, "stride": 2}, [(2, 5, 5)]),
        ({"out_channels": 3, "kernel": 3, "padding": 1, "algorithm": "fourier"}, [(2, 5, 5)]),
        ({"out_channels": 2, "kernel": [2, 3], "padding": [0, 1], "bias": False, "algorithm": "fourier"},
         [(3, 4, 5)]),
        ({"out_channels": 3, "kernel": 3, "padding": 1, "algorithm": "winograd"}, [(2, 5, 5)]),
        ({"out_channels": 2, "kernel": 3, "bias": False, "algorithm": "winograd"}, [(3, 6, 5)]),
    ]
    FOURIER_SHARE = 0.8
    FOURIER_SHARE_NO_DX = 0.5

    def __init__(self, out_channels: int, kernel, stride=1, padding=0, dilation=1, groups: int = 1,
                 bias: bool = True, init="he", bias_init="constant", algorithm: str = "auto"):
        self.out_channels = v.positive_int(out_channels, "out_channels")
        self.kernel = v.pair(kernel, "kernel", min_value=1)
        self.stride = v.pair(stride, "stride", min_value=1)
        self.padding = v.pair(padding, "padding", min_value=0)
        self.dilation = v.pair(dilation, "dilation", min_value=1)
        self.groups = v.positive_int(groups, "groups")
        if self.out_channels % self.groups:
            raise ConfigError(f"expected out_channels divisible by groups, received out_channels={out_channels}, "
                              f"groups={groups}")
        self.use_bias = v.boolean(bias, "bias")
        self.init = make_initializer(init, "init")
        self.bias_init = make_initializer(bias_init, "bias_init")
        self.algorithm = v.choice(algorithm, "algorithm", ["auto", "im2col", "fourier", "winograd"])
        if self.algorithm == "fourier" and not self._fourier_applies():
            raise ConfigError(f"algorithm 'fourier' needs stride 1, dilation 1 and groups 1, received "
                              f"stride={stride!r}, dilation={dilation!r}, groups={groups!r} (use im2col or auto)")
        if self.algorithm == "winograd" and not self._winograd_applies():
            raise ConfigError(f"algorithm 'winograd' needs a 3x3 kernel, stride 1, dilation 1, groups 1 and "
                              f"padding at most 2, received kernel={kernel!r}, stride={stride!r}, "
                              f"dilation={dilation!r}, groups={groups!r}, padding={padding!r} (use im2col or auto)")
        self.weight = self.bias = None
        self._fourier_ratio = None  # fourier / direct multiply-adds, set in build (None: fourier does not apply)
        self.last_algorithm = None  # the algorithm of the last forward, which its backward follows
        self._cache_x = self._cache_fourier = None
        self._fourier_memo = {}  # weight blocks kept while the weights are unchanged (ops.fourier)
        self._winograd_memo = {}  # the transformed weights, likewise (ops.winograd)

    def _fourier_applies(self) -> bool:
        return self.stride == (1, 1) and self.dilation == (1, 1) and self.groups == 1

    def _winograd_applies(self) -> bool:
        return winograd_applies(self.kernel, self.stride, self.dilation, self.groups, self.padding)

    def param_shapes(self, input_shapes):
        (shape,) = input_shapes
        expect_rank(shape, 3, "an image (C, H, W)")
        cin = shape[0]
        if cin % self.groups:
            raise ConfigError(f"input channels {cin} (input shape {tuple(shape)}) are not divisible by "
                              f"groups={self.groups}")
        shapes = {"weight": (self.out_channels, cin // self.groups, *self.kernel)}
        return {**shapes, "bias": (self.out_channels,)} if self.use_bias else shapes

    def workspace_bytes(self, input_shapes, output_shape, itemsize):
        """The im2col chunk: ``CHUNK_BYTES``, or one sample's cols if larger (ops.conv); the
        Winograd chunk's buffers (ops.winograd)."""
        if self.algorithm == "winograd":
            return winograd_workspace_bytes(input_shapes[0][0], self.out_channels, output_shape[1:], itemsize)
        if self.algorithm == "fourier" or (self.kernel, self.stride, self.padding) == ((1, 1), (1, 1), (0, 0)):
            return 0
        cols = input_shapes[0][0] * self.kernel[0] * self.kernel[1] * output_shape[1] * output_shape[2]
        return max(CHUNK_BYTES, cols * itemsize)

    def build(self, input_shapes, rng, dtype):
        wshape = self.param_shapes(input_shapes)["weight"]
        (shape,) = input_shapes
        cin, h, w = shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.padding, self.dilation
        ho, wo = conv_output_size(h, kh, sh, ph, dh), conv_output_size(w, kw, sw, pw, dw)
        if ho < 1 or wo < 1:
            raise ConfigError(
                f"kernel {kh}x{kw} (dilation {dh}x{dw}: spans {dh * (kh - 1) + 1}x{dw * (kw - 1) + 1}) does not fit "
                f"the padded input {h + 2 * ph}x{w + 2 * pw} (input shape {tuple(shape)}, padding {ph}x{pw}); "
                f"the output would be {ho}x{wo}")
        cin_g, cout_g = cin // self.groups, self.out_channels // self.groups
        fan_in, fan_out = cin_g * kh * kw, cout_g * kh * kw
        self.weight = Parameter(self.init(wshape, fan_in, fan_out, rng, dtype))
        if self.use_bias:
            self.bias = Parameter(self.bias_init((self.out_channels,), fan_in, fan_out, rng, dtype), decay=False)
        if self._fourier_applies():
            direct = self.out_channels * ho * wo * cin * kh * kw
            self._fourier_ratio = fourier_macs(cin, self.out_channels, (h, w), self.kernel, self.padding) / direct
        return (self.out_channels, ho, wo)

    def algorithm_for(self, training: bool) -> str:
        """The algorithm a forward pass in this mode runs (see the class docstring)."""
        if self.algorithm != "auto":
            return self.algorithm
        if self._fourier_ratio is None:
            return "im2col"
        with_dx = training and self.needs_input_grad
        return "fourier" if self._fourier_ratio <= (self.FOURIER_SHARE if with_dx else self.FOURIER_SHARE_NO_DX) \
            else "im2col"

    def uses_fourier(self, training: bool) -> bool:
        """Whether a forward pass in this mode runs in the Fourier domain."""
        return self.algorithm_for(training) == "fourier"

    def params(self):
        return {"weight": self.weight, "bias": self.bias} if self.use_bias else {"weight": self.weight}

    def macs(self, input_shapes, output_shape):
        _, cin_g, kh, kw = self.weight.shape
        return output_shape[0] * output_shape[1] * output_shape[2] * cin_g * kh * kw

    def input_rows(self, x):
        """Every (Cin, Kh, Kw) patch the kernel sees in ``x`` (C, N, H, W), padding included."""
        if self.groups != 1:
            raise ConfigError("a weight computed from data needs groups: 1")
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.padding, self.dilation
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
        win = np.lib.stride_tricks.sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
        win = win[:, :, ::sh, ::sw, ::dh, ::dw]  # (C, N, Ho, Wo, Kh, Kw)
        return win.transpose(1, 2, 3, 0, 4, 5).reshape(-1, x.shape[0] * kh * kw)

    def forward(self, x, training):
        bias = self.bias.value if self.use_bias else None
        self.last_algorithm = self.algorithm_for(training)
        if self.last_algorithm == "fourier":
            y, self._cache_fourier = fourier_conv_forward(x, self.weight.value, bias, self.padding,
                                                          memo=self._fourier_memo)
            return y
        self._cache_x = x
        if self.last_algorithm == "winograd":
            return winograd_conv_forward(x, self.weight.value, bias, self.padding, memo=self._winograd_memo)
        return conv2d_forward(x, self.weight.value, bias, self.stride, self.padding, self.dilation, self.groups)

    def backward(self, dy):
        dbias = self.bias.grad if self.use_bias else None
        if self.last_algorithm == "fourier":
            return fourier_conv_backward(dy, self._cache_fourier, self.weight.shape, self.padding, self.weight.grad,
                                         dbias, need_dx=self.needs_input_grad)
        if self.last_algorithm == "winograd":
            return winograd_conv_backward(dy, self._cache_x, self.weight.value, self.padding, self.weight.grad, dbias,
                                          need_dx=self.needs_input_grad)
        return conv2d_backward(dy, self._cache_x, self.weight.value, self.stride, self.padding, self.dilation,
                               self.groups, self.weight.grad, dbias, need_dx=self.needs_input_grad)
