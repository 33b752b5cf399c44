"""Training-time data augmentation, vectorised over the batch (AUGMENTATIONS registry).

``data.augment`` is a list applied in order to each normalised float32 batch
(N, C, H, W)::

    augment: [{type: hflip}, {type: random_crop, size: 32, padding: 4}]

Every augmentation is a callable ``aug(x, rng) -> new array`` that draws all its
randomness from the numpy Generator ``rng`` (the loader seeds one per batch, so a
batch is reproducible) and never writes into ``x``. One whose choice depends on which
sample it sees and when (``hflip`` with ``alternate``) sets ``uses_samples`` and is
called ``aug(x, rng, samples=SampleIds(...))`` by the loader. Per-sample choices (flip
or not, crop offsets, displacement fields) are arrays; no Python loop runs over samples
or pixels.

Padding and fill values are 0 *in normalised units*: the mean colour after
``per_channel``/``per_pixel_mean``, black after ``scale``/``none``.

``output_shape(shape)`` gives the per-sample shape an augmentation produces (only
``random_crop`` to a smaller size changes it); ``eval_transform(x)`` is what
evaluation does instead (a centre crop for such a crop, identity for the others).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import validate as v
from ..errors import ConfigError
from ..registry import AUGMENTATIONS, did_you_mean


@dataclass(frozen=True)
class SampleIds:
    """Which samples a training batch holds: their indices in the split (of ``num_samples``),
    the epoch, and the run's data seed."""

    indices: np.ndarray
    epoch: int
    seed: int
    num_samples: int


class Augmentation:
    """Base class: validate options in ``__init__``; implement ``__call__``."""

    type_name = "?"
    uses_samples = False  # True: __call__ takes samples=SampleIds (see the module docstring)
    # options added after results were recorded: left out of the resolved config while at
    # their default, so the config hashes of those results stay valid
    added_options: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, options: dict) -> "Augmentation":
        """Build from a YAML dict of options (without ``type``); unknown keys are refused."""
        sig = inspect.signature(cls.__init__)
        allowed = [p for p in sig.parameters if p != "self"]
        for key in options:
            if key not in allowed:
                raise ConfigError(f"unknown option '{key}'{did_you_mean(key, allowed)} "
                                  f"(options: {', '.join(allowed) or 'none'})")
        try:
            bound = sig.bind(None, **options)
        except TypeError as exc:
            raise ConfigError(str(exc)) from None
        bound.apply_defaults()
        aug = cls(**options)
        # lists, not tuples: the config is written back to YAML / JSON
        aug._config = {"type": cls.type_name,
                       **{k: list(val) if isinstance(val, tuple) else val
                          for k, val in list(bound.arguments.items())[1:]
                          if not (k in cls.added_options and val == sig.parameters[k].default)}}
        return aug

    def get_config(self) -> dict:
        return dict(getattr(self, "_config", {"type": self.type_name}))

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def output_shape(self, shape: tuple) -> tuple:
        """Per-sample (C, H, W) after this augmentation."""
        return tuple(shape)

    def eval_transform(self, x: np.ndarray) -> np.ndarray:
        """The deterministic counterpart used at evaluation (identity by default)."""
        return x

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={val!r}" for k, val in self.get_config().items() if k != "type")
        return f"{self.type_name}({opts})"


# ----- vectorised kernels ------------------------------------------------------------

def pad(x: np.ndarray, padding: int, mode: str = "zeros") -> np.ndarray:
    """(N, C, H, W) -> (N, C, H+2p, W+2p), zero or reflect padding (a new array)."""
    if padding == 0:
        return x
    if mode == "reflect":
        return np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), mode="reflect")
    n, c, h, w = x.shape
    out = np.zeros((n, c, h + 2 * padding, w + 2 * padding), dtype=x.dtype)
    out[:, :, padding:padding + h, padding:padding + w] = x
    return out


def crop(x: np.ndarray, top: np.ndarray, left: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """out[n] = x[n, :, top[n]:top[n]+h, left[n]:left[n]+w] for every n, as one gather."""
    h, w = size
    windows = sliding_window_view(x, (h, w), axis=(2, 3))  # (N, C, H-h+1, W-w+1, h, w), a view
    return windows[np.arange(len(x)), :, top, left]  # advanced indices apart -> (N, C, h, w)


def center_crop(x: np.ndarray, size) -> np.ndarray:
    """The centred (h, w) window of each image (offset (H-h)//2, (W-w)//2)."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    top, left = (x.shape[2] - h) // 2, (x.shape[3] - w) // 2
    if top < 0 or left < 0:
        raise ConfigError(f"cannot centre-crop {x.shape[2]}x{x.shape[3]} images to {h}x{w}")
    return x[:, :, top:top + h, left:left + w]


def bilinear_sample(x: np.ndarray, sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
    """out[n, c, i, j] = x[n, c] interpolated bilinearly at (sy[n, i, j], sx[n, i, j]).

    Coordinates are in pixels (row, column); samples outside the image count as 0.
    Integer coordinates reproduce the pixel exactly. x: (N, C, H, W); sy, sx: (N, Ho, Wo).

    The image is zero-padded (1 pixel before, 2 after) and the coordinates clipped to
    [-1, H] x [-1, W], so all four neighbours are in range without masks: one flat
    index array, four gathers.
    """
    n, c, h, w = x.shape
    ho, wo = sy.shape[1:]
    hp, wp = h + 3, w + 3
    padded = np.zeros((n, c, hp, wp), dtype=x.dtype)
    padded[:, :, 1:h + 1, 1:w + 1] = x
    flat = padded.reshape(-1)
    sy, sx = np.clip(sy, -1, h), np.clip(sx, -1, w)
    y0, x0 = np.floor(sy), np.floor(sx)
    fy, fx = (sy - y0).reshape(n, 1, -1), (sx - x0).reshape(n, 1, -1)
    index = ((y0.astype(np.intp) + 1) * wp + (x0.astype(np.intp) + 1)).reshape(n, 1, -1)
    index = index + (np.arange(n * c, dtype=np.intp) * (hp * wp)).reshape(n, c, 1)  # (N, C, Ho*Wo)
    top = flat[index]
    top *= 1 - fx
    right = flat[index + 1]
    right *= fx
    top += right
    bottom = flat[index + wp]
    bottom *= 1 - fx
    right = flat[index + (wp + 1)]
    right *= fx
    bottom += right
    top *= 1 - fy
    bottom *= fy
    top += bottom
    return top.reshape(n, c, ho, wo)


@functools.lru_cache(maxsize=16)
def gaussian_blur_matrix(size: int, sigma: float, dtype=np.float32) -> np.ndarray:
    """B (size, size) with (B @ f) = f convolved with a Gaussian of std ``sigma``.

    Taps within 4 sigma, normalised to sum 1, 'reflect' borders (d c b a | a b c d),
    as scipy.ndimage.gaussian_filter does; blurring a field along both axes is then
    B_h @ f @ B_w^T, two matrix products for a whole batch.
    """
    radius = int(4.0 * sigma + 0.5)
    taps = np.arange(-radius, radius + 1)
    g = np.exp(-0.5 * (taps / sigma) ** 2)
    g /= g.sum()
    m = np.zeros((size, size))
    rows = np.arange(size)
    for k, weight in zip(taps, g):  # one pass per tap; rows are distinct within a pass
        j = np.mod(rows + k, 2 * size)
        j = np.where(j >= size, 2 * size - 1 - j, j)
        m[rows, j] += weight
    m = m.astype(dtype)
    m.flags.writeable = False  # cached and shared
    return m


# ----- the augmentations -------------------------------------------------------------

@AUGMENTATIONS.register("hflip")
class HFlip(Augmentation):
    """Mirror each image left-right with probability p.

    ``alternate: true`` is airbench's alternating flip (Jordan 2024): each training image
    gets one coin for the whole run, from the data seed and its index, and is mirrored in
    epoch e when ``coin XOR (e odd)``, so every two consecutive epochs show it once
    mirrored and once not (rather than both ways only half the time with fresh coins).
    It needs the loader's sample indices, and ``p`` 0.5.
    """

    added_options = ("alternate",)

    def __init__(self, p: float = 0.5, alternate: bool = False):
        self.p = v.probability(p, "p", allow_one=True)
        self.alternate = v.boolean(alternate, "alternate")
        if self.alternate and self.p != 0.5:
            raise ConfigError(f"alternate: true mirrors every image in every other epoch, so p must be 0.5, "
                              f"received p={p!r}")
        self.uses_samples = self.alternate
        self._coins = {}  # (seed, num_samples) -> the per-sample coins of alternate

    def __call__(self, x, rng, samples: SampleIds | None = None):
        if self.alternate:
            if samples is None:
                raise ValueError("hflip with alternate: true needs the sample indices (samples=SampleIds(...)), "
                                 "as the training loader gives them")
            flip = self.coins(samples.seed, samples.num_samples)[samples.indices] ^ bool(samples.epoch % 2)
        else:
            flip = rng.random(len(x)) < self.p
        return np.where(flip[:, None, None, None], x[..., ::-1], x)

    def coins(self, seed: int, num_samples: int) -> np.ndarray:
        """Each sample's fixed coin (True: mirrored in even epochs), reproducible from the seed."""
        key = (seed, num_samples)
        if key not in self._coins:
            # the extra word keeps these coins independent of the loader's own streams
            self._coins = {key: np.random.default_rng([seed, 0x666C6970]).random(num_samples) < 0.5}
        return self._coins[key]


def _within_image(pixels: int, what: str, h: int, w: int) -> None:
    """A padding or shift larger than the image only adds windows without any of its pixels
    (and its padded copy grows as the square of it): refused."""
    if pixels > max(h, w):
        raise ConfigError(f"{what} {pixels} is larger than the {h}x{w} images")


@AUGMENTATIONS.register("random_crop")
class RandomCrop(Augmentation):
    """A random (h, w) window of the image padded by ``padding`` on every side.

    ``size: 32, padding: 4`` on 32x32 images: the classic CIFAR shift by up to 4
    pixels; ``size: 24`` on 32x32: a random 24x24 crop (cuda-convnet), whose
    evaluation counterpart is the centre crop. Offsets are uniform over every window
    position. pad_mode: zeros or reflect.
    """

    def __init__(self, size, padding: int = 0, pad_mode: str = "zeros"):
        self.size = v.pair(size, "size", min_value=1)
        self.padding = v.integer(padding, "padding", min_value=0, max_value=v.MAX_SIZE)
        self.pad_mode = v.choice(pad_mode, "pad_mode", ["zeros", "reflect"])

    def output_shape(self, shape):
        c, h, w = shape
        _within_image(self.padding, "random_crop: padding", h, w)
        if self.size[0] > h + 2 * self.padding or self.size[1] > w + 2 * self.padding:
            raise ConfigError(f"random_crop: size {self.size[0]}x{self.size[1]} is larger than the padded "
                              f"image {h + 2 * self.padding}x{w + 2 * self.padding} ({h}x{w} + 2*padding)")
        return (c, *self.size)

    def __call__(self, x, rng):
        self.output_shape(x.shape[1:])
        xp = pad(x, self.padding, self.pad_mode)
        top = rng.integers(0, xp.shape[2] - self.size[0] + 1, len(x))
        left = rng.integers(0, xp.shape[3] - self.size[1] + 1, len(x))
        return crop(xp, top, left, self.size)

    def eval_transform(self, x):
        h, w = self.size
        if (h, w) == x.shape[2:]:
            return x
        if h <= x.shape[2] and w <= x.shape[3]:
            return center_crop(x, self.size)
        return center_crop(pad(x, self.padding, self.pad_mode), self.size)


@AUGMENTATIONS.register("translate")
class Translate(Augmentation):
    """Shift each image by a random (dy, dx), each uniform in [-max_shift, max_shift]; zero fill."""

    def __init__(self, max_shift: int = 2):
        self.max_shift = v.integer(max_shift, "max_shift", min_value=0, max_value=v.MAX_SIZE)

    def output_shape(self, shape):
        _within_image(self.max_shift, "translate: max_shift", *shape[-2:])
        return tuple(shape)

    def __call__(self, x, rng):
        s = self.max_shift
        top = rng.integers(0, 2 * s + 1, len(x))
        left = rng.integers(0, 2 * s + 1, len(x))
        if s == 0:
            return x.copy()
        return crop(pad(x, s), top, left, x.shape[2:])


@AUGMENTATIONS.register("cutout")
class Cutout(Augmentation):
    """Zero a size x size square (DeVries & Taylor 2017) with probability p.

    Its centre is uniform over the image; the square is clipped at the borders.
    """

    def __init__(self, size: int = 8, p: float = 1.0):
        self.size = v.positive_int(size, "size")
        self.p = v.probability(p, "p", allow_one=True)

    def __call__(self, x, rng):
        n, _, h, w = x.shape
        cy = rng.integers(0, h, n)[:, None] - self.size // 2
        cx = rng.integers(0, w, n)[:, None] - self.size // 2
        apply = rng.random(n) < self.p
        rows, cols = np.arange(h), np.arange(w)
        in_y = (rows >= cy) & (rows < cy + self.size)  # (N, H)
        in_x = (cols >= cx) & (cols < cx + self.size)  # (N, W)
        mask = in_y[:, :, None] & in_x[:, None, :] & apply[:, None, None]
        return np.where(mask[:, None], x.dtype.type(0), x)


@AUGMENTATIONS.register("elastic")
class Elastic(Augmentation):
    """Elastic distortion (Simard, Steinkraus & Platt 2003).

    Per image, a displacement field (dy, dx) with entries U(-1, 1) at every pixel is
    blurred by a Gaussian of std ``sigma`` pixels and scaled by ``alpha``; the output
    pixel (i, j) is the input sampled bilinearly at (i + dy, j + dx) (zero outside).
    Simard used alpha 34, sigma 4 on MNIST. The same field moves every channel. With
    ``p`` < 1 each image is distorted with probability p (the others are left as they are).
    """

    def __init__(self, alpha: float = 34.0, sigma: float = 4.0, p: float = 1.0):
        self.alpha = v.non_negative(alpha, "alpha")
        self.sigma = v.positive(sigma, "sigma")
        self.p = v.probability(p, "p", allow_one=True)

    def __call__(self, x, rng):
        n, _, h, w = x.shape
        field = rng.random((n, 2, h, w), dtype=np.float32)
        field *= 2
        field -= 1
        field = gaussian_blur_matrix(h, self.sigma) @ field @ gaussian_blur_matrix(w, self.sigma).T
        field *= np.float32(self.alpha)
        if self.p < 1:  # a zero field samples every pixel at itself
            field *= (rng.random(n) < self.p).astype(np.float32)[:, None, None, None]
        sy = field[:, 0] + np.arange(h, dtype=np.float32)[:, None]
        sx = field[:, 1] + np.arange(w, dtype=np.float32)
        return bilinear_sample(x, sy, sx)


@AUGMENTATIONS.register("affine")
class Affine(Augmentation):
    """A random rotation by U(-degrees, degrees) and zoom by U(scale[0], scale[1]) about the centre.

    Output pixel p samples the input bilinearly at c + R(-theta) (p - c) / s (zero outside).
    """

    def __init__(self, degrees: float = 10.0, scale=(0.9, 1.1)):
        self.degrees = v.real(degrees, "degrees", min_value=0.0, max_value=180.0)
        if not isinstance(scale, (list, tuple)) or len(scale) != 2:
            raise ConfigError(f"expected a list of two numbers [low, high], received scale={scale!r}")
        lo, hi = v.real_list(scale, "scale")
        if not 0 < lo <= hi:
            raise ConfigError(f"expected 0 < low <= high, received scale={list(scale)!r}")
        self.scale = (lo, hi)

    def __call__(self, x, rng):
        n, _, h, w = x.shape
        theta = np.deg2rad(rng.uniform(-self.degrees, self.degrees, n)).astype(np.float32)
        inv_s = (1.0 / rng.uniform(self.scale[0], self.scale[1], n)).astype(np.float32)
        cos, sin = (np.cos(theta) * inv_s)[:, None, None], (np.sin(theta) * inv_s)[:, None, None]
        cy, cx = np.float32((h - 1) / 2), np.float32((w - 1) / 2)
        dy = np.arange(h, dtype=np.float32)[:, None] - cy
        dx = np.arange(w, dtype=np.float32) - cx
        sy = cy + cos * dy - sin * dx
        sx = cx + sin * dy + cos * dx
        return bilinear_sample(x, sy, sx)


# ----- pipelines ---------------------------------------------------------------------

class Pipeline:
    """The augmentations of ``data.augment``, applied in order: ``pipeline(x, rng) -> x``."""

    def __init__(self, augmentations=()):
        self.augmentations = list(augmentations)
        self.uses_samples = any(aug.uses_samples for aug in self.augmentations)

    def __call__(self, x: np.ndarray, rng: np.random.Generator, samples: SampleIds | None = None) -> np.ndarray:
        for aug in self.augmentations:
            x = aug(x, rng, samples=samples) if aug.uses_samples else aug(x, rng)
        return x

    def output_shape(self, shape) -> tuple:
        """Per-sample (C, H, W) the network receives in training; ConfigError if impossible."""
        shape = tuple(shape)
        for aug in self.augmentations:
            shape = aug.output_shape(shape)
        return shape

    def eval_transform(self, x: np.ndarray) -> np.ndarray:
        """What evaluation applies instead (centre crops where training crops smaller)."""
        for aug in self.augmentations:
            x = aug.eval_transform(x)
        return x

    def for_eval(self):
        """A callable (x, rng=None) -> eval_transform(x), to give an evaluation BatchLoader."""
        return lambda x, rng=None: self.eval_transform(x)

    def get_config(self) -> list[dict]:
        return [a.get_config() for a in self.augmentations]

    def __len__(self) -> int:
        return len(self.augmentations)

    def __repr__(self) -> str:
        return f"Pipeline({self.augmentations})"


def make_augmentation(specs, where: str = "data.augment") -> Pipeline:
    """A Pipeline from a list of ``{type: name, **options}`` (or bare names); ConfigError naming the item."""
    if specs is None:
        return Pipeline()
    if isinstance(specs, Pipeline):
        return specs
    if not isinstance(specs, (list, tuple)):
        raise ConfigError(f"{where}: expected a list like [{{type: hflip}}], received {specs!r}")
    augs = []
    for i, spec in enumerate(specs):
        if isinstance(spec, str):
            spec = {"type": spec}
        if not isinstance(spec, dict) or "type" not in spec:
            raise ConfigError(f"{where}[{i}]: expected {{type: ..., ...}} (types: "
                              f"{', '.join(AUGMENTATIONS.names())}), received {spec!r}")
        try:
            cls = AUGMENTATIONS.get(spec["type"])
            augs.append(cls.from_config({k: val for k, val in spec.items() if k != "type"}))
        except ConfigError as exc:
            raise ConfigError(f"{where}[{i}] ({spec['type']}): {exc}") from None
    return Pipeline(augs)
