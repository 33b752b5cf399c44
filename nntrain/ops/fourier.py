"""Stride-1 convolution in the Fourier domain, with the DFTs written as small matrix products.

A stride-1, dilation-1, ungrouped convolution (cross-correlation) of the zero-padded
input xpad (C, N, Hp, Wp), Hp = H + 2P, is, per sample and per output channel,

    y[o] = sum_c xpad[c] (*) W[o, c]       (*) = 2-D cross-correlation, kept on [0, Ho) x [0, Wo)

On a periodic grid of Fh x Fw = Hp x Wp points the windows never wrap (Ho + K - 1 = Hp),
so with 2-D DFTs X[c] = DFT(xpad[c]) and Wf[o, c] = DFT(W[o, c] zero-padded),

    Y_f[o] = sum_c conj(Wf_f[o, c]) X_f[c]          for every frequency f, then y = IDFT(Y).

Per frequency this is a (Cout x C) complex matrix product over the batch: the K*K
multiply-adds of each output value become about 4*Fh*(Fw/2+1)/(Ho*Wo) real ones (2.7x
fewer for a 5x5 kernel on 16x16 "same" convolutions), plus transforms whose cost grows
with C and Cout, not with their product. ``fourier_macs`` gives the count; the layer
picks this route when it is well below the direct count (see ``nntrain.layers.conv``).

Layout. Real and imaginary parts are stacked: a spectrum is (F, 2, B) with
F = (Fw/2+1) * Fh frequencies, [0] real, [1] imaginary, B = channels x samples. A
complex product conj(Wf) X is then one real product with the block matrix

    Wblk = [[Wr, Wi], [-Wi, Wr]]  (2 Cout x 2 C):   [Yr; Yi] = Wblk [Xr; Xi]

so the forward, dx and dW are three batched real matmuls (G = F products each):
Y = Wblk X, dX = Wblk^T dY, dWblk = dY X^T. Every DFT is separable, a product with a
small matrix along W then along H, batched so that BLAS does all the work (pocketfft's
per-row calls are much slower at these sizes, bench/RESULTS.md); the stacks of products
are spread over nntrain's threads with one BLAS thread each (``batched_matmul``). Zero
padding and cropping are folded into the matrices (only the columns of real input
pixels and the rows of kept outputs), and the backward pass multiplies by the
*transposes* of the very matrices the forward used,
so the gradients are exact adjoints of the forward map (the float64 gradient checks
hold to rounding).
"""

from __future__ import annotations

import functools

import numpy as np

from .parallel import batched_matmul, parallel_for


@functools.lru_cache(maxsize=64)
def _analysis_matrices(fh: int, fw: int, h_in: int, w_in: int, oh: int, ow: int, dtype):
    """(A1, A2): the real 2-D DFT of an (h_in, w_in) block placed at (oh, ow) of an fh x fw grid.

    A1 (2*Fw2, w_in), rows (ri, f):  [cos; -sin](2 pi f (w + ow) / fw)        (real DFT along W)
    A2 (2*fh, 2*h_in), rows (u, ro), columns (h, ri), t = 2 pi u (h + oh) / fh:
        [[cos t, sin t], [-sin t, cos t]]                                    (complex DFT along H)
    """
    fw2 = fw // 2 + 1
    psi = 2 * np.pi * np.outer(np.arange(fw2), np.arange(w_in) + ow) / fw
    a1 = np.concatenate([np.cos(psi), -np.sin(psi)])
    t = 2 * np.pi * np.outer(np.arange(fh), np.arange(h_in) + oh) / fh  # (u, h)
    c, s = np.cos(t), np.sin(t)
    a2 = np.empty((fh, 2, h_in, 2))
    a2[:, 0, :, 0], a2[:, 0, :, 1], a2[:, 1, :, 0], a2[:, 1, :, 1] = c, s, -s, c
    return _frozen(a1, dtype), _frozen(a2.reshape(2 * fh, 2 * h_in), dtype)


@functools.lru_cache(maxsize=64)
def _synthesis_matrices(fh: int, fw: int, h_out: int, w_out: int, r0: int, c0: int, dtype):
    """(I2, I1): the inverse 2-D DFT of a half spectrum, keeping rows [r0, r0+h_out), cols [c0, c0+w_out).

    I2 (2*h_out, 2*fh), rows (h, ro), columns (u, ri), t = 2 pi u (h + r0) / fh:
        [[cos t, -sin t], [sin t, cos t]]                                    (complex IDFT along H)
    I1 (w_out, 2*Fw2), columns (ro, f): c_f / (fh fw) [cos, -sin](2 pi f (w + c0) / fw), with
        c_f = 1 for f = 0 (and f = fw/2 when fw is even), else 2            (real IDFT along W)
    """
    fw2 = fw // 2 + 1
    t = 2 * np.pi * np.outer(np.arange(h_out) + r0, np.arange(fh)) / fh  # (h, u)
    c, s = np.cos(t), np.sin(t)
    i2 = np.empty((h_out, 2, fh, 2))
    i2[:, 0, :, 0], i2[:, 0, :, 1], i2[:, 1, :, 0], i2[:, 1, :, 1] = c, -s, s, c
    weight = np.full(fw2, 2.0)
    weight[0] = 1.0
    if fw % 2 == 0:
        weight[-1] = 1.0
    psi = 2 * np.pi * np.outer(np.arange(w_out) + c0, np.arange(fw2)) / fw
    i1 = np.concatenate([np.cos(psi), -np.sin(psi)], axis=1) * (np.concatenate([weight, weight]) / (fh * fw))
    return _frozen(i2.reshape(2 * h_out, 2 * fh), dtype), _frozen(i1, dtype)


def _frozen(a, dtype):
    a = np.ascontiguousarray(a, dtype=dtype)
    a.flags.writeable = False  # cached and shared
    return a


def analysis(a: np.ndarray, grid: tuple, offset: tuple) -> np.ndarray:
    """(H, W, B) real block at ``offset`` of a zero grid -> its half spectrum (F, 2, B)."""
    (fh, fw), (h, w, b) = grid, a.shape
    a1, a2 = _analysis_matrices(fh, fw, h, w, *offset, a.dtype)
    fw2 = fw // 2 + 1
    s1 = batched_matmul(a1, a)  # (H, 2*Fw2, B): rows (ri, f)
    s1v = s1.reshape(h * 2, fw2, b).transpose(1, 0, 2)  # (Fw2, (h, ri), B), a view
    return batched_matmul(a2, s1v).reshape(fw2 * fh, 2, b)  # (Fw2, (u, ro), B)


def analysis_adjoint(z: np.ndarray, grid: tuple, offset: tuple, shape: tuple) -> np.ndarray:
    """Transpose of ``analysis``: (F, 2, B) -> (H, W, B)."""
    (fh, fw), (h, w), b = grid, shape, z.shape[2]
    a1, a2 = _analysis_matrices(fh, fw, h, w, *offset, z.dtype)
    fw2 = fw // 2 + 1
    s1 = np.empty((h, 2 * fw2, b), z.dtype)
    batched_matmul(a2.T, z.reshape(fw2, 2 * fh, b), out=s1.reshape(h * 2, fw2, b).transpose(1, 0, 2))
    return batched_matmul(a1.T, s1)


def synthesis(y: np.ndarray, grid: tuple, origin: tuple, shape: tuple) -> np.ndarray:
    """Half spectrum (F, 2, B) -> the real (h_out, w_out, B) block at ``origin`` of its inverse DFT."""
    (fh, fw), (h, w), b = grid, shape, y.shape[2]
    i2, i1 = _synthesis_matrices(fh, fw, h, w, *origin, y.dtype)
    fw2 = fw // 2 + 1
    s = batched_matmul(i2, y.reshape(fw2, 2 * fh, b))  # (Fw2, (h, ro), B)
    st = np.empty((h, 2, fw2, b), y.dtype)  # regroup to rows (ro, f) for each h
    np.copyto(st, s.reshape(fw2, h, 2, b).transpose(1, 2, 0, 3))
    return batched_matmul(i1, st.reshape(h, 2 * fw2, b))


def synthesis_adjoint(d: np.ndarray, grid: tuple, origin: tuple) -> np.ndarray:
    """Transpose of ``synthesis``: (h_out, w_out, B) -> (F, 2, B)."""
    (fh, fw), (h, w, b) = grid, d.shape
    i2, i1 = _synthesis_matrices(fh, fw, h, w, *origin, d.dtype)
    fw2 = fw // 2 + 1
    st = batched_matmul(i1.T, d)  # (h, 2*Fw2, B)
    s = np.empty((fw2, h, 2, b), d.dtype)
    np.copyto(s, st.reshape(h, 2, fw2, b).transpose(2, 0, 1, 3))
    return batched_matmul(i2.T, s.reshape(fw2, 2 * h, b)).reshape(fw2 * fh, 2, b)


def fourier_macs(cin: int, cout: int, in_hw: tuple, kernel: tuple, padding: tuple) -> int:
    """Multiply-adds per sample of ``fourier_conv_forward`` (transforms + block products)."""
    (h, w), (kh, kw), (ph, pw) = in_hw, kernel, padding
    fh, fw = h + 2 * ph, w + 2 * pw
    ho, wo = fh - kh + 1, fw - kw + 1
    fw2 = fw // 2 + 1
    mix = 4 * cin * cout * fh * fw2
    x_t = cin * (h * 2 * fw2 * w + fw2 * 2 * fh * 2 * h)
    y_t = cout * (fw2 * 2 * ho * 2 * fh + ho * wo * 2 * fw2)
    return mix + x_t + y_t


def _to_pixel_major(x: np.ndarray) -> np.ndarray:
    """(C, N, H, W) -> contiguous (H, W, C*N): the 2-D transpose of x as (C*N, H*W)."""
    c, n, h, w = x.shape
    src, out = x.reshape(c * n, h * w), np.empty((h * w, c * n), x.dtype)

    def block(lo, hi):  # in tiles of 256 columns: a plain transposed copy of a big array is slower (cache)
        for j in range(lo, hi, 256):
            k = min(j + 256, hi)
            out[:, j:k] = src[j:k].T

    parallel_for(c * n, block, x.size)
    return out.reshape(h, w, c * n)


def _to_channel_major(a: np.ndarray, c: int, n: int) -> np.ndarray:
    """(H, W, C*N) -> contiguous (C, N, H, W): the 2-D transpose of a as (H*W, C*N)."""
    h, w = a.shape[:2]
    src, out = a.reshape(h * w, c * n), np.empty((c * n, h * w), a.dtype)

    def block(lo, hi):  # in 1024 x 16 tiles: faster than one transposed copy when C*N is large (cache)
        for j in range(lo, hi, 1024):
            k = min(j + 1024, hi)
            for i in range(0, h * w, 16):
                out[j:k, i:i + 16] = src[i:i + 16, j:k].T

    parallel_for(c * n, block, a.size)
    return out.reshape(c, n, h, w)


def _blocks(wf: np.ndarray) -> np.ndarray:
    """Weight spectrum (F, 2, Cout, C) -> Wblk (F, 2 Cout, 2 C) = [[Wr, Wi], [-Wi, Wr]]."""
    f, _, cout, cin = wf.shape
    blk = np.empty((f, 2, cout, 2, cin), wf.dtype)
    wr, wi = wf[:, 0], wf[:, 1]
    blk[:, 0, :, 0], blk[:, 0, :, 1], blk[:, 1, :, 0], blk[:, 1, :, 1] = wr, wi, -wi, wr
    return blk.reshape(f, 2 * cout, 2 * cin)


def fourier_conv_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, padding: tuple,
                         memo: dict | None = None):
    """y = conv(x, W) + b for stride 1, dilation 1, one group; returns ``(y, cache)``.

    x (C, N, H, W), W (Cout, C, Kh, Kw) -> y (Cout, N, Ho, Wo). ``cache`` is what
    ``fourier_conv_backward`` needs (the input spectrum and the weight blocks).

    ``memo``, a dict the caller keeps between calls, saves the weight blocks with a copy of
    the weights they came from, and reuses them while the weights are bit for bit the same
    (one comparison of the small weight array): in inference the weights do not change,
    and their transform and block layout are a measurable part of a deep layer's call.
    """
    cin, n, h, w = x.shape
    cout, _, kh, kw = weight.shape
    grid = (h + 2 * padding[0], w + 2 * padding[1])
    ho, wo = grid[0] - kh + 1, grid[1] - kw + 1
    xs = analysis(_to_pixel_major(x), grid, padding)  # (F, 2, C*N)
    f = xs.shape[0]
    xs = xs.reshape(f, 2 * cin, n)
    key = (grid, weight.shape, weight.dtype)
    if memo is not None and memo.get("key") == key and np.array_equal(memo["weight"], weight):
        wblk = memo["wblk"]
    else:
        wt = np.ascontiguousarray(weight.transpose(2, 3, 0, 1)).reshape(kh, kw, cout * cin)
        wblk = _blocks(analysis(wt, grid, (0, 0)).reshape(f, 2, cout, cin))
        wblk.flags.writeable = False  # may be shared with later calls through the memo
        if memo is not None:
            memo.update(key=key, weight=weight.copy(), wblk=wblk)
    ys = batched_matmul(wblk, xs)  # (F, 2 Cout, N)
    y = _to_channel_major(synthesis(ys.reshape(f, 2, cout * n), grid, (0, 0), (ho, wo)), cout, n)
    if bias is not None:
        y2 = y.reshape(cout, -1)
        y2 += bias[:, None]
    return y, (xs, wblk, grid, x.shape)


def fourier_conv_backward(dy: np.ndarray, cache, weight_shape: tuple, padding: tuple, dweight: np.ndarray,
                          dbias: np.ndarray | None, need_dx: bool = True) -> np.ndarray | None:
    """Writes dL/dW into ``dweight``, dL/db into ``dbias``; returns dL/dx (or None). Adjoint of the forward."""
    xs, wblk, grid, x_shape = cache
    cin, n, h, w = x_shape
    cout, _, kh, kw = weight_shape
    f = xs.shape[0]
    if dbias is not None:
        np.sum(dy.reshape(cout, -1), axis=1, out=dbias)
    dys = synthesis_adjoint(_to_pixel_major(dy), grid, (0, 0)).reshape(f, 2 * cout, n)
    dblk = batched_matmul(dys, xs.transpose(0, 2, 1)).reshape(f, 2, cout, 2, cin)  # d Wblk
    dwf = np.empty((f, 2, cout, cin), dy.dtype)  # chain rule through [[Wr, Wi], [-Wi, Wr]]
    np.add(dblk[:, 0, :, 0], dblk[:, 1, :, 1], out=dwf[:, 0])
    np.subtract(dblk[:, 0, :, 1], dblk[:, 1, :, 0], out=dwf[:, 1])
    dwt = analysis_adjoint(dwf.reshape(f, 2, cout * cin), grid, (0, 0), (kh, kw))  # (Kh, Kw, Cout*C)
    np.copyto(dweight, dwt.reshape(kh, kw, cout, cin).transpose(2, 3, 0, 1))
    if not need_dx:
        return None
    dxs = batched_matmul(wblk.transpose(0, 2, 1), dys)  # (F, 2 C, N)
    dxt = analysis_adjoint(dxs.reshape(f, 2, cin * n), grid, padding, (h, w))
    return _to_channel_major(dxt, cin, n)
