"""The gradient checker itself: it must pass correct code, skip (and count) kinks, and catch
a planted error, tiny ones included, in evaluation and in training mode."""

import numpy as np
import pytest
from click.testing import CliRunner

import nntrain.data
from nntrain.cli import main
from nntrain.config import load_config
from nntrain.gradcheck import (GradcheckReport, check_layer, check_layer_tensors, check_loss, check_network_tensors,
                               relative_error, roundoff_floor)
from nntrain.graph import Network
from nntrain.layers.base import Layer, batch_shape
from nntrain.losses import Loss, make_loss
from nntrain.registry import LAYERS

from .conftest import SHARED_DATA
from .test_configs import CONFIGS, _available
from .test_layers import CASES

TOL = 1e-6


class _WrongLinear(LAYERS.get("linear")):
    """Linear whose weight gradient is off by a factor of 1.1."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.weight.grad *= 1.1
        return dx


def test_catches_planted_wrong_parameter_gradient():
    errors = check_layer(_WrongLinear(out_features=3), [(4,)])
    assert errors["input"] < 1e-7
    assert errors["param:weight"] > 1e-2


def test_catches_coarse_step():
    """A huge finite-difference step on a curved function is visibly wrong (tinygrad's negative test)."""
    errors = check_layer(LAYERS.get("tanh")(), [(6,)], h=1.0) if "tanh" in LAYERS else {"input": 1.0}
    assert errors["input"] > 1e-3


def test_relative_error_basics():
    a = np.array([1.0, 2.0])
    assert relative_error(a, a) == 0.0
    assert relative_error(a, -a) == 1.0
    assert relative_error(np.array([1e-17]), np.array([3e-10])) == 0.0  # both zero up to round-off
    assert relative_error(np.array([1e-5]), np.array([2e-5])) > 0.3


# ----- the floor scales with the objective and the gradient ---------------------------
def test_relative_error_floor_is_not_a_fixed_absolute_number():
    """A 10% error in a gradient of size 1e-9 used to vanish under the absolute 1e-8 floor."""
    a = 1e-9 * np.array([1.0, -2.0, 3.0])
    assert relative_error(a, 1.1 * a, atol=roundoff_floor(1e-6)) > 0.04
    assert relative_error(a, a + 1e-17, atol=roundoff_floor(1e-6)) == 0.0  # round-off still passes
    assert relative_error(np.zeros(3), np.full(3, 1e-18), atol=roundoff_floor(1e-6)) == 0.0  # a true zero


def test_tiny_gradient_with_a_planted_error_fails():
    """Inputs of size 1e-9 make the weight gradient ~1e-9: the old check passed its 10% error
    (every entry within 1e-8); the floor now follows the objective's own size."""
    inputs = [1e-9 * np.random.default_rng(5).standard_normal((3, 4))]
    errors = check_layer(_WrongLinear(out_features=3), [(4,)], inputs=inputs)
    assert errors["param:weight"] > 1e-2
    assert check_layer(LAYERS.get("linear")(out_features=3), [(4,)], inputs=inputs)["param:weight"] < TOL


# ----- kinks --------------------------------------------------------------------------
def _quantised_inputs(input_shapes, batch=3):
    """Small integers: ReLU inputs at exactly 0, max-pool windows with tied maxima."""
    rng = np.random.default_rng(0)
    return [np.round(1.5 * rng.standard_normal(batch_shape(tuple(s), batch))) for s in input_shapes]


def _quantised_check(name, options, input_shapes):
    layer = LAYERS.get(name).from_config(dict(options))
    return check_layer_tensors(layer, input_shapes, inputs=_quantised_inputs(input_shapes))


@pytest.mark.parametrize("name,options,input_shapes", CASES)
def test_every_layer_passes_on_its_kinks(name, options, input_shapes):
    """Inputs sitting on kinks: a piecewise forward without a branch signature fails here."""
    checks = _quantised_check(name, options, input_shapes)
    bad = {c.name: (c.error, c.checked, c.at_kinks) for c in checks if not c.passed(TOL)}
    assert not bad, f"{name} {options}: (error, checked, at kinks) {bad}"


PIECEWISE = sorted({name for name, options, shapes in (case.values for case in CASES)
                    if any(c.at_kinks for c in _quantised_check(name, options, shapes))})


def test_the_kinks_found_are_the_piecewise_layers():
    assert {"relu", "leaky_relu", "elu", "maxpool2d", "global_maxpool"} <= set(PIECEWISE), PIECEWISE
    assert not {"linear", "conv2d", "tanh", "avgpool2d", "batchnorm2d"} & set(PIECEWISE), PIECEWISE


@pytest.mark.parametrize("name", PIECEWISE)
def test_a_layer_without_its_branch_signature_fails_at_its_kinks(name, monkeypatch):
    """The control of the test above: the signature is what tells a kink from a wrong gradient."""
    monkeypatch.setattr(LAYERS.get(name), "branch_signature", Layer.branch_signature)
    results = [_quantised_check(name, options, shapes) for n, options, shapes in (c.values for c in CASES)
               if n == name]
    assert any(not c.passed(TOL) for checks in results for c in checks)


def test_a_tensor_entirely_at_kinks_is_not_a_pass():
    checks = check_layer_tensors(LAYERS.get("relu")(), [(4,)], inputs=[np.zeros((3, 4))])
    (c,) = checks
    assert (c.checked, c.at_kinks) == (0, 12)
    assert not c.passed(1.0) and c.status(1.0).startswith("NOT CHECKED")
    assert check_layer(LAYERS.get("relu")(), [(4,)], inputs=[np.zeros((3, 4))])["input"] == np.inf


def test_hinge_loss_margins_at_zero_are_kinks(monkeypatch):
    logits = np.array([[1.0, 0.0, 0.5], [0.2, 1.2, 2.0]])  # sample 0: class 1's margin is exactly 0
    targets = np.array([0, 2])
    assert check_loss(make_loss({"type": "hinge"}), logits.copy(), targets) < TOL
    monkeypatch.setattr(type(make_loss({"type": "hinge"})), "branch_signature", Loss.branch_signature)
    assert check_loss(make_loss({"type": "hinge"}), logits.copy(), targets) > 1e-2


# ----- a network, both modes ------------------------------------------------------------
NET = [
    {"type": "conv2d", "out_channels": 4, "kernel": 3, "padding": 1},
    {"type": "batchnorm2d"},
    {"type": "relu"},
    {"type": "maxpool2d", "kernel": 2},
    {"type": "flatten"},
    {"type": "dropout", "rate": 0.5},
    {"type": "linear", "out_features": 3},
]


def _net_and_images():
    """Images with a flat background, like MNIST's: max-pool ties everywhere there."""
    net = Network(NET, input_shape=(2, 6, 6), seed=0, dtype=np.float64)
    x = np.full((4, 2, 6, 6), -0.5)
    x[:, :, 2:5, 1:4] = np.random.default_rng(1).standard_normal((4, 2, 3, 3))
    return net, x, np.array([0, 1, 2, 1])


def _check(net, x, y, training):
    return check_network_tensors(net, make_loss({"type": "softmax_cross_entropy"}), x, y, training=training,
                                 max_entries=15)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_network_check_skips_kinks_and_passes(training):
    check = _check(*_net_and_images(), training)
    assert check.passed(TOL), check
    assert {t.name: t.checked for t in check.tensors}["input"] == 15
    assert sum(t.at_kinks for t in check.tensors) > 0


def test_network_check_without_signatures_fails_on_the_ties(monkeypatch):
    for name in ("relu", "maxpool2d"):
        monkeypatch.setattr(LAYERS.get(name), "branch_signature", Layer.branch_signature)
    assert not _check(*_net_and_images(), False).passed(1e-3)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_network_check_catches_a_planted_error(training):
    net, x, y = _net_and_images()
    layer = net.by_name["linear_1"].layer
    right = layer.backward

    def wrong(dy):
        dx = right(dy)
        layer.weight.grad *= 1.1
        return dx

    layer.backward = wrong
    check = _check(net, x, y, training)
    failed = {t.name for t in check.tensors if not t.passed(1e-5)}
    assert failed == {"linear_1.weight"}


def test_training_mode_catches_an_error_only_training_runs():
    """A dropout backward that forgets its mask is right in evaluation mode only."""
    net, x, y = _net_and_images()
    layer = net.by_name["dropout_1"].layer
    layer.backward = lambda dy: dy
    assert _check(net, x, y, False).passed(TOL)
    train = _check(net, x, y, True)
    assert not train.passed(1e-3) and not {t.name: t.passed(1e-3) for t in train.tensors}["input"]


def test_network_check_leaves_the_network_as_it_was():
    net, x, y = _net_and_images()
    before = {k: v.copy() for k, v in net.state_dict().items()}
    rng = net.rng
    _check(net, x, y, True)
    assert net.rng is rng
    assert all(np.array_equal(v, net.state_dict()[k]) for k, v in before.items())


def test_report_says_what_was_skipped_and_fails_on_unchecked():
    net, x, y = _net_and_images()
    report = GradcheckReport(4, [_check(net, x, y, False), _check(net, x, y, True)])
    text = "\n".join(report.lines(1e-5))
    assert "evaluation mode" in text and "training mode" in text and "at kinks" in text and "pass" in text
    report.modes[1].tensors[0].checked = 0
    assert not report.passed(1e-5) and "NOT CHECKED" in "\n".join(report.lines(1e-5))


def test_report_prints_the_raw_error_beside_the_floored_one():
    """Within the round-off floor the error is 0; the raw one shows how close the match is."""
    import re

    net, x, y = _net_and_images()
    check = _check(net, x, y, False)
    text = "\n".join(GradcheckReport(4, [check]).lines(1e-5))
    checked = [t for t in check.tensors if t.checked]
    assert checked and all(0 < t.raw_error < 1e-5 and t.error <= t.raw_error for t in checked)
    assert re.search(r"\(raw \d\.\d\de-\d\d; tolerance 1e-05\): pass", text), text
    assert f"({checked[0].raw_error:8.2e})" in text


# ----- every shipped config, with its data -------------------------------------------------
_LOADED = {}


def _load_once(load):
    """CIFAR-10's archive takes ~9 s to decompress: both CIFAR configs share one read.
    normalize and augment act after loading, so they are not part of the key."""
    def cached(cfg, seed=0):
        key = repr((sorted((k, v) for k, v in dict(cfg).items() if k not in ("normalize", "augment")), seed))
        if key not in _LOADED:
            _LOADED[key] = load(cfg, seed)
        return _LOADED[key]
    return cached


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_gradcheck_passes_on_every_shipped_config(path, monkeypatch):
    monkeypatch.setenv("NNTRAIN_DATA", str(SHARED_DATA))
    if not _available(load_config(path)):
        pytest.skip("its data is not available here")
    monkeypatch.setattr(nntrain.data, "load_data", _load_once(nntrain.data.load_data))
    overrides = ["data.limit={train: 200, test: 10}", "train.batch_size=16"]
    if load_config(path)["data"]["validation"]:
        overrides.append("data.validation=50")
    args = ["gradcheck", str(path), "--examples", "2", "--entries", "3"]
    r = CliRunner().invoke(main, args + [a for o in overrides for a in ("--set", o)])
    assert r.exit_code == 0, r.output
    assert "evaluation mode" in r.output and "training mode" in r.output and "NOT CHECKED" not in r.output
