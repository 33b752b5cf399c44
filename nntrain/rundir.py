"""The run directory: resolved config, metrics logs, checkpoints, summary.

Layout::

    RUN/config.yaml          the fully resolved experiment
    RUN/model.txt            the layer table
    RUN/metrics.csv          one row per evaluation (every epoch, and every N iterations if asked)
    RUN/iterations.csv       one row per logged iteration
    RUN/events.log           divergence roll-backs, interruptions, early stopping
    RUN/checkpoints/last.npz the latest state (everything needed to resume exactly)
    RUN/checkpoints/best.npz the state with the best monitored metric
    RUN/summary.json         written at the end

A checkpoint is one npz (written atomically, read with ``allow_pickle=False``):
``param/*`` and ``buffer/*`` (the network), ``optim/*`` (optimizer state),
``ema/*`` (averaged weights, if any), ``norm/*`` (input normalisation), and
``meta``: a JSON string with the resolved config, counters, schedule / early
stopping / divergence state, class names and input shape.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
from pathlib import Path

import numpy as np

from .errors import CheckpointError, ConfigError
from .fileio import load_npz, save_npz

METRICS_COLUMNS = ["epoch", "iteration", "lr", "energy", "loss", "weight_decay", "train_error",
                   "val_loss", "val_error", "seconds"]
ITERATION_COLUMNS = ["iteration", "epoch", "lr", "energy", "loss", "batch_error"]
CHECKPOINT_FORMAT = "nntrain-checkpoint-1"


def create_run_dir(name: str, root="runs", run_dir=None) -> Path:
    """A new, empty run directory; never reuses an existing one.

    Default ``runs/<name>-<YYYYmmdd-HHMMSS>``; two runs started in the same second get
    ``-2``, ``-3``... (``os.mkdir`` is atomic, so concurrent starts cannot collide).
    An explicit ``run_dir`` must not exist yet or be empty.
    """
    if run_dir is not None:
        path = Path(run_dir)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ConfigError(f"--run-dir {path} already exists and is not empty; "
                              "choose another, or use --resume to continue that run")
        path.mkdir(parents=True, exist_ok=True)
        return path
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for k in range(1, 10_000):
        path = root / (f"{name}-{stamp}" if k == 1 else f"{name}-{stamp}-{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"could not create a new run directory under {root}")


class CsvLog:
    """An append-only CSV file, flushed after every row so a crash keeps the history."""

    def __init__(self, path: Path, columns: list[str]):
        self.path = Path(path)
        self.columns = columns
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = open(self.path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=columns, extrasaction="ignore")
        if new:
            self._writer.writeheader()
            self._file.flush()

    def write(self, row: dict) -> None:
        self._writer.writerow({k: _fmt(row.get(k)) for k in self.columns})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _fmt(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def read_csv(path) -> list[dict]:
    """Rows of a metrics/iterations CSV with numbers converted (empty -> None)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: _num(val) for k, val in row.items()} for row in csv.DictReader(f)]


def _num(text):
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def truncate_csv(path, max_iteration: int) -> None:
    """Drop rows logged after ``max_iteration`` (a killed run may have logged past its last checkpoint)."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    col = header.index("iteration")
    kept = [r for r in body if r and int(r[col]) <= max_iteration]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(kept)
    os.replace(tmp, path)


# ----- checkpoints -----------------------------------------------------------------------
def save_checkpoint(path, *, network_state: dict, optimizer_state: dict, meta: dict,
                    ema_state: dict | None = None, normalizer_state: dict | None = None,
                    lookahead_state: dict | None = None) -> None:
    arrays = dict(network_state)
    arrays.update({f"optim/{k}": val for k, val in optimizer_state.items()})
    if ema_state:
        arrays.update({f"ema/{k}": val for k, val in ema_state.items()})
    if lookahead_state:  # its keys already begin with "lookahead/"
        arrays.update(lookahead_state)
    if normalizer_state:
        arrays.update({f"norm/{k}": val for k, val in normalizer_state.items()})
    meta = {"format": CHECKPOINT_FORMAT, **meta}
    arrays["meta"] = np.array(json.dumps(meta))
    save_npz(path, arrays)


class Checkpoint:
    """A loaded checkpoint: ``meta`` (dict) and the array groups by prefix."""

    def __init__(self, path):
        self.path = Path(path)
        arrays = load_npz(self.path)
        if "meta" not in arrays:
            raise CheckpointError(f"{self.path} is not an nntrain checkpoint (no 'meta' entry)")
        try:
            self.meta = json.loads(str(arrays.pop("meta")))
        except (json.JSONDecodeError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: corrupt metadata: {exc}") from None
        if self.meta.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{self.path}: unsupported checkpoint format {self.meta.get('format')!r}")
        self.arrays = arrays

    def group(self, prefix: str) -> dict[str, np.ndarray]:
        n = len(prefix) + 1
        return {k[n:]: val for k, val in self.arrays.items() if k.startswith(prefix + "/")}

    def network_state(self) -> dict[str, np.ndarray]:
        return {k: val for k, val in self.arrays.items() if k.startswith(("param/", "buffer/"))}

    @property
    def config(self) -> dict:
        return self.meta["config"]


def resolve_checkpoint(path) -> Path:
    """A checkpoint file, or a run directory (-> its best.npz, else last.npz)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.npz", "last.npz"):
            candidate = path / "checkpoints" / name
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"no checkpoints in {path} (expected {path}/checkpoints/best.npz or last.npz)")
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path
