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
    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        raise NotImplementedError


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
    """Identity-preserving conv weight: output channel c copies input channel c (c < min(Cout, Cin/groups*groups)) at the kernel centre."""

    def __init__(self, scale: float = 1.0):
        self.scale = v.real(scale, "scale")

    def __call__(self, shape, fan_in, fan_out, rng, dtype):
        w = np.zeros(shape, dtype=dtype)
        if len(shape) == 2:  # linear: (out, in) identity
            n = min(shape)
            w[np.arange(n), np.arange(n)] = self.scale
            return w
        if len(shape) != 4:
            raise ConfigError(f"dirac init needs a conv or linear weight, got shape {shape}")
        cout, cin_g = shape[0], shape[1]
        kh, kw = shape[2] // 2, shape[3] // 2
        n = min(cout, cin_g)
        w[np.arange(n), np.arange(n), kh, kw] = self.scale
        return w


INITIALIZERS.register("identity")(type("Identity", (Dirac,), {"__doc__": "Alias of dirac."}))


def make_initializer(spec, what: str = "init") -> Initializer:
    """An Initializer from ``'he'`` or ``{'type': 'gaussian', 'std': 0.01}``."""
    if isinstance(spec, Initializer):
        return spec
    if not isinstance(spec, (str, dict)) or (isinstance(spec, dict) and "type" not in spec):
        raise ConfigError(f"expected an initializer name or {{type: ..., ...}}, received {what}={spec!r}")
    return build_from_spec(INITIALIZERS, spec, what)
