"""Max and average pooling on channel-major arrays, with PyTorch's window rules.

Per axis, window o covers padded positions [o*S, o*S + K), i.e. input rows
[o*S - P, o*S - P + K). The output size is ``pool_output_size`` (floor or ceil mode);
in ceil mode the last window may run past the padded input, so the padded buffer gets
enough extra rows/columns at the bottom/right for every window to fit:

- max pooling pads with -inf, so padding and the overhang never win; the gradient of
  each output goes to its argmax, ties to the first maximum in row-major scan order of
  the window (PyTorch's rule).
- average pooling sums the zero-padded window, times a precomputed inverse count
  (``avg_pool_inverse_counts``). Zeros add nothing, so no padded copy is made: each
  kernel offset adds (and, backward, receives) only over the windows where it lies
  inside the input (``_offset_views``), which is cheaper than the padded version
  (timings in bench/RESULTS.md). (Max pooling keeps its padded copy: there the argmax
  bookkeeping on the ragged regions cost more than the copy saves.)

Each forward kernel is a loop over the Kh*Kw offsets of one strided numpy operation
over all channels and output pixels of a block of samples (``np.maximum`` over strided
slices is much faster than ``.max`` over a window view); windows that tile the input
(stride = kernel, e.g. airbench's 2x2 max-pool) take ``_tiled_max_forward``, row by row
of the windows, with fewer passes over the strided entries. The max-pool backward is
one ``np.bincount`` scatter-add per block of channels, or, for windows that do not
overlap, writes into strided views. The blocks run on all cores (``parallel_for``).
"""

from __future__ import annotations

import numpy as np

from .im2col import pad, unpad, window
from .parallel import parallel_for


def pool_pads(in_hw: tuple, kernel: tuple, stride: tuple, padding: tuple, out_hw: tuple) -> tuple:
    """(top, bottom, left, right): P each side, more at the bottom/right if ceil-mode windows overhang."""
    (h, w), (kh, kw), (sh, sw), (ph, pw), (ho, wo) = in_hw, kernel, stride, padding, out_hw
    bottom = max(ph, (ho - 1) * sh + kh - h - ph)
    right = max(pw, (wo - 1) * sw + kw - w - pw)
    return (ph, bottom, pw, right)


def _valid_outputs(count: int, offset: int, stride: int, pad_before: int, size: int) -> tuple:
    """Along one axis, the outputs [lo, hi) whose window has kernel offset ``offset`` inside
    the input (input position o*S + offset - P in [0, size)), and the input position of
    output lo. The others read padding (or the ceil-mode overhang) there."""
    lo = max(0, -((offset - pad_before) // stride))  # ceil((P - offset) / S), at least 0
    hi = min(count, (size - 1 - offset + pad_before) // stride + 1)
    return lo, max(lo, hi), lo * stride + offset - pad_before


def _offset_views(x: np.ndarray, y: np.ndarray, i: int, j: int, stride: tuple, padding: tuple):
    """(input view, output view) of kernel offset (i, j) over the outputs whose window has
    that offset inside the input: the padded positions are skipped, not materialised."""
    (ho, wo), (h, w) = y.shape[2:], x.shape[2:]
    r0, r1, rin = _valid_outputs(ho, i, stride[0], padding[0], h)
    c0, c1, cin = _valid_outputs(wo, j, stride[1], padding[1], w)
    src = x[:, :, rin: rin + (r1 - r0 - 1) * stride[0] + 1: stride[0],
            cin: cin + (c1 - c0 - 1) * stride[1] + 1: stride[1]]
    return src, y[:, :, r0:r1, c0:c1]


def _covers_all(kernel_offset: tuple, out_hw: tuple, stride: tuple, padding: tuple, in_hw: tuple) -> bool:
    """Whether every window has this kernel offset inside the input."""
    return all(_valid_outputs(o, k, s, p, n)[:2] == (0, o)
               for o, k, s, p, n in zip(out_hw, kernel_offset, stride, padding, in_hw))


def max_pool_forward(x: np.ndarray, kernel: tuple, stride: tuple, padding: tuple, out_hw: tuple,
                     with_argmax: bool = True, work: dict | None = None):
    """y[c, n, oh, ow] = max over the window; returns ``(y, arg)``.

    ``arg`` (uint8/uint16, shape of y) is the winning offset ``i*Kw + j`` of each window,
    the first maximum in scan order (kept only ``with_argmax``; else None).
    """
    work = {} if work is None else work
    pads = pool_pads(x.shape[2:], kernel, stride, padding, out_hw)
    if tuple(stride) == tuple(kernel) and not any(pads) and out_hw[1] >= TILED_MIN_WIDTH:
        return _tiled_max_forward(x, kernel, out_hw, with_argmax)
    xp = pad(x, pads, -np.inf, out=work.get("pad"))
    if xp is not x:
        work["pad"] = xp
    kh, kw = kernel
    c, n = x.shape[:2]
    y = np.empty((c, n, *out_hw), x.dtype)
    arg = np.empty(y.shape, np.uint8 if kh * kw <= 256 else np.uint16) if with_argmax else None

    def block(lo, hi):
        xb, yb = xp[:, lo:hi], y[:, lo:hi]
        np.copyto(yb, window(xb, 0, 0, out_hw, stride))
        if with_argmax:
            ab = arg[:, lo:hi]
            ab.fill(0)
            wins = np.empty(yb.shape, bool)
            candidate = np.empty(yb.shape, arg.dtype)
        for k in range(1, kh * kw):
            s = window(xb, k // kw, k % kw, out_hw, stride)
            if with_argmax:
                # offsets come in increasing order, so "arg = k where s beats the max so far" is
                # arg = max(arg, k * (s > y)): plain arithmetic, far faster than a masked copy.
                # Strictly greater: a later value equal to the max does not take over.
                np.greater(s, yb, out=wins)
                np.multiply(wins.view(np.uint8), arg.dtype.type(k), out=candidate)
                np.maximum(ab, candidate, out=ab)
            np.maximum(yb, s, out=yb)

    parallel_for(n, block, xp.size)
    return y, arg


TILED_CHUNK = 1 << 15  # outputs per chunk of the tiled max-pool: its scratch stays in cache
TILED_MIN_WIDTH = 4  # shorter window rows: the general route's fewer passes cost less (RESULTS)


def _tiled_max_forward(x: np.ndarray, kernel: tuple, out_hw: tuple, with_argmax: bool):
    """``max_pool_forward`` for windows that tile the input (stride = kernel, no padding):
    row by row of each window, then across its rows.

    Within a window row the first maximum wins a tie, then the first row holding the
    window's maximum: that is the first maximum in row-major scan order, as in the general
    route. The passes over the strided window entries (inner loops of Wo values, which cost
    more per value than the arithmetic) are the Kw - 1 (or 2 (Kw - 1) with the argmax) of
    each window row; the steps across rows run over contiguous arrays. The argmax is kept
    as the winning offset i*Kw + j (uint8 arithmetic, exact modulo 256 for any update order).
    """
    (kh, kw), (ho, wo) = kernel, out_hw
    c, n = x.shape[:2]
    y = np.empty((c, n, ho, wo), x.dtype)
    arg = np.empty(y.shape, np.uint8 if kh * kw <= 256 else np.uint16) if with_argmax else None
    per = max(1, TILED_CHUNK // max(1, c * ho * wo))

    def entry(xb, i, j):  # offset (i, j) of every window: (C, n, Ho, Wo)
        return xb[:, :, i:i + (ho - 1) * kh + 1:kh, j:j + (wo - 1) * kw + 1:kw]

    def rows(xb, i, out, col, better, cand):  # max along window row i, and its first argmax column
        first = entry(xb, i, 0)
        if kw == 1:
            np.copyto(out, first)
            if col is not None:
                col.fill(0)
            return
        s = entry(xb, i, 1)
        if col is not None:
            np.greater(s, first, out=better)
            np.copyto(col, better, casting="unsafe")  # 1 where column 1 wins, else 0
        np.maximum(first, s, out=out)
        for j in range(2, kw):  # as the general route: col = max(col, j * [s beats the max so far])
            s = entry(xb, i, j)
            if col is not None:
                np.greater(s, out, out=better)
                np.multiply(better.view(np.uint8), col.dtype.type(j), out=cand)
                np.maximum(col, cand, out=col)
            np.maximum(out, s, out=out)

    def block(lo, hi):
        for s0 in range(lo, hi, per):
            s1 = min(hi, s0 + per)
            xb, yb = x[:, s0:s1], y[:, s0:s1]
            ab = arg[:, s0:s1] if with_argmax else None
            better = np.empty(yb.shape, bool) if with_argmax else None
            cand = np.empty(yb.shape, arg.dtype) if with_argmax and kw > 2 else None
            rows(xb, 0, yb, ab, better, cand)
            if kh == 1:
                continue
            row = np.empty(yb.shape, x.dtype)
            col = np.empty(yb.shape, arg.dtype) if with_argmax else None
            for i in range(1, kh):
                rows(xb, i, row, col, better, cand)
                if with_argmax:  # arg += [row i beats the max so far] * (i*Kw + col - arg)
                    np.greater(row, yb, out=better)
                    col += arg.dtype.type(i * kw)
                    col -= ab
                    col *= better
                    ab += col
                np.maximum(yb, row, out=yb)

    parallel_for(n, block, x.size)
    return y, arg


def max_pool_backward(dy: np.ndarray, arg: np.ndarray, x_shape: tuple, kernel: tuple, stride: tuple,
                      padding: tuple) -> np.ndarray:
    """dx: each dy entry added to the input position of its window's argmax (new array).

    One scatter-add per block of channels: the flat position in the padded block of each
    window's winner (window origin + winning offset) and ``np.bincount(position, weights=dy)``,
    whose interior is dx. Overlapping windows (stride < kernel) can send several dy to one
    position, which bincount adds up in one pass (numpy's unbuffered ``add.at`` is many
    times slower, and routing dy offset by offset costs Kh*Kw passes over the whole
    gradient). Windows that do not overlap (stride >= kernel, e.g. 2x2/2) take
    ``_disjoint_windows_backward``.
    """
    c, n, h, w = x_shape
    ho, wo = dy.shape[2:]
    top, bottom, left, right = pool_pads((h, w), kernel, stride, padding, (ho, wo))
    hp, wp = h + top + bottom, w + left + right
    plane = n * hp * wp  # one channel of the padded input
    (kh, kw), (sh, sw) = kernel, stride
    if sh >= kh and sw >= kw:
        return _disjoint_windows_backward(dy, arg, x_shape, kernel, stride, (top, bottom, left, right))
    k = np.arange(kh * kw)
    offsets = (k // kw) * wp + k % kw  # offset i*Kw + j -> flat step from the window origin
    origins = (np.arange(n)[:, None, None] * (hp * wp) + np.arange(ho)[:, None] * (sh * wp)
               + np.arange(wo) * sw)  # (N, Ho, Wo): flat window origins in one channel
    dx = np.empty(x_shape, dy.dtype)

    def block(lo, hi):
        pos = offsets.take(arg[lo:hi])
        pos += origins
        pos += (np.arange(hi - lo) * plane)[:, None, None, None]
        # ok: bincount sums in float64 whatever the weights (exact here); dx gets dy's dtype back below
        sums = np.bincount(pos.reshape(-1), weights=dy[lo:hi].reshape(-1), minlength=(hi - lo) * plane)
        np.copyto(dx[lo:hi], sums.reshape(hi - lo, n, hp, wp)[:, :, top:top + h, left:left + w],
                  casting="same_kind")

    parallel_for(c, block, c * plane)
    return dx


def _tiled_backward(dy, arg, x_shape, kernel):
    """max_pool_backward for windows that tile the input (stride = kernel, no padding): dx
    is zero but at each window's winner, which gets its dy -- one scatter (each position is
    written at most once, so no adding up) into the zeroed dx, by blocks of channels in
    pieces of about ``TILED_CHUNK`` windows."""
    c, n, h, w = x_shape
    (kh, kw), (ho, wo) = kernel, dy.shape[2:]
    k = np.arange(kh * kw)
    offsets = (k // kw) * w + k % kw  # offset i*Kw + j -> flat step from the window origin
    origins = (np.arange(n)[:, None, None] * (h * w) + np.arange(ho)[:, None] * (kh * w)
               + np.arange(wo) * kw)  # (N, Ho, Wo): flat window origins in one channel
    dx = np.zeros(x_shape, dy.dtype)
    step = max(1, TILED_CHUNK // max(1, n * ho * wo))

    def block(lo, hi):
        for c0 in range(lo, hi, step):
            c1 = min(hi, c0 + step)
            pos = offsets.take(arg[c0:c1])
            pos += origins
            if c1 - c0 > 1:
                pos += (np.arange(c1 - c0) * (n * h * w))[:, None, None, None]
            flat = dx[c0:c1].reshape(-1)  # dx is new and contiguous: a view
            flat[pos.reshape(-1)] = dy[c0:c1].reshape(-1)

    parallel_for(c, block, dx.size)
    return dx


def _disjoint_windows_backward(dy, arg, x_shape, kernel, stride, pads):
    """max_pool_backward when no two windows share an input position: for each offset k,
    dx at offset k of every window is dy where the window's winner is k, else 0 -- written
    straight into the strided view, no accumulation (positions no window covers stay 0).
    A non-finite dy spreads NaN over its whole window (NaN * 0), where bincount would not.
    Windows that tile the input take ``_tiled_backward`` (one scatter of dy, faster than the
    Kh*Kw strided writes; there a non-finite dy reaches the winner only)."""
    c, n, h, w = x_shape
    out_hw = dy.shape[2:]
    top, bottom, left, right = pads
    (kh, kw), (sh, sw) = kernel, stride
    if (sh, sw) == (kh, kw) and not any(pads):
        return _tiled_backward(dy, arg, x_shape, kernel)
    dxp = np.empty((c, n, h + top + bottom, w + left + right), dy.dtype)
    # windows side by side from the top left corner cover rows < Ho*Kh and columns < Wo*Kw
    # exactly: only the rest needs zeros (else all of dxp does, before the writes)
    adjacent = (sh, sw) == (kh, kw) and top == left == 0
    rows, cols = out_hw[0] * sh, out_hw[1] * sw

    def block(lo, hi):
        part, dyb, ab = dxp[lo:hi], dy[lo:hi], arg[lo:hi]
        if adjacent:
            part[:, :, rows:] = 0
            part[:, :, :rows, cols:] = 0
        else:
            part.fill(0)
        hit = np.empty(dyb.shape, bool)
        for k in range(kh * kw):
            np.equal(ab, k, out=hit)
            np.multiply(dyb, hit, out=window(part, k // kw, k % kw, out_hw, stride))

    parallel_for(c, block, dxp.size)
    return unpad(dxp, pads, (h, w))


def avg_pool_inverse_counts(in_hw: tuple, kernel: tuple, stride: tuple, padding: tuple, out_hw: tuple,
                            count_include_pad: bool, dtype) -> np.ndarray:
    """(Ho, Wo) array of 1 / divisor, PyTorch's ``AvgPool2d`` (and Caffe's AVE) divisor.

    Per axis the window [o*S - P, o*S - P + K) is clipped to the padded input [-P, H + P);
    with ``count_include_pad`` its length is the divisor (padding counts, the ceil-mode
    overhang does not), otherwise the length after clipping to the input [0, H).
    The 2-D divisor is the product of the row and column lengths.
    """
    lengths = []
    for size, k, s, p, o in zip(in_hw, kernel, stride, padding, out_hw):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, size + p)
        if not count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, size)
        lengths.append(end - start)
    return (1.0 / np.outer(lengths[0], lengths[1])).astype(dtype)


def avg_pool_matrix(in_hw: tuple, kernel: tuple, stride: tuple, padding: tuple, out_hw: tuple,
                    inverse_counts: np.ndarray) -> np.ndarray:
    """(H*W, Ho*Wo) matrix M with y = x M for one (H, W) plane flattened: M[p, o] is
    inverse_counts[o] for every input pixel p inside window o (padding adds nothing).

    Average pooling of small planes as one matrix product, (C*N, H*W) @ M: the offset-wise
    passes work on rows of only Wo pixels there (cifar10_quick's 8x8 -> 4x4 pool: rows of
    4), where numpy's per-row overhead costs more than the product's H*W multiply-adds
    per output at BLAS speed. The product's work grows with the square of the plane (every
    pixel times every output) and the offset-wise passes' with the plane itself, so the
    matrix wins on small planes only: timed on 16x16 to 32x32 planes (bench/RESULTS.md),
    it breaks even at about 24x24 and loses at 32x32, hence the layer's threshold of 256
    pixels, 16x16 (``AvgPool2d.MATRIX_MAX_PIXELS``)."""
    (h, w), (ho, wo), (kh, kw) = in_hw, out_hw, kernel
    m = np.zeros((h, w, ho, wo), inverse_counts.dtype)
    oh, ow = np.arange(ho)[:, None], np.arange(wo)[None, :]
    for i in range(kh):
        for j in range(kw):
            r, c = oh * stride[0] + i - padding[0], ow * stride[1] + j - padding[1]
            inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
            rr, cc = np.broadcast_arrays(r, c)
            o_r, o_c = np.broadcast_arrays(oh, ow)
            m[rr[inside], cc[inside], o_r[inside], o_c[inside]] = inverse_counts[o_r[inside], o_c[inside]]
    return m.reshape(h * w, ho * wo)


def avg_pool_forward(x: np.ndarray, kernel: tuple, stride: tuple, padding: tuple, out_hw: tuple,
                     inverse_counts: np.ndarray) -> np.ndarray:
    """y[c, n, oh, ow] = (sum of the zero-padded window) * inverse_counts[oh, ow]; the
    padding adds nothing, so each offset adds only where it lies inside the input."""
    kh, kw = kernel
    c, n = x.shape[:2]
    y = np.empty((c, n, *out_hw), x.dtype)
    first_everywhere = _covers_all((0, 0), out_hw, stride, padding, x.shape[2:])

    def block(lo, hi):
        xb, yb = x[:, lo:hi], y[:, lo:hi]
        if first_everywhere:
            np.copyto(yb, _offset_views(xb, yb, 0, 0, stride, padding)[0])
        else:
            yb.fill(0)
        for k in range(1 if first_everywhere else 0, kh * kw):
            s, yv = _offset_views(xb, yb, k // kw, k % kw, stride, padding)
            yv += s
        yb *= inverse_counts

    parallel_for(n, block, x.size)
    return y


def avg_pool_backward(dy: np.ndarray, x_shape: tuple, kernel: tuple, stride: tuple, padding: tuple,
                      inverse_counts: np.ndarray) -> np.ndarray:
    """dx: dy * inverse_counts added onto every input position of its window (new array)."""
    c, n, h, w = x_shape
    dx = np.empty(x_shape, dy.dtype)
    kh, kw = kernel

    def block(lo, hi):
        part = dx[:, lo:hi]
        part.fill(0)
        g = dy[:, lo:hi] * inverse_counts
        for k in range(kh * kw):
            target, gv = _offset_views(part, g, k // kw, k % kw, stride, padding)
            target += gv

    parallel_for(n, block, dx.size)
    return dx
