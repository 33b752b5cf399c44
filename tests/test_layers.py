"""Registry-wide layer tests: every registered layer, every declared example.

A new layer is covered by declaring ``examples`` on its class; no new test code.
"""

import numpy as np
import pytest

from nntrain.errors import ConfigError
from nntrain.gradcheck import check_layer
from nntrain.layers.base import batch_shape
from nntrain.registry import LAYERS

TOL = 1e-6


def _cases():
    for name, cls in LAYERS.items():
        for k, (options, input_shapes) in enumerate(cls.examples):
            yield pytest.param(name, options, input_shapes, id=f"{name}-{k}")


CASES = list(_cases())


def test_every_layer_declares_examples():
    missing = [name for name, cls in LAYERS.items() if not cls.examples]
    assert not missing, f"layers without gradient-check examples: {missing}"


@pytest.mark.parametrize("name,options,input_shapes", CASES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_gradcheck(name, options, input_shapes, training):
    layer = LAYERS.get(name).from_config(dict(options))
    errors = check_layer(layer, input_shapes, training=training)
    bad = {k: e for k, e in errors.items() if e > TOL}
    assert not bad, f"{name} {options}: relative errors {bad}"


@pytest.mark.parametrize("name,options,input_shapes", CASES)
def test_config_round_trip(name, options, input_shapes):
    cls = LAYERS.get(name)
    layer = cls.from_config(dict(options))
    config = layer.get_config()
    assert config["type"] == name
    again = cls.from_config({k: val for k, val in config.items() if k != "type"})
    assert again.get_config() == config


@pytest.mark.parametrize("name,options,input_shapes", CASES)
def test_float32_end_to_end(name, options, input_shapes):
    """Built in float32, forward and backward stay float32 (no hidden upcast)."""
    layer = LAYERS.get(name).from_config(dict(options))
    rng = np.random.default_rng(0)
    out_shape = layer.build([tuple(s) for s in input_shapes], rng, np.float32)
    xs = [rng.standard_normal(batch_shape(s, 4)).astype(np.float32) for s in input_shapes]
    layer.rng = np.random.default_rng(1)
    y = layer.forward(xs if layer.n_inputs != 1 else xs[0], True)
    assert y.dtype == np.float32, f"{name}: forward returned {y.dtype}"
    assert y.shape == batch_shape(out_shape, 4)
    layer.needs_input_grad = True
    dxs = layer.backward(np.ones_like(y))
    for dx, x in zip(dxs if layer.n_inputs != 1 else [dxs], xs):
        assert dx.dtype == np.float32 and dx.shape == x.shape, f"{name}: dx {dx.dtype} {dx.shape}"
    for pname, p in layer.params().items():
        assert p.value.dtype == np.float32 and p.grad.dtype == np.float32, f"{name}.{pname}"


@pytest.mark.parametrize("name,options,input_shapes", CASES)
def test_parameter_gradients_overwrite(name, options, input_shapes):
    """backward overwrites parameter gradients (documented in nntrain.layers.base)."""
    layer = LAYERS.get(name).from_config(dict(options))
    rng = np.random.default_rng(0)
    out_shape = layer.build([tuple(s) for s in input_shapes], rng, np.float64)
    xs = [rng.standard_normal(batch_shape(s, 3)) for s in input_shapes]
    dy = rng.standard_normal(batch_shape(out_shape, 3))
    grads = []
    for _ in range(2):
        layer.rng = np.random.default_rng(1)
        layer.forward(xs if layer.n_inputs != 1 else xs[0], True)
        layer.backward(dy)
        grads.append({k: p.grad.copy() for k, p in layer.params().items()})
    for k in grads[0]:
        np.testing.assert_allclose(grads[1][k], grads[0][k], rtol=1e-12, atol=1e-12)


def _other_layout(a: np.ndarray) -> np.ndarray:
    """The same values in another memory layout: a channel-major image batch stored sample-major
    (as ``to_internal`` gives the network input), anything else in Fortran order."""
    if a.ndim == 4:
        return np.ascontiguousarray(a.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    return np.asfortranarray(a)


def _run_layer(name, options, input_shapes, training, layout=None):
    layer = LAYERS.get(name).from_config(dict(options))
    rng = np.random.default_rng(0)
    out_shape = layer.build([tuple(s) for s in input_shapes], rng, np.float32)
    xs = [rng.standard_normal(batch_shape(s, 5)).astype(np.float32) for s in input_shapes]
    dy = rng.standard_normal(batch_shape(out_shape, 5)).astype(np.float32)
    if layout is not None:
        xs, dy = [layout(x) for x in xs], layout(dy)
    layer.rng = np.random.default_rng(1)
    y = layer.forward(xs if layer.n_inputs != 1 else xs[0], training)
    layer.needs_input_grad = True
    dxs = layer.backward(dy)
    return [y, *(dxs if layer.n_inputs != 1 else [dxs]), *(p.grad for p in layer.params().values())]


@pytest.mark.parametrize("name,options,input_shapes", CASES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_threaded_kernels_give_the_serial_result(name, options, input_shapes, training, monkeypatch):
    """Kernels split over cores (nntrain.ops.parallel), and in chunks within each core's block,
    compute bit for bit what one call would; with the matrix products split too, the same
    to float rounding."""
    from nntrain.layers import activations
    from nntrain.ops import conv, parallel

    monkeypatch.setattr(conv, "CHUNK_BYTES", 1)  # one sample per chunk (chunks set the dW rounding)
    monkeypatch.setitem(parallel._state, "threads", 1)
    serial = _run_layer(name, options, input_shapes, training)
    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 0)
    monkeypatch.setattr(activations, "ELEMENTWISE_CHUNK", 5)  # several chunks per thread
    monkeypatch.setitem(parallel._state, "threads", 3)
    monkeypatch.setitem(parallel._state, "pool", None)
    monkeypatch.setattr(parallel, "SPLIT_MATMUL", False)
    threaded = _run_layer(name, options, input_shapes, training)
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(a, b)
    monkeypatch.setattr(parallel, "SPLIT_MATMUL", True)
    split = _run_layer(name, options, input_shapes, training)
    for a, b in zip(serial, split):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(a).max(initial=0))))


@pytest.mark.parametrize("name,options,input_shapes", CASES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_any_memory_layout_of_inputs_and_gradients(name, options, input_shapes, training):
    """Layers take views in any layout (the network input is a transposed view of the
    user's batch) and never write into their inputs or dy."""
    contiguous = _run_layer(name, options, input_shapes, training)
    seen = []

    def layout(a):
        b = _other_layout(a)
        seen.append((b, b.copy()))
        return b

    other = _run_layer(name, options, input_shapes, training, layout=layout)
    for a, b in zip(contiguous, other):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(a).max(initial=0))))
    for given, before in seen:
        np.testing.assert_array_equal(given, before)


def test_unknown_layer_type_suggests_closest():
    with pytest.raises(ConfigError, match=r"did you mean 'linear'.*known:"):
        LAYERS.get("linaer")


def test_registering_a_name_twice_fails():
    with pytest.raises(ValueError, match="registered twice"):
        LAYERS.register("linear")(type("Other", (), {}))


def test_unknown_option_suggests_closest():
    with pytest.raises(ConfigError, match="did you mean 'out_features'"):
        LAYERS.get("linear").from_config({"out_feature": 3})


def test_bad_option_value_names_it():
    with pytest.raises(ConfigError, match=r"positive integer, received out_features=0"):
        LAYERS.get("linear").from_config({"out_features": 0})


def test_linear_input_gradient_follows_the_layout_of_its_input():
    """A linear layer's output is a transposed view (y^T = W x^T); the next linear layer's input
    gradient comes back in that layout, so the elementwise backward between them (ReLU's mask
    product) reads two arrays of one layout. Same values either way."""
    rng = np.random.default_rng(0)
    layer = LAYERS.get("linear").from_config({"out_features": 4})
    layer.build([(6,)], rng, np.float64)
    layer.needs_input_grad = True
    x = rng.standard_normal((5, 6))
    dy = rng.standard_normal((5, 4))
    for inp in (x, np.ascontiguousarray(x.T).T):  # row-major, and the transposed view a linear layer returns
        layer.forward(inp, True)
        dx = layer.backward(dy)
        np.testing.assert_allclose(dx, dy @ layer.weight.value, rtol=1e-13)
        assert dx.flags.c_contiguous == inp.flags.c_contiguous and dx.flags.f_contiguous == inp.flags.f_contiguous
