"""Pure numpy kernels: functions on arrays, no objects that own parameters.

The layer classes in ``nntrain.layers`` own the parameters and call these. Every
image array here is channel-major ``(C, N, H, W)`` (see ``nntrain.layers.base``).

- ``im2col``: output sizes, padding, the strided window view, ``im2col`` / ``col2im``.
- ``conv``: 2-D convolution (groups, stride, padding, dilation) forward and backward.
- ``pool``: max and average pooling (PyTorch's ``ceil_mode`` / ``count_include_pad``).
- ``fourier``: stride-1 convolution as per-frequency channel products (DFTs as matmuls).
- ``winograd``: 3x3 stride-1 convolution by Winograd's F(2x2, 3x3), products over all tiles.
- ``parallel``: the thread pool that runs memory-bound kernels and stacks of small
  products over blocks of samples / channels / frequencies on all cores.
- ``reference``: the slow, obviously correct loop versions of these kernels, written from
  the definitions (conventions in its docstring); the tests compare every fast path
  against them (tests/test_conv_pool.py). Read them first: the fast kernel must equal that.
  nntrain never imports them.
"""

from .conv import conv2d_backward, conv2d_forward  # noqa: F401
from .im2col import col2im, conv_output_size, im2col, pool_output_size, scratch  # noqa: F401
from .pool import (avg_pool_backward, avg_pool_forward, avg_pool_inverse_counts,  # noqa: F401
                   max_pool_backward, max_pool_forward)
