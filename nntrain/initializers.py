"""Weight initialisers, selectable per layer in YAML.

``init: {type: gaussian, std: 0.01}`` or the short form ``init: he``. Each is called
as ``init(shape, fan_in, fan_out, rng, dtype)``; for a conv weight of shape
(Cout, Cin/groups, Kh, Kw) ``fan_in = Cin/groups*Kh*Kw`` and ``fan_out = Cout/groups*Kh*Kw``.
"""

from __future__ import annotations

import math

import numpy as np

from . import validate as v
from .errors import ConfigError
from .registry import INITIALIZERS
from .spec import Configurable, build_from_spec


class Initializer(Configurable):
    samples = 0  # > 0: computed from that many training examples (see ``from_data``)

    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        raise NotImplementedError

    def from_data(self, rows: np.ndarray, shape, dtype) -> np.ndarray:
        """The weight of ``shape`` from ``rows`` (n, fan_in): the inputs one output unit sees
        (conv: the flattened (Cin, Kh, Kw) input patches; linear: the input vectors)."""
        raise NotImplementedError(f"{type(self).__name__} does not use data")


@INITIALIZERS.register("gaussian")
class Gaussian(Initializer):
    """w ~ N(mean, std^2) (Caffe's gaussian filler)."""

    def __init__(self, std: float = 0.01, mean: float = 0.0):
        self.std = v.non_negative(std, "std")
        self.mean = v.real(mean, "mean")

    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        return (rng.standard_normal(shape) * self.std + self.mean).astype(dtype)


@INITIALIZERS.register("uniform")
class Uniform(Initializer):
    """w ~ U(low, high)."""

    def __init__(self, low: float = -0.05, high: float = 0.05):
        self.low = v.real(low, "low")
        self.high = v.real(high, "high")
        if self.high < self.low:
            raise ConfigError(f"expected low <= high, received low={low!r}, high={high!r}")

    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        return rng.uniform(self.low, self.high, shape).astype(dtype)


@INITIALIZERS.register("xavier")
class Xavier(Initializer):
    """Glorot & Bengio: U(-a, a), a = gain*sqrt(6/(fan_in+fan_out)); or normal with std gain*sqrt(2/(fan_in+fan_out))."""

    def __init__(self, gain: float = 1.0, distribution: str = "uniform"):
        self.gain = v.positive(gain, "gain")
        self.distribution = v.choice(distribution, "distribution", ["uniform", "normal"])

    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        if self.distribution == "normal":
            return (rng.standard_normal(shape) * self.gain * math.sqrt(2.0 / (fan_in + fan_out))).astype(dtype)
        a = self.gain * math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-a, a, shape).astype(dtype)


INITIALIZERS.register("glorot")(type("Glorot", (Xavier,), {"__doc__": "Alias of xavier."}))


@INITIALIZERS.register("he")
class He(Initializer):
    """He et al. 2015 for ReLU nets: N(0, gain^2*2/fan) or U(-a, a) with a = gain*sqrt(6/fan); fan = fan_in by default."""

    def __init__(self, gain: float = 1.0, mode: str = "fan_in", distribution: str = "normal"):
        self.gain = v.positive(gain, "gain")
        self.mode = v.choice(mode, "mode", ["fan_in", "fan_out"])
        self.distribution = v.choice(distribution, "distribution", ["uniform", "normal"])

    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        fan = fan_in if self.mode == "fan_in" else fan_out
        if self.distribution == "uniform":
            a = self.gain * math.sqrt(6.0 / fan)
            return rng.uniform(-a, a, shape).astype(dtype)
        return (rng.standard_normal(shape) * self.gain * math.sqrt(2.0 / fan)).astype(dtype)


INITIALIZERS.register("kaiming")(type("Kaiming", (He,), {"__doc__": "Alias of he."}))


@INITIALIZERS.register("constant")
class Constant(Initializer):
    """Every entry = value (biases use constant 0 by default)."""

    def __init__(self, value: float = 0.0):
        self.value = v.real(value, "value")

    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        return np.full(shape, self.value, dtype=dtype)


@INITIALIZERS.register("dirac")
class Dirac(Initializer):
    """Identity-preserving weight: output channel c copies input channel c at the kernel centre.

    For c < min(Cout, Cin/groups) (a linear weight: the identity matrix), times ``scale``.
    The other output channels are zero, or drawn by ``rest`` (e.g. ``{type: he}``): then
    the layer starts as a partial identity plus random features (airbench's convs).
    """

    def __init__(self, scale: float = 1.0, rest=None):
        self.scale = v.real(scale, "scale")
        self.rest = None if rest is None else make_initializer(rest, "rest")

    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        if len(shape) not in (2, 4):
            raise ConfigError(f"dirac init needs a conv or linear weight, got shape {shape}")
        w = np.zeros(shape, dtype=dtype) if self.rest is None else self.rest(shape, fan_in, fan_out, rng, dtype)
        n = min(shape[0], shape[1])
        w[:n] = 0
        if len(shape) == 2:  # linear: (out, in) identity
            w[np.arange(n), np.arange(n)] = self.scale
        else:
            w[np.arange(n), np.arange(n), shape[2] // 2, shape[3] // 2] = self.scale
        return w


@INITIALIZERS.register("pca_whitening")
class PCAWhitening(Initializer):
    """Rows that whiten the layer's input, computed from training data (airbench's first conv).

    With the second-moment matrix of the inputs a unit sees, S = (1/n) sum_i r_i r_i^T
    (conv: every (Cin, Kh, Kw) patch of the first ``samples`` training images, as the
    layer sees them; no centring, the bias can absorb a mean), and its eigenpairs
    (lambda_j, u_j) by decreasing lambda, row j of the weight is  u_j / sqrt(lambda_j + eps):
    output j is the input's coordinate on the j-th principal axis, scaled to unit
    variance. With 2 x fan_in outputs the rows are [U; -U] (both signs, so a following
    ReLU/GELU keeps all the information); with fewer than fan_in, the leading ones.
    Freeze it with ``params: {weight: {trainable: false}}``.

    The network is built before data is seen (and is rebuilt without data to load a
    checkpoint); until ``from_data`` runs the weight is drawn like ``he``.
    """

    def __init__(self, eps: float = 5e-4, samples: int = 5000):
        self.eps = v.non_negative(eps, "eps")
        self.samples = v.positive_int(samples, "samples")

    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        self._check_shape(shape)
        return He()(shape, fan_in, fan_out, rng, dtype)

    @staticmethod
    def _check_shape(shape) -> None:
        fan_in, out = int(np.prod(shape[1:])), shape[0]
        if out > fan_in and out != 2 * fan_in:
            raise ConfigError(f"pca_whitening: a layer with {fan_in} inputs per unit needs at most {fan_in} or "
                              f"exactly {2 * fan_in} outputs (+- each axis), but it has {out}")

    def from_data(self, rows, shape, dtype):
        self._check_shape(shape)
        fan_in, out = int(np.prod(shape[1:])), shape[0]
        if rows.ndim != 2 or rows.shape[1] != fan_in:
            raise ValueError(f"pca_whitening: expected rows of {fan_in} inputs, got {rows.shape}")
        second_moment = np.zeros((fan_in, fan_in))
        for lo in range(0, len(rows), 65536):
            chunk = rows[lo:lo + 65536].astype(np.float64)  # ok: one d x d eigenproblem at build time
            second_moment += chunk.T @ chunk
        second_moment /= max(len(rows), 1)
        eigenvalues, eigenvectors = np.linalg.eigh(second_moment)  # ascending
        order = np.argsort(eigenvalues)[::-1]
        scaled = eigenvectors[:, order].T / np.sqrt(np.maximum(eigenvalues[order], 0.0) + self.eps)[:, None]
        weight = np.concatenate([scaled, -scaled]) if out == 2 * fan_in else scaled[:out]
        return weight.reshape(shape).astype(dtype)


INITIALIZERS.register("identity")(type("Identity", (Dirac,), {"__doc__": "Alias of dirac."}))


def make_initializer(spec, what: str = "init") -> Initializer:
    """An Initializer from ``'he'`` or ``{'type': 'gaussian', 'std': 0.01}``."""
    if isinstance(spec, Initializer):
        return spec
    if not isinstance(spec, (str, dict)) or (isinstance(spec, dict) and "type" not in spec):
        raise ConfigError(f"expected an initializer name or {{type: ..., ...}}, received {what}={spec!r}")
    return build_from_spec(INITIALIZERS, spec, what)
