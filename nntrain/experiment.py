"""Build everything an experiment needs from its resolved config, and score a model.

Shared by ``fit`` (train.py), ``eval``, ``show`` and ``gradcheck`` so that all of them
construct the data pipeline and the network the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .graph import Network


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
    """The config's network for ``input_shape``; a build error names the YAML line of the layer."""
    try:
        return Network(config["model"], input_shape, outputs=config.get("outputs"), seed=config["seed"],
                       dtype=dtype or config["dtype"])
    except ConfigError as exc:
        match = re.match(r"model\[(\d+)\]", str(exc))
        origin = config.origin(("model", int(match.group(1)))) if match and hasattr(config, "origin") else ""
        if origin:
            raise ConfigError(f"{origin}: {exc}") from None
        raise


def check_output(network: Network, num_classes: int) -> None:
    """The (single) output must be (num_classes,) logits."""
    shapes = network.output_shapes()
    if len(shapes) != 1 or shapes[0] != (num_classes,):
        raise ConfigError(f"model: the network output must be ({num_classes},) logits for the "
                          f"{num_classes} classes, but it is {', '.join(map(str, shapes))} "
                          f"(last layer '{network.output_names[-1]}'); end with "
                          f"{{type: linear, out_features: {num_classes}}}")


def build_experiment(config: dict, *, data_path=None, normalizer_state=None, dtype=None) -> Experiment:
    """Load the data, fit (or restore) the normalisation, build the network and loss."""
    from .data import Normalizer, load_data, make_augmentation
    from .losses import make_loss

    data_cfg = dict(config["data"])
    if data_path is not None:
        data_cfg["path"] = str(data_path)
    data = load_data(data_cfg, config["seed"])
    if normalizer_state is not None:
        normalizer = Normalizer.from_state(normalizer_state)
    else:
        normalizer = Normalizer.fit(data_cfg["normalize"], data.train.x, config["seed"])
    if config["train"]["batch_size"] > len(data.train):
        raise ConfigError(f"train.batch_size: {config['train']['batch_size']} is larger than the training "
                          f"split ({len(data.train)} examples)")
    augment = make_augmentation(data_cfg["augment"])
    network = build_network(config, augment.output_shape(data.input_shape), dtype)
    check_output(network, data.num_classes)
    n = network.data_samples()
    if n and normalizer_state is None:  # a fresh run (a restored one loads its weights)
        # the first n training images, preprocessed as the network sees them at evaluation
        network.initialize_from_data(augment.for_eval()(normalizer.apply(data.train.x[:n]), None))
    return Experiment(config, data, normalizer, augment, network, make_loss(config["loss"]))


def predict(exp: Experiment, x_uint8: np.ndarray, *, tta: str = "none", batch_size: int = 500,
            padding: int = 4) -> np.ndarray:
    """Class probabilities (N, K) for raw images, in eval mode, with test-time augmentation.

    With ``tta: none`` the probabilities are the softmax of the logits of the
    eval-transformed (e.g. centre-cropped) images; otherwise the mean softmax over
    the views (see nntrain.data.tta).
    """
    from .data import predict_proba

    net = exp.network
    h, w = net.input_shape[-2:] if len(net.input_shape) == 3 else (None, None)
    eval_tf = exp.augment.for_eval()
    out = []
    for lo in range(0, len(x_uint8), batch_size):
        x = exp.normalizer.apply(x_uint8[lo:lo + batch_size])
        if tta == "none":
            x = eval_tf(x, None)
        out.append(predict_proba(lambda b: net.forward(b, training=False), x, tta,
                                 input_size=None if h is None else (h, w), padding=padding,
                                 batch_size=batch_size))
    return np.concatenate(out) if out else np.zeros((0, exp.data.num_classes), np.float32)


def evaluate_split(exp: Experiment, split, *, batch_size: int = 500, tta: str = "none", padding: int = 4) -> dict:
    """Loss, error and predictions of the current weights on ``split`` (eval mode).

    Without TTA the loss is the experiment's loss on the logits (what training
    minimises); with TTA it is the cross-entropy of the averaged probabilities.
    """
    net, loss = exp.network, exp.loss
    n = len(split)
    if tta != "none":
        proba = predict(exp, split.x, tta=tta, batch_size=batch_size, padding=padding)
        pred = proba.argmax(axis=1)
        p_true = proba[np.arange(n), split.y]
        loss_value = float(-np.mean(np.log(np.maximum(p_true, 1e-12), dtype=np.float64)))  # ok: N scalars, once per evaluation
        return {"loss": loss_value, "error": float(np.mean(pred != split.y)), "predictions": pred, "n": n}
    eval_tf = exp.augment.for_eval()
    preds, total_loss = [], 0.0
    for lo in range(0, n, batch_size):
        x = eval_tf(exp.normalizer.apply(split.x[lo:lo + batch_size]), None)
        y = split.y[lo:lo + batch_size]
        logits = net.forward(x, training=False)
        total_loss += loss.forward(logits, y) * len(y)
        preds.append(logits.argmax(axis=1))
    net.clear()
    pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    return {"loss": total_loss / max(n, 1), "error": float(np.mean(pred != split.y)) if n else float("nan"),
            "predictions": pred, "n": n}


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """counts[i, j] = samples of class i predicted as j."""
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
