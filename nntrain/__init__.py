"""nntrain: neural networks written from scratch on numpy, trained from YAML experiments.

The Python API (usable from a notebook)::

    import numpy as np
    from nntrain import Network, make_loss, make_optimizer

    net = Network([{"type": "conv2d", "out_channels": 8, "kernel": 3, "padding": 1},
                   {"type": "relu"}, {"type": "flatten"}, {"type": "linear", "out_features": 10}],
                  input_shape=(1, 28, 28))
    loss = make_loss({"type": "softmax_cross_entropy"})
    opt = make_optimizer({"type": "sgd", "lr": 0.01, "momentum": 0.9}, net.parameters())
    value = loss.forward(net.forward(x, training=True), y)
    net.backward(loss.backward())
    opt.step()
"""

__version__ = "0.1.0"


def __getattr__(name):  # lazy, so that `nntrain --help` does not import numpy
    if name == "Network":
        from . import graph

        return getattr(graph, name)
    if name in ("make_loss",):
        from . import losses

        return losses.make_loss
    if name in ("make_optimizer",):
        from . import optim

        return optim.make_optimizer
    if name in ("make_schedule",):
        from . import schedules

        return schedules.make_schedule
    raise AttributeError(f"module 'nntrain' has no attribute {name!r}")
