"""The fast paths of issue 18 against the plain references: the tiled max-pool route
(nntrain.ops.pool._tiled_max_forward), and the batch norm and GELU kernels of the BN block."""

import numpy as np
import pytest

from nntrain.layers.base import to_internal, to_public
from nntrain.ops import parallel, pool
from nntrain.ops import reference as ref
from nntrain.registry import LAYERS

TILED = [  # (H, W, options): windows side by side (stride = kernel), no padding
    (6, 6, {"kernel": 2}),
    (7, 7, {"kernel": 2}),  # the last row and column in no window
    (9, 10, {"kernel": 3}),
    (8, 9, {"kernel": [2, 3]}),
    (4, 8, {"kernel": [1, 2]}),
    (9, 4, {"kernel": [3, 1]}),
    (12, 8, {"kernel": 4, "ceil_mode": True}),  # ceil mode, but no window overhangs
]


def _pool_case(h, w, options, training, values):
    """(y, dx) of maxpool2d and of the reference on inputs drawn from ``values`` (ties)."""
    rng = np.random.default_rng(11)
    x = rng.choice(values, size=(3, 4, h, w)).astype(np.float64)
    layer = LAYERS.get("maxpool2d").from_config(dict(options))
    layer.build([x.shape[1:]], rng, np.float64)
    y = to_public(layer.forward(to_internal(x), training))
    ref_y, _ = ref.pool2d(x, None, "max", **options)
    dy = rng.standard_normal(ref_y.shape)
    layer.needs_input_grad = True
    dx = to_public(layer.backward(to_internal(dy)))
    _, ref_dx = ref.pool2d(x, dy, "max", **options)
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-15, atol=0)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("h,w,options", TILED)
def test_tiled_max_pool_route_keeps_the_first_maximum(h, w, options, training, monkeypatch):
    """Many ties (values from {0, 1, 2}): the gradient goes to the first maximum in row-major
    order of each window, as the reference's; the route is checked to be taken."""
    taken = []
    for name in ("_tiled_max_forward", "_tiled_backward"):
        monkeypatch.setattr(pool, name, lambda *a, _f=getattr(pool, name), _n=name: taken.append(_n) or _f(*a))
    monkeypatch.setattr(pool, "TILED_MIN_WIDTH", 1)
    _pool_case(h, w, options, training, [0.0, 1.0, 2.0])
    _pool_case(h, w, options, training, np.linspace(-1, 1, 1000))
    assert set(taken) == {"_tiled_max_forward", "_tiled_backward"} if training else "_tiled_backward" in taken


@pytest.mark.parametrize("threads", [1, 3])
def test_tiled_max_pool_in_chunks_and_threads(threads, monkeypatch):
    monkeypatch.setattr(pool, "TILED_CHUNK", 1)  # one sample a chunk
    monkeypatch.setattr(pool, "TILED_MIN_WIDTH", 1)
    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 0)
    monkeypatch.setitem(parallel._state, "threads", threads)
    monkeypatch.setitem(parallel._state, "pool", None)
    for h, w, options in TILED[:4]:
        _pool_case(h, w, options, True, [0.0, 1.0, 2.0])


def test_tiled_max_pool_with_more_than_256_offsets_per_window():
    x = np.random.default_rng(12).standard_normal((2, 1, 17, 34))
    layer = LAYERS.get("maxpool2d").from_config({"kernel": 17})
    layer.build([x.shape[1:]], None, np.float64)
    y = layer.forward(to_internal(x), True)
    assert layer._cache_arg.dtype == np.uint16
    dx = layer.backward(np.ones_like(y))
    np.testing.assert_array_equal(to_public(y), ref.pool2d(x, None, "max", kernel=17)[0])
    np.testing.assert_array_equal(to_public(dx), ref.pool2d(x, np.ones((2, 1, 1, 2)), "max", kernel=17)[1])


# ----- GELU: the derivative computed in the forward pass --------------------------------------
def _gelu_reference(x, approximate):
    """(y, dy/dx) from the definitions, float64."""
    if approximate == "tanh":
        s, c = np.sqrt(2 / np.pi), 0.044715
        t = np.tanh(s * (x + c * x ** 3))
        return 0.5 * x * (1 + t), 0.5 * (1 + t) + 0.5 * x * (1 - t ** 2) * s * (1 + 3 * c * x ** 2)
    from math import erf

    phi_big = 0.5 * (1 + np.vectorize(erf)(x / np.sqrt(2)))
    return x * phi_big, phi_big + x * np.exp(-x ** 2 / 2) / np.sqrt(2 * np.pi)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_backward_uses_the_derivative_of_its_forward(approximate):
    """A training forward keeps dy/dx (and not x); an evaluation forward keeps x, and a
    backward after it computes the same dx."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 2, 5, 4)) * 3
    dy = rng.standard_normal(x.shape)
    ref_y, ref_g = _gelu_reference(x, approximate)
    for training in (True, False):
        layer = LAYERS.get("gelu").from_config({"approximate": approximate})
        layer.build([x.shape[1:]], None, np.float64)
        layer.needs_input_grad = True
        y = to_public(layer.forward(to_internal(x), training))
        assert (layer._cache_x is None) == training
        dx = to_public(layer.backward(to_internal(dy)))
        np.testing.assert_allclose(y, ref_y, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(dx, dy * ref_g, rtol=1e-12, atol=1e-15)


# ----- batch norm: each thread's channels in cache-sized pieces -------------------------------
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("options", [{}, {"weight": False}, {"affine": False}, {"bias": False}])
def test_batchnorm_in_pieces_gives_the_one_call_result(options, threads, monkeypatch):
    """Pieces of one channel (CHUNK = 1) on 1 or 3 threads: bit for bit the result of one
    call over all channels."""
    rng = np.random.default_rng(14)
    x = rng.standard_normal((4, 5, 3, 3))
    dy = rng.standard_normal(x.shape)
    cls = LAYERS.get("batchnorm2d")
    results = []
    for chunk, n_threads in ((10**9, 1), (1, threads)):
        monkeypatch.setattr(cls, "CHUNK", chunk)
        monkeypatch.setattr(parallel, "MIN_ELEMENTS", 0)
        monkeypatch.setitem(parallel._state, "threads", n_threads)
        monkeypatch.setitem(parallel._state, "pool", None)
        layer = cls.from_config(dict(options))
        layer.build([x.shape[1:]], None, np.float64)
        if layer.use_bias:
            layer.bias.value[...] = np.arange(5.0)
        layer.needs_input_grad = True
        out = [to_public(layer.forward(to_internal(x), True)), to_public(layer.backward(to_internal(dy)))]
        out += [p.grad.copy() for p in layer.params().values()] + [layer.running_mean, layer.running_var]
        results.append(out)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
