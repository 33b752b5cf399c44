"""Build everything an experiment needs from its resolved config.

Shared by ``fit`` (train.py), ``eval``, ``show`` and ``gradcheck`` so that all of them
construct the data pipeline and the network the same way. Scoring is in nntrain.evaluate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


from .errors import ConfigError
from .graph import Network, node_names


@dataclass
class Experiment:
    config: dict
    data: object  # nntrain.data.Data
    normalizer: object  # nntrain.data.Normalizer
    augment: object  # nntrain.data.Pipeline
    network: Network
    loss: object

    @property
    def input_shape(self) -> tuple:
        return self.network.input_shape


def network_input_shape(config: dict, data_shape: tuple) -> tuple:
    """The data's per-sample shape after training augmentation (random_crop may shrink it)."""
    from .data import make_augmentation

    return tuple(make_augmentation(config["data"]["augment"]).output_shape(tuple(data_shape)))


def build_network(config: dict, input_shape, dtype=None) -> Network:
    """The config's network for ``input_shape``; a build error names where the layer came from."""
    try:
        return Network(config["model"], input_shape, outputs=config.get("outputs"), seed=config["seed"],
                       dtype=dtype or config["dtype"])
    except ConfigError as exc:
        raise ConfigError(_located(config, str(exc))) from None


def _located(config: dict, message: str, index: int | None = None) -> str:
    """``message`` about layer ``index`` (else the model[i] or the first layer name it
    names) prefixed with where that came from: the ``--set`` that gave an option the
    message names, else the layer's line in the file."""
    if not hasattr(config, "origin"):
        return message
    names = node_names(config["model"])
    if index is None:
        match = re.match(r"model\[(\d+)\]", message)
        cycle = re.search(r"form a cycle: ([^ ]+) ->", message)
        index = int(match.group(1)) if match else names.index(cycle.group(1)) if cycle and cycle.group(1) in names \
            else None
    if index is None:
        return message
    layer = config["model"][index]
    set_by_option = [config.origin(("model", index, k)) for k in layer
                     if re.search(rf"\b{re.escape(str(k))}\b", message)
                     and config.origin(("model", index, k)).startswith("--set")]
    where = set_by_option[0] if set_by_option else config.origin(("model", index))
    return f"{where}: {message}" if where else message


def check_output(network: Network, num_classes: int) -> None:
    """The (single) output must be (num_classes,) logits."""
    shapes = network.output_shapes()
    if len(shapes) != 1 or shapes[0] != (num_classes,):
        raise ConfigError(f"model: the network output must be ({num_classes},) logits for the "
                          f"{num_classes} classes, but it is {', '.join(map(str, shapes))} "
                          f"(last layer '{network.output_names[-1]}'); end with "
                          f"{{type: linear, out_features: {num_classes}}}")


def check_tta_padding(config: dict, data_shape: tuple) -> None:
    """eval.padding must be at most the images' larger side (a larger one shows no pixel; the
    test-time augmentation refuses it): refused now, not by the final test after hours of training."""
    ev = config["eval"]
    largest = max(data_shape[1:]) if len(data_shape) == 3 else None
    if ev["tta"] == "none" or largest is None or ev["padding"] <= largest:
        return
    where = config.origin(("eval", "padding")) if hasattr(config, "origin") else ""
    raise ConfigError(f"{where + ': ' if where else ''}eval.padding: {ev['padding']} is larger than the "
                      f"images ({'x'.join(map(str, data_shape[1:]))}) of test-time augmentation '{ev['tta']}': at most "
                      f"{largest}")


def build_experiment(config: dict, *, data_path=None, normalizer_state=None, dtype=None,
                     for_training: bool = True, data=None) -> Experiment:
    """Load the data, fit (or restore) the normalisation, build the network and loss.

    ``data`` given (with ``normalizer_state``): the data is not read, e.g. a saved
    model's description of it (``nntrain.evaluate.checkpoint_data``). Batches that cannot
    fit in this machine's memory are refused now, with the numbers: the training batch
    unless ``for_training`` is false (scoring a saved model), and the evaluation batch."""
    from .data import Normalizer, load_data, make_augmentation
    from .losses import make_loss

    data_cfg = dict(config["data"])
    if data_path is not None:
        data_cfg["path"] = str(data_path)
    if data is None:
        data = load_data(data_cfg, config["seed"])
    if normalizer_state is not None:
        normalizer = Normalizer.from_state(normalizer_state)
    else:
        normalizer = Normalizer.fit(data_cfg["normalize"], data.train.x, config["seed"])
    if for_training and config["train"]["batch_size"] > len(data.train):
        raise ConfigError(f"train.batch_size: {config['train']['batch_size']} is larger than the training "
                          f"split ({len(data.train)} examples)")
    augment = make_augmentation(data_cfg["augment"])
    network = build_network(config, augment.output_shape(data.input_shape), dtype)
    try:
        check_output(network, data.num_classes)
    except ConfigError as exc:  # named at the last layer's line
        raise ConfigError(_located(config, str(exc), len(config["model"]) - 1)) from None
    check_tta_padding(config, data.input_shape)
    # refuse batches that cannot fit in this machine's memory now, with the numbers
    if for_training:
        network.check_memory(config["train"]["batch_size"])
    network.check_memory(config["eval"]["batch_size"], training=False, option="eval.batch_size")
    n = network.data_samples()
    if n and normalizer_state is None:  # a fresh run (a restored one loads its weights)
        # the first n training images, preprocessed as the network sees them at evaluation
        network.initialize_from_data(augment.for_eval()(normalizer.apply(data.train.x[:n]), None))
    return Experiment(config, data, normalizer, augment, network, make_loss(config["loss"]))
