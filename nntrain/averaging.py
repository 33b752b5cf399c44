"""Weight averaging around any optimizer: an exponential moving average (EMA) of the
weights to evaluate with, and Lookahead's slow weights.

Both keep one float copy per trainable parameter and a counter. Their ``state_dict()``
keys are their own (``updates``, ``average/<param key>``; ``steps``, ``started``,
``slow/<param key>``): the training state (nntrain.state) puts them under ``ema/`` and
``lookahead/`` in a checkpoint, as it does for every component.
"""

from __future__ import annotations

import contextlib

import numpy as np

from . import validate as v
from .errors import ConfigError
from .param_state import Workspace, check_state_arrays, named_params
from .spec import Configurable, build


class _ParamCopies(Configurable):
    """Shared by WeightAverage and Lookahead: one float copy per trainable parameter,
    a counter, and their save/restore under ``<copy name>/<param key>`` and the counter's
    name (``prefix`` only names the averager in error messages)."""

    context_args = ("params",)
    prefix = "?"
    copy_name = "?"
    counter_name = "?"

    def _init_copies(self, params, buffers=()) -> None:
        self.params = [(k, p) for k, p in named_params(params) if p.trainable]
        # float buffers (batch-norm running statistics) averaged like parameters, keyed buffer:<name>
        self.params += [(f"buffer:{k}", _BufferView(b)) for k, b in buffers if b.dtype.kind == "f"]
        self.copies = [p.value.copy() for _, p in self.params]
        self.count = 0
        self._work = Workspace(max((p.size for _, p in self.params), default=0))

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {self.counter_name: np.array(self.count, np.int64)}
        for (key, _), c in zip(self.params, self.copies):
            out[f"{self.copy_name}/{key}"] = c.copy()
        return out

    def load_state_dict(self, state: dict) -> None:
        expected = {f"{self.copy_name}/{key}": c for (key, _), c in zip(self.params, self.copies)}
        counter = self.counter_name
        check_state_arrays(self.prefix, state, {**expected, counter: np.zeros((), np.int64)})
        for key, c in expected.items():
            c[...] = state[key]
        self.count = int(state[counter])


class _BufferView:
    """A buffer seen as a parameter's ``value`` (what the averaging loops read and write)."""

    def __init__(self, array: np.ndarray):
        self.value = array
        self.size = array.size


class WeightAverage(_ParamCopies):
    """Exponential moving average of the trainable parameters, to evaluate with.

    Every ``every`` optimizer steps (``update(step)`` with step % every == 0)::

        d = decay, or with warmup  d = min(decay, (1 + n) / (10 + n))   (n = averages taken so far)
        avg <- d avg + (1 - d) w

    ``avg`` starts as a copy of the weights. The warm-up (TensorFlow's
    ExponentialMovingAverage with num_updates) lets early averages follow the fast-moving
    weights instead of remembering the initialisation. Only Parameters are averaged:
    buffers such as batch-norm running statistics are not (re-estimate them, or accept
    the statistics of the live weights).

    ``with ema.averaged(): evaluate(...)`` swaps the averages in and back out (exact
    copies, so training continues bit for bit); ``swap()`` does one exchange.
    """

    prefix, copy_name, counter_name = "ema", "average", "updates"

    def __init__(self, params, decay: float = 0.999, every: int = 1, warmup: bool = True):
        self.decay = v.probability(decay, "decay")
        self.every = v.positive_int(every, "every")
        self.warmup = v.boolean(warmup, "warmup")
        self._init_copies(params)

    def update(self, step: int) -> bool:
        """Average in the current weights if ``step`` (optimizer steps done) is a multiple of ``every``."""
        if step % self.every:
            return False
        n = self.count
        d = min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay
        for (_, p), avg in zip(self.params, self.copies):
            tmp = self._work.get(0, avg)
            np.subtract(p.value, avg, out=tmp)
            tmp *= 1 - d
            avg += tmp
        self.count = n + 1
        return True

    def swap(self) -> None:
        """Exchange the live weights and the averages (call again to undo)."""
        for (_, p), avg in zip(self.params, self.copies):
            tmp = self._work.get(0, avg)
            np.copyto(tmp, p.value)
            np.copyto(p.value, avg)
            np.copyto(avg, tmp)

    @contextlib.contextmanager
    def averaged(self):
        """Context in which the parameters hold the averaged weights."""
        self.swap()
        try:
            yield self
        finally:
            self.swap()


class Lookahead(_ParamCopies):
    """Lookahead (Zhang et al. 2019) around any optimizer: call ``update(step)`` after each step.

    Slow weights phi; from optimizer step ``start_step`` on, every k-th step::

        phi <- phi + alpha_t (w - phi);   w <- phi

    phi starts as a copy of the weights w: of the initial weights when ``start_step`` is
    0, else of the weights after step ``start_step``. ``alpha_t = alpha`` (the paper), or
    with ``decay`` the schedule of airbench (Jordan 2024), an EMA that averages little
    early and strongly at the end::

        alpha_t = 1 - decay**k * (t / T)**power     (t = steps done, T = ``total_steps``)

    ``sync()`` sets w <- phi without moving phi (the trainer calls it at each epoch end,
    so that evaluation and the final weights are the slow ones). The inner optimizer's
    state (momentum) is kept across synchronisations. With ``buffers: true`` the float
    buffers (``network_buffers``: batch-norm running statistics) are averaged and set the
    same way, as airbench does with its whole state dict; by default only Parameters are
    (the statistics follow the live weights).
    """

    prefix, copy_name, counter_name = "lookahead", "slow", "steps"
    context_args = ("params", "total_steps", "network_buffers")

    def __init__(self, params, k: int = 5, alpha: float = 0.5, decay: float | None = None, power: float = 0.0,
                 start_step: int = 0, buffers: bool = False, total_steps: int | None = None, network_buffers=()):
        self.k = v.positive_int(k, "k")
        self.alpha = v.real(alpha, "alpha", min_value=0.0, max_value=1.0, min_open=True)
        self.decay = None if decay is None else v.probability(decay, "decay")
        self.power = v.non_negative(power, "power")
        self.start_step = v.integer(start_step, "start_step", min_value=0)
        self.total_steps = None if total_steps is None else v.positive_int(total_steps, "total_steps")
        if self.decay is not None and self.total_steps is None:
            raise ConfigError("lookahead: decay needs the number of planned steps (total_steps)")
        self.buffers = v.boolean(buffers, "buffers")
        self._init_copies(params, network_buffers if self.buffers else ())
        self.started = self.start_step == 0

    def alpha_at(self, step: int) -> float:
        """The interpolation weight of a synchronisation after ``step`` optimizer steps."""
        if self.decay is None:
            return self.alpha
        return 1.0 - self.decay ** self.k * (min(step, self.total_steps) / self.total_steps) ** self.power

    def update(self, step: int | None = None) -> bool:
        """Count optimizer step number ``step`` (default: the next); synchronise (and return True) every k-th."""
        step = self.start_step + self.count + 1 if step is None else int(step)
        if step < self.start_step:
            return False
        if not self.started:  # the slow weights begin here
            for (_, p), slow in zip(self.params, self.copies):
                np.copyto(slow, p.value)
            self.started = True
            return False
        self.count += 1
        if self.count % self.k:
            return False
        alpha = self.alpha_at(step)
        for (_, p), slow in zip(self.params, self.copies):
            tmp = self._work.get(0, slow)
            np.subtract(p.value, slow, out=tmp)
            tmp *= alpha
            slow += tmp
            np.copyto(p.value, slow)
        return True

    def sync(self) -> None:
        """w <- phi (once the slow weights have begun)."""
        if self.started:
            for (_, p), slow in zip(self.params, self.copies):
                np.copyto(p.value, slow)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {**super().state_dict(), "started": np.array(self.started)}

    def load_state_dict(self, state: dict) -> None:
        key = "started"
        check_state_arrays(self.prefix, state, {key: np.zeros((), bool)})
        super().load_state_dict({k: val for k, val in state.items() if k != key})
        self.started = bool(state[key])


def make_weight_average(options, params) -> WeightAverage:
    """A WeightAverage from YAML options ``{decay: 0.999, every: 1, warmup: true}``."""
    return build(WeightAverage, options, "ema", params=params)


def make_lookahead(options, params, total_steps: int | None = None, network_buffers=()) -> Lookahead:
    """A Lookahead from options ``{k: 5, alpha: 0.5}`` or ``{k: 5, decay: 0.95, power: 3, start_step: 200}``
    (``buffers: true``: ``network_buffers``, (name, array) pairs, are averaged too)."""
    return build(Lookahead, options, "lookahead", params=params, total_steps=total_steps,
                 network_buffers=network_buffers)
