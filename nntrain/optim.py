"""Optimizers (SGD, Adam, AdamW, RMSprop); weight averaging (EMA, Lookahead) is in nntrain.averaging.

``opt = make_optimizer({type: sgd, lr: 0.01, momentum: 0.9}, params)``; each iteration
the training loop sets ``opt.lr`` (from the schedule), runs backward, then ``opt.step()``.
``params`` is a list of ``Parameter`` or of ``(name, Parameter)`` pairs (e.g.
``net.named_parameters()``; the names key the saved state).

Common to every optimizer, for a parameter W with gradient dE/dW (``param.grad``):

- per-parameter learning rate  eta = lr * lr_mult; ``trainable: false`` -> skipped;
- L2 weight decay: the gradient used is  g = dE/dW + lambda * decay_mult * W, which is
  the gradient of the energy  E + (lambda/2) sum decay_mult ||W||^2
  (``weight_decay_energy``); AdamW decays W directly instead (see ``AdamW``);
- ``clip_grad_norm`` c: if the global norm ||g|| over all trainable parameters (decay
  term included) exceeds c, every g is multiplied by c / ||g||.

``step()`` reads ``param.grad`` and never writes it. The update runs in place in the
parameter's dtype (float32 in training) through two reusable scratch buffers (two
chunk-sized ones per thread in the chunked path below). State is allocated on a
parameter's first step.

An optimizer whose update is elementwise and written as ``_apply`` on plain arrays
(SGD) updates a large parameter (>= ``CHUNKED_MIN`` elements) in chunks of ``CHUNK``
elements spread over nntrain's threads (numpy runs each elementwise pass on one core).
Every element sees exactly the same operations, so the result is bit-identical to the
one-call update. Chunks of 128K-256K elements timed best (bench/RESULTS.md): smaller
ones lose the gain to per-call overhead.
"""

from __future__ import annotations

import math

import numpy as np

from . import validate as v
from .ops.parallel import num_threads, parallel_for
from .errors import CheckpointError, ConfigError
from .layers.base import Parameter
from .param_state import Workspace, named_params, saved_scalar
from .registry import OPTIMIZERS
from .spec import Configurable, build_from_spec

CHUNK = 1 << 17  # elements per chunk (module docstring)
CHUNKED_MIN = 2 * CHUNK  # a smaller parameter is updated in one call per pass


def _total_gradient(w, grad, c: float, scale: float, scratch) -> np.ndarray:
    """scale * (grad + c * w), into ``scratch()`` (an array like w); ``grad`` itself if that is it."""
    if c == 0 and scale == 1:
        return grad
    g = scratch()
    if c:
        np.multiply(w, c, out=g)
        g += grad
    else:
        np.copyto(g, grad)
    if scale != 1:
        g *= scale
    return g


class Optimizer(Configurable):
    """Base class: the common options, weight decay, clipping, state save/restore.

    A subclass sets ``state_names`` (per-parameter state; names in ``count_names`` are
    integer counters, the others arrays shaped like the parameter), implements
    ``_update(p, g, state, eta)`` (apply one step to ``p.value`` with total gradient
    ``g``, which it must not modify) and lists ``examples`` (option dicts) for the
    registry-wide tests.
    """

    context_args = ("params",)
    examples: list = []
    state_names: tuple = ()
    count_names: tuple = ()
    decoupled_decay = False  # AdamW: weight decay is not part of the gradient

    def __init__(self, params, lr: float, weight_decay: float = 0.0, clip_grad_norm: float | None = None):
        self.params = named_params(params)
        if not self.params:
            raise ConfigError("there are no parameters to optimise")
        self.lr = v.positive(lr, "lr")
        self.weight_decay = v.non_negative(weight_decay, "weight_decay")
        self.clip_grad_norm = None if clip_grad_norm is None else v.positive(clip_grad_norm, "clip_grad_norm")
        self.steps = 0
        self.state: list[dict] = [{} for _ in self.params]
        self.last_grad_norm: float | None = None  # set by step() when clipping
        self._work = Workspace(max(p.size for _, p in self.params))

    # ----- the step ------------------------------------------------------------------
    def step(self) -> None:
        """Update every trainable parameter from its ``grad`` with the current ``self.lr``."""
        lr = float(self.lr)
        if not lr >= 0:
            raise ConfigError(f"expected a learning rate >= 0, received lr={self.lr!r}")
        scale = 1.0
        if self.clip_grad_norm is not None:
            norm = self.last_grad_norm = self.grad_norm()
            if norm > self.clip_grad_norm:
                scale = self.clip_grad_norm / norm
        self.steps += 1
        for (_, p), state in zip(self.params, self.state):
            if not p.trainable:
                continue
            eta = float(lr * p.lr_mult)
            if self._chunked(p):
                self._step_chunked(p, state, eta, scale)
            else:
                self._update(p, self._gradient(p, scale), state, eta)

    def _decay_coefficient(self, p: Parameter) -> float:
        return 0.0 if self.decoupled_decay else float(self.weight_decay * p.decay_mult)

    def _gradient(self, p: Parameter, scale: float = 1.0) -> np.ndarray:
        """scale * (grad + lambda * decay_mult * W): ``p.grad`` itself when that is the same."""
        return _total_gradient(p.value, p.grad, self._decay_coefficient(p), scale,
                               lambda: self._work.get(0, p.value))

    def _update(self, p: Parameter, g: np.ndarray, state: dict, eta: float) -> None:
        """One step of ``p.value`` with total gradient ``g``; by default ``_apply`` on whole arrays."""
        self._apply(p.value, g, self._state_arrays(p, state), eta, self._work.get(1, p.value))

    def _apply(self, w: np.ndarray, g: np.ndarray, arrays: dict, eta: float, tmp: np.ndarray) -> None:
        """The elementwise update of ``w`` (any flat or shaped view) with gradient ``g``, state
        ``arrays`` (views of the same elements) and scratch ``tmp``; subclasses that can be
        chunked implement it (and ``_state_arrays``), the others override ``_update``."""
        raise NotImplementedError

    def _state_arrays(self, p: Parameter, state: dict) -> dict:
        """The state arrays ``_apply`` reads and writes for ``p`` (allocated on first use)."""
        return {}

    def _chunked(self, p: Parameter) -> bool:
        return (type(self)._apply is not Optimizer._apply and p.value.size >= CHUNKED_MIN
                and p.value.flags.c_contiguous and p.grad.flags.c_contiguous and num_threads() > 1)

    def _step_chunked(self, p: Parameter, state: dict, eta: float, scale: float) -> None:
        """``_update`` chunk by chunk of CHUNK elements, on all threads (module docstring)."""
        full = self._state_arrays(p, state)
        if not all(a.flags.c_contiguous for a in full.values()):  # flat views would be copies
            self._update(p, self._gradient(p, scale), state, eta)
            return
        w, grad = p.value.reshape(-1), p.grad.reshape(-1)
        arrays = {name: a.reshape(-1) for name, a in full.items()}
        c, n = self._decay_coefficient(p), w.size

        def block(lo, hi):
            gbuf, tmp = np.empty(CHUNK, w.dtype), np.empty(CHUNK, w.dtype)
            for a in range(lo * CHUNK, min(n, hi * CHUNK), CHUNK):
                b = min(n, a + CHUNK)
                g = _total_gradient(w[a:b], grad[a:b], c, scale, lambda: gbuf[:b - a])  # noqa: B023
                self._apply(w[a:b], g, {k: x[a:b] for k, x in arrays.items()}, eta, tmp[:b - a])

        parallel_for(-(-n // CHUNK), block, 4 * n)

    def _buffer(self, state: dict, name: str, p: Parameter) -> np.ndarray:
        buf = state.get(name)
        if buf is None:
            buf = state[name] = np.zeros_like(p.value)
        return buf

    # ----- quantities for the log ----------------------------------------------------
    def grad_norm(self) -> float:
        """Global L2 norm of the total gradient (decay term included) over trainable parameters."""
        total = 0.0
        for _, p in self.params:
            if p.trainable:
                g = self._gradient(p).reshape(-1)
                total += float(np.dot(g, g))
        return math.sqrt(total)

    def weight_decay_energy(self) -> float:
        """(lambda/2) sum decay_mult ||W||^2 over trainable parameters (0 for decoupled decay)."""
        if self.decoupled_decay or self.weight_decay == 0:
            return 0.0
        total = 0.0
        for _, p in self.params:
            if p.trainable and p.decay_mult:
                w = p.value.reshape(-1)
                total += p.decay_mult * float(np.dot(w, w))
        return 0.5 * self.weight_decay * total

    # ----- state ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Flat ``{'<type>/<state>/<param key>': array, '<type>/step': int64, '<type>/lr': float64}`` (copies)."""
        t = self.type_name
        out = {f"{t}/step": np.array(self.steps, np.int64), f"{t}/lr": np.array(self.lr, np.float64)}  # ok: one scalar, kept exactly
        for (key, _), state in zip(self.params, self.state):
            for name, val in state.items():
                out[f"{t}/{name}/{key}"] = np.array(val, dtype=np.int64 if name in self.count_names else None)
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` saved (keys of other prefixes are ignored).

        A parameter without saved state (not yet stepped, or frozen until now) starts fresh.
        """
        t = self.type_name
        if f"{t}/step" not in state:
            found = sorted({k.split("/", 1)[0] for k in state})
            raise CheckpointError(f"no saved state for optimizer '{t}' (found: {', '.join(found) or 'nothing'})")
        index = {key: i for i, (key, _) in enumerate(self.params)}
        new_state: list[dict] = [{} for _ in self.params]
        for full_key, val in state.items():
            if not full_key.startswith(f"{t}/") or full_key in (f"{t}/step", f"{t}/lr"):
                continue
            name, _, key = full_key[len(t) + 1:].partition("/")
            if name not in self.state_names or key not in index:
                raise CheckpointError(f"saved optimizer state has an entry this optimizer does not know: {full_key}")
            p = self.params[index[key]][1]
            val = np.asarray(val)
            if name in self.count_names:
                new_state[index[key]][name] = saved_scalar(val, full_key, int)
            else:
                if val.shape != p.shape:
                    raise CheckpointError(f"saved optimizer state: {full_key} has shape {val.shape}, "
                                          f"the parameter has shape {p.shape}")
                new_state[index[key]][name] = val.astype(p.value.dtype, copy=True)
        self.state = new_state
        self.steps = saved_scalar(state[f"{t}/step"], f"{t}/step", int)
        if f"{t}/lr" in state:
            self.lr = saved_scalar(state[f"{t}/lr"], f"{t}/lr", float)


@OPTIMIZERS.register("sgd")
class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum mu.

    g is the total gradient, eta = lr * lr_mult, v starts at 0.

    ``convention: course`` (default; also Caffe, Keras, Chainer)::

        v <- mu v - eta g;   w <- w + v
        Nesterov:  v <- mu v - eta g;   w <- w + mu v - eta g      (with the new v)

    ``convention: pytorch`` (torch.optim.SGD, dampening 0)::

        v <- mu v + g;       w <- w - eta v
        Nesterov:  v <- mu v + g;       w <- w - eta (g + mu v)

    Without momentum both are w <- w - eta g. The course velocity is -eta times the
    PyTorch one while eta is constant, so the two give identical weights; after a
    change of eta they differ: the course velocity keeps its old step lengths (the
    new rate applies to new gradients only) while PyTorch rescales the whole
    velocity at once.
    """

    examples = [
        {"lr": 0.1},
        {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01},
        {"lr": 0.05, "momentum": 0.85, "nesterov": True, "convention": "pytorch", "clip_grad_norm": 0.5},
        {"lr": 0.05, "momentum": 0.5, "nesterov": True, "weight_decay": 0.001},
    ]
    state_names = ("velocity",)

    def __init__(self, params, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 convention: str = "course", weight_decay: float = 0.0, clip_grad_norm: float | None = None):
        super().__init__(params, lr, weight_decay, clip_grad_norm)
        self.momentum = v.probability(momentum, "momentum")
        self.nesterov = v.boolean(nesterov, "nesterov")
        self.convention = v.choice(convention, "convention", ["course", "pytorch"])
        if self.nesterov and self.momentum == 0:
            raise ConfigError("expected momentum > 0 with nesterov: true, received momentum=0")

    def _state_arrays(self, p, state):
        return {"velocity": self._buffer(state, "velocity", p)} if self.momentum else {}

    def _apply(self, w, g, arrays, eta, tmp):
        mu = self.momentum
        if mu == 0:
            np.multiply(g, eta, out=tmp)
            w -= tmp
            return
        vel = arrays["velocity"]
        vel *= mu
        if self.convention == "course":
            np.multiply(g, eta, out=tmp)  # eta g
            vel -= tmp
            if self.nesterov:
                w -= tmp
                np.multiply(vel, mu, out=tmp)
                w += tmp
            else:
                w += vel
        else:
            vel += g
            if self.nesterov:
                np.multiply(vel, mu, out=tmp)
                tmp += g
                tmp *= eta
            else:
                np.multiply(vel, eta, out=tmp)
            w -= tmp


@OPTIMIZERS.register("adam")
class Adam(Optimizer):
    """Adam (Kingma & Ba), as torch.optim.Adam; L2 decay is part of g.

        t <- t + 1 (per parameter);  m <- b1 m + (1 - b1) g;  s <- b2 s + (1 - b2) g^2
        w <- w - (eta / (1 - b1^t)) * m / (sqrt(s) / sqrt(1 - b2^t) + eps)
    """

    examples = [
        {},
        {"lr": 0.01, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.01, "clip_grad_norm": 1.0},
    ]
    state_names = ("exp_avg", "exp_avg_sq", "t")
    count_names = ("t",)

    def __init__(self, params, lr: float = 0.001, betas: list = [0.9, 0.999], eps: float = 1e-8,  # noqa: B006
                 weight_decay: float = 0.0, clip_grad_norm: float | None = None):
        super().__init__(params, lr, weight_decay, clip_grad_norm)
        if not isinstance(betas, (list, tuple)) or len(betas) != 2:
            raise ConfigError(f"expected a list of two numbers in [0, 1), received betas={betas!r}")
        self.betas = (v.probability(betas[0], "betas[0]"), v.probability(betas[1], "betas[1]"))
        self.eps = v.positive(eps, "eps")

    def _update(self, p, g, state, eta):
        b1, b2 = self.betas
        m = self._buffer(state, "exp_avg", p)
        s = self._buffer(state, "exp_avg_sq", p)
        t = state["t"] = state.get("t", 0) + 1
        tmp = self._work.get(1, p.value)
        m *= b1
        np.multiply(g, 1 - b1, out=tmp)
        m += tmp
        s *= b2
        np.multiply(g, g, out=tmp)
        tmp *= 1 - b2
        s += tmp
        np.sqrt(s, out=tmp)
        tmp /= math.sqrt(1 - b2**t)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= eta / (1 - b1**t)
        p.value -= tmp


@OPTIMIZERS.register("adamw")
class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW.

        w <- w - eta * lambda * decay_mult * w      (first, with the current w)
        then the Adam update above with g = grad (no decay term in g)

    The decay is not the gradient of a term of the objective, so ``weight_decay_energy``
    is 0 and ``clip_grad_norm`` clips the plain gradient. Default lambda 0.01 (PyTorch's).
    """

    examples = [{}, {"lr": 0.01, "weight_decay": 0.1, "clip_grad_norm": 1.0}]
    decoupled_decay = True

    def __init__(self, params, lr: float = 0.001, betas: list = [0.9, 0.999], eps: float = 1e-8,  # noqa: B006
                 weight_decay: float = 0.01, clip_grad_norm: float | None = None):
        super().__init__(params, lr, betas, eps, weight_decay, clip_grad_norm)

    def _update(self, p, g, state, eta):
        c = float(eta * self.weight_decay * p.decay_mult)
        if c:
            p.value *= 1 - c
        super()._update(p, g, state, eta)


@OPTIMIZERS.register("rmsprop")
class RMSprop(Optimizer):
    """RMSprop (Hinton), as torch.optim.RMSprop (not centred).

        s <- alpha s + (1 - alpha) g^2
        momentum 0:  w <- w - eta g / (sqrt(s) + eps)
        momentum mu: b <- mu b + g / (sqrt(s) + eps);  w <- w - eta b
    """

    examples = [{}, {"lr": 0.001, "alpha": 0.9, "momentum": 0.9, "weight_decay": 0.001}]
    state_names = ("square_avg", "momentum_buffer")

    def __init__(self, params, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
                 weight_decay: float = 0.0, clip_grad_norm: float | None = None):
        super().__init__(params, lr, weight_decay, clip_grad_norm)
        self.alpha = v.probability(alpha, "alpha")
        self.eps = v.positive(eps, "eps")
        self.momentum = v.probability(momentum, "momentum")

    def _update(self, p, g, state, eta):
        a = self.alpha
        s = self._buffer(state, "square_avg", p)
        tmp = self._work.get(1, p.value)
        s *= a
        np.multiply(g, g, out=tmp)
        tmp *= 1 - a
        s += tmp
        np.sqrt(s, out=tmp)
        tmp += self.eps
        np.divide(g, tmp, out=tmp)
        if self.momentum:
            b = self._buffer(state, "momentum_buffer", p)
            b *= self.momentum
            b += tmp
            np.multiply(b, eta, out=tmp)
        else:
            tmp *= eta
        p.value -= tmp


def make_optimizer(spec, params) -> Optimizer:
    """An Optimizer from ``{type: sgd, lr: ..., **options}`` over ``params`` (see the module docstring)."""
    return build_from_spec(OPTIMIZERS, spec, "optimizer", params=params)
