"""Convolution and pooling: fast kernels against plain loop references, known answers, errors.

The references (``nntrain.ops.reference``, imported as ``ref``) are written from the
definitions, with explicit loops and nothing shared with the fast kernels.
"""

import subprocess
import sys

import numpy as np
import pytest

from nntrain.errors import ConfigError
from nntrain.graph import Network
from nntrain.layers.base import to_internal, to_public
from nntrain.ops import reference as ref
from nntrain.ops.im2col import pool_output_size
from nntrain.registry import LAYERS


# ----- helpers ------------------------------------------------------------------------
def run_layer(type_name, options, x, dy=None, dtype=np.float64, training=True, seed=0):
    """Build on x's sample shape, forward (N, C, H, W) x, optionally backward; public-layout results."""
    layer = LAYERS.get(type_name).from_config(dict(options))
    layer.build([x.shape[1:]], np.random.default_rng(seed), dtype)
    y = layer.forward(to_internal(x.astype(dtype)), training)
    dx = None
    if dy is not None:
        layer.needs_input_grad = True
        dx = to_public(layer.backward(to_internal(dy.astype(dtype))))
    return layer, to_public(y), dx


CONV_CASES = [
    # (Cin, H, W, options)
    (3, 7, 7, {"out_channels": 4, "kernel": 3}),
    (3, 8, 7, {"out_channels": 4, "kernel": 3, "stride": 2, "padding": 1}),
    (2, 9, 9, {"out_channels": 3, "kernel": 3, "padding": 2, "dilation": 2}),
    (4, 6, 6, {"out_channels": 6, "kernel": 3, "padding": 1, "groups": 2}),
    (4, 6, 5, {"out_channels": 4, "kernel": 3, "padding": 1, "groups": 4, "bias": False}),  # depthwise
    (4, 6, 6, {"out_channels": 8, "kernel": 3, "stride": 2, "groups": 4}),  # depthwise, multiplier 2
    (5, 4, 6, {"out_channels": 3, "kernel": 1}),  # pointwise fast path
    (5, 5, 6, {"out_channels": 3, "kernel": 1, "stride": 2, "padding": 1}),
    (2, 7, 8, {"out_channels": 3, "kernel": [2, 4], "stride": [1, 2], "padding": [0, 2], "dilation": [2, 1]}),
    (3, 5, 5, {"out_channels": 2, "kernel": 5, "padding": 2}),
]


@pytest.mark.parametrize("cin,h,w,options", CONV_CASES)
def test_conv_matches_reference_forward_and_backward(cin, h, w, options):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, cin, h, w))
    layer = LAYERS.get("conv2d").from_config(dict(options))
    out_shape = layer.build([(cin, h, w)], rng, np.float64)
    if layer.use_bias:
        layer.bias.value[...] = rng.standard_normal(layer.bias.shape)
    y = to_public(layer.forward(to_internal(x), True))
    kw = {k: options[k] for k in ("stride", "padding", "dilation", "groups") if k in options}
    b = layer.bias.value if layer.use_bias else None
    expected = ref.conv2d(x, layer.weight.value, b, **kw)
    assert y.shape == expected.shape == (3, *out_shape)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)

    dy = rng.standard_normal(y.shape)
    dx = to_public(layer.backward(to_internal(dy)))
    ref_dx, ref_dw, ref_db = ref.conv2d_backward(x, layer.weight.value, dy, **kw)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, ref_dw, rtol=1e-10, atol=1e-12)
    if layer.use_bias:
        np.testing.assert_allclose(layer.bias.grad, ref_db, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cin,h,w,options", CONV_CASES)
def test_conv_chunk_by_chunk_of_samples_matches_reference(cin, h, w, options, threads, monkeypatch):
    """One sample per chunk (nntrain.ops.conv.CHUNK_BYTES), the chunks on one thread or split
    unevenly over two (dW summed over chunks and over threads)."""
    from nntrain.ops import conv, parallel

    monkeypatch.setattr(conv, "CHUNK_BYTES", 1)
    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 0)
    monkeypatch.setitem(parallel._state, "threads", threads)
    monkeypatch.setitem(parallel._state, "pool", None)
    test_conv_matches_reference_forward_and_backward(cin, h, w, options)
    test_conv_first_layer_skips_input_gradient_but_fills_weights()


@pytest.mark.parametrize("cin,h,w,options", CONV_CASES[:4] + CONV_CASES[6:7])
def test_conv_float32_matches_float64(cin, h, w, options):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, cin, h, w))
    dy_shape = None
    results = {}
    for dtype in (np.float64, np.float32):
        layer, y, _ = run_layer("conv2d", options, x, dtype=dtype, seed=5)
        dy_shape = y.shape
        dy = np.random.default_rng(3).standard_normal(dy_shape).astype(dtype)
        dx = to_public(layer.backward(to_internal(dy)))
        assert y.dtype == dx.dtype == layer.weight.grad.dtype == dtype
        results[dtype] = (y, dx, layer.weight.grad)
    for a, b in zip(results[np.float32], results[np.float64]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_conv_known_answer():
    """3x3 input, 2x2 kernel [[1, 2], [3, 4]], worked out by hand."""
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)  # [[1 2 3] [4 5 6] [7 8 9]]
    layer = LAYERS.get("conv2d")(out_channels=1, kernel=2)
    layer.build([(1, 3, 3)], np.random.default_rng(0), np.float64)
    layer.weight.value[...] = [[[[1.0, 2.0], [3.0, 4.0]]]]
    layer.bias.value[...] = 1.0
    y = to_public(layer.forward(to_internal(x), True))
    # y00 = 1*1 + 2*2 + 3*4 + 4*5 + 1 = 38, y01 = 2 + 6 + 15 + 24 + 1 = 48, ...
    np.testing.assert_array_equal(y[0, 0], [[38.0, 48.0], [68.0, 78.0]])
    # dy = ones: dW[i, j] = sum of the 2x2 block of x at offset (i, j); dx counts kernel overlaps
    dx = to_public(layer.backward(to_internal(np.ones_like(y))))
    np.testing.assert_array_equal(layer.weight.grad[0, 0], [[12.0, 16.0], [24.0, 28.0]])
    np.testing.assert_array_equal(layer.bias.grad, [4.0])
    np.testing.assert_array_equal(dx[0, 0], [[1.0, 3.0, 2.0], [4.0, 10.0, 6.0], [3.0, 7.0, 4.0]])

    # stride 2, padding 1: windows start at rows/cols -1 and 1
    layer = LAYERS.get("conv2d")(out_channels=1, kernel=2, stride=2, padding=1, bias=False)
    layer.build([(1, 3, 3)], np.random.default_rng(0), np.float64)
    layer.weight.value[...] = [[[[1.0, 2.0], [3.0, 4.0]]]]
    y = to_public(layer.forward(to_internal(x), True))
    # (-1,-1): 4*x00 = 4; (-1,1): 3*x01 + 4*x02 = 18; (1,-1): 2*x10 + 4*x20 = 36; (1,1): 5+12+24+36 = 77
    np.testing.assert_array_equal(y[0, 0], [[4.0, 18.0], [36.0, 77.0]])


def test_conv_first_layer_skips_input_gradient_but_fills_weights():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6))
    layer, y, _ = run_layer("conv2d", {"out_channels": 4, "kernel": 3, "padding": 1}, x)
    dy = rng.standard_normal(y.shape)
    layer.needs_input_grad = False
    assert layer.backward(to_internal(dy)) is None
    _, ref_dw, ref_db = ref.conv2d_backward(x, layer.weight.value, dy, padding=1)
    np.testing.assert_allclose(layer.weight.grad, ref_dw, rtol=1e-10)
    np.testing.assert_allclose(layer.bias.grad, ref_db, rtol=1e-10)


def test_conv_reused_buffers_do_not_leak_between_batches():
    """Outputs are fresh arrays and a change of batch size reallocates the work arrays."""
    rng = np.random.default_rng(0)
    layer = LAYERS.get("conv2d")(out_channels=3, kernel=3, padding=1)
    layer.build([(2, 5, 5)], rng, np.float64)
    x1, x2, x3 = (rng.standard_normal((n, 2, 5, 5)) for n in (4, 4, 2))
    y1 = to_public(layer.forward(to_internal(x1), True))
    y2 = to_public(layer.forward(to_internal(x2), True))
    y3 = to_public(layer.forward(to_internal(x3), True))
    for x, y in ((x1, y1), (x2, y2), (x3, y3)):
        np.testing.assert_allclose(y, ref.conv2d(x, layer.weight.value, layer.bias.value, padding=1), rtol=1e-10)


def test_conv_macs_and_shapes_of_cifar10_quick_trunk():
    """Caffe's cifar10_quick: 32 -> 16 -> 8 -> 4 with ceil-mode pools; ~12.3M conv multiply-adds."""
    spec = [
        {"type": "conv2d", "out_channels": 32, "kernel": 5, "padding": 2},
        {"type": "maxpool2d", "kernel": 3, "stride": 2, "ceil_mode": True},
        {"type": "conv2d", "out_channels": 32, "kernel": 5, "padding": 2},
        {"type": "avgpool2d", "kernel": 3, "stride": 2, "ceil_mode": True},
        {"type": "conv2d", "out_channels": 64, "kernel": 5, "padding": 2},
        {"type": "avgpool2d", "kernel": 3, "stride": 2, "ceil_mode": True},
    ]
    net = Network(spec, input_shape=(3, 32, 32))
    assert [n.output_shape for n in net.order] == [(32, 32, 32), (32, 16, 16), (32, 16, 16), (32, 8, 8),
                                                   (64, 8, 8), (64, 4, 4)]
    assert [n.macs for n in net.order if n.layer.type_name == "conv2d"] == [
        32 * 32 * 32 * 3 * 25, 32 * 16 * 16 * 32 * 25, 64 * 8 * 8 * 32 * 25]
    y = net.forward(np.zeros((2, 3, 32, 32), np.float32))
    assert y.shape == (2, 64, 4, 4) and y.dtype == np.float32


def test_small_network_matches_references():
    """conv -> maxpool (ceil) -> conv (groups) -> avgpool, through Network, against the references."""
    spec = [
        {"type": "conv2d", "out_channels": 4, "kernel": 3, "padding": 1},
        {"type": "maxpool2d", "kernel": 3, "stride": 2, "ceil_mode": True},
        {"type": "conv2d", "out_channels": 4, "kernel": 3, "padding": 1, "groups": 2},
        {"type": "avgpool2d", "kernel": 2, "ceil_mode": True},
    ]
    net = Network(spec, input_shape=(2, 8, 8), dtype=np.float64)
    c1, _, c2, _ = (n.layer for n in net.order)
    x = np.random.default_rng(0).standard_normal((3, 2, 8, 8))
    h = ref.conv2d(x, c1.weight.value, c1.bias.value, padding=1)
    h, _ = ref.pool2d(h, None, "max", 3, 2, ceil_mode=True)
    h = ref.conv2d(h, c2.weight.value, c2.bias.value, padding=1, groups=2)
    h, _ = ref.pool2d(h, None, "avg", 2, ceil_mode=True)
    np.testing.assert_allclose(net.forward(x), h, rtol=1e-10, atol=1e-12)


IM2COL_CASES = [
    # (C, N, H, W, kernel, stride, padding, dilation)
    (2, 3, 5, 6, (3, 3), (1, 1), (1, 1), (1, 1)),
    (3, 2, 7, 8, (2, 4), (1, 2), (0, 2), (2, 1)),
    (1, 2, 9, 9, (3, 3), (2, 2), (2, 2), (2, 2)),
    (2, 1, 4, 4, (1, 1), (3, 3), (1, 1), (1, 1)),
]


@pytest.mark.parametrize("threaded", [False, True], ids=["serial", "threaded"])
@pytest.mark.parametrize("c,n,h,w,kernel,stride,padding,dilation", IM2COL_CASES)
def test_im2col_and_col2im_match_reference(c, n, h, w, kernel, stride, padding, dilation, threaded, monkeypatch):
    """The strided-copy im2col and the slice-add col2im against the entry-by-entry loops."""
    from nntrain.ops import parallel
    from nntrain.ops.im2col import col2im, conv_output_size, im2col, pad

    if threaded:
        monkeypatch.setattr(parallel, "MIN_ELEMENTS", 0)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((c, n, h, w))
    out_hw = tuple(conv_output_size(*a) for a in zip((h, w), kernel, stride, padding, dilation))
    xp = pad(x, (padding[0], padding[0], padding[1], padding[1]))
    expected = ref.im2col(x, kernel, stride, padding, dilation)
    np.testing.assert_array_equal(im2col(xp, kernel, out_hw, stride, dilation), expected)
    dcols = rng.standard_normal(expected.shape)
    np.testing.assert_allclose(col2im(dcols, x.shape, kernel, out_hw, stride, padding, dilation),
                               ref.col2im(dcols, x.shape, kernel, stride, padding, dilation), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("grid,offset,hw", [((6, 6), (1, 1), (4, 4)), ((7, 5), (0, 0), (3, 2)),
                                            ((9, 8), (2, 2), (5, 4)), ((5, 7), (4, 6), (1, 1))])
def test_fourier_transforms_match_numpy_fft_and_are_adjoint(grid, offset, hw):
    """The Fourier convolution's DFTs-as-matmuls: ``analysis`` is rfft2 of the block placed on the
    zero grid, ``synthesis`` inverts it on any crop, and the backward pass's ``*_adjoint``s are the
    exact transposes (<A a, z> = <a, A^T z>)."""
    from nntrain.ops import fourier

    rng = np.random.default_rng(5)
    block = rng.standard_normal((*hw, 3))
    spec = fourier.analysis(block, grid, offset)
    np.testing.assert_allclose(spec, ref.half_spectrum(block, grid, offset), rtol=1e-12, atol=1e-12)
    placed = np.zeros((*grid, 3))
    placed[offset[0]:offset[0] + hw[0], offset[1]:offset[1] + hw[1]] = block
    crop = ((1, 0), (grid[0] - 1, grid[1]))  # rows 1.., all columns
    np.testing.assert_allclose(fourier.synthesis(spec, grid, crop[0], crop[1]), placed[1:], rtol=1e-12, atol=1e-12)
    z = rng.standard_normal(spec.shape)
    np.testing.assert_allclose(np.vdot(spec, z), np.vdot(block, fourier.analysis_adjoint(z, grid, offset, hw)),
                               rtol=1e-12)
    d = rng.standard_normal((grid[0] - 1, grid[1], 3))
    np.testing.assert_allclose(np.vdot(fourier.synthesis(z, grid, crop[0], crop[1]), d),
                               np.vdot(z, fourier.synthesis_adjoint(d, grid, crop[0])), rtol=1e-12)


# ----- pooling --------------------------------------------------------------------------
POOL_CASES = [
    # (H, W, options) for both max and avg
    (6, 6, {"kernel": 2}),
    (7, 7, {"kernel": 3, "stride": 2}),
    (7, 7, {"kernel": 3, "stride": 2, "ceil_mode": True}),
    (8, 8, {"kernel": 3, "stride": 2, "ceil_mode": True}),
    (8, 7, {"kernel": 3, "stride": 2, "padding": 1}),
    (6, 7, {"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    (7, 9, {"kernel": [2, 3], "stride": [3, 2], "padding": [1, 0], "ceil_mode": True}),  # stride > kernel
    (5, 5, {"kernel": 5}),
    (9, 9, {"kernel": 4, "stride": 3, "padding": 2, "ceil_mode": True}),
    (7, 7, {"kernel": 2}),  # windows side by side, the last row and column in none
    (7, 8, {"kernel": 2, "stride": 3, "padding": 1}),  # gaps between the windows
]
AVG_ONLY = [
    (6, 7, {"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False}),
    (8, 8, {"kernel": 3, "stride": 2, "padding": 1, "count_include_pad": False}),
    (7, 9, {"kernel": [2, 3], "stride": [3, 2], "padding": [1, 0], "ceil_mode": True, "count_include_pad": False}),
]


def _check_pool(kind, h, w, options, dtype=np.float64, training=True):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 2, h, w))
    layer, y, _ = run_layer(f"{kind}pool2d", options, x, dtype=dtype, training=training)
    ref_y, _ = ref.pool2d(x, None, kind, **options)
    dy = rng.standard_normal(ref_y.shape)
    layer.needs_input_grad = True
    dx = to_public(layer.backward(to_internal(dy.astype(dtype))))
    _, ref_dx = ref.pool2d(x, dy, kind, **options)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert y.dtype == dx.dtype == dtype
    np.testing.assert_allclose(y, ref_y, rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, ref_dx, rtol=tol, atol=tol)


@pytest.mark.parametrize("h,w,options", POOL_CASES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_maxpool_matches_reference(h, w, options, training):
    _check_pool("max", h, w, options, training=training)


@pytest.mark.parametrize("h,w,options,route", [
    (7, 7, {"kernel": 3, "stride": 2}, "scatter"),  # overlapping windows: one bincount scatter-add
    (6, 6, {"kernel": 2}, "disjoint"),  # tiled: every input pixel in exactly one window
    (7, 8, {"kernel": 2, "stride": 3, "padding": 1}, "disjoint"),  # gaps, padding, pixels in no window
    (7, 9, {"kernel": [2, 3], "stride": [3, 2], "ceil_mode": True}, "scatter"),  # overlap along W only
])
def test_maxpool_backward_each_route_matches_reference(h, w, options, route, monkeypatch):
    """max_pool_backward's two routes (scatter-add, or disjoint windows written in place), each
    checked to be the route taken and to equal the loop reference."""
    from nntrain.ops import pool

    taken = []
    disjoint = pool._disjoint_windows_backward
    monkeypatch.setattr(pool, "_disjoint_windows_backward", lambda *a: taken.append(1) or disjoint(*a))
    _check_pool("max", h, w, options)
    assert bool(taken) == (route == "disjoint")


@pytest.fixture(params=["offsets", "matrix"])
def avg_route(request, monkeypatch):
    """Average pooling both ways: offset by offset, and as one matrix product (small planes)."""
    monkeypatch.setattr(LAYERS.get("avgpool2d"), "MATRIX_MAX_PIXELS", 0 if request.param == "offsets" else 10**9)
    return request.param


@pytest.mark.parametrize("h,w,options", POOL_CASES + AVG_ONLY)
def test_avgpool_matches_reference(h, w, options, avg_route):
    _check_pool("avg", h, w, options)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_float32(kind, avg_route):
    _check_pool(kind, 8, 8, {"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True}, dtype=np.float32)


def test_ceil_mode_output_sizes_of_cifar10_quick():
    sizes = [32]
    for _ in range(3):
        sizes.append(pool_output_size(sizes[-1], 3, 2, 0, ceil_mode=True))
    assert sizes == [32, 16, 8, 4]
    assert [pool_output_size(s, 3, 2, 0, ceil_mode=False) for s in (32, 15, 7)] == [15, 7, 3]
    # a last window that would start past input + left padding is dropped (PyTorch): 5 -> 2, not 3
    assert pool_output_size(5, 1, 3, 0, ceil_mode=True) == 2
    # k2 s2 p1, ceil((H + 2 - 2) / 2) + 1: for H=6 the 4th window starts at input row 5, inside: kept;
    # for H=5 it would start at row 5 = H, in the right padding: dropped
    assert pool_output_size(6, 2, 2, 1, ceil_mode=True) == 4
    assert pool_output_size(5, 2, 2, 1, ceil_mode=True) == 3
    for size in range(1, 12):
        for k in range(1, 5):
            for s in range(1, 4):
                for p in range(0, k // 2 + 1):
                    if k <= size + 2 * p:
                        for ceil in (False, True):
                            assert pool_output_size(size, k, s, p, ceil) == ref.pool_output_size(size, k, s, p, ceil)


def test_maxpool_known_answer_and_tie_rule():
    """Equal values in a window: the gradient goes to the first one in row-major order (PyTorch)."""
    x = np.array([[1.0, 1.0, 2.0, 0.0],
                  [1.0, 0.0, 2.0, 2.0],
                  [3.0, 3.0, 0.0, 0.0],
                  [3.0, 3.0, 0.0, -1.0]]).reshape(1, 1, 4, 4)
    for training in (True, False):
        _, y, dx = run_layer("maxpool2d", {"kernel": 2}, x, dy=np.ones((1, 1, 2, 2)), training=training)
        np.testing.assert_array_equal(y[0, 0], [[1.0, 2.0], [3.0, 0.0]])
        np.testing.assert_array_equal(dx[0, 0], [[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    # overlapping windows (k3 s1) of a constant image: each window's first position takes its gradient
    _, y, dx = run_layer("maxpool2d", {"kernel": 3, "stride": 1}, np.zeros((1, 1, 4, 4)), dy=np.ones((1, 1, 2, 2)))
    np.testing.assert_array_equal(dx[0, 0], [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_maxpool_with_more_than_256_window_offsets():
    """Windows of 2x130 = 260 offsets need a uint16 argmax; the winner sits past offset 255."""
    x = np.random.default_rng(0).standard_normal((2, 3, 2, 131))
    x[:, :, 1, 128] = 5.0  # offset 1*130 + 128 = 258 in the first window
    _check_pool("max", 2, 131, {"kernel": [2, 130], "stride": 1})
    dy = np.ones((2, 3, 1, 2))
    _, y, dx = run_layer("maxpool2d", {"kernel": [2, 130], "stride": 1}, x, dy=dy)
    np.testing.assert_array_equal(y[:, :, 0, 0], 5.0)
    assert np.all(dx[:, :, 1, 128] == 2.0)  # both windows contain it


def test_maxpool_padding_never_wins():
    x = -np.ones((1, 1, 3, 3)) * np.arange(1, 10).reshape(3, 3)  # all negative: zero padding would win
    _, y, _ = run_layer("maxpool2d", {"kernel": 2, "stride": 2, "padding": 1}, x)
    np.testing.assert_array_equal(y[0, 0], [[-1.0, -2.0], [-4.0, -5.0]])


def test_avgpool_known_answers_ceil_mode_and_count_include_pad(avg_route):
    """4x4 of ones, kernel 3, stride 2, padding 1, ceil mode -> 3x3 windows over rows [-1,2), [1,4), [3,6).

    The last window is clipped to the padded input [-1, 5): 2 rows, 1 of them real.
    count_include_pad=True divides by rows (3, 3, 2) x cols (3, 3, 2); False by the real
    rows (2, 3, 1) x cols (2, 3, 1), which gives 1 everywhere.
    """
    x = np.ones((1, 1, 4, 4))
    opts = {"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": True}
    _, y, _ = run_layer("avgpool2d", opts, x)
    np.testing.assert_allclose(y[0, 0], [[4 / 9, 6 / 9, 2 / 6],
                                         [6 / 9, 9 / 9, 3 / 6],
                                         [2 / 6, 3 / 6, 1 / 4]], rtol=1e-15)
    _, y, _ = run_layer("avgpool2d", {**opts, "count_include_pad": False}, x)
    np.testing.assert_allclose(y[0, 0], np.ones((3, 3)), rtol=1e-15)

    # no padding, 5x5, kernel 2, ceil: the last row/column windows hold 1 row/column and divide by it
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    _, y, _ = run_layer("avgpool2d", {"kernel": 2, "ceil_mode": True}, x)
    np.testing.assert_allclose(y[0, 0], [[3.0, 5.0, 6.5],
                                         [13.0, 15.0, 16.5],
                                         [20.5, 22.5, 24.0]], rtol=1e-15)


@pytest.mark.parametrize("kind", ["avg", "max"])
def test_global_pools(kind):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5, 6))
    x[1, 2, 0, 1] = x[1, 2, 4, 5] = 10.0  # tie for the max: the first one takes the gradient
    dy = rng.standard_normal((3, 4))
    _, y, _ = run_layer(f"global_{kind}pool", {}, x, dy=None)
    layer = LAYERS.get(f"global_{kind}pool")()
    assert layer.build([(4, 5, 6)], rng, np.float64) == (4,)
    y = layer.forward(to_internal(x), True)
    dx = to_public(layer.backward(dy))
    assert y.shape == (3, 4)
    if kind == "avg":
        np.testing.assert_allclose(y, x.mean(axis=(2, 3)), rtol=1e-12)
        np.testing.assert_allclose(dx, np.broadcast_to(dy[:, :, None, None] / 30, x.shape), rtol=1e-12)
    else:
        np.testing.assert_array_equal(y, x.max(axis=(2, 3)))
        expected = np.zeros_like(x)
        for n in range(3):
            for c in range(4):
                r, q = divmod(int(np.argmax(x[n, c])), 6)
                expected[n, c, r, q] = dy[n, c]
        np.testing.assert_array_equal(dx, expected)
        assert dx[1, 2, 0, 1] == dy[1, 2] and dx[1, 2, 4, 5] == 0


# ----- configuration errors -----------------------------------------------------------
def test_conv_groups_must_divide_input_channels_names_shape():
    with pytest.raises(ConfigError, match=r"input channels 3 \(input shape \(3, 8, 8\)\).*groups=2"):
        Network([{"type": "conv2d", "out_channels": 4, "kernel": 3, "groups": 2}], input_shape=(3, 8, 8))


def test_conv_groups_must_divide_output_channels():
    with pytest.raises(ConfigError, match=r"out_channels divisible by groups, received out_channels=3, groups=2"):
        LAYERS.get("conv2d").from_config({"out_channels": 3, "kernel": 3, "groups": 2})


def test_conv_kernel_larger_than_padded_input_names_shapes():
    with pytest.raises(ConfigError, match=r"conv2d_1.*kernel 5x5.*padded input 4x4 \(input shape \(3, 2, 2\), "
                                          r"padding 1x1\).*output would be 0x0"):
        Network([{"type": "conv2d", "out_channels": 4, "kernel": 5, "padding": 1}], input_shape=(3, 2, 2))
    with pytest.raises(ConfigError, match=r"spans 5x5"):  # dilation makes a 3x3 kernel span 5x5
        Network([{"type": "conv2d", "out_channels": 4, "kernel": 3, "dilation": 2}], input_shape=(3, 4, 4))


def test_conv_needs_an_image_input():
    with pytest.raises(ConfigError, match=r"image \(C, H, W\).*\(10,\)"):
        Network([{"type": "conv2d", "out_channels": 4, "kernel": 3}], input_shape=(10,))


@pytest.mark.parametrize("options,match", [
    ({"out_channels": 0, "kernel": 3}, r"positive integer, received out_channels=0"),
    ({"out_channels": 2, "kernel": [3, 0]}, r"received kernel=0"),
    ({"out_channels": 2, "kernel": 3, "stride": 0}, r"received stride=0"),
    ({"out_channels": 2, "kernel": 3, "padding": -1}, r"received padding=-1"),
    ({"out_channels": 2, "kernel": 3, "dilation": [1, 2, 3]}, r"list of two integers, received dilation"),
    ({"out_channels": 2, "kernel": 3, "bias": "yes"}, r"true or false, received bias='yes'"),
])
def test_conv_option_validation(options, match):
    with pytest.raises(ConfigError, match=match):
        LAYERS.get("conv2d").from_config(options)


@pytest.mark.parametrize("type_name", ["maxpool2d", "avgpool2d"])
def test_pool_errors(type_name):
    cls = LAYERS.get(type_name)
    with pytest.raises(ConfigError, match=r"padding <= kernel/2.*received padding=2 with kernel=3"):
        cls.from_config({"kernel": 3, "padding": 2})
    with pytest.raises(ConfigError, match=r"true or false, received ceil_mode=1"):
        cls.from_config({"kernel": 3, "ceil_mode": 1})
    with pytest.raises(ConfigError, match=r"kernel 3x3 does not fit the padded input 2x2 \(input shape \(4, 2, 2\)"):
        Network([{"type": type_name, "kernel": 3}], input_shape=(4, 2, 2))


FOURIER_CASES = [
    (3, 7, 7, {"out_channels": 4, "kernel": 3}),
    (3, 8, 6, {"out_channels": 5, "kernel": 3, "padding": 1}),
    (2, 9, 9, {"out_channels": 3, "kernel": 5, "padding": 2}),
    (4, 6, 7, {"out_channels": 2, "kernel": [2, 4], "padding": [0, 2], "bias": False}),
    (3, 32, 32, {"out_channels": 8, "kernel": 5, "padding": 2}),
]


@pytest.mark.parametrize("threaded", [False, True], ids=["serial", "threaded"])
@pytest.mark.parametrize("algorithm", ["im2col", "fourier"])
@pytest.mark.parametrize("cin,h,w,options", FOURIER_CASES)
def test_every_conv_algorithm_matches_reference(cin, h, w, options, algorithm, threaded, monkeypatch):
    """Each algorithm, on the serial and the multi-threaded path (forced on small arrays)."""
    from nntrain.ops import parallel

    if threaded:
        monkeypatch.setattr(parallel, "MIN_ELEMENTS", 0)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, cin, h, w))
    layer = LAYERS.get("conv2d").from_config({**options, "algorithm": algorithm})
    layer.build([(cin, h, w)], rng, np.float64)
    if layer.use_bias:
        layer.bias.value[...] = rng.standard_normal(layer.bias.shape)
    y = to_public(layer.forward(to_internal(x), True))
    padding = options.get("padding", 0)
    b = layer.bias.value if layer.use_bias else None
    np.testing.assert_allclose(y, ref.conv2d(x, layer.weight.value, b, padding=padding), rtol=1e-9, atol=1e-11)
    dy = rng.standard_normal(y.shape)
    layer.needs_input_grad = True
    dx = to_public(layer.backward(to_internal(dy)))
    ref_dx, ref_dw, ref_db = ref.conv2d_backward(x, layer.weight.value, dy, padding=padding)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(layer.weight.grad, ref_dw, rtol=1e-9, atol=1e-11)
    if layer.use_bias:
        np.testing.assert_allclose(layer.bias.grad, ref_db, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("h,w,options", POOL_CASES)
def test_pooling_threaded_path_matches_reference(h, w, options, monkeypatch, avg_route):
    from nntrain.ops import parallel

    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 0)
    test_maxpool_matches_reference(h, w, options, True)
    test_avgpool_matches_reference(h, w, options, avg_route)


@pytest.mark.parametrize("a_shape,b_shape,transposed_out", [
    ((40, 7), (7, 9), False),        # rows split
    ((6, 7), (7, 50), False),        # columns split
    ((6, 7), (7, 50), True),         # into a transposed view
    ((12, 5, 4), (12, 4, 6), False),  # a stack: split over the stack
    ((5, 4), (3, 4, 30), False),     # one matrix times a stack
])
def test_matmul_split_over_threads_matches_numpy(a_shape, b_shape, transposed_out, monkeypatch):
    from nntrain.ops import parallel

    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 0)
    monkeypatch.setitem(parallel._state, "threads", 3)
    monkeypatch.setitem(parallel._state, "pool", None)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    expected = np.matmul(a, b)
    if transposed_out:
        out = np.empty(expected.shape[::-1]).T
        assert parallel.matmul(a, b, out=out) is out
    else:
        out = parallel.matmul(a, b)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    if len(a_shape) == 3 or len(b_shape) == 3:  # the same stack as a batched_matmul (block per thread)
        np.testing.assert_allclose(parallel.batched_matmul(a, b), expected, rtol=1e-12, atol=1e-12)


def test_keep_freed_memory_is_set_once_and_reports_it():
    from nntrain.ops.memory import keep_freed_memory

    first = keep_freed_memory()
    assert first is keep_freed_memory()  # once per process, the same answer
    assert first == sys.platform.startswith("linux") or not first


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc and /proc")
def test_memory_freed_by_a_worker_thread_serves_the_main_thread():
    """One malloc arena: a 40 MiB block freed by a kernel thread is reused by the main thread's next
    array of that size, so the resident size grows by one block, not one per thread (with an arena
    per thread it grew by two: the run's resident size grew from epoch to epoch)."""
    code = """if True:
        from concurrent.futures import ThreadPoolExecutor
        import numpy as np
        from nntrain.ops.memory import keep_freed_memory
        assert keep_freed_memory()
        def rss_mib():
            return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) / 1024
        def block():
            np.ones(40 << 18, np.float32)  # 40 MiB, touched, freed on return
        pool = ThreadPoolExecutor(1)
        before = rss_mib()
        for _ in range(3):
            pool.submit(block).result()
            block()
        print(rss_mib() - before)
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 30 < float(out.stdout) < 60


def test_auto_algorithm_is_chosen_per_pass_and_backward_follows_its_forward():
    rng = np.random.default_rng(0)

    def conv(cin, hw, cout, k, p):
        layer = LAYERS.get("conv2d").from_config({"out_channels": cout, "kernel": k, "padding": p})
        layer.build([(cin, hw, hw)], rng, np.float64)
        return layer

    mid = conv(32, 15, 128, 3, 1)  # fourier / direct multiply-adds 0.56
    assert 0.5 < mid._fourier_ratio <= 0.8
    mid.needs_input_grad = True
    assert mid.uses_fourier(training=True) and not mid.uses_fourier(training=False)
    mid.needs_input_grad = False
    assert not mid.uses_fourier(training=True)
    deep = conv(128, 7, 128, 3, 1)  # 0.47: fourier in every pass
    assert all(deep.uses_fourier(t) for t in (True, False))
    first = conv(3, 32, 32, 5, 2)  # 1.91: never
    assert not any(first.uses_fourier(t) for t in (True, False))

    # an evaluation-mode forward (im2col here) then a backward with the input gradient:
    # the backward uses the forward's algorithm and caches
    layer = conv(32, 6, 64, 3, 1)
    assert layer.uses_fourier(True) != layer.uses_fourier(False)
    x = rng.standard_normal((2, 32, 6, 6))
    layer.needs_input_grad = True
    for training in (False, True):
        y = to_public(layer.forward(to_internal(x), training))
        dy = rng.standard_normal(y.shape)
        dx = to_public(layer.backward(to_internal(dy)))
        ref_dx, ref_dw, _ = ref.conv2d_backward(x, layer.weight.value, dy, padding=1)
        np.testing.assert_allclose(dx, ref_dx, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(layer.weight.grad, ref_dw, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("algorithm,memo,key,rtol", [("fourier", "_fourier_memo", "wblk", 1e-9),
                                                     ("winograd", "_winograd_memo", "ut", 1e-11)])
def test_transformed_weights_are_reused_only_while_the_weights_are_unchanged(algorithm, memo, key, rtol):
    """Fourier's weight blocks and Winograd's transformed weights are kept between calls
    while the weights are bit for bit unchanged (inference), recomputed after an update."""
    rng = np.random.default_rng(4)
    layer = LAYERS.get("conv2d").from_config({"out_channels": 3, "kernel": 3, "padding": 1, "algorithm": algorithm})
    layer.build([(2, 6, 6)], rng, np.float64)
    x = rng.standard_normal((2, 2, 6, 6))
    y1 = to_public(layer.forward(to_internal(x), False))
    kept = getattr(layer, memo)[key]
    layer.forward(to_internal(x), False)
    assert getattr(layer, memo)[key] is kept  # same weights: reused
    layer.weight.value[0, 0, 1, 1] += 1.0  # an in-place change, as an optimizer step makes
    y2 = to_public(layer.forward(to_internal(x), False))
    assert getattr(layer, memo)[key] is not kept
    np.testing.assert_allclose(y2, ref.conv2d(x, layer.weight.value, layer.bias.value, padding=1), rtol=rtol,
                               atol=rtol / 10)
    assert not np.allclose(y1, y2)