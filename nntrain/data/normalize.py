"""Input normalisation, fitted on the training split and applied identically at evaluation.

Kinds (``data.normalize``; a name, or ``{type: zca, epsilon: 0.01, samples: 10000}``):

- ``per_channel``: (x - mean_c) / std_c, mean and std of each channel over every
  training pixel (a channel with std 0 is only centred).
- ``per_pixel_mean``: x - mean_image (Caffe's mean file): centred, not scaled.
- ``scale``: x / 255.
- ``zca``: ZCA whitening. On u = x/255 flattened to D = C*H*W values, with mean m and
  covariance S = U diag(l) U^T estimated from ``samples`` training images (a fixed
  random subset): z = (u - m) U diag(1/sqrt(l + epsilon)) U^T. The output looks like
  an image (edges enhanced); ``epsilon`` (in units of the variance of u) limits how
  much low-variance directions are amplified.
- ``pca``: PCA whitening, z = (u - m) U diag(1/sqrt(l + epsilon)) with the components
  in decreasing order of variance; all D dimensions are kept and laid out again as
  (C, H, W), which makes sense for fully connected networks only.
- ``none``: the raw values as float32 (0..255 for uint8 images).

``apply`` always returns a new float32 array (N, C, H, W); the arithmetic is float32
(scale and shift precomputed, so per_channel is one multiply and one in-place add).
``state()`` / ``from_state()`` carry a fitted normaliser in a checkpoint (plain arrays,
the kind as a 0-d unicode array: no pickle).
"""

from __future__ import annotations

import math

import numpy as np

from .. import validate as v
from ..errors import CheckpointError, ConfigError
from ..registry import did_you_mean
from ..sizes import format_bytes, memory_limit

KINDS = ("per_channel", "per_pixel_mean", "scale", "zca", "pca", "none")
_OPTIONS = {"zca": {"epsilon": 1e-2, "samples": 10000}, "pca": {"epsilon": 1e-2, "samples": 10000}}
NORMALIZE_STREAM = 0x40A3  # fitting subsample: default_rng([seed, NORMALIZE_STREAM])
_CHUNK = 2048  # ok: images per chunk when summing statistics in float64 (once at setup, not per batch)


def normalize_spec(spec, where: str = "data.normalize") -> dict:
    """The canonical ``{type: kind, **options}`` of a normalisation setting; ConfigError if invalid."""
    if isinstance(spec, str) or spec is None:
        spec = {"type": "none" if spec is None else spec}
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"{where}: expected one of {', '.join(KINDS)} or {{type: zca, epsilon: ...}}, "
                          f"received {spec!r}")
    kind = spec["type"]
    if kind not in KINDS:
        raise ConfigError(f"{where}: expected one of {', '.join(KINDS)}, received {kind!r}{did_you_mean(kind, KINDS)}")
    allowed = _OPTIONS.get(kind, {})
    out = {"type": kind, **allowed}
    for key, value in spec.items():
        if key == "type":
            continue
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown option for {kind}{did_you_mean(key, allowed)} "
                              f"(options: {', '.join(allowed) or 'none'})")
        if key == "epsilon":
            out[key] = v.real(value, f"{where}.epsilon", min_value=0.0, min_open=True)
        else:
            out[key] = v.positive_int(value, f"{where}.{key}")
    return out


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (float64, two passes over chunks: exact and memory-bounded)."""
    n, c = x.shape[:2]
    count = n * x.shape[2] * x.shape[3]
    total = np.zeros(c)
    for i in range(0, n, _CHUNK):
        total += x[i:i + _CHUNK].sum(axis=(0, 2, 3), dtype=np.float64)
    mean = total / count
    sq = np.zeros(c)
    for i in range(0, n, _CHUNK):
        d = x[i:i + _CHUNK].astype(np.float64) - mean[:, None, None]
        sq += np.einsum("nchw,nchw->c", d, d, optimize=True)
    return mean, np.sqrt(sq / count)


def _mean_image(x: np.ndarray) -> np.ndarray:
    total = np.zeros(x.shape[1:])
    for i in range(0, len(x), _CHUNK):
        total += x[i:i + _CHUNK].sum(axis=0, dtype=np.float64)
    return total / len(x)


def _whitening(x: np.ndarray, kind: str, epsilon: float, samples: int, seed: int):
    """(shift, matrix): z = (x_flat + shift) @ matrix, in pixel units (the 1/255 folded in)."""
    n, d = len(x), math.prod(x.shape[1:])
    need = 8 * (min(n, samples) * d + 3 * d * d)  # float64: the samples, then covariance, eigenvectors, matrix
    limit, who = memory_limit()
    if need > limit:
        raise ConfigError(f"data.normalize: {kind} on {tuple(x.shape[1:])} images needs {d:,} x {d:,} matrices, "
                          f"about {format_bytes(need)}, but {who} {format_bytes(limit)}: use per_channel")
    idx = np.arange(n) if samples >= n else np.sort(
        np.random.default_rng([seed, NORMALIZE_STREAM]).choice(n, samples, replace=False))
    u = x[idx].reshape(len(idx), -1).astype(np.float64) * (1.0 / 255.0)
    mean = u.mean(axis=0)
    u -= mean
    cov = (u.T @ u) / len(u)
    lam, vecs = np.linalg.eigh(cov)  # ascending
    lam, vecs = np.clip(lam[::-1], 0.0, None), vecs[:, ::-1]
    w = vecs / np.sqrt(lam + epsilon)
    if kind == "zca":
        w = w @ vecs.T
    return (-255.0 * mean).astype(np.float32), (w * (1.0 / 255.0)).astype(np.float32)


class Normalizer:
    """A fitted normalisation: ``apply(x)`` maps (N, C, H, W) images to float32.

    Element-wise kinds keep ``scale`` and/or ``shift`` (broadcastable float32 arrays,
    out = x * scale + shift); whitening keeps ``shift`` (D,) and ``matrix`` (D, D),
    out = (x_flat + shift) @ matrix.
    """

    def __init__(self, kind: str, shape, *, scale=None, shift=None, matrix=None):
        self.kind = v.choice(kind, "normalize", KINDS)
        self.shape = tuple(int(s) for s in shape)
        self.scale = None if scale is None else np.asarray(scale, dtype=np.float32)
        self.shift = None if shift is None else np.asarray(shift, dtype=np.float32)
        self.matrix = None if matrix is None else np.asarray(matrix, dtype=np.float32)

    @classmethod
    def fit(cls, spec, x: np.ndarray, seed: int = 0) -> "Normalizer":
        """Fit ``spec`` (a kind name or dict, see ``normalize_spec``) on training images ``x``."""
        spec = normalize_spec(spec)
        kind, shape = spec["type"], x.shape[1:]
        if len(x) == 0:
            raise ConfigError("cannot fit a normalisation on an empty training split")
        if kind == "none":
            return cls(kind, shape)
        if kind == "scale":
            return cls(kind, shape, scale=np.float32(1.0 / 255.0))
        if kind == "per_channel":
            mean, std = _channel_stats(x)
            inv = np.where(std > 1e-8, 1.0 / np.maximum(std, 1e-8), 1.0)
            return cls(kind, shape, scale=inv[:, None, None], shift=(-mean * inv)[:, None, None])
        if kind == "per_pixel_mean":
            return cls(kind, shape, shift=-_mean_image(x))
        shift, matrix = _whitening(x, kind, spec["epsilon"], spec["samples"], seed)
        return cls(kind, shape, shift=shift, matrix=matrix)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """A new float32 (N, C, H, W) array; ``x`` (uint8 or float) is not modified."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.shape:
            raise ConfigError(f"normalisation was fitted on images of shape {self.shape} (C, H, W), "
                              f"received a batch of shape {x.shape}")
        if self.matrix is not None:
            flat = np.add(x.reshape(len(x), -1), self.shift, dtype=np.float32)
            return (flat @ self.matrix).reshape(x.shape)
        if self.scale is None and self.shift is None:
            return np.array(x, dtype=np.float32)  # always a copy: callers may modify it
        if self.scale is None:
            return np.add(x, self.shift, dtype=np.float32)
        out = np.multiply(x, self.scale, dtype=np.float32)
        if self.shift is not None:
            out += self.shift
        return out

    __call__ = apply

    def state(self) -> dict[str, np.ndarray]:
        """Plain arrays describing this normaliser (for an npz checkpoint)."""
        state = {"kind": np.array(self.kind), "shape": np.array(self.shape, dtype=np.int64)}
        for key in ("scale", "shift", "matrix"):
            if getattr(self, key) is not None:
                state[key] = getattr(self, key)
        return state

    @classmethod
    def from_state(cls, state: dict) -> "Normalizer":
        """Rebuild the normaliser ``state()`` described; CheckpointError if malformed."""
        try:
            kind = str(np.asarray(state["kind"]).item())
            shape = tuple(int(s) for s in np.asarray(state["shape"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"normalisation state is malformed ({exc!r})") from None
        if kind not in KINDS:
            raise CheckpointError(f"normalisation state has unknown kind {kind!r}")
        needs = {"none": (), "scale": ("scale",), "per_channel": ("scale", "shift"),
                 "per_pixel_mean": ("shift",), "zca": ("shift", "matrix"), "pca": ("shift", "matrix")}[kind]
        missing = [k for k in needs if k not in state]
        if missing:
            raise CheckpointError(f"normalisation state ({kind}) lacks {', '.join(missing)}")
        for key in needs:
            _check_state_array(key, np.asarray(state[key]), shape)
        return cls(kind, shape, **{k: state[k] for k in needs})

    def __repr__(self) -> str:
        return f"Normalizer({self.kind}, shape={self.shape})"


def _check_state_array(key: str, array: np.ndarray, shape: tuple) -> None:
    """A saved scale/shift must broadcast to the image shape, a whitening matrix be (D, D);
    all finite numbers (CheckpointError otherwise: a malformed checkpoint)."""
    d = int(np.prod(shape))
    if array.dtype.kind not in "iuf" or not np.isfinite(array).all():
        raise CheckpointError(f"normalisation state: {key} holds {array.dtype} values that are not finite numbers")
    if key == "matrix":
        fits = array.shape == (d, d)
    elif array.shape == (d,):  # the whitening shift, on flattened images
        fits = True
    else:
        try:
            fits = np.broadcast_shapes(array.shape, shape) == tuple(shape)
        except ValueError:
            fits = False
    if not fits:
        raise CheckpointError(f"normalisation state: {key} has shape {array.shape}, which does not fit images "
                              f"of shape {tuple(shape)}")
