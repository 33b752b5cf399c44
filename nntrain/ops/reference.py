"""Slow, obviously correct reference kernels: what every fast kernel in ``nntrain.ops`` must equal.

Each function here is written from the definition, with explicit loops (or one plain numpy
call whose meaning is not in doubt, such as ``np.fft.rfft2``), shares no code with the fast
kernels and is not used by nntrain itself: the tests compare the fast paths against these
(tests/test_conv_pool.py and tests/test_layers_known.py). They are for reading and testing
only: Python loops over pixels, so keep the inputs tiny.

Conventions. Give them float64 inputs. Images are in the usual batch-major layout
``(N, C, H, W)`` (what a ``Network`` takes and returns), except for ``im2col`` / ``col2im``,
defined on the channel-major ``(C, N, H, W)`` that the fast kernels use inside a network
(see ``nntrain.layers.base``), and ``half_spectrum``, on the Fourier kernel's ``(H, W, B)``
blocks. ``stride``, ``padding``, ``dilation`` and ``kernel`` take an int (both axes) or an
``(h, w)`` pair; padding is added on both sides of each axis. Convolution is a
cross-correlation (Caffe, PyTorch); pooling follows PyTorch's ``MaxPool2d`` / ``AvgPool2d``
(window clipping and divisor as in its CPU kernel).
"""

from __future__ import annotations

import math

import numpy as np


def pair(v) -> tuple:
    """An int or an (h, w) pair -> (h, w)."""
    return tuple(v) if isinstance(v, (list, tuple)) else (v, v)


# ----- convolution ----------------------------------------------------------------------
def _zero_padded(x, ph, pw):
    n, c, h, w = x.shape
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    return xp


def _out_size(size, kernel, stride, padding, dilation):
    """floor((H + 2P - D(K-1) - 1) / S) + 1 output positions along one axis."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _out_hw(hw, kernel, stride, padding, dilation) -> tuple:
    """(Ho, Wo) of a convolution (or im2col) of an (H, W) image."""
    return tuple(_out_size(*a) for a in zip(hw, pair(kernel), pair(stride), pair(padding), pair(dilation)))


def _conv_terms(x_shape, w_shape, stride, padding, dilation, groups):
    """Every term of the convolution sum below, as index tuples (o, oh, ow, o_c, c, i, j, r, q):
    weight w[o, c, i, j] times padded input xpad[:, o_c, r, q] adds to y[:, o, oh, ow]."""
    cout, cin_g, kh, kw = w_shape
    (sh, sw), (dh, dw) = pair(stride), pair(dilation)
    ho, wo = _out_hw(x_shape[2:], (kh, kw), stride, padding, dilation)
    for o, c, i, j in np.ndindex(cout, cin_g, kh, kw):
        o_c = (o // (cout // groups)) * cin_g + c
        for oh, ow in np.ndindex(ho, wo):
            yield o, oh, ow, o_c, c, i, j, oh * sh + i * dh, ow * sw + j * dw


def conv2d(x, w, b, stride=1, padding=0, dilation=1, groups=1):
    """Grouped, strided, dilated 2-D cross-correlation, (N, C, H, W) -> (N, Cout, Ho, Wo).

    With G groups, Cin_g = C/G input and Cout_g = Cout/G output channels per group, output
    channel o belongs to group g = o // Cout_g, and xpad is x zero-padded by P on each side::

        y[n, o, oh, ow] = b[o] + sum_{c < Cin_g, i < Kh, j < Kw}
                          w[o, c, i, j] * xpad[n, g*Cin_g + c, oh*Sh + i*Dh, ow*Sw + j*Dw]

    w is (Cout, Cin_g, Kh, Kw), b is (Cout,) or None, and Ho = floor((H + 2P - D(K-1) - 1) / S) + 1.
    """
    xp = _zero_padded(np.asarray(x, np.float64), *pair(padding))  # ok: reference kernel, float64 by design
    y = np.zeros((x.shape[0], w.shape[0], *_out_hw(x.shape[2:], w.shape[2:], stride, padding, dilation)))
    for o, oh, ow, o_c, c, i, j, r, q in _conv_terms(x.shape, w.shape, stride, padding, dilation, groups):
        y[:, o, oh, ow] += w[o, c, i, j] * xp[:, o_c, r, q]
    if b is not None:
        y += np.asarray(b)[None, :, None, None]
    return y


def conv2d_backward(x, w, dy, stride=1, padding=0, dilation=1, groups=1):
    """(dx, dw, db) of ``conv2d`` for the output gradient dy (N, Cout, Ho, Wo).

    Each term ``w[o,c,i,j] * xpad[n, g*Cin_g + c, r, q]`` of y[n, o, oh, ow] sends
    ``dy[n,o,oh,ow] * xpad[...]`` to dw[o,c,i,j] and ``dy[n,o,oh,ow] * w[o,c,i,j]`` to
    dxpad[n, g*Cin_g + c, r, q]; dx is the interior of dxpad (padding receives nothing that
    matters), and db[o] is dy summed over (n, oh, ow).
    """
    (ph, pw), (h, wd) = pair(padding), x.shape[2:]
    xp = _zero_padded(np.asarray(x, np.float64), ph, pw)  # ok: reference kernel, float64 by design
    dxp, dw = np.zeros_like(xp), np.zeros(w.shape)
    for o, oh, ow, o_c, c, i, j, r, q in _conv_terms(x.shape, w.shape, stride, padding, dilation, groups):
        dw[o, c, i, j] += np.sum(dy[:, o, oh, ow] * xp[:, o_c, r, q])
        dxp[:, o_c, r, q] += w[o, c, i, j] * dy[:, o, oh, ow]
    return dxp[:, :, ph:ph + h, pw:pw + wd], dw, dy.sum(axis=(0, 2, 3))


def _cols_entries(x_shape, kernel, stride, padding, dilation):
    """Every entry of cols as (row, column, c, n, r, q): it holds xpad[c, n, r, q]."""
    c, n, h, w = x_shape
    (kh, kw), (sh, sw), (dh, dw) = pair(kernel), pair(stride), pair(dilation)
    ho, wo = _out_hw((h, w), kernel, stride, padding, dilation)
    for ch, i, j, s, oh, ow in np.ndindex(c, kh, kw, n, ho, wo):
        yield (ch * kh + i) * kw + j, (s * ho + oh) * wo + ow, ch, s, oh * sh + i * dh, ow * sw + j * dw


def im2col(x, kernel, stride=1, padding=0, dilation=1):
    """Channel-major x (C, N, H, W) -> cols (C*Kh*Kw, N*Ho*Wo), zero padding included::

        cols[(c*Kh + i)*Kw + j, (n*Ho + oh)*Wo + ow] = xpad[c, n, oh*Sh + i*Dh, ow*Sw + j*Dw]

    so that ``w.reshape(Cout, C*Kh*Kw) @ cols`` is the convolution as (Cout, N, Ho, Wo).
    """
    (kh, kw), (ph, pw) = pair(kernel), pair(padding)
    c, n, h, w = x.shape
    ho, wo = _out_hw((h, w), kernel, stride, padding, dilation)
    xp = _zero_padded(x, ph, pw)
    cols = np.zeros((c * kh * kw, n * ho * wo), x.dtype)
    for row, column, ch, s, r, q in _cols_entries(x.shape, kernel, stride, padding, dilation):
        cols[row, column] = xp[ch, s, r, q]
    return cols


def col2im(cols, x_shape, kernel, stride=1, padding=0, dilation=1):
    """Adjoint of ``im2col``: every entry of cols added back onto the input pixel it was read
    from (entries read from the padding are dropped). Returns (C, N, H, W)."""
    (ph, pw), (h, w) = pair(padding), x_shape[2:]
    dxp = np.zeros((*x_shape[:2], h + 2 * ph, w + 2 * pw), cols.dtype)
    for row, column, ch, s, r, q in _cols_entries(x_shape, kernel, stride, padding, dilation):
        dxp[ch, s, r, q] += cols[row, column]
    return dxp[:, :, ph:ph + h, pw:pw + w]


def half_spectrum(block, grid, offset):
    """The 2-D DFT, non-negative W frequencies only, of a real (H, W, B) block placed at
    ``offset`` (r0, c0) of a zero grid (Fh, Fw), in the fast kernel's layout (F, 2, B)::

        X[f*Fh + u, 0] + i X[f*Fh + u, 1] = sum_{h, w} block[h, w] exp(-2 pi i (u (h + r0) / Fh + f (w + c0) / Fw))

    for u < Fh, f < Fw//2 + 1: ``np.fft.rfft2`` of the grid, frequencies along W outermost.
    """
    (fh, fw), (r0, c0), (h, w, b) = grid, offset, block.shape
    g = np.zeros((b, fh, fw))
    g[:, r0:r0 + h, c0:c0 + w] = block.transpose(2, 0, 1)
    spec = np.fft.rfft2(g)  # (B, Fh, Fw//2 + 1)
    out = np.stack([spec.real, spec.imag], axis=1)  # (B, 2, Fh, Fw2)
    return out.transpose(3, 2, 1, 0).reshape(-1, 2, b)


# ----- pooling --------------------------------------------------------------------------
def pool_output_size(size, kernel, stride, padding, ceil_mode):
    """PyTorch's ``floor`` (or ``ceil``) of (H + 2P - K) / S, plus 1; in ceil mode a last window
    that would start in the right padding or past it (at or after H + P) is dropped."""
    out = (math.ceil if ceil_mode else math.floor)((size + 2 * padding - kernel) / stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _windows(h, w, kernel, stride, padding, ceil_mode):
    """Per output (oh, ow): the window clipped to the input, the window size clipped to
    input + padding (ceil mode's overhang does not count), and the output size."""
    (kh, kw), (sh, sw), (ph, pw) = pair(kernel), pair(stride), pair(padding)
    ho, wo = pool_output_size(h, kh, sh, ph, ceil_mode), pool_output_size(w, kw, sw, pw, ceil_mode)
    for oh in range(ho):
        for ow in range(wo):
            hs, ws = oh * sh - ph, ow * sw - pw
            he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
            size_with_pad = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            yield oh, ow, (slice(hs, he), slice(ws, we)), size_with_pad, (ho, wo)


def pool2d(x, dy, kind, kernel, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """(y, dx) of max (``kind="max"``) or average (``"avg"``) pooling of x (N, C, H, W).

    Window (oh, ow) covers input rows [oh*Sh - Ph, oh*Sh - Ph + Kh) (columns alike; the
    stride defaults to the kernel), output sizes from ``pool_output_size``.

    - max: y is the maximum over the window's input pixels (padding never wins); dy goes
      to the first maximum in row-major order of the window (PyTorch's tie rule).
    - avg: y is the window's sum over input pixels divided by the window size: with
      ``count_include_pad`` the window clipped to the padded input (padding counts, the
      ceil-mode overhang does not), else the number of input pixels it holds; dy / divisor
      goes to each of those input pixels.

    ``dy`` (N, C, Ho, Wo) may be None (then dx is zeros).
    """
    stride = kernel if stride is None else stride
    n, c, h, w = x.shape
    y = dx = None
    for oh, ow, (rows, cols), size_with_pad, (ho, wo) in _windows(h, w, kernel, stride, padding, ceil_mode):
        if y is None:
            y, dx = np.zeros((n, c, ho, wo)), np.zeros_like(x)
        win = x[:, :, rows, cols]
        g = dy[:, :, oh, ow] if dy is not None else np.zeros((n, c))
        if kind == "max":
            flat = win.reshape(n, c, -1)
            first = flat.argmax(axis=2)  # argmax returns the first maximum
            y[:, :, oh, ow] = flat.max(axis=2)
            ww = win.shape[3]
            for a in range(n):
                for b in range(c):
                    r, q = divmod(first[a, b], ww)
                    dx[a, b, rows.start + r, cols.start + q] += g[a, b]
        else:
            div = size_with_pad if count_include_pad else win.shape[2] * win.shape[3]
            y[:, :, oh, ow] = win.sum(axis=(2, 3)) / div
            dx[:, :, rows, cols] += (g / div)[:, :, None, None]
    return y, dx


# ----- normalisation --------------------------------------------------------------------
def lrn(x, size, alpha, beta, k):
    """Local response normalisation across channels (AlexNet, Caffe's ACROSS_CHANNELS), x (N, C, H, W)::

        y[n, c, h, w] = x[n, c, h, w] / (k + alpha/size * sum_{c' in window(c)} x[n, c', h, w]^2) ^ beta

    window(c) = channels max(0, c - size//2) .. min(C-1, c + size//2) (clipped at the edges,
    the divisor stays ``size``).
    """
    n, c, h, w = x.shape
    out = np.empty_like(x)
    for i in range(n):
        for ch in range(c):
            lo, hi = max(0, ch - size // 2), min(c, ch + size // 2 + 1)
            for r in range(h):
                for q in range(w):
                    s = sum(x[i, j, r, q] ** 2 for j in range(lo, hi))
                    out[i, ch, r, q] = x[i, ch, r, q] / (k + alpha / size * s) ** beta
    return out
