"""2-D convolution (cross-correlation, as in Caffe and PyTorch) on channel-major arrays.

With G groups, Cin_g = Cin/G input and Cout_g = Cout/G output channels per group; output
channel o belongs to group g = o // Cout_g and reads input channels g*Cin_g ... :

    y[o, n, oh, ow] = b[o] + sum_{c < Cin_g, i < Kh, j < Kw}
                      W[o, c, i, j] * xpad[g*Cin_g + c, n, oh*Sh + i*Dh, ow*Sw + j*Dw]

Shapes: x (Cin, N, H, W), W (Cout, Cin_g, Kh, Kw), b (Cout,), y (Cout, N, Ho, Wo).

As matrices, with cols = im2col(x) (Cin*Kh*Kw, M), M = N*Ho*Wo, and per group g
(row blocks of W, cols and y):

    y_g = W_g @ cols_g          dW_g = dy_g @ cols_g^T        dcols_g = W_g^T @ dy_g
    db  = dy summed over (N, Ho, Wo)                           dx = col2im(dcols)

All groups go through one stacked ``np.matmul`` (G, ., .) @ (G, ., .), so there is no
Python loop over groups either.
"""

from __future__ import annotations

import numpy as np

from .im2col import col2im, conv_output_size, im2col, pad


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
    np.matmul(weight.reshape(groups, cout // groups, -1), cols.reshape(groups, -1, m),
              out=y.reshape(groups, cout // groups, m))
    if bias is not None:
        y2 = y.reshape(cout, m)
        y2 += bias[:, None]
    return y, cols


def conv2d_backward(dy: np.ndarray, cols: np.ndarray, weight: np.ndarray, x_shape: tuple, stride: tuple,
                    padding: tuple, dilation: tuple, groups: int, dweight: np.ndarray,
                    dbias: np.ndarray | None, need_dx: bool = True) -> np.ndarray | None:
    """Writes dL/dW into ``dweight`` and dL/db into ``dbias``; returns dL/dx (or None).

    ``dweight`` / ``dbias`` must be contiguous (they are overwritten through reshaped views).
    Unless the convolution is pointwise, ``cols`` is overwritten by dcols (the two are
    never needed at the same time, and cols can be hundreds of MB).
    """
    cout, _, kh, kw = weight.shape
    kernel = (kh, kw)
    m = dy.size // cout
    dy3 = dy.reshape(groups, cout // groups, m)
    cols3 = cols.reshape(groups, -1, m)
    np.matmul(dy3, cols3.transpose(0, 2, 1), out=dweight.reshape(groups, cout // groups, -1))
    if dbias is not None:
        np.sum(dy.reshape(cout, m), axis=1, out=dbias)
    if not need_dx:
        return None
    w3t = weight.reshape(groups, cout // groups, -1).transpose(0, 2, 1)
    if _is_pointwise(kernel, stride, padding):
        return np.matmul(w3t, dy3).reshape(x_shape)  # cols is x here: never overwrite it
    np.matmul(w3t, dy3, out=cols3)
    ho, wo = dy.shape[2:]
    return col2im(cols, x_shape, kernel, (ho, wo), stride, padding, dilation)
