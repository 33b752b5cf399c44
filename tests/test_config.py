"""Experiment files: inheritance, overrides, validation messages with file, line and key."""

import copy
import re

import pytest

from nntrain.config import config_hash, deep_merge, load_config
from nntrain.errors import ConfigError

from .conftest import TINY, write_yaml


def test_defaults_filled_and_name_from_file(tmp_path):
    cfg = copy.deepcopy(TINY)
    del cfg["name"]
    path = write_yaml(tmp_path / "my_exp.yaml", cfg)
    resolved = load_config(path)
    assert resolved["name"] == "my_exp"
    assert resolved["train"]["shuffle"] is True
    assert resolved["eval"]["tta"] == "none"
    assert resolved["loss"] == {"type": "softmax_cross_entropy"}


def test_base_inheritance_deep_merges_and_later_wins(tmp_path):
    write_yaml(tmp_path / "base.yaml", TINY)
    child = write_yaml(tmp_path / "child.yaml", "base: base.yaml\noptimizer: {lr: 0.2}\ntrain: {epochs: 1}\n")
    cfg = load_config(child)
    assert cfg["optimizer"] == {"type": "sgd", "lr": 0.2, "momentum": 0.9, "weight_decay": 0.001}
    assert cfg["train"]["epochs"] == 1 and cfg["train"]["batch_size"] == 32
    assert cfg["model"] == TINY["model"]


def test_circular_base_is_an_error(tmp_path):
    write_yaml(tmp_path / "a.yaml", "base: b.yaml\n")
    write_yaml(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "a.yaml")


def test_overrides_are_typed_and_reach_lists(tiny_config):
    cfg = load_config(tiny_config, ["optimizer.lr=0.01", "train.epochs=1", "model.0.out_channels=6",
                                    "data.augment=[]"])
    assert cfg["optimizer"]["lr"] == 0.01
    assert cfg["train"]["epochs"] == 1
    assert cfg["model"][0]["out_channels"] == 6
    assert cfg["data"]["augment"] == []


def test_override_by_layer_name(tmp_path):
    cfg = copy.deepcopy(TINY)
    cfg["model"][0]["name"] = "conv1"
    cfg = load_config(write_yaml(tmp_path / "x.yaml", cfg), ["model.conv1.out_channels=7"])
    assert cfg["model"][0]["out_channels"] == 7


@pytest.mark.parametrize("override,pattern", [
    ("optimizer.lr=0", r"optimizer.*lr=0"),
    ("optimizer.lr=-1", r"lr"),
    ("optimizer.momentum=1", r"momentum=1"),
    ("optimizer.momentum=-0.1", r"momentum"),
    ("train.batch_size=0", r"batch_size=0"),
    ("train.epochs=abc", r"epochs='abc'"),
    ("optimizer.momentm=0.5", r"did you mean 'momentum'"),
    ("optimizer.type=sgdd", r"did you mean 'sgd'.*known:"),
    ("schedule.type=cosin", r"did you mean 'cosine'"),
    ("loss.type=softmax", r"known:"),
    ("model.1.type=relux", r"did you mean 'relu'"),
    ("train.epoch=3", r"did you mean 'epochs'"),
    ("trian.epochs=3", r"did you mean 'train'"),
    ("data.normalise=scale", r"did you mean 'normalize'"),
    ("train.early_stopping={monitor: val_eror}", r"val_eror"),
    ("model.0.kernel=0", r"kernel"),
    ("nokey", r"KEY=VALUE"),
])
def test_bad_values_give_one_clear_message(tiny_config, override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(tiny_config, [override])


def test_unknown_key_names_file_and_line(tmp_path):
    path = write_yaml(tmp_path / "x.yaml", "name: x\nmodel: [{type: flatten}, {type: linear, out_features: 10}]\n"
                                            "optimizer:\n  type: sgd\n  lr: 0.1\n  momentm: 0.9\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert f"{path}:" in message and "momentm" in message and "did you mean 'momentum'" in message


def test_unknown_train_key_points_at_its_line(tmp_path):
    path = write_yaml(tmp_path / "x.yaml", "model: [{type: flatten}, {type: linear, out_features: 10}]\n"
                                            "train:\n  epochs: 2\n  batchsize: 10\n")
    with pytest.raises(ConfigError, match=rf"{path}:4: train.batchsize: unknown key; did you mean 'batch_size'"):
        load_config(path)


def test_yaml_syntax_error_names_line(tmp_path):
    path = write_yaml(tmp_path / "x.yaml", "name: x\nmodel: [\n  {type: relu\n")
    with pytest.raises(ConfigError, match=rf"{path}:\d+: YAML syntax error"):
        load_config(path)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/x.yaml")


def test_early_stopping_on_val_needs_validation(tiny_config):
    with pytest.raises(ConfigError, match="needs a validation split"):
        load_config(tiny_config, ["data.validation=0", "train.early_stopping={monitor: val_error}"])


def test_config_hash_is_order_independent():
    a = {"x": 1, "y": {"a": 1, "b": 2}}
    b = {"y": {"b": 2, "a": 1}, "x": 1}
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(deep_merge(a, {"x": 2}))


@pytest.mark.parametrize("override,message", [
    ("train.epochs=0", r"train\.epochs: expected a number > 0\.0, received epochs=0"),
    ("train.max_iterations=0", r"train\.max_iterations: expected a positive integer, received max_iterations=0"),
    ("train.eval_every=-1", r"train\.eval_every: expected an integer >= 0, received eval_every=-1"),
    ("train.shuffle=1", r"train\.shuffle: expected true or false, received shuffle=1"),
    ("train.monitor=acc", r"train\.monitor: .*received monitor='acc'"),
    ("train.divergence.lr_factor=1", r"train\.divergence\.lr_factor: expected a number < 1\.0, received lr_factor=1"),
    ("train.divergence.action=retry", r"train\.divergence\.action: .*received action='retry'"),
    ("train.divergence={explode: 2}", r"train\.divergence\.explode: unknown key; did you mean 'explode_factor'"),
    ("train.divergence=null", r"train\.divergence: expected a mapping, received None"),
    ("train.early_stopping={mode: up}", r"train\.early_stopping\.mode: .*received mode='up'"),
    ("train.ema={decay: 1}", r"train\.ema\.decay: expected a number < 1\.0, received decay=1"),
    ("train.lookahead={start_epoch: -1}", r"train\.lookahead\.start_epoch: expected a number >= 0\.0"),
    ("train.lookahead={k: 0}", r"train\.lookahead: .*k=0"),
    ("eval.tta=flips", r"eval\.tta: .*received tta='flips'"),
    ("eval.padding=-1", r"eval\.padding: expected an integer >= 0, received padding=-1"),
    ("eval.tta_average=mean", r"eval\.tta_average: .*received tta_average='mean'"),
])
def test_train_and_eval_tables_check_every_key(tiny_config, override, message):
    """The train / eval tables: each key's check and message (the option named, as --set gave it)."""
    with pytest.raises(ConfigError, match=rf"^--set {re.escape(override)}: {message}"):
        load_config(tiny_config, [override])


def test_train_sub_sections_get_their_defaults(tiny_config):
    cfg = load_config(tiny_config, ["train.early_stopping={patience: 2}", "train.ema={}",
                                    "train.divergence={action: stop}", "train.lookahead={k: 3}"])
    t = cfg["train"]
    assert t["early_stopping"] == {"monitor": "val_error", "mode": None, "patience": 2, "min_delta": 0.0,
                                   "restore_best": True}
    assert t["ema"] == {"decay": 0.999, "every": 1}
    assert t["divergence"] == {"action": "stop", "lr_factor": 0.5, "max_retries": 3, "explode_factor": 1000.0}
    assert t["lookahead"] == {"k": 3, "alpha": 0.5, "decay": None, "power": 0.0, "start_epoch": 0.0}
    assert "lookahead" not in load_config(tiny_config, ["train.lookahead=null"])["train"]


def test_eval_tta_average_is_left_out_at_its_default(tiny_config):
    """A new key at its default leaves the resolved config, and so every recorded hash, as it was."""
    plain = load_config(tiny_config)
    assert "tta_average" not in plain["eval"]
    assert config_hash(load_config(tiny_config, ["eval.tta_average=probabilities"])) == config_hash(plain)
    assert load_config(tiny_config, ["eval.tta_average=logits"])["eval"]["tta_average"] == "logits"
