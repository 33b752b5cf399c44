"""Losses: registry-wide gradient checks and config round trips, plus known answers.

A new loss is covered by declaring ``examples`` (and ``target_kinds``) on its class.
"""

import numpy as np
import pytest

from nntrain.errors import ConfigError, DataError
from nntrain.gradcheck import check_loss
from nntrain.losses import error_rate, make_loss, softmax
from nntrain.registry import LOSSES
from nntrain.spec import option_names

N = 6


def _targets(kind, n, k, rng):
    if kind == "classes":
        return rng.integers(0, k, n)
    if kind == "values":
        return rng.standard_normal((n, k))
    return rng.uniform(0, 1, (n, k))


def _cases():
    for name, cls in LOSSES.items():
        for i, (options, k) in enumerate(cls.examples):
            for kind in cls.target_kinds:
                yield pytest.param(name, options, k, kind, id=f"{name}-{i}-{kind}")


CASES = list(_cases())


def test_every_loss_declares_examples():
    missing = [name for name, cls in LOSSES.items() if not cls.examples]
    assert not missing, f"losses without gradient-check examples: {missing}"


@pytest.mark.parametrize("name,options,k,kind", CASES)
def test_gradcheck(name, options, k, kind):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((N, k)) * 2
    error = check_loss(make_loss({"type": name, **options}), logits, _targets(kind, N, k, rng))
    assert error < 1e-6, f"{name} {options} ({kind} targets): relative error {error}"


@pytest.mark.parametrize("name,options,k,kind", CASES)
def test_float32_stays_float32(name, options, k, kind):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((N, k)).astype(np.float32)
    loss = make_loss({"type": name, **options})
    value = loss.forward(logits, _targets(kind, N, k, rng))
    grad = loss.backward()
    assert isinstance(value, float) and np.isfinite(value)
    assert grad.dtype == np.float32 and grad.shape == logits.shape


@pytest.mark.parametrize("name,options,k,kind", CASES)
def test_float32_matches_float64(name, options, k, kind):
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((N, k))
    targets = _targets(kind, N, k, rng)
    loss64, loss32 = make_loss({"type": name, **options}), make_loss({"type": name, **options})
    v64 = loss64.forward(logits, targets)
    v32 = loss32.forward(logits.astype(np.float32), targets)
    np.testing.assert_allclose(v32, v64, rtol=1e-5)
    np.testing.assert_allclose(loss32.backward(), loss64.backward(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name,options,k,kind", CASES)
def test_config_round_trip(name, options, k, kind):
    config = make_loss({"type": name, **options}).get_config()
    assert config["type"] == name
    assert make_loss(config).get_config() == config


@pytest.mark.parametrize("name", LOSSES.names())
def test_unknown_option_suggests_closest(name):
    options = option_names(LOSSES.get(name))
    if options:
        with pytest.raises(ConfigError, match=f"did you mean '{options[0]}'"):
            make_loss({"type": name, options[0] + "s": 1})
    with pytest.raises(ConfigError, match="unknown option 'bogus_key'"):
        make_loss({"type": name, "bogus_key": 1})


def test_unknown_loss_type_suggests_closest():
    with pytest.raises(ConfigError, match="did you mean 'hinge'"):
        make_loss("hnige")


# ----- known answers -------------------------------------------------------------------
LOGITS = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)


def test_softmax_cross_entropy_known_value_and_gradient():
    loss = make_loss("softmax_cross_entropy")
    assert loss.forward(LOGITS, np.array([2])) == pytest.approx(0.40760596, abs=1e-6)
    p = np.array([0.09003057, 0.24472847, 0.66524096])
    np.testing.assert_allclose(loss.backward()[0], p - [0, 0, 1], atol=1e-6)


def test_label_smoothing_known_value():
    # target (0.9 * onehot + 0.1/3): 0.9 * 0.40760596 + 0.1 * (logsumexp - mean logit) = 0.9*0.40760596 + 0.1*1.40760596
    loss = make_loss({"type": "softmax_cross_entropy", "label_smoothing": 0.1})
    assert loss.forward(LOGITS, np.array([2])) == pytest.approx(0.50760596, abs=1e-6)
    q = np.array([0.1 / 3, 0.1 / 3, 0.9 + 0.1 / 3])
    np.testing.assert_allclose(loss.backward()[0], softmax(LOGITS)[0] - q, atol=1e-6)


def test_class_weights_weighted_mean():
    # per-sample losses 0.40760596 (class 2, weight 1) and 2.40760596 (class 0, weight 2): (0.4076 + 2 * 2.4076) / 3
    loss = make_loss({"type": "softmax_cross_entropy", "class_weights": [2, 1, 1]})
    logits = np.repeat(LOGITS, 2, axis=0)
    assert loss.forward(logits, np.array([2, 0])) == pytest.approx(1.74093929, abs=1e-6)


def test_hinge_known_value_cs231n():
    scores = np.array([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]], dtype=np.float32)
    loss = make_loss("hinge")
    # (2.9 + 0 + 12.9) / 3
    assert loss.forward(scores, np.array([0, 1, 2])) == pytest.approx(5.26666667, abs=1e-5)
    expected = np.array([[-1, 1, 0], [0, 0, 0], [1, 1, -2]]) / 3
    np.testing.assert_allclose(loss.backward(), expected, atol=1e-7)


def test_mse_known_values():
    loss = make_loss("mse")
    assert loss.forward(np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]])) == pytest.approx(5.0)
    np.testing.assert_allclose(loss.backward(), [[2.0, 4.0]])
    assert loss.forward(np.array([[1.0, 2.0]]), np.array([1])) == pytest.approx(2.0)  # one-hot [0, 1]
    np.testing.assert_allclose(loss.backward(), [[2.0, 2.0]])


def test_bce_with_logits_known_values_and_stability():
    loss = make_loss("bce_with_logits")
    assert loss.forward(np.array([[0.0]], np.float32), np.array([[1.0]])) == pytest.approx(np.log(2), abs=1e-6)
    np.testing.assert_allclose(loss.backward(), [[-0.5]])
    big = np.array([[100.0, -100.0]], np.float32)
    assert loss.forward(big, np.array([[1.0, 0.0]])) == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(loss.backward(), [[0.0, 0.0]], atol=1e-6)
    assert loss.forward(big, np.array([[0.0, 1.0]])) == pytest.approx(200.0, rel=1e-6)
    np.testing.assert_allclose(loss.backward(), [[1.0, -1.0]], atol=1e-6)
    # class indices are one-hot rows
    assert loss.forward(big, np.array([0])) == pytest.approx(0.0, abs=1e-6)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    loss = make_loss("softmax_cross_entropy")
    value = loss.forward(np.array([[1000.0, 0.0], [0.0, 1000.0]], np.float32), np.array([1, 1]))
    assert value == pytest.approx(500.0, rel=1e-6)
    assert np.all(np.isfinite(loss.backward()))


def test_softmax_and_error_rate():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    p = softmax(x)
    plain = np.exp(x.astype(np.float64)) / np.exp(x.astype(np.float64)).sum(axis=1, keepdims=True)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p, plain, rtol=1e-6)
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert error_rate(logits, np.array([1, 0, 0, 1])) == 0.5
    assert error_rate(logits, np.eye(2)[[1, 0, 1, 0]]) == 0.0


# ----- clear failures ------------------------------------------------------------------
def test_target_out_of_range_names_the_class():
    with pytest.raises(DataError, match="target class 3 is out of range for 3 logits"):
        make_loss("softmax_cross_entropy").forward(LOGITS, np.array([3]))


def test_bad_targets_and_logits():
    loss = make_loss("softmax_cross_entropy")
    with pytest.raises(DataError, match="integer class indices"):
        loss.forward(LOGITS, np.array([2.0]))
    with pytest.raises(DataError, match="expected 1 class indices"):
        loss.forward(LOGITS, np.array([1, 2]))
    with pytest.raises(ConfigError, match="float array"):
        loss.forward(np.zeros((2, 3, 4), np.float32), np.array([0, 1]))
    with pytest.raises(DataError, match=r"probabilities in \[0, 1\]"):
        make_loss("bce_with_logits").forward(LOGITS, np.array([[0.0, 2.0, 0.0]]))
    with pytest.raises(DataError, match="shape"):
        make_loss("mse").forward(LOGITS, np.zeros((1, 2)))


def test_bad_options():
    with pytest.raises(ConfigError, match=r"received label_smoothing=1"):
        make_loss({"type": "softmax_cross_entropy", "label_smoothing": 1})
    with pytest.raises(ConfigError, match="positive numbers"):
        make_loss({"type": "softmax_cross_entropy", "class_weights": [1, 0]})
    with pytest.raises(ConfigError, match="class_weights has 2 entries but the network gives 3"):
        make_loss({"type": "softmax_cross_entropy", "class_weights": [1, 2]}).forward(LOGITS, np.array([0]))
    with pytest.raises(ConfigError, match="margin=0"):
        make_loss({"type": "hinge", "margin": 0})


def test_backward_needs_a_forward():
    loss = make_loss("hinge")
    loss.forward(LOGITS, np.array([0]))
    loss.backward()
    with pytest.raises(RuntimeError, match="needs a forward"):
        loss.backward()
