"""Layers, one module per family; importing this package registers them all."""

from .base import Layer, Parameter, batch_shape, to_internal, to_public  # noqa: F401
from . import linear  # noqa: F401
from . import activations, norm, shape, merge, dropout  # noqa: F401
from . import conv, pool  # noqa: F401
