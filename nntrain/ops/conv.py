"""2-D convolution (cross-correlation, as in Caffe and PyTorch) on channel-major arrays.

With G groups, Cin_g = Cin/G input and Cout_g = Cout/G output channels per group; output
channel o belongs to group g = o // Cout_g and reads input channels g*Cin_g ... :

    y[o, n, oh, ow] = b[o] + sum_{c < Cin_g, i < Kh, j < Kw}
                      W[o, c, i, j] * xpad[g*Cin_g + c, n, oh*Sh + i*Dh, ow*Sw + j*Dw]

Shapes: x (Cin, N, H, W), W (Cout, Cin_g, Kh, Kw), b (Cout,), y (Cout, N, Ho, Wo).

As matrices, with cols = im2col(x) (Cin*Kh*Kw, M), M = N*Ho*Wo, and per group g
(row blocks of W, cols and y):

    y_g = W_g @ cols_g          dW_g^T = cols_g @ dy_g^T      dcols_g = W_g^T @ dy_g
    db  = dy summed over (N, Ho, Wo)                           dx = col2im(dcols)

(dW is computed transposed: OpenBLAS runs the tall-skinny product cols @ dy^T
faster than dy @ cols^T for these shapes.) All groups go through one stacked
product (G, ., .) @ (G, ., .), so there is no Python loop over groups either.

The work is done chunk by chunk of samples (``CHUNK_BYTES`` of cols each): im2col of the
chunk into a small buffer, then the chunk's products, the chunks spread over nntrain's
threads with one BLAS thread each (``parallel.blas_for``). cols is never built for the
whole batch (it is Kh*Kw times the input: 212 MB for airbench's 24->32 3x3 layer at
batch 256), so it is written and read back while still in cache instead of through main
memory, and the backward pass redoes the chunk's im2col from the input rather than
keeping cols from the forward pass (faster than one im2col of the whole batch and one
product split over the threads: timings in bench/RESULTS.md). dW is summed over the
chunks of each thread, then over the threads in a fixed order (reproducible for a given
thread count).

Stride 1 with 0 <= P <= D(K-1) ("same" padding and the like) takes a faster route to
dx: the input gradient of a stride-1 convolution is itself a stride-1 convolution,

    dx[c, n, h, w] = sum_{o, i, j} W[o, c, Kh-1-i, Kw-1-j] * dypad[o, n, h + i*Dh, w + j*Dw],

dy zero-padded by Q = D(K-1) - P on each side, i.e. a convolution of dypad with the
flipped, transposed kernel Wt[c, o, i, j] = W[o, c, Kh-1-i, Kw-1-j]. So dx is one im2col
(a single strided copy) and one matrix product, with no col2im (K*K read-modify-write
passes over a zero-initialised buffer, about twice the cost of the copy).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .im2col import col2im, conv_output_size, im2col, pad, scratch
from .parallel import blas_for, matmul

CHUNK_BYTES = 2 << 20  # cols of one chunk of samples: 1-4 MB measured best (caches), 2 MB chosen


def _is_pointwise(kernel, stride, padding) -> bool:
    """1x1, stride 1, no padding: cols is x itself (reshaped), no im2col needed."""
    return kernel == (1, 1) and stride == (1, 1) and padding == (0, 0)


def _rows(a: np.ndarray, s: int, e: int, groups: int) -> np.ndarray:
    """Samples s..e of a (C, N, H, W) array (contiguous) as a (G, C/G, (e-s)*H*W) view, no copy."""
    c, _, h, w = a.shape
    return as_strided(a[:, s:e], shape=(groups, c // groups, (e - s) * h * w),
                      strides=(c // groups * a.strides[0], a.strides[0], a.strides[3]))


def by_chunks(n: int, sample_bytes: int, fn, chunk_bytes: int = CHUNK_BYTES) -> list:
    """Call ``fn(s, e, scratch)`` for chunks [s, e) of the n samples, about ``chunk_bytes`` of
    work arrays each (``sample_bytes`` a sample: cols here), spread over the threads
    (``blas_for``); ``scratch`` is one dict per block of chunks (a block's buffers and
    partial sums), returned in block order."""
    per = max(1, chunk_bytes // max(1, sample_bytes))
    chunks = [(s, min(s + per, n)) for s in range(0, n, per)]
    blocks = {}

    def block(lo, hi):
        blocks[lo] = scratch_ = {}
        for s, e in chunks[lo:hi]:
            fn(s, e, scratch_)

    blas_for(len(chunks), block, n * sample_bytes // 4)
    return [blocks[lo] for lo in sorted(blocks)]


def _chunk_cols(x, s, e, kernel, out_hw, stride, padding, dilation, buf):
    """cols (Cin*Kh*Kw, (e-s)*Ho*Wo) of samples s..e, in ``buf``'s reused arrays."""
    part = x[:, s:e]
    xp = pad(part, (padding[0], padding[0], padding[1], padding[1]), 0.0, out=buf.get("pad"))
    if xp is not part:
        buf["pad"] = xp
    cols = buf["cols"] = im2col(xp, kernel, out_hw, stride, dilation, out=buf.get("cols"))
    return cols


def conv2d_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: tuple,
                   padding: tuple, dilation: tuple, groups: int) -> np.ndarray:
    """y = conv(x, W) + b, a new (Cout, N, Ho, Wo) array. ``conv2d_backward`` needs ``x`` again."""
    cin, n, h, w = x.shape
    cout, cin_g, kh, kw = weight.shape
    kernel = (kh, kw)
    ho = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    wo = conv_output_size(w, kw, stride[1], padding[1], dilation[1])
    y = np.empty((cout, n, ho, wo), x.dtype)
    w3 = weight.reshape(groups, cout // groups, -1)
    if _is_pointwise(kernel, stride, padding):
        matmul(w3, x.reshape(groups, cin_g, n * h * w), out=y.reshape(groups, cout // groups, -1))
    else:
        def chunk(s, e, buf):
            cols = _chunk_cols(x, s, e, kernel, (ho, wo), stride, padding, dilation, buf)
            np.matmul(w3, cols.reshape(groups, cin_g * kh * kw, -1), out=_rows(y, s, e, groups))

        by_chunks(n, cin * kh * kw * ho * wo * x.itemsize, chunk)
    if bias is not None:
        y2 = y.reshape(cout, -1)
        y2 += bias[:, None]
    return y


def conv2d_backward(dy: np.ndarray, x: np.ndarray, weight: np.ndarray, stride: tuple, padding: tuple,
                    dilation: tuple, groups: int, dweight: np.ndarray, dbias: np.ndarray | None,
                    need_dx: bool = True) -> np.ndarray | None:
    """Writes dL/dW into ``dweight`` and dL/db into ``dbias``; returns dL/dx (or None).

    ``x`` is the forward pass's input; ``dweight`` / ``dbias`` must be contiguous (they are
    overwritten through reshaped views).
    """
    dy = np.ascontiguousarray(dy)
    cout, cin_g, kh, kw = weight.shape
    cin, n, h, w = x.shape
    kernel, (ho, wo) = (kh, kw), dy.shape[2:]
    cout_g, k_g = cout // groups, cin_g * kh * kw
    if dbias is not None:
        np.sum(dy.reshape(cout, -1), axis=1, out=dbias)
    w3t = weight.reshape(groups, cout_g, k_g).transpose(0, 2, 1)
    if _is_pointwise(kernel, stride, padding):
        x3 = x.reshape(groups, cin_g, -1)
        dy3 = dy.reshape(groups, cout_g, -1)
        dwt = matmul(x3, dy3.transpose(0, 2, 1))
        np.copyto(dweight.reshape(groups, cout_g, -1), dwt.transpose(0, 2, 1))
        return matmul(w3t, dy3).reshape(x.shape) if need_dx else None
    flipped = need_dx and _dx_as_convolution(kernel, stride, padding, dilation)
    if flipped:
        # Wt[g, c, (o, i, j)] = W[g*Cout_g + o, c, Kh-1-i, Kw-1-j]: a small copy of the weights
        wt = weight.reshape(groups, cout_g, cin_g, kh, kw)[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)
        wt = wt.reshape(groups, cin_g, -1)
        q = (dilation[0] * (kh - 1) - padding[0], dilation[1] * (kw - 1) - padding[1])
    dx = np.empty(x.shape, dy.dtype) if need_dx else None

    def chunk(s, e, buf):
        cols = _chunk_cols(x, s, e, kernel, (ho, wo), stride, padding, dilation, buf)
        dy3 = _rows(dy, s, e, groups)
        part = buf["part"] = scratch(buf.get("part"), (groups, k_g, cout_g), dy.dtype)
        np.matmul(cols.reshape(groups, k_g, -1), dy3.transpose(0, 2, 1), out=part)
        if "dwt" in buf:
            buf["dwt"] += part
        else:
            buf["dwt"] = part.copy()
        if flipped:  # dx of the chunk = conv(dy padded by Q, Wt), stride 1 (module docstring)
            dyp = pad(dy[:, s:e], (q[0], q[0], q[1], q[1]), 0.0, out=buf.get("dypad"))
            buf["dypad"] = dyp
            dcols = buf["dcols"] = im2col(dyp, kernel, (h, w), (1, 1), dilation, out=buf.get("dcols"))
            np.matmul(wt, dcols.reshape(groups, cout_g * kh * kw, -1), out=_rows(dx, s, e, groups))
        elif need_dx:
            np.matmul(w3t, dy3, out=cols.reshape(groups, k_g, -1))  # dcols, into cols (done with)
            dx[:, s:e] = col2im(cols, (cin, e - s, h, w), kernel, (ho, wo), stride, padding, dilation)

    blocks = by_chunks(n, cin * kh * kw * ho * wo * x.itemsize, chunk)
    dwt = blocks[0]["dwt"]
    for block in blocks[1:]:
        dwt += block["dwt"]
    np.copyto(dweight.reshape(groups, cout_g, -1), dwt.transpose(0, 2, 1))
    return dx


def _dx_as_convolution(kernel, stride, padding, dilation) -> bool:
    """Stride 1 and 0 <= P <= D(K-1) on both axes: dx is a convolution of the padded dy."""
    return stride == (1, 1) and all(0 <= p <= d * (k - 1) for k, p, d in zip(kernel, padding, dilation))
