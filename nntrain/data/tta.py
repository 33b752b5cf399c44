"""Test-time augmentation: average the network's predictions over several views of each image.

What is averaged (``average``): ``probabilities``, the softmax of each view (default), or
``logits``, the views' logits, then one softmax (airbench's way). The views' weights are
the same either way.

Modes:

- ``none``: the image itself (centre-cropped when larger than the network input).
- ``flip``: the image and its mirror (2 views).
- ``crops``: the 4 corner crops and the centre crop, each also mirrored (10 views, as
  in AlexNet / cuda-convnet). Images larger than the network input are cropped to the
  input size; images of the input size are first zero-padded by ``padding`` pixels,
  so the corner views are the image shifted by ``padding`` pixels.
- ``translate``: the image and its shifts by (-shift, -shift) and (+shift, +shift)
  with zero fill, each also mirrored (6 views, equal weights).
- ``airbench``: airbench94's level-2 TTA: the image and its mirror (weight 1/2 together),
  and its 1-pixel shifts up-left and down-right of the reflect-padded image, each with its
  mirror (1/4 per pair).

Inputs are the normalised float32 batches (N, C, H, W) the network sees (zero fill is
the mean colour after per-channel normalisation, as in training).
"""

from __future__ import annotations

import numpy as np

from .. import validate as v
from ..errors import ConfigError
from .augment import center_crop, pad

MODES = ("none", "flip", "crops", "translate", "airbench")
AVERAGES = ("probabilities", "logits")


def _shift(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """out[..., i, j] = x[..., i - dy, j - dx], zero where that falls outside."""
    if dy == 0 and dx == 0:
        return x
    h, w = x.shape[2:]
    p = max(abs(dy), abs(dx))
    xp = pad(x, p)
    return xp[:, :, p - dy:p - dy + h, p - dx:p - dx + w]


def views(x: np.ndarray, mode: str, input_size=None, *, padding: int = 4, shift: int = 2):
    """Yield the views of the batch ``x`` for ``mode``, each (N, C, h, w) with (h, w) = input_size."""
    v.choice(mode, "tta", MODES)
    h, w = x.shape[2:]
    ih, iw = (h, w) if input_size is None else tuple(int(s) for s in input_size)
    if ih > h or iw > w:
        raise ConfigError(f"test-time augmentation: images {h}x{w} are smaller than the network input {ih}x{iw}")
    if mode == "crops":
        src = pad(x, padding) if (ih, iw) == (h, w) else x
        H, W = src.shape[2:]
        corners = [(0, 0), (0, W - iw), (H - ih, 0), (H - ih, W - iw), ((H - ih) // 2, (W - iw) // 2)]
        for top, left in corners:
            view = src[:, :, top:top + ih, left:left + iw]
            yield view
            yield view[..., ::-1]
        return
    base = center_crop(x, (ih, iw))
    if mode == "none":
        yield base
        return
    if mode == "airbench":
        padded = pad(base, 1, "reflect")
        for view in (base, padded[:, :, :ih, :iw], padded[:, :, 2:2 + ih, 2:2 + iw]):
            yield view
            yield view[..., ::-1]
        return
    shifts = [(0, 0)] if mode == "flip" else [(0, 0), (-shift, -shift), (shift, shift)]
    for dy, dx in shifts:
        view = _shift(base, dy, dx)
        yield view
        yield view[..., ::-1]


# per-view weights where they are not equal (normalised by their sum)
_WEIGHTS = {"airbench": (0.25, 0.25, 0.125, 0.125, 0.125, 0.125)}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in the logits' float dtype (max subtracted for stability)."""
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def predict_proba(forward, x: np.ndarray, mode: str = "none", *, input_size=None, padding: int = 4,
                  shift: int = 2, batch_size: int = 256, average: str = "probabilities") -> np.ndarray:
    """Class probabilities (N, K) float32: the (weighted) mean softmax of ``forward`` over the
    views of ``mode``, or with ``average="logits"`` the softmax of the mean logits.

    ``forward(batch) -> logits`` takes (B, C, h, w) float32 and returns (B, K).
    ``input_size`` (h, w) is the network input (default: the images' size). The batch
    is processed ``batch_size`` images at a time, all views of a chunk in turn.
    """
    v.choice(mode, "tta", MODES)
    v.choice(average, "tta_average", AVERAGES)
    largest = max(x.shape[2:]) if x.ndim == 4 else v.MAX_SIZE  # a larger padding or shift shows no pixel
    padding = v.integer(padding, "padding", min_value=0, max_value=largest)
    shift = v.integer(shift, "shift", min_value=0, max_value=largest)
    batch_size = v.positive_int(batch_size, "batch_size")
    out = None
    for lo in range(0, len(x), batch_size):
        chunk = x[lo:lo + batch_size]
        total, count, weights = None, 0, _WEIGHTS.get(mode)
        for view in views(chunk, mode, input_size, padding=padding, shift=shift):
            p = np.asarray(forward(np.ascontiguousarray(view, dtype=np.float32)), dtype=np.float32)
            if average == "probabilities":
                p = softmax(p)
            elif total is None:
                p = p.copy()  # summed into below: not the network's own buffer
            if weights:
                p *= np.float32(weights[count])
            total = p if total is None else total + p
            count += 1
        total *= np.float32(1.0 / (sum(weights) if weights else count))
        if average == "logits":
            total = softmax(total)
        if out is None:
            out = np.empty((len(x), total.shape[1]), dtype=np.float32)
        out[lo:lo + len(chunk)] = total
    return np.zeros((0, 0), np.float32) if out is None else out
