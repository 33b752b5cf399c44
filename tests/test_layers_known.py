"""Known answers and plain reference implementations for the non-convolution layers.

Gradients are checked registry-wide in tests/test_layers.py; here the forward values are
checked against numbers from the literature, ``math`` functions, and slow obvious loops
(``nntrain.ops.reference``).
"""

import math

import numpy as np
import pytest

from nntrain.errors import ConfigError
from nntrain.graph import Network
from nntrain.layers.activations import erf
from nntrain.layers.base import batch_shape, to_internal, to_public
from nntrain.ops import reference as ref
from nntrain.registry import LAYERS


def make(name, options=None, input_shapes=((4,),), dtype=np.float64, seed=0):
    layer = LAYERS.get(name).from_config(dict(options or {}))
    layer.build([tuple(s) for s in input_shapes], np.random.default_rng(seed), dtype)
    layer.needs_input_grad = True
    return layer


# ----- erf and GELU -----------------------------------------------------------------
ERF_GRID = np.concatenate([np.linspace(-7, 7, 140001), [0.84375, 1.25, 1 / 0.35, 6.0, 4.0, 3.9999, 1e-9]])


def test_erf_float64_matches_math_erf():
    ref = np.array([math.erf(t) for t in ERF_GRID])
    assert np.abs(erf(ERF_GRID) - ref).max() <= 2.5e-16  # measured 1.1e-16


def test_erf_float32_matches_math_erf():
    x = ERF_GRID.astype(np.float32)
    ref = np.array([math.erf(float(t)) for t in x])
    out = erf(x)
    assert out.dtype == np.float32
    assert np.abs(out - ref).max() <= 4e-7  # measured 3.8e-7: ~6 float32 ulp at 1
    tiny = np.float32([1e-30, -1e-20, 1e-8])  # relative accuracy near 0 too
    np.testing.assert_allclose(erf(tiny), 2 / math.sqrt(math.pi) * tiny.astype(np.float64), rtol=3e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_erf_special_values_and_symmetry(dtype):
    out = erf(np.array([np.inf, -np.inf, 0.0, -0.0, np.nan, 10.0, -10.0], dtype=dtype))
    np.testing.assert_array_equal(out[[0, 1, 2, 3, 5, 6]], [1, -1, 0, 0, 1, -1])
    assert np.isnan(out[4])
    x = np.linspace(0, 6, 10001).astype(dtype)
    np.testing.assert_array_equal(erf(-x), -erf(x))
    assert np.abs(erf(x)).max() <= 1.0


def test_erf_rejects_integers():
    with pytest.raises(TypeError, match="float32 or float64"):
        erf(np.arange(3))


GELU_KNOWN = {1.0: 0.8413447460685429, -1.0: -0.15865525393145707, 0.0: 0.0, 2.0: 1.9544997361036416,
              -3.0: -0.004049694094890317}  # -3 Phi(-3), Phi(-3) = 0.0013498980316301


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-15), (np.float32, 5e-7)])
def test_gelu_known_values(dtype, tol):
    x = np.array([list(GELU_KNOWN)], dtype=dtype)
    y = make("gelu", input_shapes=[(x.shape[1],)], dtype=dtype).forward(x, True)
    assert y.dtype == dtype
    np.testing.assert_allclose(y[0], list(GELU_KNOWN.values()), rtol=tol, atol=tol)


def test_gelu_against_math_reference_on_a_grid():
    x = np.linspace(-8, 8, 1601)[None]
    ref = [t * 0.5 * (1 + math.erf(t / math.sqrt(2))) for t in x[0]]
    np.testing.assert_allclose(make("gelu", input_shapes=[(1601,)]).forward(x, True)[0], ref, rtol=1e-14, atol=1e-15)
    c = math.sqrt(2 / math.pi)
    ref_tanh = [0.5 * t * (1 + math.tanh(c * (t + 0.044715 * t ** 3))) for t in x[0]]
    out = make("gelu", {"approximate": "tanh"}, input_shapes=[(1601,)]).forward(x, True)
    np.testing.assert_allclose(out[0], ref_tanh, rtol=1e-14, atol=1e-15)
    assert abs(out[0][900] - 0.8411919906082768) < 1e-12  # tanh-GELU(1), differs from exact in the 4th digit


# ----- other activations against scalar references ------------------------------------
def _sigmoid(t):
    return 1 / (1 + math.exp(-t)) if t >= 0 else math.exp(t) / (1 + math.exp(t))


ELEMENTWISE = [
    ("relu", {}, lambda t: max(t, 0.0)),
    ("leaky_relu", {}, lambda t: t if t > 0 else 0.01 * t),
    ("leaky_relu", {"negative_slope": 0.2}, lambda t: t if t > 0 else 0.2 * t),
    ("elu", {}, lambda t: t if t > 0 else math.expm1(t)),
    ("elu", {"alpha": 0.5}, lambda t: t if t > 0 else 0.5 * math.expm1(t)),
    ("sigmoid", {}, _sigmoid),
    ("tanh", {}, math.tanh),
    ("scale", {"factor": -1 / 9}, lambda t: -t / 9),
    ("identity", {}, lambda t: t),
]


@pytest.mark.parametrize("name,options,ref", ELEMENTWISE, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(ELEMENTWISE)])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-15), (np.float32, 2e-7)])
def test_elementwise_against_scalar_reference(name, options, ref, dtype, tol):
    x = np.array([-800.0, -20.0, -2.5, -1.0, -0.3, 0.0, 1e-3, 0.7, 3.0, 30.0, 800.0], dtype=dtype)
    x = np.tile(x, (2, 1)).reshape(2, 1, 11, 1)  # as a (C=2, N=1, 11, 1) internal image batch
    layer = make(name, options, input_shapes=[(2, 11, 1)], dtype=dtype)
    with np.errstate(all="raise"):  # no overflow warnings at +-800 (stable formulas)
        y = layer.forward(x, True)
    expected = np.vectorize(ref)(x.astype(np.float64))
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y, expected, rtol=tol, atol=tol)


def test_softmax_known_answer_and_stability():
    layer = make("softmax", input_shapes=[(3,)])
    y = layer.forward(np.array([[1.0, 2.0, 3.0], [1001.0, 1002.0, 1003.0], [-1e4, 0.0, 1e4]]), False)
    np.testing.assert_allclose(y[0], [0.09003057317038046, 0.24472847105479764, 0.6652409557748219], rtol=1e-14)
    np.testing.assert_allclose(y[1], y[0], rtol=1e-13)  # shift invariance, no overflow
    np.testing.assert_allclose(y[2], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-15)


def test_softmax_needs_flat_input():
    with pytest.raises(ConfigError, match=r"flat .*\(2, 3, 3\)"):
        make("softmax", input_shapes=[(2, 3, 3)])


# ----- batch normalisation ----------------------------------------------------------
def test_batchnorm2d_training_output_is_normalised_per_channel():
    rng = np.random.default_rng(0)
    x_nchw = rng.standard_normal((8, 3, 5, 4)) * np.array([1.0, 3.0, 0.2])[:, None, None] + np.array([0.0, 5.0, -2.0])[:, None, None]
    layer = make("batchnorm2d", input_shapes=[(3, 5, 4)])
    y = to_public(layer.forward(to_internal(x_nchw), True))
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), x_nchw.var(axis=(0, 2, 3)) / (x_nchw.var(axis=(0, 2, 3)) + 1e-5), rtol=1e-12)
    # the plain formula, per channel, on the public layout
    mean = x_nchw.mean(axis=(0, 2, 3), keepdims=True)
    var = x_nchw.var(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(y, (x_nchw - mean) / np.sqrt(var + 1e-5), rtol=1e-12, atol=1e-12)


def test_batchnorm_running_statistics_follow_the_momentum_formula():
    rng = np.random.default_rng(1)
    layer = make("batchnorm1d", {"momentum": 0.3}, input_shapes=[(2,)])
    rm, rv = np.zeros(2), np.ones(2)
    for _ in range(3):
        x = rng.standard_normal((6, 2)) * [2.0, 0.5] + [1.0, -3.0]
        layer.forward(x, True)
        rm = 0.7 * rm + 0.3 * x.mean(axis=0)
        rv = 0.7 * rv + 0.3 * x.var(axis=0, ddof=1)  # unbiased, as PyTorch
        np.testing.assert_allclose(layer.buffers()["running_mean"], rm, rtol=1e-13)
        np.testing.assert_allclose(layer.buffers()["running_var"], rv, rtol=1e-13)


def test_batchnorm_eval_uses_running_statistics():
    layer = make("batchnorm2d", {"eps": 1e-3}, input_shapes=[(2, 1, 3)])
    layer.running_mean[...] = [1.0, -2.0]
    layer.running_var[...] = [4.0, 0.25]
    layer.weight.value[...] = [2.0, 3.0]
    layer.bias.value[...] = [0.5, -1.0]
    x = np.arange(12.0).reshape(2, 2, 1, 3)  # internal (C=2, N=2, 1, 3)
    y = layer.forward(x, False)
    expected = (x - [[[[1.0]]], [[[-2.0]]]]) / np.sqrt(np.array([4.0, 0.25]) + 1e-3)[:, None, None, None]
    expected = expected * np.array([2.0, 3.0])[:, None, None, None] + np.array([0.5, -1.0])[:, None, None, None]
    np.testing.assert_allclose(y, expected, rtol=1e-14)
    np.testing.assert_array_equal(layer.running_mean, [1.0, -2.0])  # eval does not update
    # each sample is normalised independently of the rest of the batch
    np.testing.assert_allclose(layer.forward(x[:, :1], False), expected[:, :1], rtol=1e-14)


def test_batchnorm_parameter_options():
    assert set(make("batchnorm2d", input_shapes=[(3, 2, 2)]).params()) == {"weight", "bias"}
    assert set(make("batchnorm2d", {"weight": False}, input_shapes=[(3, 2, 2)]).params()) == {"bias"}
    assert make("batchnorm1d", {"affine": False}, input_shapes=[(3,)]).params() == {}
    layer = make("batchnorm1d", input_shapes=[(3,)])
    assert layer.weight.decay_mult == 0 and layer.bias.decay_mult == 0
    assert set(layer.buffers()) == {"running_mean", "running_var"}


def test_batchnorm_without_weight_equals_weight_one():
    rng = np.random.default_rng(2)
    x, dy = rng.standard_normal((3, 4, 2, 2)), rng.standard_normal((3, 4, 2, 2))
    full, no_w = (make("batchnorm2d", o, input_shapes=[(3, 2, 2)]) for o in ({}, {"weight": False}))
    np.testing.assert_allclose(no_w.forward(x, True), full.forward(x, True), rtol=1e-14)
    np.testing.assert_allclose(no_w.backward(dy), full.backward(dy), rtol=1e-13)
    np.testing.assert_allclose(no_w.bias.grad, full.bias.grad, rtol=1e-14)


def test_batchnorm_training_with_one_value_per_channel_fails_clearly():
    with pytest.raises(ConfigError, match=r"more than one value per channel.*\(1, 3\)"):
        make("batchnorm1d", input_shapes=[(3,)]).forward(np.ones((1, 3)), True)


@pytest.mark.parametrize("options,match", [
    ({"momentum": 1.5}, r"<= 1.0, received momentum=1.5"),
    ({"eps": 0}, r"> 0.0, received eps=0"),
    ({"weight": "no"}, r"true or false, received weight='no'"),
])
def test_batchnorm_bad_options(options, match):
    with pytest.raises(ConfigError, match=match):
        LAYERS.get("batchnorm2d").from_config(options)


def test_batchnorm2d_needs_images():
    with pytest.raises(ConfigError, match=r"image.*\(5,\)"):
        make("batchnorm2d", input_shapes=[(5,)])


# ----- layer normalisation ----------------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 2, 4), (1, 2, 3), (5,), (2, 3)])
def test_layernorm_against_plain_reference(shape):
    rng = np.random.default_rng(3)
    layer = make("layernorm", input_shapes=[shape])
    layer.weight.value[...] = rng.standard_normal(shape)
    layer.bias.value[...] = rng.standard_normal(shape)
    x_pub = rng.standard_normal((4, *shape)) * 3 + 1
    y = to_public(layer.forward(to_internal(x_pub), True))
    axes = tuple(range(1, len(shape) + 1))
    xhat = (x_pub - x_pub.mean(axis=axes, keepdims=True)) / np.sqrt(x_pub.var(axis=axes, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, xhat * layer.weight.value + layer.bias.value, rtol=1e-12, atol=1e-12)


# ----- local response normalisation ------------------------------------------------
@pytest.mark.parametrize("options,channels", [({}, 7), ({"size": 3, "alpha": 0.3, "beta": 0.5, "k": 2.0}, 4),
                                              ({"size": 9, "alpha": 1.0}, 3)])
def test_lrn_against_loop_reference(options, channels):
    x = np.random.default_rng(4).standard_normal((2, channels, 3, 2)) * 5
    layer = make("lrn", options, input_shapes=[(channels, 3, 2)])
    opts = {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0, **options}
    np.testing.assert_allclose(to_public(layer.forward(to_internal(x), True)), ref.lrn(x, **opts), rtol=1e-13)


def test_lrn_rejects_even_size():
    with pytest.raises(ConfigError, match=r"odd positive integer, received size=4"):
        LAYERS.get("lrn").from_config({"size": 4})


# ----- dropout ------------------------------------------------------------------------
def test_dropout_eval_is_identity():
    layer = make("dropout", {"rate": 0.5}, input_shapes=[(10,)])
    x = np.random.default_rng(0).standard_normal((3, 10))
    np.testing.assert_array_equal(layer.forward(x, False), x)
    np.testing.assert_array_equal(layer.backward(x), x)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_training_mask_and_scale(rate):
    layer = make("dropout", {"rate": rate}, input_shapes=[(100, 10, 10)], dtype=np.float32)
    layer.rng = np.random.default_rng(5)
    x = np.ones((100, 20, 10, 10), dtype=np.float32)
    y = layer.forward(x, True)
    kept = y != 0
    assert abs(kept.mean() - (1 - rate)) < 0.01  # 200,000 draws: std of the mean < 0.0012
    np.testing.assert_allclose(y[kept], np.float32(1 / (1 - rate)), rtol=1e-6)
    dy = np.full_like(x, 2.0)
    np.testing.assert_array_equal(layer.backward(dy), 2 * y)  # same mask, same scale
    assert y.mean() == pytest.approx(1.0, abs=0.03)  # inverted dropout keeps the expectation


def test_dropout_same_seed_same_mask():
    x = np.ones((4, 50))
    masks = []
    for seed in (7, 7, 8):
        layer = make("dropout", input_shapes=[(50,)])
        layer.rng = np.random.default_rng(seed)
        masks.append(layer.forward(x, True))
    np.testing.assert_array_equal(masks[0], masks[1])
    assert not np.array_equal(masks[0], masks[2])


def test_dropout_in_a_network_is_reproducible_from_the_seed():
    spec = [{"type": "dropout", "rate": 0.3}]
    x = np.ones((5, 20), dtype=np.float32)
    a, b, c = (Network(spec, (20,), seed=s).forward(x, training=True) for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("rate", [1.0, -0.1, "half"])
def test_dropout_rate_validated(rate):
    with pytest.raises(ConfigError, match=f"received rate={rate!r}"):
        LAYERS.get("dropout").from_config({"rate": rate})


# ----- shape layers -----------------------------------------------------------------
def test_flatten_matches_pytorch_order():
    x_nchw = np.random.default_rng(6).standard_normal((3, 4, 2, 5))
    layer = make("flatten", input_shapes=[(4, 2, 5)])
    y = layer.forward(to_internal(x_nchw), True)
    np.testing.assert_array_equal(y, x_nchw.reshape(3, -1))
    dx = layer.backward(y)
    np.testing.assert_array_equal(to_public(dx), x_nchw)
    net = Network([{"type": "flatten"}], input_shape=(4, 2, 5), dtype=np.float64)
    np.testing.assert_array_equal(net.forward(x_nchw), x_nchw.reshape(3, -1))


@pytest.mark.parametrize("in_shape,target,out_shape", [
    ((12,), [3, 2, 2], (3, 2, 2)), ((3, 2, 2), [2, -1, 2], (2, 3, 2)), ((2, 3, 2), [4, 3], (4, 3)),
    ((2, 3, 2), [-1], (12,)),
])
def test_reshape_keeps_public_order(in_shape, target, out_shape):
    x_pub = np.arange(2 * math.prod(in_shape), dtype=np.float64).reshape(2, *in_shape)
    layer = make("reshape", {"shape": target}, input_shapes=[in_shape])
    assert layer._out_shape == out_shape
    y = layer.forward(to_internal(x_pub), True)
    assert y.shape == batch_shape(out_shape, 2)
    np.testing.assert_array_equal(to_public(y), x_pub.reshape(2, *out_shape))
    np.testing.assert_array_equal(to_public(layer.backward(y)), x_pub)


@pytest.mark.parametrize("target,match", [
    ([5, 3], r"cannot reshape \(2, 3, 2\) \(12 values\) to \(5, 3\) \(15 values\)"),
    ([5, -1], r"cannot reshape \(2, 3, 2\) \(12 values\) to \[5, -1\]"),
])
def test_reshape_size_mismatch_names_shapes(target, match):
    with pytest.raises(ConfigError, match=match):
        make("reshape", {"shape": target}, input_shapes=[(2, 3, 2)])


@pytest.mark.parametrize("target", [[-1, -1], [0, 3], [], [2, -2], "3x4"])
def test_reshape_bad_shape_option(target):
    with pytest.raises(ConfigError, match="received shape="):
        LAYERS.get("reshape").from_config({"shape": target})


# ----- merge layers -----------------------------------------------------------------
def test_add_and_concat_values():
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((2, 1, 3, 2)), rng.standard_normal((2, 2, 3, 2))  # public N, C, H, W
    concat = make("concat", input_shapes=[(1, 3, 2), (2, 3, 2)])
    y = concat.forward([to_internal(a), to_internal(b)], True)
    np.testing.assert_array_equal(to_public(y), np.concatenate([a, b], axis=1))
    da, db = concat.backward(y)
    np.testing.assert_array_equal(to_public(da), a)
    np.testing.assert_array_equal(to_public(db), b)
    f1, f2 = rng.standard_normal((3, 2)), rng.standard_normal((3, 4))
    y = make("concat", input_shapes=[(2,), (4,)]).forward([f1, f2], True)
    np.testing.assert_array_equal(y, np.hstack([f1, f2]))
    add = make("add", input_shapes=[(2,)] * 3)
    np.testing.assert_allclose(add.forward([f1, 2 * f1, -f1], True), 2 * f1, rtol=1e-15)
    assert all(g is f1 for g in add.backward(f1))


def test_residual_network_gradient_flows_through_both_branches():
    spec = [{"type": "scale", "factor": 3.0, "name": "s"},
            {"type": "add", "inputs": ["input", "s"]}]
    net = Network(spec, input_shape=(4,), dtype=np.float64)
    x = np.ones((2, 4))
    np.testing.assert_array_equal(net.forward(x), 4 * x)
    np.testing.assert_array_equal(net.backward(np.ones((2, 4)), input_grad=True), 4 * x)


@pytest.mark.parametrize("name,shapes,match", [
    ("add", [(3,), (4,)], r"one shape, received shapes \(3,\), \(4,\)"),
    ("add", [(2, 4, 4), (2, 4, 4), (2, 4, 3)], r"\(2, 4, 4\), \(2, 4, 4\), \(2, 4, 3\)"),
    ("concat", [(2, 4, 4), (3, 5, 4)], r"channel.*received shapes \(2, 4, 4\), \(3, 5, 4\)"),
    ("concat", [(2, 4, 4), (8,)], r"received shapes \(2, 4, 4\), \(8,\)"),
])
def test_merge_shape_mismatch_names_every_shape(name, shapes, match):
    with pytest.raises(ConfigError, match=match):
        make(name, input_shapes=shapes)


def test_network_reports_merge_mismatch_with_layer_and_input_names():
    spec = [{"type": "flatten", "name": "f"}, {"type": "linear", "out_features": 3, "name": "fc"},
            {"type": "add", "inputs": ["f", "fc"]}]
    with pytest.raises(ConfigError, match=r"add_1.*\(8,\), \(3,\)"):
        Network(spec, input_shape=(2, 2, 2))


# ----- the contract: inputs and output gradients are never written -------------------------
ALL_CASES = [pytest.param(name, opts, shapes, id=f"{name}-{k}")
             for name, cls in LAYERS.items() for k, (opts, shapes) in enumerate(cls.examples)]


@pytest.mark.parametrize("name,options,input_shapes", ALL_CASES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_layer_never_modifies_its_input_or_dy(name, options, input_shapes, training):
    rng = np.random.default_rng(9)
    layer = make(name, options, input_shapes, dtype=np.float32)
    layer.rng = np.random.default_rng(1)
    xs = [rng.standard_normal(batch_shape(s, 3)).astype(np.float32) for s in input_shapes]
    saved = [x.copy() for x in xs]
    y = layer.forward(xs if layer.n_inputs != 1 else xs[0], training)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dy_saved = dy.copy()
    layer.backward(dy)
    for x, x0 in zip(xs, saved):
        np.testing.assert_array_equal(x, x0, err_msg=f"{name} modified its input")
    np.testing.assert_array_equal(dy, dy_saved, err_msg=f"{name} modified dy")
