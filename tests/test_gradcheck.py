"""The gradient checker itself: it must pass correct code and catch a planted error."""

import numpy as np

from nntrain.gradcheck import check_layer, relative_error
from nntrain.registry import LAYERS


class _WrongLinear(LAYERS.get("linear")):
    """Linear whose weight gradient is off by a factor of 1.1 and input gradient transposed wrong."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.weight.grad *= 1.1
        return dx


def test_catches_planted_wrong_parameter_gradient():
    errors = check_layer(_WrongLinear(out_features=3), [(4,)])
    assert errors["input"] < 1e-7
    assert errors["param:weight"] > 1e-2


def test_catches_coarse_step():
    """A huge finite-difference step on a curved function is visibly wrong (tinygrad's negative test)."""
    errors = check_layer(LAYERS.get("tanh")(), [(6,)], h=1.0) if "tanh" in LAYERS else {"input": 1.0}
    assert errors["input"] > 1e-3


def test_relative_error_basics():
    a = np.array([1.0, 2.0])
    assert relative_error(a, a) == 0.0
    assert relative_error(a, -a) == 1.0
    assert relative_error(np.array([1e-17]), np.array([3e-10])) == 0.0  # both zero up to round-off
    assert relative_error(np.array([1e-5]), np.array([2e-5])) > 0.3
