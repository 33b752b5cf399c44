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

A checkpoint is one npz (written atomically, read with ``allow_pickle=False``): the
TrainState's arrays (``param/*``, ``buffer/*``, ``optim/*``, ``ema/*``, ``lookahead/*``:
nntrain.state lists the keys), ``norm/*`` (input normalisation), and ``meta``: a JSON
string with the resolved config, the loop's counters (Progress), the schedule state,
class names and input shape.
"""

from __future__ import annotations

import contextlib
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
CHECKPOINT_FORMAT = "nntrain-checkpoint-2"  # 2: one key rule for every component (nntrain.state)

# Why a run stopped: recorded in summary.json ("stop_reason") and in every checkpoint.
STOP_FINISHED = "finished"  # all planned epochs
STOP_EARLY = "early_stopping"  # the monitored metric stopped improving
STOP_MAX_ITERATIONS = "max_iterations"  # train.max_iterations cut the planned epochs short
STOP_DIVERGED = "diverged"  # the energy blew up and could not be recovered
STOP_INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM: resumable from checkpoints/last.npz
STOP_PRUNED = "pruned"  # stopped by a hyperparameter search as hopeless (nntrain tune)
COMPLETED_STOPS = (STOP_FINISHED, STOP_EARLY, STOP_MAX_ITERATIONS, STOP_PRUNED)  # ended normally
STOPS = (*COMPLETED_STOPS, STOP_DIVERGED, STOP_INTERRUPTED)


# What ``fit`` writes at the top of a run directory (a run stopped before its first
# checkpoint holds only these, and may be started over in place).
RUN_FILES = frozenset({"config.yaml", "model.txt", "metrics.csv", "iterations.csv", "events.log",
                       "summary.json", "checkpoints", "tensorboard"})
MAX_NAME_BYTES = 200  # a run name plus "-YYYYmmdd-HHMMSS-k" stays under the usual 255-byte limit


def check_path_text(path, what: str) -> Path:
    """``path`` as a Path, refused if no file system could hold it: NUL, control characters
    (a newline in a directory name breaks every script that lists runs), a component over
    255 bytes."""
    text = str(path)
    bad = sorted({c for c in text if ord(c) < 32 or c == "\x7f"})
    if bad:
        raise ConfigError(f"{what} {text!r}: control characters ({', '.join(map(repr, bad))}) are not allowed in a path")
    for part in Path(text).parts:
        if len(part.encode("utf-8", "surrogateescape")) > 255:
            raise ConfigError(f"{what}: the path component {part[:32]!r}... is {len(part.encode())} bytes long; "
                              "file systems allow at most 255")
    return Path(text)


def _mkdir(path: Path, what: str, **kwargs) -> None:
    """``path.mkdir``, with an OSError turned into one message naming the path and the cause."""
    try:
        path.mkdir(**kwargs)
    except FileExistsError:
        if path.is_symlink() and not path.exists():
            raise ConfigError(f"{what} {path} is a broken symbolic link (to {os.readlink(path)}); remove it "
                              "or choose another path") from None
        raise
    except NotADirectoryError:
        parent = next((p for p in path.parents if p.exists() and not p.is_dir()), path.parent)
        raise ConfigError(f"{what} {path}: {parent} is a file, not a folder") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot create it: {exc.strerror}") from None


def create_run_dir(name: str, root="runs", run_dir=None) -> Path:
    """A new, empty run directory; never reuses an existing one.

    Default ``runs/<name>-<YYYYmmdd-HHMMSS>``; two runs started in the same second get
    ``-2``, ``-3``... (``os.mkdir`` is atomic, so concurrent starts cannot collide).
    An explicit ``run_dir`` must not exist yet or be empty. Paths and names that no file
    system holds, a file in the way, a broken link or a read-only parent are one message.
    """
    if run_dir is not None:
        path = check_path_text(run_dir, "--run-dir")
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ConfigError(f"--run-dir {path} already exists and is not empty; "
                              + ("it holds a run that stopped before its first checkpoint: "
                                 f"nntrain fit --resume {path} starts it over" if is_unstarted_run(path)
                                 else "choose another, or use --resume to continue that run"))
        _mkdir(path, "--run-dir", parents=True, exist_ok=True)
        return path
    if len(name.encode()) > MAX_NAME_BYTES:
        raise ConfigError(f"name: {len(name.encode())} bytes long; a run name may have at most {MAX_NAME_BYTES}")
    check_path_text(name, "name")
    root = check_path_text(root, "--runs-root")
    _mkdir(root, "--runs-root", parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for k in range(1, 10_000):
        path = root / (f"{name}-{stamp}" if k == 1 else f"{name}-{stamp}-{k}")
        try:
            _mkdir(path, "run directory")
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"could not create a new run directory under {root}")


def is_unstarted_run(run_dir) -> bool:
    """A run directory that ``fit`` began (config.yaml) but that has no checkpoint and no
    summary: killed before its first checkpoint, nothing to resume."""
    run_dir = Path(run_dir)
    return ((run_dir / "config.yaml").is_file() and not (run_dir / "checkpoints" / "last.npz").exists()
            and not (run_dir / "summary.json").exists())


def clear_unstarted_run(run_dir) -> None:
    """Empty a run directory that stopped before its first checkpoint, so it can start over.
    Only files ``fit`` writes are removed; anything else is an error naming it."""
    import shutil

    run_dir = Path(run_dir)
    entries = list(run_dir.iterdir())
    foreign = [e.name for e in entries if e.name not in RUN_FILES and not e.name.endswith(".tmp")]
    if foreign:
        raise ConfigError(f"{run_dir} stopped before its first checkpoint and holds files nntrain did not write "
                          f"({', '.join(sorted(foreign))}); delete it to run again")
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def remove_stale_temporaries(run_dir) -> None:
    """Delete the temporary files of atomic writes that a killed process left behind."""
    run_dir = Path(run_dir)
    for folder in (run_dir, run_dir / "checkpoints"):
        for tmp in folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()


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
def save_checkpoint(path, state: dict, *, meta: dict, normalizer_state: dict | None = None) -> None:
    """Write a TrainState's ``state_dict()`` (``{"arrays", "meta"}``), the extra ``meta`` and the
    input normalisation (under ``norm/``) as one npz, atomically."""
    arrays = dict(state["arrays"])
    arrays.update({f"norm/{k}": val for k, val in (normalizer_state or {}).items()})
    full_meta = {"format": CHECKPOINT_FORMAT, **meta, **state["meta"]}
    arrays["meta"] = np.array(json.dumps(full_meta))
    save_npz(path, arrays)


def _migrate_v1(arrays: dict) -> dict:
    """Format 1 (before the TrainState) stored the EMA under ``ema/ema/``; now ``ema/``."""
    return {("ema/" + k[len("ema/ema/"):] if k.startswith("ema/ema/") else k): val for k, val in arrays.items()}


MIGRATIONS = {"nntrain-checkpoint-1": _migrate_v1}  # older format -> function to today's keys


class Checkpoint:
    """A loaded, validated checkpoint: ``meta`` (dict), ``config`` (validated) and ``arrays``.

    Anything malformed inside (metadata that is not a JSON mapping, a missing or invalid
    embedded config, non-numeric arrays, a format this version does not know) is a
    CheckpointError "not a valid nntrain checkpoint: <why>" naming the file.
    """

    def __init__(self, path):
        self.path = Path(path)
        arrays = load_npz(self.path)
        if "meta" not in arrays:  # some other npz
            raise CheckpointError(f"{self.path} is not an nntrain checkpoint (it has no 'meta' entry)")
        meta_array = arrays.pop("meta")
        if meta_array.dtype.kind != "U" or meta_array.shape != ():
            self._invalid(f"its 'meta' entry is a {meta_array.dtype} array of shape {meta_array.shape}, not a string")
        try:
            meta = json.loads(str(meta_array))
        except (json.JSONDecodeError, ValueError, RecursionError) as exc:
            self._invalid(f"its metadata is not JSON ({exc})")
        if not isinstance(meta, dict):
            self._invalid(f"its metadata is a JSON {type(meta).__name__}, not a mapping")
        fmt = meta.get("format")
        if not isinstance(fmt, str) or (fmt != CHECKPOINT_FORMAT and fmt not in MIGRATIONS):
            known = ", ".join([CHECKPOINT_FORMAT, *MIGRATIONS])
            self._invalid(f"format {fmt!r} (written by nntrain {meta.get('nntrain_version', '?')}); "
                          f"this nntrain reads {known}")
        if fmt in MIGRATIONS:
            arrays = MIGRATIONS[fmt](arrays)
        bad = [k for k, val in arrays.items() if val.dtype.kind not in ("biufU" if k.startswith("norm/") else "biuf")]
        if bad:
            self._invalid(f"entry {bad[0]!r} holds {arrays[bad[0]].dtype} values, not numbers")
        if not isinstance(meta.get("config"), dict):
            self._invalid("its metadata has no config mapping")
        from .config import validate

        try:
            self.config = validate(meta["config"])
        except ConfigError as exc:
            self._invalid(f"its embedded config is invalid: {exc}")
        self.meta, self.arrays = meta, arrays

    def position(self) -> tuple[float, int]:
        """(epoch, iteration) at which the checkpoint was written."""
        from . import validate as v

        try:
            return (v.real(self.meta.get("epoch"), "epoch", min_value=0.0),
                    v.integer(self.meta.get("iteration"), "iteration", min_value=0))
        except ConfigError as exc:
            self._invalid(f"its metadata: {exc}")

    def _invalid(self, why: str):
        raise CheckpointError(f"{self.path}: not a valid nntrain checkpoint: {why}")

    def group(self, prefix: str) -> dict[str, np.ndarray]:
        n = len(prefix) + 1
        return {k[n:]: val for k, val in self.arrays.items() if k.startswith(prefix + "/")}

    def network_state(self) -> dict[str, np.ndarray]:
        return {k: val for k, val in self.arrays.items() if k.startswith(("param/", "buffer/"))}

    def state_dict(self) -> dict:
        """What ``TrainState.load_state_dict`` takes."""
        return {"arrays": self.arrays, "meta": self.meta}


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


# ----- run state ---------------------------------------------------------------------------
# What a run directory says about its run, for ``nntrain sweep`` (which trials to run,
# resume or skip) and ``nntrain compare`` (the status column).
STATE_PENDING = "pending"  # not started: no directory, or an empty one
STATE_RUNNING = "running"  # its process is alive (known from a sweep manifest's record)
STATE_FINISHED = "finished"  # summary.json with a stop reason in COMPLETED_STOPS
STATE_FAILED = "failed"  # diverged, or stopped before its first checkpoint
STATE_INTERRUPTED = "interrupted"  # a checkpoint to resume from


def is_run_dir(path) -> bool:
    """Whether ``fit`` has written into ``path`` (a config, a summary or checkpoints)."""
    path = Path(path)
    return (path / "config.yaml").is_file() or (path / "summary.json").is_file() or (path / "checkpoints").is_dir()


def read_summary(run_dir) -> dict | None:
    """RUN/summary.json, or None when it is missing or unreadable (the run has not ended)."""
    try:
        data = json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def trial_state(run_dir, record: dict | None = None) -> tuple[str, str]:
    """(state, detail) of a run from its directory and, for a sweep's trial, its manifest
    record (what the runner last wrote: status, exit_code, pid, host).

    pending: no directory or an empty one (unless the record says its process exited with
    an error before training started: failed / interrupted); finished: summary.json with
    a stop in COMPLETED_STOPS (a pruned run counts as finished); interrupted: a checkpoint
    to resume from; failed: diverged, or stopped before its first checkpoint; running: the
    record says so and its process is alive on this machine.
    """
    from .errors import EXIT_INTERRUPTED

    run_dir = Path(run_dir)
    record = record or {}
    if record.get("status") == STATE_RUNNING and _alive(record):
        return STATE_RUNNING, f"pid {record.get('pid')}"
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        if record.get("status") in (STATE_FAILED, STATE_INTERRUPTED) and record.get("exit_code"):
            return record["status"], f"exit {record['exit_code']} before training started"
        return STATE_PENDING, ""
    summary = read_summary(run_dir)
    stop = (summary or {}).get("stop_reason")
    if stop in COMPLETED_STOPS:
        return STATE_FINISHED, stop
    if stop == STOP_DIVERGED:
        return STATE_FAILED, STOP_DIVERGED
    if (run_dir / "checkpoints" / "last.npz").is_file():
        return STATE_INTERRUPTED, stop or "no summary"
    stopped = STATE_INTERRUPTED if record.get("exit_code") == EXIT_INTERRUPTED else STATE_FAILED
    return stopped, "stopped before its first checkpoint"


def _alive(record: dict) -> bool:
    """Whether the process a record names (pid on host) still runs; another host's cannot be checked."""
    import socket

    pid = record.get("pid")
    if not isinstance(pid, int) or record.get("host") != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True
