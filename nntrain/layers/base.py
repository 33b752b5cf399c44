"""The layer contract, parameters, and the tensor layout used inside a network.

Layout
------
Shapes given to and returned by ``build`` are *per-sample* shapes, without the batch
axis: ``(C, H, W)`` for images, ``(F,)`` for feature vectors.

Inside a network, image batches are **channel-major**: ``(C, N, H, W)``. With that
layout a convolution is one matrix product ``W (Cout, Cin*K*K) @ cols (Cin*K*K, N*Ho*Wo)``
whose result already *is* the next activation ``(Cout, N, Ho, Wo)``, with no transpose;
batch normalisation reduces over one contiguous block per channel. Any other batch is
batch-major: ``(N, F)`` or ``(N, *shape)``. ``batch_shape`` and ``to_internal`` /
``to_public`` convert (as views); a ``Network`` takes and returns the usual
``(N, C, H, W)``. Layers produce these layouts but accept any memory layout of the same
shape (strided views, Fortran order: tested for every layer), so the network input is
the user's batch itself, seen channel-major.

Contract
--------
``build(input_shapes, rng, dtype)`` is called once: it checks the input shapes, creates
the parameters and returns the output shape. Then, many times:

- ``forward(x, training)`` returns the output and keeps what ``backward`` needs.
  ``x`` is one array, or a list of arrays for layers with several inputs
  (``n_inputs != 1``).
- ``backward(dy)`` returns ``dx`` (a list for several inputs) and **overwrites** each
  parameter's ``grad`` with d(objective)/d(parameter) for this batch (it does not
  accumulate: a layer is used once per pass, and writing straight into the gradient
  buffer saves a full read-modify-write). When ``self.needs_input_grad`` is False
  (the layer reads only the network input) it may skip ``dx`` and return None.

A layer never modifies in place an array it received (``x`` in forward, ``dy`` in
backward): the same array may feed another branch of the DAG, or be kept by the
layer that produced it for its own backward.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..spec import Configurable, check_options


class Parameter:
    """A trainable tensor, its gradient, and Caffe-style per-parameter options.

    ``lr_mult`` multiplies the learning rate and ``decay_mult`` the weight decay for
    this tensor; ``trainable=False`` freezes it (the optimizer skips it). By default
    weights decay and biases / normalisation parameters do not (``decay_mult`` 0).
    ``train_until_epoch`` E (None: the whole run): trained by the first E epochs' steps
    only, then frozen (the trainer's TrainUntil hook sets ``trainable``).
    """

    __slots__ = ("value", "grad", "lr_mult", "decay_mult", "trainable", "train_until_epoch", "name")

    def __init__(self, value: np.ndarray, *, decay: bool = True, name: str = ""):
        self.value = value
        self.grad = np.zeros_like(value)
        self.lr_mult = 1.0
        self.decay_mult = 1.0 if decay else 0.0
        self.trainable = True
        self.train_until_epoch = None
        self.name = name

    @property
    def shape(self):
        return self.value.shape

    @property
    def size(self) -> int:
        return self.value.size

    def __repr__(self) -> str:
        return (f"Parameter({self.name or '?'}, shape={self.value.shape}, lr_mult={self.lr_mult}, "
                f"decay_mult={self.decay_mult}, trainable={self.trainable})")


def batch_shape(sample_shape: tuple, n: int) -> tuple:
    """The internal array shape of a batch of ``n`` samples of ``sample_shape``."""
    sample_shape = tuple(sample_shape)
    if len(sample_shape) == 3:
        c, h, w = sample_shape
        return (c, n, h, w)
    return (n, *sample_shape)


def to_internal(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (C, N, H, W) (a view); other shapes unchanged.

    No copy: every layer takes inputs in any memory layout (tested registry-wide), and the
    first one's own pass reads the view anyway -- a flatten then gets its (N, C*H*W) rows
    back without any copy (an MLP's input used to be transposed twice)."""
    if x.ndim == 4:
        return x.transpose(1, 0, 2, 3)
    return x


def to_public(x: np.ndarray) -> np.ndarray:
    """(C, N, H, W) -> (N, C, H, W) (a view); other shapes unchanged."""
    if x.ndim == 4:
        return x.transpose(1, 0, 2, 3)
    return x


def batch_size_of(x: np.ndarray) -> int:
    """N of an internal batch array."""
    return x.shape[1] if x.ndim == 4 else x.shape[0]


TIE_RTOL = 1e-12


def tie_tolerance(x: np.ndarray) -> float:
    """How close two values of ``x`` (or one and a kink at 0) must be to count as equal in a
    ``Layer.branch_signature``: TIE_RTOL of the largest |x|. Float64 rounding, e.g. a
    Fourier-domain convolution's (mathematically equal outputs ~1e-14 of the largest
    apart), must not look like a branch taken; a finite-difference step of 1e-6 moves a
    genuine tie by far more."""
    return TIE_RTOL * float(np.max(np.abs(x), initial=0.0))


class Layer(Configurable):
    """Base class of every layer; see the module docstring for the contract.

    A subclass declares its options as keyword arguments of ``__init__``, validates
    them there (``nntrain.validate``), and implements ``build``, ``forward`` and
    ``backward``. The arguments it was constructed with are recorded automatically,
    so ``get_config`` round-trips without per-layer code.

    Subclasses list ``examples``: ``(options, input_shapes)`` pairs that the
    registry-wide tests build and gradient-check, so a new layer is tested by
    declaring them, without new test code.
    """

    type_name = "?"  # set by the registry
    n_inputs: int | None = 1  # None: one or more inputs (add, concat)
    examples: list = []

    def __init__(self):
        pass

    # ----- construction ---------------------------------------------------------
    @classmethod
    def from_config(cls, options: dict) -> "Layer":
        """Build from a YAML dict of constructor options (without ``type``)."""
        check_options(cls, options, f"layer type '{cls.type_name}'")
        return cls(**options)

    # ``get_config()`` (from Configurable) returns ``{'type': ..., **options}``, which
    # ``from_config`` turns back into the same layer.

    # ----- the contract ----------------------------------------------------------
    needs_input_grad = True
    rng: np.random.Generator | None = None  # set by the network for stochastic layers

    def build(self, input_shapes: list[tuple], rng: np.random.Generator, dtype) -> tuple:
        """Check input shapes, create parameters, return the output shape."""
        raise NotImplementedError

    def forward(self, x, training: bool):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def params(self) -> dict[str, Parameter]:
        """Trainable tensors by name, in a fixed order."""
        return {}

    def param_shapes(self, input_shapes: list[tuple]) -> dict[str, tuple]:
        """The shape of every parameter ``build`` creates for these inputs, as ``params()``
        will hold them. Called before ``build`` so that the network can refuse a size that
        cannot fit in memory before allocating it (``nntrain.sizes``); a layer with
        parameters overrides it, and ``build`` takes its shapes from it."""
        return {}

    def workspace_bytes(self, input_shapes: list[tuple], output_shape: tuple, itemsize: int) -> int:
        """Scratch memory one thread holds during a pass, on top of the inputs and outputs
        (e.g. the convolution's im2col chunk); 0 for most layers."""
        return 0

    # ----- weights computed from data (e.g. init: pca_whitening) -----------------
    def data_samples(self) -> int:
        """How many training examples this layer's weight initializer wants to see (0: none)."""
        return int(getattr(getattr(self, "init", None), "samples", 0) or 0)

    def input_rows(self, x: np.ndarray) -> np.ndarray:
        """The inputs each output unit sees, as rows (n, fan_in), for a batch ``x`` (internal layout)."""
        raise ConfigError(f"{self.type_name}: this layer's weight cannot be computed from data")

    def init_from_data(self, x: np.ndarray) -> None:
        """Set the weight from this layer's input batch ``x`` (internal layout) with its initializer."""
        w = self.weight
        w.value[...] = self.init.from_data(self.input_rows(x), w.value.shape, w.value.dtype)

    def buffers(self) -> dict[str, np.ndarray]:
        """Non-trainable state saved with the weights (e.g. running statistics)."""
        return {}

    def macs(self, input_shapes: list[tuple], output_shape: tuple) -> int:
        """Multiply-adds of one forward pass, per sample."""
        return 0

    def branch_signature(self) -> np.ndarray | None:
        """Which branch each piece of a piecewise forward took in the last ``forward``, as an
        array the layer does not write to again (ReLU: x > 0; max pooling: which entries of
        each window equal its max), values within ``tie_tolerance`` counting as equal; None
        for a smooth layer. Call it right after ``forward``. Gradient checks compare it at
        x, x + h and x - h: a change means the step crossed a kink, where a finite
        difference does not measure the gradient (``nntrain.gradcheck``)."""
        return None

    def clear(self) -> None:
        """Drop what forward kept for backward (frees memory after a step)."""
        for key in list(self.__dict__):
            if key.startswith("_cache"):
                self.__dict__[key] = None

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in getattr(self, "_init_args", {}).items())
        return f"{type(self).__name__}({opts})"


def expect_rank(input_shape: tuple, rank: int, what: str) -> None:
    """ConfigError unless ``input_shape`` has ``rank`` axes (per sample)."""
    if len(input_shape) != rank:
        raise ConfigError(f"expects {what} input, got shape {tuple(input_shape)}")
