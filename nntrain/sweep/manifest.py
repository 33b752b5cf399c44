"""The sweep directory's bookkeeping: SWEEP/manifest.json, and the lock that keeps two
local runners (or a runner and ``--print-commands``) off one sweep.

The manifest records the config, the fixed overrides, the grid / random spec and, per
trial, its id, overrides, run directory (relative) and what the runner last saw
(status, exit code, pid and host while it runs, start and end times). The run
directory stays the truth about a trial's state (``nntrain.rundir.trial_state``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..rundir import STATE_PENDING

if TYPE_CHECKING:
    from .plan import Sweep

MANIFEST = "manifest.json"
FORMAT = "nntrain-sweep-1"


def now() -> str:
    """The local time with its offset, to the second (the manifest's and the logs' times)."""
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def load_manifest(directory) -> dict:
    """The sweep's manifest.json, or a ConfigError saying what is wrong with it."""
    path = Path(directory) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{directory} is not a sweep directory (no {MANIFEST})") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable sweep manifest: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("trials"), list):
        raise ConfigError(f"{path}: not an nntrain sweep manifest (format {FORMAT})")
    return data


def merge_manifest(sweep: Sweep) -> None:
    """Take over the records of an existing manifest in the sweep directory (resume)."""
    if not (sweep.directory / MANIFEST).exists():
        return
    old = load_manifest(sweep.directory)
    sweep.created = old.get("created")
    if old.get("config_hash") != sweep.config_hash:
        raise ConfigError(f"{sweep.directory} holds a sweep of another configuration (config hash "
                          f"{old.get('config_hash')}, now {sweep.config_hash}: the config file, its bases or "
                          "--set changed); use another --sweep-dir")
    records = {r.get("id"): r for r in old["trials"] if isinstance(r, dict)}
    for trial in sweep.trials:
        record = records.pop(trial.id, None)
        if record is None:
            continue
        if record.get("overrides") != trial.overrides:
            raise ConfigError(f"{sweep.directory}: trial {trial.id} has other overrides in the manifest "
                              f"({record.get('overrides')}); use another --sweep-dir")
        trial.record = record
    sweep.extra_records = list(records.values())


def write_manifest(sweep: Sweep) -> None:
    """SWEEP/manifest.json (atomically) from the sweep and its trials' records."""
    from ..fileio import save_json

    trials = []
    for trial in sweep.trials:
        record = {"id": trial.id, "overrides": trial.overrides, "run_dir": trial.id, "status": STATE_PENDING,
                  "exit_code": None}
        record.update({k: val for k, val in trial.record.items() if k not in ("id", "overrides", "run_dir")})
        trial.record = record
        trials.append(record)
    sweep.created = sweep.created or now()
    save_json(sweep.directory / MANIFEST, {
        "format": FORMAT, "name": sweep.name, "config": str(sweep.config), "set": sweep.sets,
        "config_hash": sweep.config_hash, "cwd": os.getcwd(),
        "grid": {k: vals for k, vals in sweep.grid},
        "random": ({"trials": sweep.n_random, "seed": sweep.seed, "params": {k: d.text for k, d in sweep.params}}
                   if sweep.params else None),
        "created": sweep.created, "updated": now(),
        "trials": trials + sweep.extra_records,
    })


class SweepLock:
    """An exclusive lock on SWEEP/.lock, so two local runners never share a sweep."""

    def __init__(self, directory: Path):
        self.path = directory / ".lock"
        self.file = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # no flock (Windows): run unlocked
            return self
        self.file = open(self.path, "a")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.close()
            raise ConfigError(f"another nntrain sweep is running in {self.path.parent}") from None
        return self

    def __exit__(self, *exc):
        if self.file is not None:
            self.file.close()

