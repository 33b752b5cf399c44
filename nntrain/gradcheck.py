"""Finite-difference gradient checking (float64, central differences).

For a scalar objective f and a tensor T, the numerical gradient of entry i is

    (f(T + h e_i) - f(T - h e_i)) / (2 h)

and the check compares it with the analytic gradient from ``backward`` by the
relative error ``|a - n|_2 / (|a|_2 + |n|_2)`` over the entries checked (0 when all
entries agree within an absolute 1e-8, see ``relative_error``).
Correct float64 code gives ~1e-9; a wrong gradient gives ~1e-1.

- ``check_layer``: one layer, objective ``sum(R * layer(x))`` with a fixed random R,
  for the input(s) and every parameter.
- ``check_network``: a whole network with its loss, objective = mean data loss, for the
  input and every parameter (a random subset of entries of large tensors).
"""

from __future__ import annotations

import numpy as np

from .layers.base import Layer, batch_shape

DEFAULT_TOLERANCE = 1e-6


def relative_error(analytic: np.ndarray, numeric: np.ndarray, atol: float = 1e-8) -> float:
    """|a - n|_2 / (|a|_2 + |n|_2), or 0 when every entry agrees within ``atol``.

    The absolute floor matters for gradients that are truly zero (a conv bias feeding
    batch normalisation): there the numerical gradient is pure round-off (~1e-10)
    and a relative error would be ~1 although nothing is wrong.
    """
    a = np.asarray(analytic, dtype=np.float64).ravel()  # ok: gradient checks are float64 by design
    n = np.asarray(numeric, dtype=np.float64).ravel()  # ok: gradient checking is float64 by design
    if a.size == 0 or np.max(np.abs(a - n)) <= atol:
        return 0.0
    scale = np.linalg.norm(a) + np.linalg.norm(n)
    if scale < 1e-300:
        return 0.0
    return float(np.linalg.norm(a - n) / max(scale, 1e-12))


def numerical_gradient(f, tensor: np.ndarray, entries, h: float) -> np.ndarray:
    """Central differences of scalar ``f()`` w.r.t. ``tensor.flat[entries]`` (perturbed in place)."""
    flat = tensor.reshape(-1)  # a view: tensors are contiguous
    out = np.empty(len(entries))
    for k, i in enumerate(entries):
        old = flat[i]
        flat[i] = old + h
        f_plus = f()
        flat[i] = old - h
        f_minus = f()
        flat[i] = old
        out[k] = (f_plus - f_minus) / (2 * h)
    return out


def _entries(size: int, max_entries: int | None, rng) -> np.ndarray:
    if max_entries is None or size <= max_entries:
        return np.arange(size)
    return np.sort(rng.choice(size, max_entries, replace=False))


def check_layer(layer: Layer, input_shapes, *, batch: int = 3, training: bool = True, seed: int = 0,
                h: float = 1e-6, max_entries: int | None = None, inputs=None) -> dict[str, float]:
    """Relative error of d sum(R*y)/d(input_k) and d/d(param) for a freshly built ``layer``.

    ``layer`` must not be built yet; it is built in float64. Returns ``{'input': err,
    'input1': err, ..., 'param:weight': err, ...}``. Stochastic layers are re-seeded
    before every forward, so dropout masks stay fixed across the evaluations.
    """
    rng = np.random.default_rng(seed)
    input_shapes = [tuple(s) for s in input_shapes]
    out_shape = layer.build(input_shapes, rng, np.float64)  # ok: finite differences need float64
    if inputs is None:
        inputs = [rng.standard_normal(batch_shape(s, batch)) for s in input_shapes]
    multi = layer.n_inputs != 1
    r = rng.standard_normal(batch_shape(out_shape, batch))

    def run():
        layer.rng = np.random.default_rng(seed + 1)
        y = layer.forward(inputs if multi else inputs[0], training)
        return y

    def objective():
        return float(np.sum(r * run()))

    run()
    layer.needs_input_grad = True
    dxs = layer.backward(r.copy())
    if not multi:
        dxs = [dxs]
    params = layer.params()
    analytic = {f"param:{k}": p.grad.copy() for k, p in params.items()}
    errors = {}
    for k, (x, dx) in enumerate(zip(inputs, dxs)):
        idx = _entries(x.size, max_entries, rng)
        num = numerical_gradient(objective, x, idx, h)
        errors["input" if k == 0 else f"input{k}"] = relative_error(np.asarray(dx).reshape(-1)[idx], num)
    for k, p in params.items():
        idx = _entries(p.value.size, max_entries, rng)
        num = numerical_gradient(objective, p.value, idx, h)
        errors[f"param:{k}"] = relative_error(analytic[f"param:{k}"].reshape(-1)[idx], num)
    return errors


def check_loss(loss, logits: np.ndarray, targets: np.ndarray, h: float = 1e-6) -> float:
    """Relative error of d loss / d logits for a loss object (float64 logits)."""
    loss.forward(logits, targets)
    analytic = loss.backward().copy()
    num = numerical_gradient(lambda: float(loss.forward(logits, targets)), logits, np.arange(logits.size), h)
    return relative_error(analytic, num)


def check_network(net, loss, x: np.ndarray, targets: np.ndarray, *, training: bool = False,
                  h: float = 1e-6, max_entries: int | None = 30, seed: int = 0) -> dict[str, float]:
    """Relative error per parameter (and the input) of the mean data loss of ``net``.

    ``net`` should be built in float64 for a meaningful check. ``training=False`` by
    default so that batch statistics and dropout do not make the objective noisy.
    """
    rng = np.random.default_rng(seed)
    x = np.array(x, dtype=np.float64)  # ok: finite differences need float64

    def objective():
        return float(loss.forward(net.forward(x, training=training), targets))

    out = net.forward(x, training=training)
    loss.forward(out, targets)
    dx = net.backward(loss.backward(), input_grad=True)
    analytic = {name: p.grad.copy() for name, p in net.named_parameters()}
    errors = {}
    idx = _entries(x.size, max_entries, rng)
    errors["input"] = relative_error(dx.reshape(-1)[idx], numerical_gradient(objective, x, idx, h))
    for name, p in net.named_parameters():
        idx = _entries(p.value.size, max_entries, rng)
        errors[name] = relative_error(analytic[name].reshape(-1)[idx], numerical_gradient(objective, p.value, idx, h))
    return errors
