"""Learning-rate schedules: ``make_schedule(spec, base_lr, iterations_per_epoch, total_epochs)``.

``schedule.lr(i)`` is the learning rate of the optimizer step with index i (i = steps
done so far, from 0). Options are in EPOCHS (floats allowed) and are converted to
iterations with ``iterations_per_epoch``, rounding to the nearest iteration; ``inverse``
is the exception (Caffe's "inv" counts iterations). ``base_lr`` is the optimizer's
``lr``. ``cosine``, ``polynomial`` and ``onecycle`` need the run length
``total_epochs`` (T = round(total_epochs * iterations_per_epoch) iterations); after T
they stay at their final value.

Every schedule takes ``warmup: {epochs: E, start_factor: s}`` (s = 0.1 by default): over
the first W = round(E * iterations_per_epoch) iterations the scheduled rate is
multiplied by  s + (1 - s) * i / W,  a linear ramp from s * lr to the scheduled lr.
The schedule's own clock is not shifted (milestones stay where they are).

``plateau`` is driven by ``observe(metric)`` at each evaluation; the other schedules
ignore it. ``state_dict``/``load_state_dict`` save and restore that state exactly (the
others are pure functions of the iteration and have none).
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from . import validate as v
from .errors import CheckpointError, ConfigError
from .registry import SCHEDULES, did_you_mean
from .spec import Configurable, build_from_spec

_WARMUP_KEYS = ("epochs", "start_factor")


def _parse_warmup(warmup, iterations_per_epoch: int) -> tuple[int, float]:
    """(W iterations, start factor) from ``{epochs: E, start_factor: s}``; (0, 1.0) for None."""
    if warmup is None:
        return 0, 1.0
    if not isinstance(warmup, dict):
        raise ConfigError(f"expected a mapping {{epochs: E, start_factor: s}}, received warmup={warmup!r}")
    for key in warmup:
        if key not in _WARMUP_KEYS:
            raise ConfigError(f"unknown warmup option '{key}'{did_you_mean(key, _WARMUP_KEYS)} "
                              f"(options: {', '.join(_WARMUP_KEYS)})")
    if "epochs" not in warmup:
        raise ConfigError(f"warmup needs 'epochs', received warmup={warmup!r}")
    epochs = v.positive(warmup["epochs"], "warmup.epochs")
    start = v.real(warmup.get("start_factor", 0.1), "warmup.start_factor", min_value=0.0, max_value=1.0)
    return max(1, round(epochs * iterations_per_epoch)), start


class Schedule(Configurable):
    """Base class. A subclass implements ``_lr(i)`` (the rate before warm-up), sets
    ``needs_total`` if it needs ``total_epochs``, and lists ``examples`` (option dicts)
    for the registry-wide tests."""

    context_args = ("base_lr", "iterations_per_epoch", "total_epochs")
    examples: list = []
    needs_total = False

    def __init__(self, base_lr: float, iterations_per_epoch: int = 1, total_epochs: float | None = None,
                 warmup: dict | None = None):
        self.base_lr = v.positive(base_lr, "lr")
        self.iterations_per_epoch = v.positive_int(iterations_per_epoch, "iterations_per_epoch")
        self.total_epochs = None if total_epochs is None else v.positive(total_epochs, "total_epochs")
        self.total_iterations = None if total_epochs is None else max(1, self.iterations(self.total_epochs))
        if self.needs_total and self.total_iterations is None:
            raise ConfigError(f"the '{self.type_name}' schedule needs the length of the run (total_epochs)")
        self.warmup_iterations, self.warmup_start = _parse_warmup(warmup, self.iterations_per_epoch)

    def iterations(self, epochs: float) -> int:
        """Epochs -> the nearest whole number of iterations."""
        return round(epochs * self.iterations_per_epoch)

    def lr(self, iteration: int) -> float:
        """The learning rate of the step with index ``iteration`` (0-based)."""
        i = v.integer(iteration, "iteration", min_value=0)
        lr = self._lr(i)
        if i < self.warmup_iterations:
            lr *= self.warmup_start + (1 - self.warmup_start) * i / self.warmup_iterations
        return lr

    def _lr(self, i: int) -> float:
        raise NotImplementedError

    def observe(self, metric: float) -> None:
        """Report an evaluation metric (used by ``plateau``)."""

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@SCHEDULES.register("constant")
class Constant(Schedule):
    """lr = base_lr."""

    examples = [{}, {"warmup": {"epochs": 1.5, "start_factor": 0.0}}]

    def __init__(self, base_lr, iterations_per_epoch=1, total_epochs=None, *, warmup=None):
        super().__init__(base_lr, iterations_per_epoch, total_epochs, warmup)

    def _lr(self, i):
        return self.base_lr


@SCHEDULES.register("step")
class Step(Schedule):
    """lr = base_lr * factor^floor(i / P),  P = step_size epochs in iterations (Caffe "step")."""

    examples = [{"step_size": 2}, {"step_size": 0.5, "factor": 0.5, "warmup": {"epochs": 1}}]

    def __init__(self, base_lr, iterations_per_epoch=1, total_epochs=None, *, step_size: float,
                 factor: float = 0.1, warmup=None):
        super().__init__(base_lr, iterations_per_epoch, total_epochs, warmup)
        self.step_size = v.positive(step_size, "step_size")
        self.factor = v.real(factor, "factor", min_value=0.0, max_value=1.0, min_open=True)
        self.period = max(1, self.iterations(self.step_size))

    def _lr(self, i):
        return self.base_lr * self.factor ** (i // self.period)


@SCHEDULES.register("multistep")
class MultiStep(Schedule):
    """lr = base_lr * factor^(number of milestones m with round(m * iterations_per_epoch) <= i)."""

    examples = [{"milestones": [2, 5]}, {"milestones": [0.5, 1.25, 3], "factor": 0.2}]

    def __init__(self, base_lr, iterations_per_epoch=1, total_epochs=None, *, milestones: list,
                 factor: float = 0.1, warmup=None):
        super().__init__(base_lr, iterations_per_epoch, total_epochs, warmup)
        epochs = v.real_list(milestones, "milestones")
        if not epochs or epochs[0] <= 0 or any(b <= a for a, b in zip(epochs, epochs[1:])):
            raise ConfigError(f"expected a non-empty increasing list of positive epochs, "
                              f"received milestones={milestones!r}")
        self.milestones = [self.iterations(m) for m in epochs]
        self.factor = v.real(factor, "factor", min_value=0.0, max_value=1.0, min_open=True)

    def _lr(self, i):
        return self.base_lr * self.factor ** bisect.bisect_right(self.milestones, i)


@SCHEDULES.register("exponential")
class Exponential(Schedule):
    """lr = base_lr * gamma^(i / iterations_per_epoch): gamma per epoch, decayed smoothly
    every iteration (equal to PyTorch's per-epoch ExponentialLR at epoch boundaries)."""

    examples = [{"gamma": 0.9}]

    def __init__(self, base_lr, iterations_per_epoch=1, total_epochs=None, *, gamma: float, warmup=None):
        super().__init__(base_lr, iterations_per_epoch, total_epochs, warmup)
        self.gamma = v.real(gamma, "gamma", min_value=0.0, max_value=1.0, min_open=True)

    def _lr(self, i):
        return self.base_lr * self.gamma ** (i / self.iterations_per_epoch)


@SCHEDULES.register("inverse")
class Inverse(Schedule):
    """Caffe "inv": lr = base_lr * (1 + gamma * i)^(-power), i in iterations (defaults: Caffe's LeNet solver)."""

    examples = [{}, {"gamma": 0.001, "power": 0.5}]

    def __init__(self, base_lr, iterations_per_epoch=1, total_epochs=None, *, gamma: float = 1e-4,
                 power: float = 0.75, warmup=None):
        super().__init__(base_lr, iterations_per_epoch, total_epochs, warmup)
        self.gamma = v.positive(gamma, "gamma")
        self.power = v.positive(power, "power")

    def _lr(self, i):
        return self.base_lr * (1 + self.gamma * i) ** (-self.power)


@SCHEDULES.register("polynomial")
class Polynomial(Schedule):
    """lr = min_lr + (base_lr - min_lr) * (1 - min(i, T) / T)^power (Caffe/Darknet "poly" when min_lr = 0)."""

    examples = [{}, {"power": 2, "min_lr": 0.001}]
    needs_total = True

    def __init__(self, base_lr, iterations_per_epoch=1, total_epochs=None, *, power: float = 1.0,
                 min_lr: float = 0.0, warmup=None):
        super().__init__(base_lr, iterations_per_epoch, total_epochs, warmup)
        self.power = v.positive(power, "power")
        self.min_lr = v.non_negative(min_lr, "min_lr")

    def _lr(self, i):
        t = self.total_iterations
        return self.min_lr + (self.base_lr - self.min_lr) * (1 - min(i, t) / t) ** self.power


@SCHEDULES.register("cosine")
class Cosine(Schedule):
    """lr = min_lr + (base_lr - min_lr) * (1 + cos(pi * min(i, T) / T)) / 2 (SGDR without restarts)."""

    examples = [{}, {"min_lr": 1e-4, "warmup": {"epochs": 2, "start_factor": 0.01}}]
    needs_total = True

    def __init__(self, base_lr, iterations_per_epoch=1, total_epochs=None, *, min_lr: float = 0.0, warmup=None):
        super().__init__(base_lr, iterations_per_epoch, total_epochs, warmup)
        self.min_lr = v.non_negative(min_lr, "min_lr")

    def _lr(self, i):
        t = self.total_iterations
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * min(i, t) / t))


def _cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)


def _linear_anneal(a: float, b: float, p: float) -> float:
    return a + (b - a) * p


@SCHEDULES.register("onecycle")
class OneCycle(Schedule):
    """One-cycle policy (Smith), as PyTorch's OneCycleLR, two phases.

    max_lr defaults to base_lr; initial = max_lr / div_factor; final = initial / final_div_factor.
    With e = pct_start * T - 1: for i <= e the rate goes from initial to max_lr along
    anneal(initial, max_lr, i / e), then to final along anneal(max_lr, final, (i - e) / (T - 1 - e)),
    where (``anneal_strategy``) cos: anneal(a, b, p) = b + (a - b) (cos(pi p) + 1) / 2, or
    linear: a + (b - a) p (a triangle, as airbench's). After T - 1 it stays at final.
    """

    examples = [{}, {"max_lr": 0.5, "pct_start": 0.25, "div_factor": 10, "final_div_factor": 100},
                {"pct_start": 0.23, "div_factor": 5, "final_div_factor": 2.857, "anneal_strategy": "linear"}]
    needs_total = True

    def __init__(self, base_lr, iterations_per_epoch=1, total_epochs=None, *, max_lr: float | None = None,
                 pct_start: float = 0.3, div_factor: float = 25.0, final_div_factor: float = 1e4,
                 anneal_strategy: str = "cos", warmup=None):
        super().__init__(base_lr, iterations_per_epoch, total_epochs, warmup)
        self.max_lr = self.base_lr if max_lr is None else v.positive(max_lr, "max_lr")
        self.pct_start = v.real(pct_start, "pct_start", min_value=0.0, max_value=1.0, min_open=True, max_open=True)
        self.div_factor = v.positive(div_factor, "div_factor")
        self.final_div_factor = v.positive(final_div_factor, "final_div_factor")
        self.anneal_strategy = v.choice(anneal_strategy, "anneal_strategy", ["cos", "linear"])
        self._anneal = _cos_anneal if self.anneal_strategy == "cos" else _linear_anneal
        self.initial_lr = self.max_lr / self.div_factor
        self.final_lr = self.initial_lr / self.final_div_factor

    def _lr(self, i):
        last = self.total_iterations - 1
        i = min(i, last)
        end_up = self.pct_start * self.total_iterations - 1
        if i <= end_up:
            return self._anneal(self.initial_lr, self.max_lr, i / end_up if end_up > 0 else 1.0)
        span = last - end_up
        return self._anneal(self.max_lr, self.final_lr, (i - end_up) / span if span > 0 else 1.0)


@SCHEDULES.register("plateau")
class Plateau(Schedule):
    """Reduce on plateau, as PyTorch's ReduceLROnPlateau; ``observe(metric)`` at each evaluation.

    A metric is an improvement if it beats ``best`` by more than the threshold:
    mode min, rel: m < best * (1 - threshold); abs: m < best - threshold (max: mirrored).
    Then best = m and the bad count resets; otherwise the bad count grows. During a
    cooldown (evaluations after a reduction) bad counts are reset. When the bad count
    exceeds ``patience`` (counted in evaluations), lr <- max(lr * factor, min_lr) (if that
    changes lr by more than ``eps``), the cooldown starts and the bad count resets.
    """

    examples = [{}, {"mode": "max", "factor": 0.5, "patience": 2, "cooldown": 1, "threshold_mode": "abs",
                     "threshold": 0.01, "min_lr": 0.01}]

    def __init__(self, base_lr, iterations_per_epoch=1, total_epochs=None, *, mode: str = "min",
                 factor: float = 0.1, patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float = 0.0, eps: float = 1e-8, warmup=None):
        super().__init__(base_lr, iterations_per_epoch, total_epochs, warmup)
        self.mode = v.choice(mode, "mode", ["min", "max"])
        self.factor = v.real(factor, "factor", min_value=0.0, max_value=1.0, min_open=True, max_open=True)
        self.patience = v.integer(patience, "patience", min_value=0)
        self.threshold = v.non_negative(threshold, "threshold")
        self.threshold_mode = v.choice(threshold_mode, "threshold_mode", ["rel", "abs"])
        self.cooldown = v.integer(cooldown, "cooldown", min_value=0)
        self.min_lr = v.non_negative(min_lr, "min_lr")
        self.eps = v.non_negative(eps, "eps")
        self.current_lr = self.base_lr
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad = 0
        self.cooldown_left = 0

    def _lr(self, i):
        return self.current_lr

    def _is_better(self, m: float) -> bool:
        rel, thr = self.threshold_mode == "rel", self.threshold
        if self.mode == "min":
            return m < (self.best * (1 - thr) if rel else self.best - thr)
        return m > (self.best * (1 + thr) if rel else self.best + thr)

    def observe(self, metric):
        m = float(metric)
        if self._is_better(m):
            self.best, self.num_bad = m, 0
        else:
            self.num_bad += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.num_bad = 0
        if self.num_bad > self.patience:
            new = max(self.current_lr * self.factor, self.min_lr)
            if self.current_lr - new > self.eps:
                self.current_lr = new
            self.cooldown_left = self.cooldown
            self.num_bad = 0

    def state_dict(self):
        return {"plateau/best": np.array(self.best, np.float64), "plateau/num_bad": np.array(self.num_bad, np.int64),
                "plateau/cooldown_left": np.array(self.cooldown_left, np.int64),
                "plateau/lr": np.array(self.current_lr, np.float64)}

    def load_state_dict(self, state):
        keys = ("plateau/best", "plateau/num_bad", "plateau/cooldown_left", "plateau/lr")
        missing = [k for k in keys if k not in state]
        if missing:
            raise CheckpointError(f"saved schedule state has no {', '.join(missing)} "
                                  f"(was it saved from a plateau schedule?)")
        self.best = float(state["plateau/best"])
        self.num_bad = int(state["plateau/num_bad"])
        self.cooldown_left = int(state["plateau/cooldown_left"])
        self.current_lr = float(state["plateau/lr"])


def make_schedule(spec, base_lr: float, iterations_per_epoch: int, total_epochs: float | None = None) -> Schedule:
    """A Schedule from ``'cosine'`` or ``{type: ..., **options}`` (None: constant)."""
    if spec is None:
        spec = {"type": "constant"}
    return build_from_spec(SCHEDULES, spec, "schedule", base_lr=base_lr,
                           iterations_per_epoch=iterations_per_epoch, total_epochs=total_epochs)
