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
    tiled = pool._tiled_max_forward
    monkeypatch.setattr(pool, "_tiled_max_forward", lambda *a: taken.append(1) or tiled(*a))
    monkeypatch.setattr(pool, "TILED_MIN_WIDTH", 1)
    _pool_case(h, w, options, training, [0.0, 1.0, 2.0])
    _pool_case(h, w, options, training, np.linspace(-1, 1, 1000))
    assert taken


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
