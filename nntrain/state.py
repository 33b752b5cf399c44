"""The training state: everything a run needs to continue exactly, in one object.

A ``TrainState`` holds the network, the optimizer, the learning-rate schedule, the weight
averagers (EMA, Lookahead; either may be absent) and ``Progress``, the counters and
running sums of the loop. ``state_dict()`` / ``load_state_dict()`` are the one place
that decides what a checkpoint holds, used for saving, resuming, the in-memory snapshot
of a divergence roll-back, and loading a model for ``nntrain eval``.

Checkpoint keys (one rule: ``<component>/<the component's own key>``)::

    param/<layer>.<name>, buffer/<layer>.<name>   the network (its own keys already prefixed)
    optim/<param key>/<state name>                the optimizer
    ema/updates, ema/average/<param key>          train.ema
    lookahead/steps, lookahead/started, lookahead/slow/<param key>   train.lookahead
    norm/...                                      input normalisation (nntrain.rundir adds it)

and the JSON ``meta``: the Progress fields and the schedule state (``schedule``).

Random positions are not state: every draw is a pure function of (seed, epoch, batch,
iteration) — the data order and augmentation (nntrain.data.loader), the dropout masks
(``Network.set_rng``) — so the iteration counter fixes them all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import numbers
from dataclasses import dataclass, field

import numpy as np

from . import validate as v
from .errors import CheckpointError, ConfigError
from .rundir import STOPS


def zero_sums() -> dict:
    """Running sums over the current epoch's batches (each value times the batch size)."""
    return {"energy": 0.0, "loss": 0.0, "weight_decay": 0.0, "errors": 0.0, "n": 0}


def no_best() -> dict:
    return {"value": None, "epoch": None, "iteration": None, "metrics": None}


@dataclass
class Progress:
    """The loop's counters: saved in every checkpoint's meta under these field names."""

    iteration: int = 0  # optimizer steps done
    lr_scale: float = 1.0  # < 1 after divergence roll-backs
    retries: int = 0  # divergence roll-backs so far
    elapsed: float = 0.0  # wall seconds of the run, across resumes
    train_seconds: float = 0.0  # seconds inside training steps
    images_seen: int = 0
    sums: dict = field(default_factory=zero_sums)  # the current epoch's running sums
    best: dict = field(default_factory=no_best)  # best monitored value, its epoch, iteration, metrics row
    bad_evals: int = 0  # evaluations since the best one (early stopping's patience counter)
    reference_energy: float | None = None  # the first batch's energy (divergence's yardstick)
    last_metrics: dict | None = None  # the last metrics row
    stop_reason: str | None = None  # set when the run ended (nntrain.rundir.STOP_*)

    def to_meta(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_meta(cls, meta: dict) -> "Progress":
        """Progress from checkpoint metadata, every field checked (CheckpointError naming it)."""
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in meta]
        if missing:
            raise CheckpointError(f"the checkpoint's metadata lacks {', '.join(missing)}")
        try:
            return cls(**{n: _CHECKS[n](meta[n], n) for n in names})
        except ConfigError as exc:
            raise CheckpointError(f"the checkpoint's metadata: {exc}") from None


def _optional(check):
    return lambda value, name: None if value is None else check(value, name)


def _count(value, name):
    return v.integer(value, name, min_value=0, max_value=2**62)


def _seconds(value, name):
    return v.real(value, name, min_value=0.0)


def _mapping(keys: dict):
    """A JSON object with exactly these keys, each checked."""
    def check(value, name):
        if not isinstance(value, dict) or set(value) != set(keys):
            raise ConfigError(f"{name}: expected a mapping with keys {', '.join(keys)}, received {value!r:.200}")
        return {k: keys[k](value[k], f"{name}.{k}") for k in keys}
    return check


def _row(value, name):
    """A metrics row: a mapping of column names to numbers (or None)."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{name}: expected a metrics row (a mapping), received {value!r:.200}")
    return {k: _optional(_number)(val, f"{name}.{k}") for k, val in value.items()}


def _number(value, name):
    """Any real number, NaN and infinities included (a logged value may be one)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"expected a number, received {name}={value!r:.200}")
    return float(value)


_NUMBER = _optional(v.real)
_CHECKS = {
    "iteration": _count, "lr_scale": lambda x, n: v.real(x, n, min_value=0.0, min_open=True),
    "retries": _count, "elapsed": _seconds, "train_seconds": _seconds, "images_seen": _count,
    "sums": _mapping({"energy": v.real, "loss": v.real, "weight_decay": v.real, "errors": v.real, "n": _count}),
    "best": _mapping({"value": _NUMBER, "epoch": _NUMBER, "iteration": _optional(_count), "metrics": _optional(_row)}),
    "bad_evals": _count, "reference_energy": _optional(_number), "last_metrics": _optional(_row),
    "stop_reason": _optional(lambda x, n: v.choice(x, n, STOPS)),
}


class TrainState:
    """Network, optimizer, schedule, averagers and Progress: what a checkpoint restores."""

    def __init__(self, network, optimizer, schedule, *, ema=None, lookahead=None, progress: Progress | None = None):
        self.network = network
        self.optimizer = optimizer
        self.schedule = schedule
        self.ema = ema
        self.lookahead = lookahead
        self.progress = progress or Progress()

    def _components(self) -> dict:
        """Prefix -> component with state_dict()/load_state_dict() (absent ones left out)."""
        parts = {"optim": self.optimizer, "ema": self.ema, "lookahead": self.lookahead}
        return {prefix: part for prefix, part in parts.items() if part is not None}

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array of the state under its checkpoint key (copies: safe to keep)."""
        out = {k: val.copy() for k, val in self.network.state_dict().items()}
        for prefix, part in self._components().items():
            out.update({f"{prefix}/{k}": np.array(val, copy=True) for k, val in part.state_dict().items()})
        return out

    def meta(self) -> dict:
        """The JSON part: Progress and the schedule's state."""
        schedule = {k: np.asarray(val).tolist() for k, val in self.schedule.state_dict().items()}
        return {**self.progress.to_meta(), "schedule": schedule}

    def state_dict(self) -> dict:
        return {"arrays": self.arrays(), "meta": self.meta()}

    def load_state_dict(self, state: dict, *, keep=()) -> None:
        """Restore from ``{"arrays": ..., "meta": ...}``; Progress fields named in ``keep`` keep
        their current values (a roll-back keeps its retry count and the wall time)."""
        arrays, meta = state["arrays"], state["meta"]
        self.network.load_state_dict(group(arrays, ("param", "buffer"), strip=False))
        for prefix, part in self._components().items():
            part.load_state_dict(group(arrays, (prefix,)))
        self.schedule.load_state_dict(self._schedule_state(meta.get("schedule")))
        kept = {name: getattr(self.progress, name) for name in keep}
        self.progress = Progress.from_meta(meta)
        for name, value in kept.items():
            setattr(self.progress, name, value)

    def _schedule_state(self, saved) -> dict:
        """The saved schedule state, checked against the keys this schedule saves (numbers)."""
        expected = self.schedule.state_dict()
        if not isinstance(saved, dict) or set(saved) != set(expected):
            raise CheckpointError(f"the checkpoint's schedule state {saved!r:.200} does not fit this schedule "
                                  f"(expected the keys {sorted(expected)})")
        try:
            return {k: np.asarray(_number(val, f"schedule.{k}")) for k, val in saved.items()}
        except ConfigError as exc:
            raise CheckpointError(f"the checkpoint's schedule state: {exc}") from None

    def eval_weights(self):
        """Context in which the network holds the weights to evaluate: EMA's if there is one."""
        return self.ema.averaged() if self.ema is not None else contextlib.nullcontext()


def group(arrays: dict, prefixes: tuple, strip: bool = True) -> dict:
    """The entries under ``prefix/`` for any of ``prefixes`` (the prefix removed if ``strip``)."""
    out = {}
    for key, val in arrays.items():
        head, sep, rest = key.partition("/")
        if sep and head in prefixes:
            out[rest if strip else key] = val
    return out


def new_train_state(config: dict, network, iters_per_epoch: int, total_iterations: int) -> TrainState:
    """A fresh TrainState for ``network`` from the config's optimizer, schedule, ema and lookahead
    (the schedule's and Lookahead's epochs converted to iterations)."""
    from .averaging import make_lookahead, make_weight_average
    from .optim import make_optimizer
    from .schedules import make_schedule

    train = config["train"]
    optimizer = make_optimizer(config["optimizer"], network.named_parameters())
    schedule = make_schedule(config["schedule"], optimizer.lr, iters_per_epoch,
                             total_epochs=total_iterations / iters_per_epoch)
    ema = make_weight_average(train["ema"], network.parameters()) if train["ema"] else None
    lookahead = None
    if train.get("lookahead"):
        options = dict(train["lookahead"])
        options["start_step"] = round(options.pop("start_epoch") * iters_per_epoch)
        lookahead = make_lookahead(options, network.parameters(), total_steps=total_iterations,
                                   network_buffers=network.named_buffers())
    return TrainState(network, optimizer, schedule, ema=ema, lookahead=lookahead)
