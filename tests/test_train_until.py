"""params.NAME.train_until_epoch: a parameter trained for the first epochs only, then frozen
(airbench's whitening bias), also across an interruption and resume."""

import numpy as np
import pytest

from nntrain.config import load_config
from nntrain.errors import ConfigError
from nntrain.experiment import build_experiment
from nntrain.graph import Network
from nntrain.hooks import Hook
from nntrain.rundir import Checkpoint
from nntrain.train import Trainer

# the tiny experiment's first conv: its bias learns for 1.5 epochs (15 of its 10-step epochs' steps)
UNTIL = ["model.conv2d_1.params={bias: {decay_mult: 1, train_until_epoch: 1.5}}"]


class Record(Hook):
    """Copies of a parameter after every step."""

    def __init__(self, name):
        self.name, self.values = name, []

    def on_step_end(self, trainer, step):
        self.values.append(dict(trainer.state.network.named_parameters())[self.name].value.copy())


def _trainer(config_path, run_dir, overrides=(), **kwargs):
    return Trainer(build_experiment(load_config(config_path, [*UNTIL, *overrides])), run_dir, quiet=True, **kwargs)


def test_the_parameter_learns_until_its_epoch_then_stays(tiny_config, tmp_path):
    bias, weight = Record("conv2d_1.bias"), Record("conv2d_1.weight")
    trainer = _trainer(tiny_config, tmp_path / "run", hooks=[bias, weight])
    trainer.run()
    assert len(bias.values) == 30
    moved = [not np.array_equal(a, b) for a, b in zip(bias.values, bias.values[1:])]
    assert all(moved[:14]) and not any(moved[14:])  # steps 2..15 move it, 16..30 do not
    assert all(not np.array_equal(a, b) for a, b in zip(weight.values[14:], weight.values[15:]))  # the rest learns
    assert not dict(trainer.state.network.named_parameters())["conv2d_1.bias"].trainable


def test_resumed_after_the_freeze_equals_uninterrupted(tiny_config, tmp_path):
    _trainer(tiny_config, tmp_path / "full").run()
    _trainer(tiny_config, tmp_path / "part", stop_at_iteration=17).run()
    last = Checkpoint(tmp_path / "part" / "checkpoints" / "last.npz")
    exp = build_experiment(last.config, normalizer_state=last.group("norm"))
    Trainer(exp, tmp_path / "part", quiet=True, resume=True).run()
    a = Checkpoint(tmp_path / "full" / "checkpoints" / "last.npz").arrays
    b = Checkpoint(tmp_path / "part" / "checkpoints" / "last.npz").arrays
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("options, message", [
    ({"train_until_epoch": -1}, "train_until_epoch"),
    ({"train_until_epoch": "soon"}, "train_until_epoch"),
    ({"train_until_epoch": 2, "trainable": False}, "not trainable"),
])
def test_bad_values_are_one_config_error(options, message):
    spec = [{"type": "linear", "out_features": 3, "params": {"bias": options}}]
    with pytest.raises(ConfigError, match=message):
        Network(spec, input_shape=(4,))
