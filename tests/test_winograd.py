"""Winograd F(2x2, 3x3) convolution (nntrain.ops.winograd) against the plain loop reference
(nntrain.ops.reference.conv2d / conv2d_backward) and the algorithm's own identities."""

import numpy as np
import pytest

from nntrain.errors import ConfigError
from nntrain.layers.base import to_internal, to_public
from nntrain.ops import reference as ref
from nntrain.ops import winograd as wg
from nntrain.registry import LAYERS


def test_one_tile_is_a_2x2_correlation_in_the_transformed_domain():
    """A^T [(G g G^T) (.) (B^T d B)] A equals the 2x2 'valid' correlation of a 4x4 d with a 3x3 g."""
    rng = np.random.default_rng(0)
    d, g = rng.standard_normal((4, 4)), rng.standard_normal((3, 3))
    u = wg.transform_weights(g[None, None]).reshape(4, 4)
    np.testing.assert_allclose(u, wg._G @ g @ wg._G.T, rtol=1e-15)
    y = wg._AT @ (u * (wg._BT @ d @ wg._BT.T)) @ wg._AT.T
    expected = [[np.sum(d[i:i + 3, j:j + 3] * g) for j in range(2)] for i in range(2)]
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_weight_gradient_is_the_adjoint_of_the_weight_transform():
    rng = np.random.default_rng(1)
    w, du = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal((16, 3, 2))
    lhs = np.sum(wg.transform_weights(w) * du)
    rhs = np.sum(w * wg.weight_gradient(du, np.float64))
    assert lhs == pytest.approx(rhs, rel=1e-12)


CASES = [  # (Cin, Cout, H, W, padding)
    (3, 4, 7, 7, 1),    # odd output: the last tile row and column are cropped
    (2, 5, 6, 9, 0),    # no padding, even x odd
    (4, 3, 5, 5, 2),    # padding 2: the input gradient's padding is 0
    (1, 1, 3, 3, 1),    # one channel, one tile... of 3x3 outputs
    (3, 2, 4, 3, 0),    # a single output column
    (8, 6, 8, 8, 1),    # more channels, even sizes
    (5, 7, 3, 11, 1),
]


def _check(cin, cout, h, w, p, n=3, need_dx=True, seed=0):
    rng = np.random.default_rng(seed)
    x, weight, bias = rng.standard_normal((n, cin, h, w)), rng.standard_normal((cout, cin, 3, 3)), \
        rng.standard_normal(cout)
    y = to_public(wg.winograd_conv_forward(to_internal(x), weight, bias, (p, p)))
    np.testing.assert_allclose(y, ref.conv2d(x, weight, bias, padding=p), rtol=1e-11, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dw, db = np.empty_like(weight), np.empty_like(bias)
    dx = wg.winograd_conv_backward(to_internal(dy), to_internal(x), weight, (p, p), dw, db, need_dx=need_dx)
    ref_dx, ref_dw, ref_db = ref.conv2d_backward(x, weight, dy, padding=p)
    np.testing.assert_allclose(dw, ref_dw, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(db, ref_db, rtol=1e-11, atol=1e-12)
    if need_dx:
        np.testing.assert_allclose(to_public(dx), ref_dx, rtol=1e-11, atol=1e-12)
    else:
        assert dx is None


@pytest.mark.parametrize("cin,cout,h,w,p", CASES)
def test_forward_and_gradients_match_the_reference(cin, cout, h, w, p):
    _check(cin, cout, h, w, p)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("cin,cout,h,w,p", CASES[:3] + CASES[5:6])
def test_chunk_by_chunk_and_threaded_match_the_reference(cin, cout, h, w, p, threads, monkeypatch):
    """One sample a chunk, the chunks on one thread or split unevenly over several (dU summed
    over the chunks of a thread, then over the threads)."""
    from nntrain.ops import parallel

    monkeypatch.setattr(wg, "CHUNK_BYTES", 1)
    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 0)
    monkeypatch.setitem(parallel._state, "threads", threads)
    monkeypatch.setitem(parallel._state, "pool", None)
    _check(cin, cout, h, w, p, n=5)
    _check(cin, cout, h, w, p, n=4, need_dx=False)


def test_float32_stays_within_the_direct_convolution_tolerance():
    """The transforms add and halve only: float32 results within the tolerance the other
    convolution algorithms meet (tests/test_conv_pool.py)."""
    rng = np.random.default_rng(3)
    x, weight = rng.standard_normal((4, 32, 15, 15)), rng.standard_normal((16, 32, 3, 3)) / 10
    dy = rng.standard_normal((4, 16, 15, 15))
    results = {}
    for dtype in (np.float64, np.float32):
        xi, w_ = to_internal(x.astype(dtype)), weight.astype(dtype)
        y = wg.winograd_conv_forward(xi, w_, None, (1, 1))
        dw = np.empty_like(w_)
        dx = wg.winograd_conv_backward(to_internal(dy.astype(dtype)), xi, w_, (1, 1), dw, None)
        assert y.dtype == dx.dtype == dw.dtype == dtype
        results[dtype] = (y, dx, dw)
    for a, b in zip(results[np.float32], results[np.float64]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_layer_trains_by_winograd_and_its_backward_follows():
    rng = np.random.default_rng(5)
    layer = LAYERS.get("conv2d").from_config({"out_channels": 4, "kernel": 3, "padding": 1, "algorithm": "winograd"})
    layer.build([(3, 7, 6)], rng, np.float64)
    layer.needs_input_grad = True
    x = rng.standard_normal((2, 3, 7, 6))
    y = to_public(layer.forward(to_internal(x), True))
    assert layer.last_algorithm == layer.algorithm_for(True) == "winograd"
    dy = rng.standard_normal(y.shape)
    dx = to_public(layer.backward(to_internal(dy)))
    ref_dx, ref_dw, ref_db = ref.conv2d_backward(x, layer.weight.value, dy, padding=1)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, ref_dw, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, ref_db, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("options", [
    {"kernel": 5, "padding": 2},
    {"kernel": 3, "stride": 2},
    {"kernel": 3, "dilation": 2},
    {"kernel": 3, "groups": 2},
    {"kernel": 3, "padding": 3},
    {"kernel": [3, 1]},
])
def test_winograd_refuses_what_it_cannot_compute(options):
    with pytest.raises(ConfigError, match="algorithm 'winograd' needs a 3x3 kernel"):
        LAYERS.get("conv2d").from_config({"out_channels": 2, **options, "algorithm": "winograd"})
