"""Sliding windows over channel-major images: output sizes, padding, im2col, col2im.

Per spatial axis: input size H, kernel K, stride S, padding P (added on both sides),
dilation D. Output position o reads padded rows ``o*S + i*D`` for ``i = 0..K-1``, i.e.
input rows ``o*S - P + i*D``.

``im2col`` turns x (C, N, H, W) into

    cols[(c*Kh + i)*Kw + j, (n*Ho + oh)*Wo + ow] = xpad[c, n, oh*Sh + i*Dh, ow*Sw + j*Dw]

so ``W.reshape(Cout, C*Kh*Kw) @ cols`` is (Cout, N*Ho*Wo), which *is* the next
activation (Cout, N, Ho, Wo). ``col2im`` is its adjoint: it adds every entry of a
cols-shaped array back onto the input position it was read from.

Loops here run over the Kh*Kw kernel offsets only; each step is one strided numpy
operation over all channels, samples and pixels. The copies and additions are split
over blocks of samples on all cores (``parallel_for``).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .parallel import parallel_for


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """floor((H + 2P - D(K-1) - 1) / S) + 1; <= 0 when the kernel does not fit (callers report it)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def pool_output_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """PyTorch's rule: floor (or ceil) of (H + 2P - K) / S, plus 1.

    In ceil mode a last, partial window is kept only if it starts inside the input or
    the left padding (``(Ho-1)*S < H + P``); otherwise it is dropped.
    """
    span = size + 2 * padding - kernel
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def scratch(buf: np.ndarray | None, shape: tuple, dtype) -> np.ndarray:
    """``buf`` if it already has this shape and dtype, else a new uninitialised array.

    Lets a layer reuse its work arrays from one batch to the next (the contents are
    garbage: the caller overwrites every entry).
    """
    if buf is not None and buf.shape == tuple(shape) and buf.dtype == dtype:
        return buf
    return np.empty(shape, dtype)


def pad(x: np.ndarray, pads: tuple, fill: float = 0.0, out: np.ndarray | None = None) -> np.ndarray:
    """x (C, N, H, W) surrounded by ``fill``: pads = (top, bottom, left, right).

    Returns ``x`` itself when every pad is 0. ``out`` is reused when it has the right
    shape; the border is rewritten every call (it is small next to the interior).
    """
    top, bottom, left, right = pads
    if not (top or bottom or left or right):
        return x
    c, n, h, w = x.shape
    out = scratch(out, (c, n, h + top + bottom, w + left + right), x.dtype)

    def block(lo, hi):
        o = out[:, lo:hi]
        o[:, :, :top] = fill
        o[:, :, top + h:] = fill
        o[:, :, top:top + h, :left] = fill
        o[:, :, top:top + h, left + w:] = fill
        o[:, :, top:top + h, left:left + w] = x[:, lo:hi]

    parallel_for(n, block, out.size)
    return out


def unpad(xp: np.ndarray, pads: tuple, size: tuple) -> np.ndarray:
    """The contiguous (C, N, H, W) interior of a padded array (``xp`` itself if no padding)."""
    top, _, left, _ = pads
    if xp.shape[2:] == tuple(size):
        return xp
    interior = xp[:, :, top:top + size[0], left:left + size[1]]
    out = np.empty(interior.shape, xp.dtype)
    parallel_for(out.shape[1], lambda lo, hi: np.copyto(out[:, lo:hi], interior[:, lo:hi]), out.size)
    return out


def window(xp: np.ndarray, i: int, j: int, out_hw: tuple, stride: tuple, dilation: tuple = (1, 1)) -> np.ndarray:
    """The (C, N, Ho, Wo) view ``xp[c, n, oh*Sh + i*Dh, ow*Sw + j*Dw]``: kernel offset (i, j) of every window."""
    (ho, wo), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return xp[:, :, i * dh: i * dh + (ho - 1) * sh + 1: sh, j * dw: j * dw + (wo - 1) * sw + 1: sw]


def windows(xp: np.ndarray, kernel: tuple, out_hw: tuple, stride: tuple, dilation: tuple) -> np.ndarray:
    """Read-only (C, Kh, Kw, N, Ho, Wo) view of every window of the padded ``xp`` (no copy)."""
    c, n = xp.shape[:2]
    (kh, kw), (ho, wo), (sh, sw), (dh, dw) = kernel, out_hw, stride, dilation
    s_c, s_n, s_h, s_w = xp.strides
    return as_strided(xp, shape=(c, kh, kw, n, ho, wo),
                      strides=(s_c, s_h * dh, s_w * dw, s_n, s_h * sh, s_w * sw), writeable=False)


def im2col(xp: np.ndarray, kernel: tuple, out_hw: tuple, stride: tuple, dilation: tuple,
           out: np.ndarray | None = None) -> np.ndarray:
    """Padded xp (C, N, Hp, Wp) -> cols (C*Kh*Kw, N*Ho*Wo); one strided copy, into ``out`` if it fits."""
    c, n = xp.shape[:2]
    (kh, kw), (ho, wo) = kernel, out_hw
    cols = scratch(out, (c * kh * kw, n * ho * wo), xp.dtype)
    c6, win = cols.reshape(c, kh, kw, n, ho, wo), windows(xp, kernel, out_hw, stride, dilation)
    parallel_for(n, lambda lo, hi: np.copyto(c6[:, :, :, lo:hi], win[:, :, :, lo:hi]), cols.size)
    return cols


def col2im(dcols: np.ndarray, x_shape: tuple, kernel: tuple, out_hw: tuple, stride: tuple,
           padding: tuple, dilation: tuple) -> np.ndarray:
    """Adjoint of ``pad`` + ``im2col``: dcols (C*Kh*Kw, N*Ho*Wo) -> dx (C, N, H, W), a new array.

    dx[c, n, y, x] = sum of dcols over every (window, offset) that read input pixel (y, x):
    Kh*Kw strided slice-adds into a zeroed padded buffer (overlapping windows add up),
    whose interior is returned.
    """
    c, n, h, w = x_shape
    (kh, kw), (ho, wo), (ph, pw) = kernel, out_hw, padding
    dxp = np.empty((c, n, h + 2 * ph, w + 2 * pw), dcols.dtype)
    d6 = dcols.reshape(c, kh, kw, n, ho, wo)

    def block(lo, hi):
        part = dxp[:, lo:hi]
        part.fill(0)
        for i in range(kh):
            for j in range(kw):
                target = window(part, i, j, out_hw, stride, dilation)
                target += d6[:, i, j, lo:hi]

    parallel_for(n, block, dcols.size)
    return unpad(dxp, (ph, ph, pw, pw), (h, w))
