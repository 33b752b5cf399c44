"""Network sizes without bounds (issue 19, class 6): size options are range-checked, and a
network whose parameters or activations cannot fit in memory is refused while it is built,
with the numbers and the layer that dominates, before anything large is allocated."""

from __future__ import annotations

import math
import resource
import subprocess
import sys

import numpy as np
import pytest

from nntrain import sizes
from nntrain.errors import ConfigError
from nntrain.graph import Network
from nntrain.registry import LAYERS
from nntrain.validate import MAX_SIZE

from .bounded_cli import LIMIT, assert_refused, run_cli
from .conftest import write_yaml

GIB = 1 << 30


def _config(tmp_path, model, **train):
    return write_yaml(tmp_path / "c.yaml", {
        "name": "sizes", "data": {"dataset": "mnist_subset", "validation": 0}, "model": model,
        "train": {"epochs": 1, "batch_size": 2, **train}})


@pytest.fixture
def limit_16_gib(monkeypatch):
    """This "machine" has 16 GiB, whatever the real one has."""
    monkeypatch.setattr(sizes, "memory_limit", lambda: (16 * GIB, "this machine has"))


# ----- every layer states its parameter shapes before building ------------------------------

@pytest.mark.parametrize("type_name", LAYERS.names())
def test_param_shapes_are_the_shapes_build_creates(type_name):
    cls = LAYERS.get(type_name)
    for options, input_shapes in cls.examples:
        layer = cls.from_config(dict(options))
        announced = layer.param_shapes(input_shapes)
        layer.build(input_shapes, np.random.default_rng(0), np.float32)
        assert announced == {k: p.shape for k, p in layer.params().items()}, (options, input_shapes)


# ----- range checks where options are validated ---------------------------------------------

@pytest.mark.parametrize("layer,message", [
    ({"type": "linear", "out_features": 10**12}, "expected a positive integer <= 2147483647, received "
                                                 "out_features=1000000000000"),
    ({"type": "conv2d", "out_channels": 4, "kernel": 3, "padding": 2**63}, "expected an integer <= 2147483647, "
                                                                            "received padding=9223372036854775808"),
    ({"type": "conv2d", "out_channels": 4, "kernel": [3, 2**40]}, "received kernel=1099511627776"),
    ({"type": "maxpool2d", "kernel": 2, "stride": 2**31}, "received stride=2147483648"),
    ({"type": "reshape", "shape": [2**31, 1]}, "received shape[0]=2147483648"),
])
def test_size_options_above_the_cap_are_refused(layer, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        Network([layer], (1, 28, 28))
    assert MAX_SIZE == 2**31 - 1


# ----- parameters and activations against the machine's memory ------------------------------

def test_parameters_that_cannot_fit_are_refused_before_they_are_allocated(limit_16_gib):
    with pytest.raises(ConfigError) as err:
        Network([{"type": "flatten"}, {"type": "linear", "out_features": 2_000_000_000}], (1, 28, 28))
    assert str(err.value) == (
        "model[1] ('linear_1', linear): the parameters need 11.4 TiB with their gradients (largest "
        "linear_1.weight: 2000000000 x 784) but this machine has 16 GiB (inputs: flatten_1 (784,))")


def test_one_example_that_cannot_fit_is_refused_naming_the_layer(limit_16_gib):
    with pytest.raises(ConfigError, match=r"model\[0\] \('conv2d_1', conv2d\): one training example needs at "
                                          r"least .* EiB \(largest conv2d_1's output \(8, 2147483674, 2147483674\) "
                                          r"per example; .*\) but this machine has 16 GiB"):
        Network([{"type": "conv2d", "out_channels": 8, "kernel": 3, "padding": 2**30}], (1, 28, 28))


def test_the_estimate_counts_what_a_step_needs_at_least():
    """A known answer: parameters, the inputs the backward pass keeps, the backward peak."""
    net = Network([{"type": "conv2d", "out_channels": 4, "kernel": 3, "padding": 1, "algorithm": "im2col"},
                   {"type": "relu"}, {"type": "flatten"}, {"type": "linear", "out_features": 10}], (2, 5, 5))
    est = net.memory
    params = 4 * 2 * 3 * 3 + 4 + 10 * 100 + 10
    assert est.param_bytes == 2 * 4 * params
    kept = 2 * 5 * 5 + 100  # conv's input (the network input), linear's input (flatten's output)
    peak = 100 + 100  # relu or flatten: output and input of 100 values
    assert est.per_example_bytes(training=True) == 4 * (kept + peak)
    assert est.per_example_bytes(training=False) == 4 * peak
    workspace = max(2 << 20, 2 * 9 * 25 * 4)  # the im2col chunk, per thread
    assert est.workspace == workspace
    assert est.total_bytes(32) == est.param_bytes + 32 * 4 * (kept + peak) + workspace * est.threads


def test_a_batch_that_cannot_fit_is_refused_with_the_largest_that_can(limit_16_gib):
    net = Network([{"type": "conv2d", "out_channels": 1024, "kernel": 3, "padding": 1}, {"type": "relu"},
                   {"type": "flatten"}, {"type": "linear", "out_features": 10}], (1, 28, 28))
    fits = net.memory.max_batch_size(16 * GIB)
    net.check_memory(fits)
    with pytest.raises(ConfigError) as err:
        net.check_memory(fits + 1)
    assert f"try a smaller train.batch_size (at most {fits} can fit)" in str(err.value)
    with pytest.raises(ConfigError) as err:
        net.check_memory(100_000)
    assert str(err.value).startswith("train.batch_size 100000: a training step needs at least 898 GiB (898 GiB of "
                                     "activations, largest conv2d_1's output (1024, 28, 28) per example; 61.3 MiB "
                                     "of parameters) but this machine has 16 GiB")
    with pytest.raises(ConfigError, match="eval.batch_size 100000: an evaluation pass needs at least"):
        net.check_memory(100_000, training=False, option="eval.batch_size")
    assert "training at batch size 64: at least" in net.memory.describe(64, 500)


def test_memory_limit_follows_rlimit_as():
    def bound():
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))

    code = "from nntrain.sizes import memory_limit; print(memory_limit())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         preexec_fn=bound).stdout
    assert out.strip() == f"({LIMIT}, 'this process may address (ulimit -v)')"


def test_memory_error_message_says_what_was_allocated(limit_16_gib, monkeypatch):
    monkeypatch.setattr(sizes, "_last", {})
    try:
        np.empty((2**40, 2**20), np.float32)
    except MemoryError as exc:
        error = exc
    assert sizes.memory_error_message(error) == ("out of memory allocating 4 EiB (an array of shape "
                                                 "(1099511627776, 1048576), float32); this machine has 16 GiB")
    small_params = Network([{"type": "conv2d", "out_channels": 64, "kernel": 3}], (3, 32, 32))
    small_params.check_memory(256)
    assert sizes.memory_error_message(error).endswith("try a smaller train.batch_size or eval.batch_size")
    big_params = Network([{"type": "flatten"}, {"type": "linear", "out_features": 100_000}], (3, 32, 32))
    big_params.check_memory(2)
    message = sizes.memory_error_message(MemoryError())
    assert message.startswith("out of memory; the network needs at least 2.29 GiB of parameters")
    assert message.endswith("the parameters take most of it: try a smaller model")


def test_format_bytes():
    assert [sizes.format_bytes(n) for n in (0, 1023, 1024, 1536, 24 * GIB, 2**70, 2**90)] == [
        "0 bytes", "1023 bytes", "1 KiB", "1.5 KiB", "24 GiB", "1 ZiB", "1,024 YiB"]
    assert math.isclose(float(sizes.format_bytes(12.5 * 2**40).split()[0]), 12.5)


# ----- through the command line, memory bounded ---------------------------------------------

def test_cli_out_features_too_large_for_this_machine(tmp_path):
    config = _config(tmp_path, [{"type": "flatten"}, {"type": "linear", "out_features": 2_000_000_000},
                                {"type": "linear", "out_features": 10}])
    assert_refused(run_cli(["show", "--no-data", config], tmp_path), "c.yaml:",
                   "('linear_1', linear): the parameters need 11.4 TiB with their gradients (largest "
                   "linear_1.weight: 2000000000 x 784) but this process may address (ulimit -v) 1.5 GiB")


def test_cli_out_features_1e12_and_padding_2_pow_63(tmp_path):
    config = _config(tmp_path, [{"type": "flatten"}, {"type": "linear", "out_features": 10**12}])
    assert_refused(run_cli(["fit", config, "--run-dir", tmp_path / "run"], tmp_path),
                   "expected a positive integer <= 2147483647, received out_features=1000000000000")
    config = _config(tmp_path, [{"type": "conv2d", "out_channels": 8, "kernel": 3, "padding": 2**63},
                                {"type": "flatten"}, {"type": "linear", "out_features": 10}])
    assert_refused(run_cli(["show", "--no-data", config], tmp_path),
                   "expected an integer <= 2147483647, received padding=9223372036854775808")


def test_cli_padding_too_large_for_one_example(tmp_path):
    config = _config(tmp_path, [{"type": "conv2d", "out_channels": 8, "kernel": 3, "padding": 2**30},
                                {"type": "flatten"}, {"type": "linear", "out_features": 10}])
    assert_refused(run_cli(["show", "--no-data", config], tmp_path),
                   "('conv2d_1', conv2d): one training example needs at least",
                   "but this process may address (ulimit -v) 1.5 GiB")


def test_cli_batch_size_too_large_for_this_machine(tmp_path):
    config = _config(tmp_path, [{"type": "conv2d", "out_channels": 1024, "kernel": 3, "padding": 1},
                                {"type": "relu"}, {"type": "flatten"}, {"type": "linear", "out_features": 10}],
                     batch_size=5000)
    assert_refused(run_cli(["fit", config, "--run-dir", tmp_path / "run"], tmp_path),
                   "train.batch_size 5000: a training step needs at least 44.9 GiB",
                   "but this process may address (ulimit -v) 1.5 GiB: try a smaller train.batch_size (at most")
