"""Elementwise activations (any input shape) and softmax over features.

Every layer here keeps the least that its backward needs (usually its own output,
which the next layer holds anyway) and never writes into the ``x`` or ``dy`` it
received: another branch of the graph may share them.

``erf`` is implemented here because numpy has none and scipy is not a dependency.
"""

from __future__ import annotations

import math

import numpy as np

from .. import validate as v
from ..ops.parallel import parallel_for
from ..registry import LAYERS
from .base import Layer, expect_rank, tie_tolerance

# ----- erf --------------------------------------------------------------------------
# float32 (the training path): one rational function, no branches, about 3 ns an element.
#   erf(x) ~= x * P(x^2) / Q(x^2) on |x| <= 4 (beyond, erf(x) rounds to +-1 in float32:
#   1 - erf(4) = 1.5e-8), P of degree 4, Q of degree 6, result clipped to [-1, 1].
#   Coefficients fitted for nntrain by linearised least squares with Lawson reweighting
#   (towards the minimax relative error) against the float64 erf below, on [0, 4]: fit
#   error 3.7e-8 relative; float32 rounding brings the max abs error to 3.9e-7 (about 6
#   ulp at 1). tests/test_layers_known.py checks both paths against math.erf.
_ERF32_P = (1.128379127013136, 0.19414921694947568, 0.052049311284609566,
            0.00375448052910716, 0.00023234768887033566)
_ERF32_Q = (1.0, 0.5053924557204035, 0.11459761643077253, 0.014784620479184402,
            0.0010909697984550278, 2.2871739542312492e-05, -1.0741410628247274e-07)
_ERF32_CLAMP = 4.0

# float64 (gradient checks, where forward and backward must agree to ~1e-10): the
# piecewise rational approximations of Sun's fdlibm s_erf.c (also FreeBSD, musl, Go),
# each accurate to better than 2**-57; max abs error measured 1.1e-16. Copyright (C)
# 1993 by Sun Microsystems, Inc. All rights reserved. Developed at SunPro, a Sun
# Microsystems, Inc. business. Permission to use, copy, modify, and distribute this
# software is freely granted, provided that this notice is preserved.
_ERX = 8.45062911510467529297e-01  # erf(1) rounded to float32
_PP = (1.28379167095512558561e-01, -3.25042107247001499370e-01, -2.84817495755985104766e-02,
       -5.77027029648944159157e-03, -2.37630166566501626084e-05)
_QQ = (1.0, 3.97917223959155352819e-01, 6.50222499887672944485e-02, 5.08130628187576562776e-03,
       1.32494738004321644526e-04, -3.96022827877536812320e-06)
_PA = (-2.36211856075265944077e-03, 4.14856118683748331666e-01, -3.72207876035701323847e-01,
       3.18346619901161753674e-01, -1.10894694282396677476e-01, 3.54783043256182359371e-02,
       -2.16637559486879084300e-03)
_QA = (1.0, 1.06420880400844228286e-01, 5.40397917702171048937e-01, 7.18286544141962662868e-02,
       1.26171219808761642112e-01, 1.36370839120290507362e-02, 1.19844998467991074170e-02)
_RA = (-9.86494403484714822705e-03, -6.93858572707181764372e-01, -1.05586262253232909814e+01,
       -6.23753324503260060396e+01, -1.62396669462573470355e+02, -1.84605092906711035994e+02,
       -8.12874355063065934246e+01, -9.81432934416914548592e+00)
_SA = (1.0, 1.96512716674392571292e+01, 1.37657754143519042600e+02, 4.34565877475229228821e+02,
       6.45387271733267880336e+02, 4.29008140027567833386e+02, 1.08635005541779435134e+02,
       6.57024977031928170135e+00, -6.04244152148580987438e-02)
_RB = (-9.86494292470009928597e-03, -7.99283237680523006574e-01, -1.77579549177547519889e+01,
       -1.60636384855821916062e+02, -6.37566443368389627722e+02, -1.02509513161107724954e+03,
       -4.83519191608651397019e+02)
_SB = (1.0, 3.03380607434824582924e+01, 3.25792512996573918826e+02, 1.53672958608443695994e+03,
       3.19985821950859553908e+03, 2.55305040643316442583e+03, 4.74528541206955367215e+02,
       -2.24409524465858183362e+01)


def _poly(coefs, t, out=None):
    """coefs[0] + coefs[1]*t + ... by Horner's rule, in t's dtype (into ``out`` if given)."""
    acc = np.multiply(t, coefs[-1], out=out)
    for c in coefs[-2:0:-1]:
        acc += c
        acc *= t
    acc += coefs[0]
    return acc


def erf(x: np.ndarray) -> np.ndarray:
    """The error function erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt, elementwise.

    Computed in the dtype of ``x``: float32 by one rational function (max abs error
    3.9e-7), float64 by fdlibm's piecewise rational functions (max abs error 1.1e-16).
    """
    x = np.asarray(x)
    if x.dtype == np.float32:
        return _erf_float32(x)
    if x.dtype == np.float64:
        return _erf_float64(x)
    raise TypeError(f"erf: expected a float32 or float64 array, got {x.dtype}")


def _erf_float32(x):
    xc = np.clip(x, -_ERF32_CLAMP, _ERF32_CLAMP)
    s = xc * xc
    out = _poly(_ERF32_P, s, out=np.empty_like(s))
    out *= xc
    out /= _poly(_ERF32_Q, s, out=xc)  # xc is ours and no longer needed
    return np.clip(out, -1.0, 1.0, out=out)  # rounding could give 1 + 1 ulp


def _erf_float64(x):
    """fdlibm: |x| < 0.84375: x + x*P(x^2)/Q(x^2); |x| < 1.25: erf(1) + P(s)/Q(s), s = |x|-1;
    |x| < 6: 1 - exp(-x^2 - 0.5625 + R(1/x^2)/S(1/x^2)) / |x|; beyond: sign(x)."""
    ax = np.abs(x)
    out = np.sign(x)  # |x| >= 6 (and nan)
    small = ax < 0.84375
    t = x[small]
    z = t * t
    out[small] = t + t * (_poly(_PP, z) / _poly(_QQ, z))
    mid = (ax >= 0.84375) & (ax < 1.25)
    s = ax[mid] - 1.0
    out[mid] = np.copysign(_ERX + _poly(_PA, s) / _poly(_QA, s), x[mid])
    for lo, hi, r_coefs, s_coefs in ((1.25, 1 / 0.35, _RA, _SA), (1 / 0.35, 6.0, _RB, _SB)):
        tail = (ax >= lo) & (ax < hi)
        a = ax[tail]
        s = 1.0 / (a * a)
        # z = a with the low 32 mantissa bits cleared, so z*z is exact and
        # exp(-a*a) = exp(-z*z) * exp((z-a)*(z+a)) loses no precision
        z = (a.view(np.uint64) & np.uint64(0xFFFFFFFF00000000)).view(np.float64)  # ok: float64 inputs only
        r = np.exp(-z * z - 0.5625) * np.exp((z - a) * (z + a) + _poly(r_coefs, s) / _poly(s_coefs, s))
        out[tail] = np.copysign(1.0 - r / a, x[tail])
    return out


# ----- layers -----------------------------------------------------------------------
class _Elementwise(Layer):
    """Output shape = input shape, any rank."""

    examples = [({}, [(5,)]), ({}, [(2, 3, 3)])]

    def build(self, input_shapes, rng, dtype):
        (shape,) = input_shapes
        return tuple(shape)


@LAYERS.register("relu")
class ReLU(_Elementwise):
    """y = max(x, 0); dy/dx = [y > 0] (0 at x = 0, as in PyTorch). Keeps y."""

    def forward(self, x, training):
        y = np.maximum(x, 0)
        self._cache_y = y
        return y

    def backward(self, dy):
        # a multiply by the 0/1 mask: np.where with a random mask is much slower (branches)
        return np.multiply(dy, self._cache_y > 0, dtype=dy.dtype) if self.needs_input_grad else None

    def branch_signature(self):
        return self._cache_y > tie_tolerance(self._cache_y)


@LAYERS.register("leaky_relu")
class LeakyReLU(_Elementwise):
    """y = x if x > 0 else negative_slope * x, i.e. max(x, slope*x) for slope <= 1 (else min).

    dy/dx = 1 if x > 0 else negative_slope. Keeps x.
    """

    examples = [({"negative_slope": 0.1}, [(5,)]), ({}, [(2, 3, 3)])]

    def __init__(self, negative_slope: float = 0.01):
        self.negative_slope = v.non_negative(negative_slope, "negative_slope")

    def forward(self, x, training):
        self._cache_x = x
        y = x * self.negative_slope
        return (np.maximum if self.negative_slope <= 1 else np.minimum)(x, y, out=y)

    def backward(self, dy):
        if not self.needs_input_grad:
            return None
        slope = self.negative_slope
        g = np.multiply(self._cache_x > 0, 1.0 - slope, dtype=dy.dtype)  # 1 - slope or 0
        g += slope
        g *= dy
        return g

    def branch_signature(self):
        return self._cache_x > tie_tolerance(self._cache_x)


@LAYERS.register("elu")
class ELU(_Elementwise):
    """y = x if x > 0 else alpha * (exp(x) - 1);  dy/dx = 1 if x > 0 else y + alpha.

    alpha > 0, so y > 0 exactly when x > 0 and the output alone gives the derivative.
    """

    examples = [({"alpha": 0.5}, [(5,)]), ({}, [(2, 3, 3)])]

    def __init__(self, alpha: float = 1.0):
        self.alpha = v.positive(alpha, "alpha")

    def forward(self, x, training):
        y = np.minimum(x, 0)
        np.expm1(y, out=y)
        y *= self.alpha
        y += np.maximum(x, 0)  # exactly one of the two terms is non-zero
        self._cache_y = y
        return y

    def backward(self, dy):
        if not self.needs_input_grad:
            return None
        y = self._cache_y
        g = np.minimum(y, 0)
        g += self.alpha  # alpha exp(x) where x <= 0; alpha where x > 0, corrected next
        g += np.multiply(y > 0, 1.0 - self.alpha, dtype=y.dtype)
        g *= dy
        return g

    def branch_signature(self):
        return self._cache_y > tie_tolerance(self._cache_y)  # y > 0 exactly when x > 0


_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715


@LAYERS.register("gelu")
class GELU(_Elementwise):
    """Gaussian error linear unit (Hendrycks & Gimpel 2016), as torch.nn.GELU.

    approximate='none' (default): y = x * Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2,
    dy/dx = Phi(x) + x * phi(x), phi(x) = exp(-x^2/2) / sqrt(2 pi).
    approximate='tanh': y = x * (1 + t) / 2, t = tanh(u), u = s (x + c x^3), s = sqrt(2/pi),
    c = 0.044715, dy/dx = (1 + t)/2 + x (1 - t^2) (s + 3 s c x^2) / 2.

    A training forward computes dy/dx with y, from the values it has at hand (t, Phi, x^2),
    and keeps only that: the backward pass is then one multiply, dx = dy * dy/dx, instead
    of rebuilding the derivative from kept x and t (fewer passes over memory in all, and
    one kept array instead of two). An evaluation forward keeps x only; a backward after
    it computes dy/dx from x.
    """

    examples = [({}, [(5,)]), ({}, [(2, 3, 3)]), ({"approximate": "tanh"}, [(2, 3, 3)])]

    def __init__(self, approximate: str = "none"):
        self.approximate = v.choice(approximate, "approximate", ["none", "tanh"])
        self._cache_x = self._cache_grad = None

    def _run(self, x, with_grad: bool):
        """(y, dy/dx or None) of x, block by block (C order: flat views)."""
        y = np.empty(x.shape, x.dtype)
        g = np.empty(x.shape, x.dtype) if with_grad else None
        xf, yf = x.reshape(-1), y.reshape(-1)
        gf = g.reshape(-1) if with_grad else None
        kernel = self._tanh_block if self.approximate == "tanh" else self._erf_block

        def block(lo, hi):
            kernel(xf[lo:hi], yf[lo:hi], gf[lo:hi] if with_grad else None)

        _elementwise_blocks(xf, block)
        return y, g

    @staticmethod
    def _tanh_block(xs, ys, gs):
        u = np.multiply(xs, xs)  # x^2, then u = s (x + c x^3), then t = tanh(u)
        if gs is not None:
            np.multiply(u, _SQRT_2_OVER_PI * _GELU_CUBIC, out=gs)  # s c x^2
            np.add(gs, _SQRT_2_OVER_PI, out=u)
        else:
            u *= _SQRT_2_OVER_PI * _GELU_CUBIC
            u += _SQRT_2_OVER_PI
        u *= xs
        np.tanh(u, out=u)
        np.add(u, 1.0, out=ys)
        ys *= 0.5  # (1 + t) / 2
        if gs is not None:  # dy/dx = (1 + t)/2 + x (1 - t^2) (s + 3 s c x^2) / 2
            gs *= 1.5
            gs += 0.5 * _SQRT_2_OVER_PI
            gs *= xs
            np.multiply(u, u, out=u)
            np.subtract(1.0, u, out=u)
            gs *= u
            gs += ys
        ys *= xs

    @staticmethod
    def _erf_block(xs, ys, gs):
        np.multiply(xs, _SQRT_HALF, out=ys)
        ys[...] = erf(ys)
        ys *= 0.5
        ys += 0.5  # Phi(x)
        if gs is not None:  # dy/dx = Phi(x) + x phi(x)
            np.multiply(xs, xs, out=gs)
            gs *= -0.5
            np.exp(gs, out=gs)
            gs *= xs
            gs *= _INV_SQRT_2PI
            gs += ys
        ys *= xs

    def forward(self, x, training):
        y, self._cache_grad = self._run(x, with_grad=training)
        self._cache_x = None if training else x
        return y

    def backward(self, dy):
        if not self.needs_input_grad:
            return None
        g = self._cache_grad
        if g is None:  # the forward ran in evaluation mode
            g = self._cache_grad = self._run(self._cache_x, with_grad=True)[1]
        dx = np.empty(g.shape, g.dtype)
        gf, df, dxf = g.reshape(-1), dy.reshape(-1), dx.reshape(-1)
        _elementwise_blocks(gf, lambda lo, hi: np.multiply(df[lo:hi], gf[lo:hi], out=dxf[lo:hi]))
        return dx


ELEMENTWISE_CHUNK = 1 << 18  # elements (1 MB of float32 per array)


def _elementwise_blocks(flat: np.ndarray, fn) -> None:
    """``fn(lo, hi)`` over blocks of a flat array, on all cores when it is large (numpy's
    ufuncs run on one); elementwise, so the result does not depend on the blocks.

    Each thread's block is further cut into chunks of ``ELEMENTWISE_CHUNK``, so the several
    passes ``fn`` makes (GELU's tanh form: nine) run over data still in cache instead of
    streaming the whole block through memory each time. Chunks of 128K-512K elements
    timed best (bench/RESULTS.md): smaller ones lose the gain to per-call overhead.
    """
    def block(lo, hi):
        for start in range(lo, hi, ELEMENTWISE_CHUNK):
            fn(start, min(hi, start + ELEMENTWISE_CHUNK))

    parallel_for(flat.size, block, 4 * flat.size)


@LAYERS.register("sigmoid")
class Sigmoid(_Elementwise):
    """y = 1 / (1 + exp(-x)), computed as (1 + tanh(x/2)) / 2 (no overflow); dy/dx = y (1 - y)."""

    def forward(self, x, training):
        y = x * 0.5
        np.tanh(y, out=y)
        y += 1.0
        y *= 0.5
        self._cache_y = y
        return y

    def backward(self, dy):
        if not self.needs_input_grad:
            return None
        y = self._cache_y
        dx = 1.0 - y
        dx *= y
        dx *= dy
        return dx


@LAYERS.register("tanh")
class Tanh(_Elementwise):
    """y = tanh(x); dy/dx = 1 - y^2. Keeps y."""

    def forward(self, x, training):
        y = np.tanh(x)
        self._cache_y = y
        return y

    def backward(self, dy):
        if not self.needs_input_grad:
            return None
        y = self._cache_y
        dx = y * y
        np.subtract(1.0, dx, out=dx)
        dx *= dy
        return dx


@LAYERS.register("softmax")
class Softmax(Layer):
    """y_i = exp(x_i - max x) / sum_j exp(x_j - max x) over the features of (N, F).

    dx = y * (dy - sum_j dy_j y_j). Keeps y. For training a classifier use the
    softmax_cross_entropy loss on logits instead (fused and more accurate).
    """

    examples = [({}, [(4,)])]

    def build(self, input_shapes, rng, dtype):
        (shape,) = input_shapes
        expect_rank(shape, 1, "a flat (features)")
        return tuple(shape)

    def forward(self, x, training):
        y = x - x.max(axis=1, keepdims=True)
        np.exp(y, out=y)
        y /= y.sum(axis=1, keepdims=True)
        self._cache_y = y
        return y

    def backward(self, dy):
        if not self.needs_input_grad:
            return None
        y = self._cache_y
        dx = dy * y
        dx -= y * dx.sum(axis=1, keepdims=True)
        return dx
