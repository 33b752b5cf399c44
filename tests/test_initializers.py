"""Weight initialisers: the statistics each promises, dirac identity, validation."""

import numpy as np
import pytest

from nntrain import Network
from nntrain.errors import ConfigError
from nntrain.initializers import make_initializer
from nntrain.registry import INITIALIZERS

SHAPE, FAN_IN, FAN_OUT = (256, 128, 3, 3), 128 * 9, 256 * 9


def draw(spec):
    return make_initializer(spec)(SHAPE, FAN_IN, FAN_OUT, np.random.default_rng(0), np.float32)


@pytest.mark.parametrize("spec,std", [
    ({"type": "gaussian", "std": 0.01}, 0.01),
    ("he", np.sqrt(2 / FAN_IN)),
    ({"type": "kaiming", "mode": "fan_out"}, np.sqrt(2 / FAN_OUT)),
    ({"type": "xavier", "distribution": "normal"}, np.sqrt(2 / (FAN_IN + FAN_OUT))),
    ("glorot", np.sqrt(6 / (FAN_IN + FAN_OUT)) / np.sqrt(3)),  # U(-a, a) has std a / sqrt(3)
    ({"type": "uniform", "low": -0.3, "high": 0.3}, 0.3 / np.sqrt(3)),
])
def test_standard_deviation(spec, std):
    w = draw(spec)
    assert w.dtype == np.float32 and w.shape == SHAPE
    assert abs(w.mean()) < 0.02 * std + 1e-6
    assert w.std() == pytest.approx(std, rel=0.01)


def test_constant():
    assert np.all(draw({"type": "constant", "value": 0.5}) == 0.5)


def test_dirac_conv_is_identity():
    net = Network([{"type": "conv2d", "out_channels": 3, "kernel": 3, "padding": 1, "init": "dirac", "bias": False}],
                  input_shape=(3, 5, 5))
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 5)).astype(np.float32)
    np.testing.assert_array_equal(net.forward(x), x)


def test_every_initializer_is_reachable_by_name():
    for name in INITIALIZERS.names():
        w = make_initializer(name)((4, 4, 3, 3), 36, 36, np.random.default_rng(0), np.float32)
        assert w.shape == (4, 4, 3, 3) and np.all(np.isfinite(w))


@pytest.mark.parametrize("spec,pattern", [
    ("gausian", "did you mean 'gaussian'"),
    ({"type": "gaussian", "std": -1}, "std=-1"),
    ({"type": "uniform", "low": 1, "high": 0}, "low <= high"),
    ({"std": 0.1}, "initializer name"),
])
def test_bad_specs(spec, pattern):
    with pytest.raises(ConfigError, match=pattern):
        make_initializer(spec)


def test_dirac_with_rest_is_a_partial_identity():
    w = make_initializer({"type": "dirac", "rest": {"type": "gaussian", "std": 1.0}})(
        (6, 2, 3, 3), 18, 54, np.random.default_rng(0), np.float32)
    identity = np.zeros((2, 2, 3, 3), np.float32)
    identity[[0, 1], [0, 1], 1, 1] = 1
    np.testing.assert_array_equal(w[:2], identity)
    assert np.all(w[2:] != 0) and abs(w[2:].std() - 1) < 0.3


def test_pca_whitening_from_data():
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((4, 4))
    rows = rng.standard_normal((20000, 4)) @ mix  # correlated inputs
    init = make_initializer({"type": "pca_whitening", "eps": 0.0})
    w = init.from_data(rows, (8, 4), np.float64)
    z = rows @ w[:4].T
    np.testing.assert_allclose(z.T @ z / len(z), np.eye(4), atol=1e-10)
    np.testing.assert_array_equal(w[4:], -w[:4])
    variances = np.linalg.eigvalsh(rows.T @ rows / len(rows))[::-1]
    np.testing.assert_allclose(np.linalg.norm(w[:4], axis=1), 1 / np.sqrt(variances))  # leading axis first
    np.testing.assert_array_equal(init.from_data(rows, (2, 4), np.float64), w[:2])  # fewer outputs: leading ones
    with pytest.raises(ConfigError, match="at most 4 or exactly 8 outputs"):
        init.from_data(rows, (6, 4), np.float64)


def test_pca_whitening_checks_the_layer_at_build_time():
    with pytest.raises(ConfigError, match=r"model\[0\].*at most 12 or exactly 24 outputs.*but it has 16"):
        Network([{"type": "conv2d", "out_channels": 16, "kernel": 2, "init": "pca_whitening"}], input_shape=(3, 8, 8))
    net = Network([{"type": "maxpool2d", "kernel": 2}, {"type": "flatten"},
                   {"type": "linear", "out_features": 3, "init": {"type": "pca_whitening", "samples": 50}}],
                  input_shape=(1, 4, 4))
    assert net.data_samples() == 50
    x = np.random.default_rng(0).standard_normal((50, 1, 4, 4)).astype(np.float32)
    net.initialize_from_data(x)  # the linear layer sees the pooled, flattened input
    pooled = x.reshape(50, 2, 2, 2, 2).max(axis=(2, 4)).reshape(50, 4)
    w = net.order[2].layer.weight.value
    np.testing.assert_allclose(w, make_initializer({"type": "pca_whitening"}).from_data(pooled, (3, 4), np.float32),
                               rtol=1e-5)
