"""Scoring: a model's predictions, loss and error on a split (with test-time augmentation),
used by the training loop's evaluations and by ``nntrain eval`` on a saved checkpoint."""

from __future__ import annotations

import numpy as np

from .errors import CheckpointError, ConfigError
from .experiment import Experiment, build_experiment
from .rundir import Checkpoint, resolve_checkpoint


def predict(exp: Experiment, x_uint8: np.ndarray, *, tta: str = "none", batch_size: int = 500,
            padding: int = 4, average: str = "probabilities") -> np.ndarray:
    """Class probabilities (N, K) for raw images, in eval mode, with test-time augmentation.

    With ``tta: none`` the probabilities are the softmax of the logits of the
    eval-transformed (e.g. centre-cropped) images; otherwise the mean softmax over
    the views, or the softmax of their mean logits (``average``; see nntrain.data.tta).
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
                                 batch_size=batch_size, average=average))
    return np.concatenate(out) if out else np.zeros((0, exp.data.num_classes), np.float32)


def evaluate_split(exp: Experiment, split, *, batch_size: int = 500, tta: str = "none", padding: int = 4,
                   average: str = "probabilities") -> dict:
    """Loss, error and predictions of the current weights on ``split`` (eval mode).

    Without TTA the loss is the experiment's loss on the logits (what training
    minimises); with TTA it is the cross-entropy of the averaged probabilities (``average``:
    of the views' probabilities, or the softmax of their mean logits).
    """
    net, loss = exp.network, exp.loss
    n = len(split)
    if tta != "none":
        proba = predict(exp, split.x, tta=tta, batch_size=batch_size, padding=padding, average=average)
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


# What each test-time augmentation shows the model, and the training augmentations that
# teach it to expect that (a model never shown mirrored digits gets worse with flip TTA).
_TTA_SHOWS = {"flip": ("mirror",), "crops": ("mirror", "shift"), "translate": ("shift",),
              "airbench": ("mirror", "shift")}
_TAUGHT_BY = {"mirror": ("hflip",), "shift": ("random_crop", "translate", "affine")}


def tta_warnings(config: dict, tta: str) -> list[str]:
    """Warnings when ``tta`` shows views that the training augmentation never produced."""
    trained = {a["type"] for a in config["data"]["augment"]}
    out = []
    for view in _TTA_SHOWS.get(tta, ()):
        if not trained & set(_TAUGHT_BY[view]):
            out.append(f"tta {tta} shows the model {'mirrored' if view == 'mirror' else 'shifted'} images, but it "
                       f"was trained without {' or '.join(_TAUGHT_BY[view])} (data.augment: "
                       f"{', '.join(sorted(trained)) or 'none'}): accuracy may drop; compare with --tta none")
    return out


DATA_DTYPES = ("uint8", "float32")  # what a data set's images are stored as (nntrain.data.Split)


def checkpoint_data(ckpt: Checkpoint):
    """The data set as a checkpoint describes it (class names, image shape and dtype) with
    empty splits: enough to rebuild the model without reading the data (export, pictures).
    None for a checkpoint written before the dtype was recorded; CheckpointError if the
    description is malformed."""
    from . import validate as v
    from .data import Data, Split

    meta = ckpt.meta
    if "data_dtype" not in meta:
        return None
    classes, shape, dtype = meta.get("classes"), meta.get("data_shape"), meta.get("data_dtype")
    try:
        if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
            raise ConfigError(f"classes: {classes!r:.100} is not a list of class names")
        if not (isinstance(shape, list) and len(shape) == 3):
            raise ConfigError(f"data_shape: {shape!r:.100} is not [C, H, W]")
        shape = [v.positive_int(d, "data_shape") for d in shape]
        v.choice(dtype, "data_dtype", DATA_DTYPES)
    except ConfigError as exc:
        raise CheckpointError(f"{ckpt.path}: not a valid nntrain checkpoint: its metadata: {exc}") from None
    empty = Split(np.empty((0, *shape), dtype), np.empty(0, np.int64))
    return Data(ckpt.config["data"]["dataset"], empty, None, None, list(classes), f"{ckpt.path} (no data read)")


def load_model(checkpoint, *, data_path=None, read_data: bool = True):
    """(Experiment with the checkpoint's weights, Checkpoint), normalisation restored; the data
    re-read, or with ``read_data=False`` only described (``checkpoint_data``) when the
    checkpoint can (older ones are read anyway)."""
    ckpt = Checkpoint(resolve_checkpoint(checkpoint))
    data = None if read_data else checkpoint_data(ckpt)
    exp = build_experiment(ckpt.config, data_path=data_path, normalizer_state=ckpt.group("norm"), for_training=False,
                           data=data)
    exp.network.load_state_dict(ckpt.network_state())
    if ckpt.meta.get("eval_weights") == "ema":
        from .averaging import make_weight_average

        ema = make_weight_average(ckpt.config["train"]["ema"], exp.network.parameters())
        ema.load_state_dict(ckpt.group("ema"))
        ema.swap()  # evaluate with the averaged weights, as training did
    return exp, ckpt


def evaluate_checkpoint(checkpoint, *, split: str = "test", tta: str | None = None, data_path=None,
                        batch_size: int | None = None, average: str | None = None) -> dict:
    """Error, accuracy, loss, per-class accuracy and confusion matrix as a JSON-able dict."""
    exp, ckpt = load_model(checkpoint, data_path=data_path)
    epoch, iteration = ckpt.position()
    data = exp.data
    part = {"test": data.test, "val": data.val, "train": data.train}[split]
    if part is None or len(part) == 0:
        raise ConfigError(f"--split {split}: this data set has no {split} split"
                          + (" (the config's data.validation is 0)" if split == "val" else ""))
    ev = ckpt.config["eval"]
    tta = tta or ev["tta"]
    average = average or ev.get("tta_average", "probabilities")
    if batch_size is not None:
        exp.network.check_memory(batch_size, training=False, option="--batch-size")
    result = evaluate_split(exp, part, batch_size=batch_size or ev["batch_size"], tta=tta, padding=ev["padding"],
                            average=average)
    k = data.num_classes
    cm = confusion_matrix(part.y, result["predictions"], k)
    per_class = cm.diagonal() / np.maximum(cm.sum(axis=1), 1)
    return {
        "checkpoint": str(ckpt.path), "split": split, "tta": tta, "tta_average": average, "n": int(result["n"]),
        "error": result["error"], "accuracy": 1.0 - result["error"], "loss": result["loss"],
        "epoch": epoch, "iteration": iteration,
        "classes": list(data.classes),
        "per_class_accuracy": {c: float(a) for c, a in zip(data.classes, per_class)},
        "confusion_matrix": cm.tolist(),
        "warnings": tta_warnings(ckpt.config, tta),
    }


def tta_text(tta: str, average: str | None) -> str:
    """``tta airbench, mean of logits``: how a test was scored (the average named only where views
    are averaged and it is not the default mean of probabilities)."""
    return f"tta {tta}{', mean of logits' if tta != 'none' and average == 'logits' else ''}"


def format_report(r: dict) -> str:
    lines = [f"{r['checkpoint']} (epoch {r['epoch']:g}, iteration {r['iteration']}) on {r['split']} "
             f"({r['n']} images, {tta_text(r['tta'], r.get('tta_average'))})",
             f"error {r['error']:.4f}   accuracy {r['accuracy']:.4f}   loss {r['loss']:.4f}", "",
             "per-class accuracy:"]
    width = max(len(c) for c in r["classes"])
    for c, a in r["per_class_accuracy"].items():
        lines.append(f"  {c:<{width}}  {a:.4f}")
    cm = r["confusion_matrix"]
    if len(cm) <= 20:
        lines += ["", "confusion matrix (rows: true class, columns: predicted):"]
        cell = max(5, max(len(str(v)) for row in cm for v in row) + 1)
        short = [c[:cell - 1] for c in r["classes"]]
        lines.append(" " * (width + 2) + "".join(f"{s:>{cell}}" for s in short))
        for c, row in zip(r["classes"], cm):
            lines.append(f"  {c:<{width}}" + "".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)
