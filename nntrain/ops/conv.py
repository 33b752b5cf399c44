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

(dW is computed transposed: OpenBLAS runs the tall-skinny product cols @ dy^T 1.2-2x
faster than dy @ cols^T for these shapes.) All groups go through one stacked
product (G, ., .) @ (G, ., .), so there is no Python loop over groups either; products
run on all cores through ``nntrain.ops.parallel.matmul``.

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

from .im2col import col2im, conv_output_size, im2col, pad, scratch
from .parallel import matmul


def _is_pointwise(kernel, stride, padding) -> bool:
    """1x1, stride 1, no padding: cols is x itself (reshaped), no im2col needed."""
    return kernel == (1, 1) and stride == (1, 1) and padding == (0, 0)


def conv2d_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: tuple,
                   padding: tuple, dilation: tuple, groups: int, work: dict | None = None):
    """y = conv(x, W) + b; returns ``(y, cols)``, cols being what ``conv2d_backward`` needs.

    ``work`` is a dict of scratch arrays (``pad``, ``cols``) the caller passes again on the
    next call so they are reused instead of reallocated; ``cols`` may be one of them, or a
    view of ``x`` for a pointwise convolution. ``y`` is always a new array.
    """
    work = {} if work is None else work
    cin, n, h, w = x.shape
    cout, _, kh, kw = weight.shape
    kernel = (kh, kw)
    ho = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    wo = conv_output_size(w, kw, stride[1], padding[1], dilation[1])
    if _is_pointwise(kernel, stride, padding):
        cols = x.reshape(cin, n * h * w)
    else:
        xp = pad(x, (padding[0], padding[0], padding[1], padding[1]), 0.0, out=work.get("pad"))
        if xp is not x:
            work["pad"] = xp
        cols = work["cols"] = im2col(xp, kernel, (ho, wo), stride, dilation, out=work.get("cols"))
    m = n * ho * wo
    y = np.empty((cout, n, ho, wo), x.dtype)
    matmul(weight.reshape(groups, cout // groups, -1), cols.reshape(groups, -1, m),
           out=y.reshape(groups, cout // groups, m))
    if bias is not None:
        y2 = y.reshape(cout, m)
        y2 += bias[:, None]
    return y, cols


def conv2d_backward(dy: np.ndarray, cols: np.ndarray, weight: np.ndarray, x_shape: tuple, stride: tuple,
                    padding: tuple, dilation: tuple, groups: int, dweight: np.ndarray,
                    dbias: np.ndarray | None, need_dx: bool = True, work: dict | None = None) -> np.ndarray | None:
    """Writes dL/dW into ``dweight`` and dL/db into ``dbias``; returns dL/dx (or None).

    ``dweight`` / ``dbias`` must be contiguous (they are overwritten through reshaped views).
    Unless the convolution is pointwise, ``cols`` is overwritten (by dcols, or by the
    im2col of dy: cols is not needed once dW is known, and it can be hundreds of MB).
    ``work`` holds scratch arrays reused from call to call, as in ``conv2d_forward``.
    """
    work = {} if work is None else work
    cout, cin_g, kh, kw = weight.shape
    kernel = (kh, kw)
    m = dy.size // cout
    dy3 = dy.reshape(groups, cout // groups, m)
    cols3 = cols.reshape(groups, -1, m)
    dwt = work["dwt"] = scratch(work.get("dwt"), (groups, cols3.shape[1], cout // groups), dy.dtype)
    matmul(cols3, dy3.transpose(0, 2, 1), out=dwt)
    np.copyto(dweight.reshape(groups, cout // groups, -1), dwt.transpose(0, 2, 1))
    if dbias is not None:
        np.sum(dy.reshape(cout, m), axis=1, out=dbias)
    if not need_dx:
        return None
    w3t = weight.reshape(groups, cout // groups, -1).transpose(0, 2, 1)
    if _is_pointwise(kernel, stride, padding):
        return matmul(w3t, dy3).reshape(x_shape)  # cols is x here: never overwrite it
    if _dx_as_convolution(kernel, stride, padding, dilation):
        return _dx_by_flipped_convolution(dy, cols, weight, x_shape, padding, dilation, groups, work)
    matmul(w3t, dy3, out=cols3)
    ho, wo = dy.shape[2:]
    return col2im(cols, x_shape, kernel, (ho, wo), stride, padding, dilation)


def _dx_as_convolution(kernel, stride, padding, dilation) -> bool:
    """Stride 1 and 0 <= P <= D(K-1) on both axes: dx is a convolution of the padded dy."""
    return stride == (1, 1) and all(0 <= p <= d * (k - 1) for k, p, d in zip(kernel, padding, dilation))


def _dx_by_flipped_convolution(dy, cols, weight, x_shape, padding, dilation, groups, work):
    """dx = conv(dy padded by Q = D(K-1) - P, W flipped and transposed), stride 1 (module docstring)."""
    cout, cin_g, kh, kw = weight.shape
    cin, n, h, w = x_shape
    qh, qw = dilation[0] * (kh - 1) - padding[0], dilation[1] * (kw - 1) - padding[1]
    dyp = pad(dy, (qh, qh, qw, qw), 0.0, out=work.get("dypad"))
    if dyp is not dy:
        work["dypad"] = dyp
    # the im2col of dypad goes into cols' memory when it fits (cols is dead once dW is known)
    shape = (cout * kh * kw, n * h * w)
    flat = cols.reshape(-1)
    if flat.size >= shape[0] * shape[1] and cols.flags.c_contiguous:
        buf = flat[: shape[0] * shape[1]].reshape(shape)
    else:
        buf = work["dcols"] = scratch(work.get("dcols"), shape, dy.dtype)
    dcols = im2col(dyp, (kh, kw), (h, w), (1, 1), dilation, out=buf)
    # Wt[g, c, (o, i, j)] = W[g*Cout_g + o, c, Kh-1-i, Kw-1-j]: a small copy of the weights
    wt = weight.reshape(groups, cout // groups, cin_g, kh, kw)[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)
    wt = wt.reshape(groups, cin_g, -1)
    dx = np.empty((cin, n, h, w), dy.dtype)
    matmul(wt, dcols.reshape(groups, -1, n * h * w), out=dx.reshape(groups, cin_g, n * h * w))
    return dx
