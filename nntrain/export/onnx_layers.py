"""Every registered layer type as standard ONNX operators, one function per type.

A mapping is registered for a layer type name with ``@maps("conv2d")`` and called as
``fn(g, layer, inputs, out)``: it appends to the GraphBuilder ``g`` the nodes that compute
the layer's evaluation-mode output into the tensor named ``out`` from the tensors named
``inputs`` (one per graph input of the node, in order). A layer type without a mapping is a
ConfigError naming it (``convert_layer``); tests/test_export_onnx.py checks that every
type in the layer registry has one, and runs every layer's ``examples`` through ONNX
Runtime against ``Network.forward(x, training=False)``.

Layout: every tensor of the ONNX graph is in the public layout, (N, C, H, W) for images
and (N, F) for vectors, which is also ONNX's own convention. nntrain's channel-major
(C, N, H, W) layout is internal to its kernels and never appears here: the channel axis
of an image is axis 1, flatten and reshape keep the per-sample (C, H, W) order (ONNX's
row-major Flatten / Reshape of an NCHW tensor is exactly that order).

Opset-dependent choices (the exporter's range is ``MIN_OPSET`` to onnx's newest):
- GELU is the ``Gelu`` operator from opset 20; before, its formula in Erf or Tanh.
- Pooling in ceil mode: from opset 22 ONNX drops a last window that starts in the right
  padding, as nntrain (and PyTorch) do. Before, ONNX's output size keeps it; a pooling
  layer where the two rules differ is refused below opset 22 (ONNX Runtime follows the
  newer rule at every opset, other runtimes may not).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError

MIN_OPSET = 17  # LayerNormalization
GELU_OPSET = 20
POOL_CEIL_OPSET = 22

MAPPINGS: dict = {}


def maps(type_name: str):
    """Decorator: register ``fn`` as the ONNX mapping of layer type ``type_name``."""

    def decorate(fn):
        if type_name in MAPPINGS:
            raise ValueError(f"layer type '{type_name}' has two ONNX mappings")
        MAPPINGS[type_name] = fn
        return fn

    return decorate


def convert_layer(g, layer, inputs: list[str], out: str, where: str = "") -> None:
    """Append ``layer``'s evaluation-mode computation to ``g``; ConfigError if it has no mapping
    (``where`` names the layer in the message, e.g. ``model[3] ('conv_2', conv2d)``)."""
    fn = MAPPINGS.get(layer.type_name)
    if fn is None:
        raise ConfigError(f"{where or layer.type_name}: layer type '{layer.type_name}' has no ONNX mapping "
                          f"(mapped types: {', '.join(sorted(MAPPINGS))})")
    try:
        fn(g, layer, list(inputs), out)
    except ConfigError as exc:
        raise ConfigError(f"{where or layer.type_name}: {exc}") from None


def _pads(padding) -> list[int]:
    """ONNX pads for a (ph, pw) symmetric padding: [top, left, bottom, right]."""
    ph, pw = padding
    return [ph, pw, ph, pw]


# ----- weights ------------------------------------------------------------------------
@maps("linear")
def _linear(g, layer, inputs, out):
    """y = x W^T + b: Gemm with transB (W stays (out_features, in_features))."""
    args = [inputs[0], g.constant(f"{out}.weight", layer.weight.value)]
    if layer.use_bias:
        args.append(g.constant(f"{out}.bias", layer.bias.value))
    g.op("Gemm", args, out, transB=1)


@maps("conv2d")
def _conv2d(g, layer, inputs, out):
    """Conv with the same weight layout (Cout, Cin/G, Kh, Kw), stride, padding, dilation, groups."""
    args = [inputs[0], g.constant(f"{out}.weight", layer.weight.value)]
    if layer.use_bias:
        args.append(g.constant(f"{out}.bias", layer.bias.value))
    g.op("Conv", args, out, kernel_shape=list(layer.kernel), strides=list(layer.stride),
         pads=_pads(layer.padding), dilations=list(layer.dilation), group=layer.groups)


# ----- pooling ------------------------------------------------------------------------
def _check_ceil_rule(g, layer) -> None:
    """Below opset 22 ONNX's ceil-mode size is ceil((H + 2P - K) / S) + 1 with no window dropped."""
    if not layer.ceil_mode or g.opset >= POOL_CEIL_OPSET:
        return
    old = tuple(math.ceil((size + 2 * p - k) / s) + 1
                for size, k, s, p in zip(layer.in_hw, layer.kernel, layer.stride, layer.padding))
    if old != tuple(layer.out_hw):
        raise ConfigError(f"ceil-mode pooling of {layer.in_hw[0]}x{layer.in_hw[1]} gives {layer.out_hw[0]}x"
                          f"{layer.out_hw[1]} (a last window starting in the padding is dropped); ONNX before "
                          f"opset {POOL_CEIL_OPSET} would give {old[0]}x{old[1]}: export with --opset "
                          f"{POOL_CEIL_OPSET} or later")


def _pool_attrs(layer) -> dict:
    return dict(kernel_shape=list(layer.kernel), strides=list(layer.stride), pads=_pads(layer.padding),
                ceil_mode=int(layer.ceil_mode))


@maps("maxpool2d")
def _maxpool2d(g, layer, inputs, out):
    _check_ceil_rule(g, layer)
    g.op("MaxPool", inputs, out, **_pool_attrs(layer))


@maps("avgpool2d")
def _avgpool2d(g, layer, inputs, out):
    """AveragePool's divisor rules are nntrain's (and PyTorch's): count_include_pad counts the
    padding, never a ceil-mode overhang past it."""
    _check_ceil_rule(g, layer)
    g.op("AveragePool", inputs, out, count_include_pad=int(layer.count_include_pad), **_pool_attrs(layer))


def _global_pool(op_type):
    def convert(g, layer, inputs, out):
        """(N, C, H, W) -> (N, C, 1, 1) -> (N, C)."""
        g.op("Flatten", [g.op(op_type, inputs, g.name(f"{out}/pooled"))], out, axis=1)

    return convert


maps("global_avgpool")(_global_pool("GlobalAveragePool"))
maps("global_maxpool")(_global_pool("GlobalMaxPool"))


# ----- moving values ------------------------------------------------------------------
@maps("flatten")
def _flatten(g, layer, inputs, out):
    g.op("Flatten", inputs, out, axis=1)


@maps("reshape")
def _reshape(g, layer, inputs, out):
    """Reshape to (N, *shape): 0 copies the batch dimension (allowzero=0), -1 resolved at build."""
    shape = g.constant(f"{out}.shape", [0, *layer._out_shape])
    g.op("Reshape", [inputs[0], shape], out)


def _identity(g, layer, inputs, out):
    g.op("Identity", inputs, out)


maps("identity")(_identity)
maps("dropout")(_identity)  # inverted dropout: evaluation is the identity


@maps("scale")
def _scale(g, layer, inputs, out):
    g.op("Mul", [inputs[0], g.constant(f"{out}.factor", np.float32(layer.factor))], out)


@maps("add")
def _add(g, layer, inputs, out):
    g.op("Sum", inputs, out)


@maps("concat")
def _concat(g, layer, inputs, out):
    """The per-sample channel (or feature) axis is axis 1 of every public batch."""
    g.op("Concat", inputs, out, axis=1)


# ----- activations --------------------------------------------------------------------
def _unary(op_type, **attr_of_layer):
    def convert(g, layer, inputs, out):
        g.op(op_type, inputs, out, **{k: float(getattr(layer, a)) for k, a in attr_of_layer.items()})

    return convert


maps("relu")(_unary("Relu"))
maps("sigmoid")(_unary("Sigmoid"))
maps("tanh")(_unary("Tanh"))
# y = x for x > 0, else slope * x: LeakyRelu's definition, for any slope (nntrain's max/min
# form is the same function)
maps("leaky_relu")(_unary("LeakyRelu", alpha="negative_slope"))
maps("elu")(_unary("Elu", alpha="alpha"))


@maps("softmax")
def _softmax(g, layer, inputs, out):
    g.op("Softmax", inputs, out, axis=1)


@maps("gelu")
def _gelu(g, layer, inputs, out):
    """Gelu (opset 20+), else x * (1 + erf(x / sqrt 2)) / 2 or its tanh form spelled out."""
    if g.opset >= GELU_OPSET:
        g.op("Gelu", inputs, out, approximate=layer.approximate)
        return
    x = inputs[0]

    def c(name, value):
        return g.constant(f"{out}.{name}", np.float32(value))

    if layer.approximate == "tanh":
        cube = g.op("Mul", [g.op("Mul", [x, x]), x])
        inner = g.op("Add", [x, g.op("Mul", [cube, c("cubic", 0.044715)])])
        t = g.op("Tanh", [g.op("Mul", [inner, c("sqrt_2_over_pi", math.sqrt(2.0 / math.pi))])])
    else:
        t = g.op("Erf", [g.op("Mul", [x, c("sqrt_half", math.sqrt(0.5))])])
    half_x = g.op("Mul", [x, c("half", 0.5)])
    g.op("Mul", [half_x, g.op("Add", [t, c("one", 1.0)])], out)


# ----- normalisation ------------------------------------------------------------------
def _batchnorm(g, layer, inputs, out):
    """BatchNormalization with the running statistics; an absent weight is 1, an absent bias 0."""
    c = len(layer.running_mean)
    weight = layer.weight.value if layer.use_weight else np.ones(c, np.float32)
    bias = layer.bias.value if layer.use_bias else np.zeros(c, np.float32)
    args = [g.constant(f"{out}.{k}", a) for k, a in (("weight", weight), ("bias", bias),
                                                     ("running_mean", layer.running_mean),
                                                     ("running_var", layer.running_var))]
    g.op("BatchNormalization", [inputs[0], *args], out, epsilon=float(layer.eps))


maps("batchnorm1d")(_batchnorm)
maps("batchnorm2d")(_batchnorm)


@maps("layernorm")
def _layernorm(g, layer, inputs, out):
    """LayerNormalization over every axis after the batch (axis=1), weight and bias of the sample's shape."""
    shape = layer._shape
    weight = layer.weight.value if layer.affine else np.ones(shape, np.float32)
    bias = layer.bias.value if layer.affine else np.zeros(shape, np.float32)
    g.op("LayerNormalization", [inputs[0], g.constant(f"{out}.weight", weight), g.constant(f"{out}.bias", bias)],
         out, axis=1, epsilon=float(layer.eps))


@maps("lrn")
def _lrn(g, layer, inputs, out):
    """ONNX's LRN is Caffe's ACROSS_CHANNELS with alpha divided by size, as nntrain's (odd size)."""
    g.op("LRN", inputs, out, size=layer.size, alpha=float(layer.alpha), beta=float(layer.beta), bias=float(layer.k))
