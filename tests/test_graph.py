"""The network DAG: building, shape inference, fan-out, several outputs, weights I/O, Python API."""

import numpy as np
import pytest

from nntrain import Network, make_loss, make_optimizer
from nntrain.errors import ConfigError
from nntrain.gradcheck import check_network

RESIDUAL_BN = [
    {"type": "conv2d", "out_channels": 4, "kernel": 3, "padding": 1, "name": "stem"},
    {"type": "batchnorm2d"},
    {"type": "relu", "name": "a"},
    {"type": "conv2d", "out_channels": 4, "kernel": 3, "padding": 1},
    {"type": "batchnorm2d"},
    {"type": "add", "inputs": ["batchnorm2d_2", "a"]},  # skip connection: 'a' fans out
    {"type": "relu"},
    {"type": "global_avgpool"},
    {"type": "linear", "out_features": 3},
]


def _data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 2, 6, 6)).astype(np.float32) + y[:, None, None, None]  # learnable
    return x, y


def test_residual_block_with_batchnorm_trains_from_python_api():
    net = Network(RESIDUAL_BN, input_shape=(2, 6, 6), seed=0)
    loss = make_loss({"type": "softmax_cross_entropy"})
    opt = make_optimizer({"type": "sgd", "lr": 0.1, "momentum": 0.9}, net.named_parameters())
    x, y = _data()
    losses = []
    for _ in range(30):
        losses.append(loss.forward(net.forward(x, training=True), y))
        net.backward(loss.backward())
        opt.step()
    assert losses[-1] < 0.5 * losses[0]


def test_backward_frees_each_cache_once_its_layer_is_done():
    """The backward pass's memory peak: when a layer's backward runs, the layers after it
    have already dropped what their forward kept (and every layer has, at the end)."""
    net = Network(RESIDUAL_BN, input_shape=(2, 6, 6), seed=0)
    loss = make_loss({"type": "softmax_cross_entropy"})
    x, y = _data()
    layers = [node.layer for node in net.order]

    def kept(layer):
        return [k for k, val in vars(layer).items() if k.startswith("_cache") and val is not None]

    seen = []
    for i, layer in enumerate(layers):
        def spy(dy, layer=layer, i=i, backward=layer.backward):
            seen.append((i, [kept(later) for later in layers[i + 1:]]))
            return backward(dy)
        layer.backward = spy
    loss.forward(net.forward(x, training=True), y)
    assert any(kept(layer) for layer in layers)
    net.backward(loss.backward())
    assert [i for i, _ in seen] == list(range(len(layers)))[::-1]
    assert all(not any(later) for _, later in seen), seen
    assert not any(kept(layer) for layer in layers)


def test_gradients_of_a_dag_with_fan_out_and_batchnorm():
    net = Network(RESIDUAL_BN, input_shape=(2, 6, 6), seed=0, dtype=np.float64)
    x, y = _data(4)
    errors = check_network(net, make_loss({"type": "softmax_cross_entropy"}), x, y, training=True, max_entries=None)
    assert max(errors.values()) < 1e-6, errors


def test_several_outputs_and_concat():
    spec = [
        {"type": "flatten", "name": "f"},
        {"type": "linear", "out_features": 4, "name": "h1"},
        {"type": "linear", "out_features": 5, "name": "h2", "inputs": "f"},
        {"type": "concat", "inputs": ["h1", "h2"], "name": "cat"},
        {"type": "linear", "out_features": 3, "name": "head"},
    ]
    net = Network(spec, input_shape=(2, 3, 3), outputs=["head", "h1"], dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((5, 2, 3, 3))
    out, aux = net.forward(x)
    assert out.shape == (5, 3) and aux.shape == (5, 4)
    # numerical check of d(sum(out*r1) + sum(aux*r2))/d(input)
    rng = np.random.default_rng(1)
    r1, r2 = rng.standard_normal(out.shape), rng.standard_normal(aux.shape)
    dx = net.backward([r1, r2], input_grad=True)

    def f(z):
        o, a = net.forward(z)
        return float(np.sum(o * r1) + np.sum(a * r2))

    h, i = 1e-6, (2, 1, 0, 2)
    xp, xm = x.copy(), x.copy()
    xp[i] += h
    xm[i] -= h
    assert dx[i] == pytest.approx((f(xp) - f(xm)) / (2 * h), rel=1e-6)


@pytest.mark.parametrize("spec,pattern", [
    ([{"type": "relu", "inputs": "nope"}], r"unknown input 'nope'"),
    ([{"type": "relu", "name": "a", "inputs": "b"}, {"type": "relu", "name": "b", "inputs": "a"}], "cycle: "),
    ([{"type": "relu", "name": "a"}, {"type": "relu", "name": "a"}], "duplicate layer name"),
    ([{"type": "add", "inputs": ["input"]}, {"type": "linear", "out_features": 2}], "flat"),
    ([{"type": "flatten"}, {"type": "linear", "out_features": 2}, {"type": "add", "inputs": ["linear_1", "input"]}],
     r"model\[2\].*\(2,\).*\(1, 4, 4\)"),
    ([{"out_features": 3}], "missing 'type'"),
    ([], "non-empty"),
])
def test_bad_graphs_are_rejected_at_build_time(spec, pattern):
    with pytest.raises(ConfigError, match=pattern):
        Network(spec, input_shape=(1, 4, 4))


def test_summary_counts_parameters_and_macs():
    net = Network([{"type": "conv2d", "out_channels": 8, "kernel": 3}, {"type": "flatten"},
                   {"type": "linear", "out_features": 10}], input_shape=(3, 8, 8))
    rows = net.summary()
    assert rows[0]["output_shape"] == (8, 6, 6)
    assert rows[0]["params"] == 8 * 3 * 9 + 8 and rows[0]["macs"] == 8 * 6 * 6 * 3 * 9
    assert rows[2]["params"] == 288 * 10 + 10 and rows[2]["macs"] == 2880
    assert "total: " in net.format_summary()


def test_save_and_load_weights_round_trip(tmp_path):
    a = Network(RESIDUAL_BN, input_shape=(2, 6, 6), seed=1)
    x, _ = _data(4)
    a.forward(x, training=True)  # changes running statistics (buffers)
    a.save_weights(tmp_path / "w.npz")
    b = Network(RESIDUAL_BN, input_shape=(2, 6, 6), seed=2)
    b.load_weights(tmp_path / "w.npz")
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    with np.load(tmp_path / "w.npz", allow_pickle=False) as f:
        assert "buffer/batchnorm2d_1.running_mean" in f.files
    c = Network(RESIDUAL_BN[:-1] + [{"type": "linear", "out_features": 5}], input_shape=(2, 6, 6))
    with pytest.raises(ConfigError, match="shape"):
        c.load_weights(tmp_path / "w.npz")


def test_per_parameter_options_and_frozen_layers():
    spec = [{"type": "flatten"},
            {"type": "linear", "out_features": 3, "params": {"bias": {"lr_mult": 2, "decay_mult": 0}}},
            {"type": "linear", "out_features": 2, "trainable": False}]
    net = Network(spec, input_shape=(4,))
    p = dict(net.named_parameters())
    assert p["linear_1.bias"].lr_mult == 2 and p["linear_1.weight"].decay_mult == 1
    assert p["linear_1.bias"].decay_mult == 0
    assert not p["linear_2.weight"].trainable and not p["linear_2.bias"].trainable
    before = p["linear_2.weight"].value.copy()
    opt = make_optimizer({"type": "sgd", "lr": 0.5}, net.named_parameters())
    x = np.ones((2, 4), np.float32)
    net.backward(net.forward(x, training=True))
    opt.step()
    np.testing.assert_array_equal(p["linear_2.weight"].value, before)
    with pytest.raises(ConfigError, match="did you mean 'bias'"):
        Network([{"type": "linear", "out_features": 2, "params": {"bais": {"lr_mult": 2}}}], input_shape=(4,))


def test_get_config_round_trip():
    net = Network(RESIDUAL_BN, input_shape=(2, 6, 6))
    again = Network(net.get_config(), input_shape=(2, 6, 6))
    assert again.get_config() == net.get_config()


def test_float32_throughout():
    net = Network(RESIDUAL_BN, input_shape=(2, 6, 6))
    x, y = _data(4)
    out = net.forward(x.astype(np.float64), training=True)  # input converted once
    assert out.dtype == np.float32
    net.backward(np.ones_like(out))
    assert all(p.grad.dtype == np.float32 for p in net.parameters())


def test_input_gradients_are_only_computed_where_something_upstream_needs_them():
    spec = [{"type": "flatten"}, {"type": "linear", "out_features": 16, "trainable": False},
            {"type": "relu"}, {"type": "linear", "out_features": 3}]
    net = Network(spec, input_shape=(2, 2, 2))
    x = np.random.default_rng(0).standard_normal((4, 2, 2, 2)).astype(np.float32)
    net.backward(net.forward(x, training=True))
    flags = {n.name: n.layer.needs_input_grad for n in net.order}
    assert flags == {"flatten_1": False, "linear_1": False, "relu_1": False, "linear_2": False}
    net.by_name["linear_1"].layer.params()["weight"].trainable = True  # unfreeze after build
    net.backward(net.forward(x, training=True))
    flags = {n.name: n.layer.needs_input_grad for n in net.order}
    assert flags == {"flatten_1": False, "linear_1": False, "relu_1": True, "linear_2": True}
    assert np.abs(net.by_name["linear_1"].layer.params()["weight"].grad).sum() > 0
    dx = net.backward(net.forward(x, training=True), input_grad=True)
    assert dx.shape == x.shape
