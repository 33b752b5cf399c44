"""``nntrain eval``: score a self-contained checkpoint on a split of its data set."""

from __future__ import annotations

import numpy as np

from .errors import ConfigError
from .experiment import build_experiment, confusion_matrix, evaluate_split
from .rundir import Checkpoint, resolve_checkpoint


def load_model(checkpoint, *, data_path=None):
    """(Experiment with the checkpoint's weights, Checkpoint) — data re-read, normalisation restored."""
    ckpt = Checkpoint(resolve_checkpoint(checkpoint))
    exp = build_experiment(ckpt.config, data_path=data_path, normalizer_state=ckpt.group("norm"))
    exp.network.load_state_dict(ckpt.network_state())
    if ckpt.meta.get("eval_weights") == "ema":
        from .optim import make_weight_average

        ema = make_weight_average(ckpt.config["train"]["ema"], exp.network.parameters())
        ema.load_state_dict(ckpt.group("ema"))
        ema.swap()  # evaluate with the averaged weights, as training did
    return exp, ckpt


def evaluate_checkpoint(checkpoint, *, split: str = "test", tta: str | None = None, data_path=None,
                        batch_size: int | None = None) -> dict:
    """Error, accuracy, loss, per-class accuracy and confusion matrix as a JSON-able dict."""
    exp, ckpt = load_model(checkpoint, data_path=data_path)
    data = exp.data
    part = {"test": data.test, "val": data.val, "train": data.train}[split]
    if part is None or len(part) == 0:
        raise ConfigError(f"--split {split}: this data set has no {split} split"
                          + (" (the config's data.validation is 0)" if split == "val" else ""))
    ev = ckpt.config["eval"]
    tta = tta or ev["tta"]
    result = evaluate_split(exp, part, batch_size=batch_size or ev["batch_size"], tta=tta, padding=ev["padding"])
    k = data.num_classes
    cm = confusion_matrix(part.y, result["predictions"], k)
    per_class = cm.diagonal() / np.maximum(cm.sum(axis=1), 1)
    return {
        "checkpoint": str(ckpt.path), "split": split, "tta": tta, "n": int(result["n"]),
        "error": result["error"], "accuracy": 1.0 - result["error"], "loss": result["loss"],
        "epoch": ckpt.meta.get("epoch"), "iteration": ckpt.meta.get("iteration"),
        "classes": list(data.classes),
        "per_class_accuracy": {c: float(a) for c, a in zip(data.classes, per_class)},
        "confusion_matrix": cm.tolist(),
    }


def format_report(r: dict) -> str:
    lines = [f"{r['checkpoint']} (epoch {r['epoch']:g}, iteration {r['iteration']}) on {r['split']} "
             f"({r['n']} images, tta {r['tta']})",
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
