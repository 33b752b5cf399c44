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
from dataclasses import dataclass, field

import numpy as np

from .errors import CheckpointError


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
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in meta]
        if missing:
            raise CheckpointError(f"the checkpoint's metadata lacks {', '.join(missing)}")
        return cls(**{n: meta[n] for n in names})


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
        if "schedule" not in meta:
            raise CheckpointError("the checkpoint's metadata lacks the schedule state")
        self.schedule.load_state_dict({k: np.asarray(val) for k, val in meta["schedule"].items()})
        kept = {name: getattr(self.progress, name) for name in keep}
        self.progress = Progress.from_meta(meta)
        for name, value in kept.items():
            setattr(self.progress, name, value)

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
        lookahead = make_lookahead(options, network.parameters(), total_steps=total_iterations)
    return TrainState(network, optimizer, schedule, ema=ema, lookahead=lookahead)
