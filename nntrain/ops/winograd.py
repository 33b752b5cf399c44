"""3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray 2015).

Every 2x2 block of outputs ("tile" t) of y = conv(x, W) reads a 4x4 block d_t of the
zero-padded input (tiles step by 2, so neighbouring input blocks overlap by 2 pixels), and

    y_t[o] = A^T [ sum_c U[o, c] (.) V_t[c] ] A,    U[o, c] = G W[o, c] G^T,   V_t[c] = B^T d_t[c] B

with (.) the elementwise product of 4x4 arrays and

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

For each of the 16 positions k = (xi, nu) of the 4x4 arrays, the sum over c is a matrix
product over all tiles at once: M[k] (Cout, T) = U[k] (Cout, C) @ V[k] (C, T), T = tiles
of the batch. That is 16 * Cout * C multiply-adds per tile of 4 outputs against 36 * Cout
* C for the direct convolution: 2.25x fewer, plus transforms that are only additions and
subtractions (the 1/2 of G is exact), so float32 keeps the direct product's accuracy.

Shapes: x (C, N, H, W) channel-major, W (Cout, C, 3, 3), padding P per axis (any P >= 0
forward; the input gradient below needs P <= 2). Ho = H + 2P - 2 and the tile grid is
Th = ceil(Ho / 2) rows by Tw columns: x is padded by P on the top/left and enough at the
bottom/right to hold 2*Th + 2 rows (the extra row, if Ho is odd, gives outputs that are
cropped). Arrays of the 16 positions are (4, 4, C, n, Th, Tw): index xi, nu first.

Backward, with dy (Cout, N, Ho, Wo) zero-padded to 2*Th x 2*Tw:

- dW, as the adjoint of the forward algorithm: dM_t = A dy_t A^T, dU[k] = sum_t dM[k] V[k]^T
  (one product per k over all tiles, (Cout, T) @ (T, C)), dW[o, c] = G^T dU[o, c] G.
- dx: the input gradient of a stride-1 convolution is the convolution of dy, padded by
  2 - P, with the flipped, transposed kernel Wt[c, o, i, j] = W[o, c, 2-i, 2-j]
  (``nntrain.ops.conv``): the same forward algorithm again.

The transforms are a few whole-array additions over strided views of the padded input
(rows 0::2, 1::2, ... of each tile), no loop over tiles or pixels. As in ``ops.conv``
the work is done chunk by chunk of samples (about ``CHUNK_BYTES`` of transformed tiles
each, written and read while in cache), chunks spread over nntrain's threads with one
BLAS thread each; dU is summed per thread, then over the threads in a fixed order.
"""

from __future__ import annotations

import numpy as np

from .conv import by_chunks
from .im2col import scratch

CHUNK_BYTES = 2 << 20

# ok: float64 masters of the exact transform constants; cast to the data dtype where used
_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)


def winograd_applies(kernel: tuple, stride: tuple, dilation: tuple, groups: int, padding: tuple) -> bool:
    """3x3 kernel, stride 1, dilation 1, one group, padding at most 2 (for the input gradient)."""
    return (kernel == (3, 3) and stride == (1, 1) and dilation == (1, 1) and groups == 1
            and all(0 <= p <= 2 for p in padding))


def winograd_workspace_bytes(cin: int, cout: int, out_hw: tuple, itemsize: int) -> int:
    """Scratch of one thread's chunk: V and M, and about as much again for the padded input,
    the half-transformed rows and the output tiles (at least one sample's worth)."""
    per_sample = _chunk_bytes(cin, cout, _tiles(out_hw), itemsize)
    return 2 * max(1, CHUNK_BYTES // per_sample) * per_sample


def transform_weights(weight: np.ndarray) -> np.ndarray:
    """U (16, Cout, C): U[4 xi + nu, o, c] = (G W[o, c] G^T)[xi, nu]."""
    cout, cin = weight.shape[:2]
    g = _G.astype(weight.dtype)
    u = np.tensordot(g, weight, axes=([1], [2]))  # (4, Cout, C, 3): G along the rows
    u = np.tensordot(u, g, axes=([3], [1]))  # (4, Cout, C, 4): and along the columns
    return np.ascontiguousarray(u.transpose(0, 3, 1, 2)).reshape(16, cout, cin)


def weight_gradient(du: np.ndarray, dtype) -> np.ndarray:
    """Adjoint of ``transform_weights``: dU (16, Cout, C) -> dW (Cout, C, 3, 3), G^T dU G."""
    g = _G.astype(dtype)
    cout, cin = du.shape[1:]
    d = du.reshape(4, 4, cout, cin)
    d = np.tensordot(g, d, axes=([0], [0]))  # (3, 4, Cout, C)
    d = np.tensordot(g, d, axes=([0], [1]))  # (3 (j), 3 (i), Cout, C)
    return np.ascontiguousarray(d.transpose(2, 3, 1, 0))


def _bt(rows, out) -> None:
    """B^T applied along a 4-entry axis: rows d0..d3 (views) -> out[0..3]."""
    d0, d1, d2, d3 = rows
    np.subtract(d0, d2, out=out[0])
    np.add(d1, d2, out=out[1])
    np.subtract(d2, d1, out=out[2])
    np.subtract(d1, d3, out=out[3])


def _a(y0, y1, out) -> None:
    """A = (A^T)^T along a 2-entry axis: (y0, y1) -> (y0, y0 + y1, y0 - y1, -y1)."""
    np.copyto(out[0], y0)
    np.add(y0, y1, out=out[1])
    np.subtract(y0, y1, out=out[2])
    np.negative(y1, out=out[3])


def _tiles(out_hw: tuple) -> tuple:
    return -(-out_hw[0] // 2), -(-out_hw[1] // 2)


def _to_nhwc(a: np.ndarray, s: int, e: int, pads: tuple, buf: dict, key: str) -> np.ndarray:
    """Samples s..e of a (C, N, H, W) as a zero-padded (n, Hp, Wp, C) array in ``buf[key]``.

    Channels innermost: every transform below then runs over rows of C (or Wp*C) contiguous
    values, where the channel-major layout would give rows of only Wo/2 tile columns."""
    c, _, h, w = a.shape
    top, bottom, left, right = pads
    out = buf[key] = scratch(buf.get(key), (e - s, h + top + bottom, w + left + right, c), a.dtype)
    out[:, :top] = 0
    out[:, top + h:] = 0
    out[:, top:top + h, :left] = 0
    out[:, top:top + h, left + w:] = 0
    np.copyto(out[:, top:top + h, left:left + w], a[:, s:e].transpose(1, 2, 3, 0))
    return out


def _input_transform(xp: np.ndarray, tiles: tuple, buf: dict) -> np.ndarray:
    """Padded xp (n, >= 2 Th + 2, >= 2 Tw + 2, C) -> V (16, n*Th*Tw, C): B^T d_t B per tile."""
    n, _, wp, c = xp.shape
    th, tw = tiles
    t = buf["bt_rows"] = scratch(buf.get("bt_rows"), (4, n, th, wp, c), xp.dtype)
    _bt([xp[:, i:i + 2 * th:2] for i in range(4)], t)  # along the rows of every tile
    v = buf["v"] = scratch(buf.get("v"), (4, 4, n, th, tw, c), xp.dtype)
    _bt([t[:, :, :, j:j + 2 * tw:2] for j in range(4)], [v[:, k] for k in range(4)])  # and its columns
    return v.reshape(16, n * th * tw, c)


def _output_transform(m: np.ndarray, tiles: tuple, out: np.ndarray, buf: dict) -> None:
    """M (16, n*Th*Tw, Cout) -> ``out`` (n, 2 Th, 2 Tw, Cout), written: A^T M_t A per tile."""
    n, cout = out.shape[0], out.shape[3]
    m = m.reshape(4, 4, n, *tiles, cout)
    s = buf["at_rows"] = scratch(buf.get("at_rows"), (2, *m.shape[1:]), m.dtype)
    np.add(m[0], m[1], out=s[0])  # A^T along the rows: m0 + m1 + m2, m1 - m2 - m3
    s[0] += m[2]
    np.subtract(m[1], m[2], out=s[1])
    s[1] -= m[3]
    pixels = out.reshape(n, tiles[0], 2, tiles[1], 2, cout)  # (n, tile row, a, tile column, b, Cout)
    for b in range(2):  # and along the columns, into pixel (a, b) of every tile
        view = pixels[:, :, :, :, b].transpose(2, 0, 1, 3, 4)  # (a, n, Th, Tw, Cout)
        if b == 0:
            np.add(s[:, 0], s[:, 1], out=view)
            view += s[:, 2]
        else:
            np.subtract(s[:, 1], s[:, 2], out=view)
            view -= s[:, 3]


def _to_channel_major(src: np.ndarray, out_hw: tuple, y: np.ndarray, s: int, e: int) -> None:
    """y[:, s:e] (C, n, Ho, Wo) = the (n, >= Ho, >= Wo, C) ``src`` cropped to Ho x Wo."""
    np.copyto(y[:, s:e], src[:, :out_hw[0], :out_hw[1]].transpose(3, 0, 1, 2))


def _conv_chunk(x, s, e, ut, pads, tiles, y, buf) -> None:
    """y[:, s:e] = the convolution of samples s..e of x; ``ut`` (16, C, Cout) = U transposed."""
    v = _input_transform(_to_nhwc(x, s, e, pads, buf, "x"), tiles, buf)
    m = buf["m"] = scratch(buf.get("m"), (16, v.shape[1], ut.shape[2]), v.dtype)
    np.matmul(v, ut, out=m)
    yb = buf["y"] = scratch(buf.get("y"), (e - s, 2 * tiles[0], 2 * tiles[1], ut.shape[2]), v.dtype)
    _output_transform(m, tiles, yb, buf)
    _to_channel_major(yb, y.shape[2:], y, s, e)


def _pads(in_hw: tuple, padding: tuple, tiles: tuple) -> tuple:
    """(top, bottom, left, right) padding that gives 2 T + 2 rows and columns."""
    (h, w), (ph, pw), (th, tw) = in_hw, padding, tiles
    return (ph, 2 * th + 2 - h - ph, pw, 2 * tw + 2 - w - pw)


def _chunk_bytes(cin: int, cout: int, tiles: tuple, itemsize: int) -> int:
    """Bytes of transformed tiles (V and M) per sample: what a chunk's size is measured in."""
    return 16 * (cin + cout) * tiles[0] * tiles[1] * itemsize


def _transposed_u(weight: np.ndarray, memo: dict | None) -> np.ndarray:
    """U^T (16, C, Cout) of ``weight``; with ``memo`` (a dict the caller keeps), reused while
    the weights are bit for bit the ones it came from (inference), as ``ops.fourier`` does."""
    if memo is not None and memo.get("shape") == weight.shape and memo.get("dtype") == weight.dtype \
            and np.array_equal(memo["weight"], weight):
        return memo["ut"]
    ut = np.ascontiguousarray(transform_weights(weight).transpose(0, 2, 1))
    ut.flags.writeable = False  # may be shared with later calls through the memo
    if memo is not None:
        memo.update(shape=weight.shape, dtype=weight.dtype, weight=weight.copy(), ut=ut)
    return ut


def winograd_conv_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, padding: tuple,
                          memo: dict | None = None) -> np.ndarray:
    """y = conv(x, W) + b for a 3x3 kernel, stride 1: (C, N, H, W) -> a new (Cout, N, Ho, Wo).
    ``memo``: see ``_transposed_u``."""
    cin, n, h, w = x.shape
    cout = weight.shape[0]
    out_hw = (h + 2 * padding[0] - 2, w + 2 * padding[1] - 2)
    tiles = _tiles(out_hw)
    ut = _transposed_u(weight, memo)
    y = np.empty((cout, n, *out_hw), x.dtype)
    pads = _pads((h, w), padding, tiles)
    by_chunks(n, _chunk_bytes(cin, cout, tiles, x.itemsize),
              lambda s, e, buf: _conv_chunk(x, s, e, ut, pads, tiles, y, buf), CHUNK_BYTES)
    if bias is not None:
        y2 = y.reshape(cout, -1)
        y2 += bias[:, None]
    return y


def winograd_conv_backward(dy: np.ndarray, x: np.ndarray, weight: np.ndarray, padding: tuple,
                           dweight: np.ndarray, dbias: np.ndarray | None, need_dx: bool = True) -> np.ndarray | None:
    """Writes dL/dW into ``dweight`` and dL/db into ``dbias``; returns dL/dx (or None).
    ``x`` is the forward pass's input (its tiles are transformed again, chunk by chunk)."""
    cin, n, h, w = x.shape
    cout = weight.shape[0]
    out_hw = dy.shape[2:]
    tiles = _tiles(out_hw)
    if dbias is not None:
        np.sum(dy.reshape(cout, -1) if dy.flags.c_contiguous else dy.sum(axis=(2, 3)), axis=1, out=dbias)
    pads = _pads((h, w), padding, tiles)
    # dy in the layout of the tiles, padded for both of its uses: zero beyond Ho x Wo up to
    # 2 Th x 2 Tw for dM (from offset q), and by q = 2 - P around (plus the tiles' extra
    # row/column) as the input of dx = conv(dy padded by q, Wt)
    q = (2 - padding[0], 2 - padding[1])
    dx_tiles = _tiles((h, w))
    rows = max(q[0] + 2 * tiles[0], 2 * dx_tiles[0] + 2) if need_dx else q[0] + 2 * tiles[0]
    cols = max(q[1] + 2 * tiles[1], 2 * dx_tiles[1] + 2) if need_dx else q[1] + 2 * tiles[1]
    dy_pads = (q[0], rows - q[0] - out_hw[0], q[1], cols - q[1] - out_hw[1])
    if need_dx:  # Wt[c, o, i, j] = W[o, c, 2-i, 2-j]; its U^T is (16, Cout, C)
        flipped_ut = _transposed_u(np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)), None)
        dx = np.empty(x.shape, x.dtype)

    def chunk(s, e, buf):
        v = _input_transform(_to_nhwc(x, s, e, pads, buf, "x"), tiles, buf)
        dyp = _to_nhwc(dy, s, e, dy_pads, buf, "dy")
        dm = _dy_transform(dyp[:, q[0]:q[0] + 2 * tiles[0], q[1]:q[1] + 2 * tiles[1]], buf)
        part = buf["part"] = scratch(buf.get("part"), (16, cin, cout), dy.dtype)
        np.matmul(v.transpose(0, 2, 1), dm, out=part)  # dU^T[k] = V[k]^T dM[k]
        if "du" in buf:
            buf["du"] += part
        else:
            buf["du"] = part.copy()
        if need_dx:  # its own buffers: they have other shapes
            d = buf.setdefault("dx", {})
            vd = _input_transform(dyp, dx_tiles, d)
            m = d["m"] = scratch(d.get("m"), (16, vd.shape[1], cin), dy.dtype)
            np.matmul(vd, flipped_ut, out=m)
            xb = d["y"] = scratch(d.get("y"), (e - s, 2 * dx_tiles[0], 2 * dx_tiles[1], cin), dy.dtype)
            _output_transform(m, dx_tiles, xb, d)
            _to_channel_major(xb, (h, w), dx, s, e)

    per_sample = max(_chunk_bytes(cin, cout, tiles, x.itemsize),
                     _chunk_bytes(cout, cin, dx_tiles, x.itemsize) if need_dx else 0)
    blocks = by_chunks(n, per_sample, chunk, CHUNK_BYTES)
    du = blocks[0]["du"]
    for block in blocks[1:]:
        du += block["du"]
    np.copyto(dweight, weight_gradient(du.transpose(0, 2, 1), dy.dtype))
    return dx if need_dx else None


def _dy_transform(dyp: np.ndarray, buf: dict) -> np.ndarray:
    """dy tiles (n, 2 Th, 2 Tw, Cout), zero beyond the outputs -> dM (16, n*Th*Tw, Cout): A dy_t A^T."""
    n, h2, w2, cout = dyp.shape
    r = buf["a_rows"] = scratch(buf.get("a_rows"), (4, n, h2 // 2, w2, cout), dyp.dtype)
    _a(dyp[:, 0::2], dyp[:, 1::2], r)
    dm = buf["dm"] = scratch(buf.get("dm"), (4, 4, n, h2 // 2, w2 // 2, cout), dyp.dtype)
    _a(r[:, :, :, 0::2], r[:, :, :, 1::2], [dm[:, k] for k in range(4)])
    return dm.reshape(16, -1, cout)
