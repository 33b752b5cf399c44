"""The study: what is tuned, where it is stored, and how it is opened by every process.

A ``Tune`` is the plan of one ``nntrain tune`` command, checked before anything runs (the
search space, the storage URL, the config at the ends of the space). Its Optuna study is
named after the study directory and minimises the monitored metric (every metrics.csv
column that can be monitored is an error or a loss).

Storage (``--storage``):

    (default)          sqlite:///STUDY/study.db, an SQLite file in the study directory
    sqlite:///PATH, postgresql://..., mysql://...   any URL of Optuna's RDBStorage (a
                       database server for several machines)
    journal:PATH       Optuna's JournalStorage in the file PATH (append-only, with a lock
                       file): for several machines on a shared file system, where SQLite's
                       locking is unreliable (NFS)

Every process working on one study must share the study directory as well (the trials'
run directories and the locks in STUDY/locks/ that say which trials are alive), so
STUDY/tune.json records the study's identity; a study directory and a storage that do not
belong together, or another config or search space, are refused with the first difference.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

INSTALL = "nntrain tune needs Optuna: install it with pip install 'nntrain[tune]'"
SAMPLERS = ("tpe", "random", "cmaes")
PRUNERS = ("median", "asha", "hyperband", "none")
MONITORS = ("val_error", "val_loss", "train_error", "loss", "energy")  # metrics.csv columns, all minimised
RECORD = "tune.json"
FORMAT = "nntrain-tune-1"


def require_optuna():
    """The optuna module (its INFO logging off: nntrain prints one line per trial), or the
    install hint as a ConfigError (exit 2)."""
    try:
        import optuna
    except ImportError:
        raise ConfigError(INSTALL) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@dataclass
class Tune:
    """One ``nntrain tune``: the experiment, the space, the study and the search options."""

    config: Path  # absolute
    sets: list[str]
    space: list[tuple]  # [(key, nntrain.sweep.plan.Distribution)]
    trials: int  # complete + pruned trials wanted in the study
    directory: Path  # absolute
    storage: str  # URL, or journal:ABSOLUTE_PATH
    name: str  # the config's name
    config_hash: str
    sampler: str = "tpe"
    pruner: str = "median"
    monitor: str = "val_error"
    startup: int = 5  # trials before the sampler models and the median pruner prunes
    seed: int | None = None
    command: str = ""

    @property
    def study_name(self) -> str:
        return self.directory.name

    def identity(self) -> dict:
        """What must not change while a study goes on (``tune.json`` and the study's user attribute)."""
        return {"config_hash": self.config_hash, "params": [f"{k}={d.text}" for k, d in self.space],
                "monitor": self.monitor}


def plan_tune(config, sets=(), params=(), *, trials: int = 20, study_dir=None, storage=None, sampler="tpe",
              pruner="median", monitor="val_error", startup: int = 5, seed=None, command: str = "") -> Tune:
    """Check everything a tune needs before anything runs; ConfigError (exit 2) on the first problem."""
    from .. import validate as v
    from ..config import config_hash, load_config
    from .space import check_space, parse_space

    require_optuna()
    trials = v.positive_int(trials, "--trials")
    startup = v.integer(startup, "--startup-trials", min_value=0)
    if seed is not None:
        seed = v.integer(seed, "--seed", min_value=0)
    v.choice(sampler, "--sampler", SAMPLERS)
    v.choice(pruner, "--pruner", PRUNERS)
    v.choice(monitor, "--monitor", MONITORS)
    space = parse_space(params, sets)
    config = Path(config).resolve()
    base = load_config(config, list(sets))
    if study_dir is not None:
        from ..rundir import check_path_text

        study_dir = check_path_text(study_dir, "--study-dir")
    directory = (Path(study_dir) if study_dir else Path("sweeps") / f"{base['name']}-tune").resolve()
    url = storage_url(storage, directory)
    if sampler == "cmaes":
        _require_cmaes()
    check_space(config, list(sets), space)
    return Tune(config, list(sets), space, trials, directory, url, base["name"], config_hash(base), sampler, pruner,
                monitor, startup, seed, command)


# ----- storage ---------------------------------------------------------------------------
def storage_url(storage: str | None, directory: Path) -> str:
    """The storage as one string: the default SQLite file, ``journal:`` with an absolute path,
    or an RDB URL as given (its form checked here, the connection when it is opened)."""
    if storage is None:
        return f"sqlite:///{directory / 'study.db'}"
    text = storage.strip()
    if text.startswith("journal:"):
        path = text[len("journal:"):]
        if not path or path.startswith("//"):
            raise ConfigError(f"--storage {storage}: expected journal:PATH, a file for Optuna's journal storage")
        return "journal:" + str(Path(path).resolve())
    if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        raise ConfigError(f"--storage {shown(storage)}: expected an Optuna storage URL (sqlite:///PATH, "
                          "postgresql://USER@HOST/DB, mysql://USER@HOST/DB) or journal:PATH")
    return text


def shown(url: str) -> str:
    """The URL without its password (for messages and tune.json)."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def open_storage(url: str):
    """The Optuna storage object; an unusable URL is one ConfigError naming it."""
    optuna = require_optuna()
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    # SQLite: wait for another process's write (up to 60 s) rather than fail with "database is locked"
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else None
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    from sqlalchemy.exc import SQLAlchemyError  # Optuna's RDB storage is SQLAlchemy

    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine)
    # a bad URL or dialect, a missing driver, no connection, a schema of another Optuna version
    except (SQLAlchemyError, ImportError, ValueError, OSError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"--storage {shown(url)}: cannot open it as an Optuna storage: {reason}") from None


# ----- the study -------------------------------------------------------------------------
def make_sampler(tune: Tune, worker: int = 0):
    """The sampler of one process; with ``--seed`` each worker draws its own stream (seed + worker)."""
    optuna = require_optuna()
    seed = None if tune.seed is None else tune.seed + worker
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if tune.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=tune.startup)
    # constant liar: trials still running count as bad, so parallel workers spread out
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=tune.startup, constant_liar=True)


def make_pruner(tune: Tune):
    """median: below the median of earlier trials at the same evaluation, after ``startup`` trials;
    asha / hyperband: successive halving (Optuna's defaults; resources in evaluations); none."""
    optuna = require_optuna()
    return {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=tune.startup),
            "asha": optuna.pruners.SuccessiveHalvingPruner,
            "hyperband": optuna.pruners.HyperbandPruner,
            "none": optuna.pruners.NopPruner}[tune.pruner]()


def open_study(tune: Tune, worker: int = 0):
    """Create or load the study, after checking that the directory, the storage and the search
    belong together (under the study lock, so two processes starting at once agree)."""
    import warnings

    optuna = require_optuna()
    storage = open_storage(tune.storage)
    with warnings.catch_warnings():  # constant_liar and the journal storage are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = make_sampler(tune, worker)
    with study_lock(tune.directory):
        record = _record(tune)
        study = optuna.create_study(storage=storage, study_name=tune.study_name, direction="minimize",
                                    sampler=sampler, pruner=make_pruner(tune), load_if_exists=True)
        stored = study.user_attrs.get("nntrain")
        if stored is None:
            if study.trials:
                raise ConfigError(f"--storage {shown(tune.storage)}: its study '{tune.study_name}' was not made by "
                                  "nntrain tune; use another --study-dir (the study is named after it)")
            study.set_user_attr("nntrain", record)
        elif stored != record:
            raise ConfigError(f"the study '{tune.study_name}' in {shown(tune.storage)} belongs to another study "
                              f"directory or search ({_difference(stored, record)}); every process of a study must "
                              f"use the same study directory (a shared file system), config and --param options")
    return study


def _record(tune: Tune) -> dict:
    """STUDY/tune.json: made on the first run, then compared with every later one."""
    from ..fileio import save_json

    path = tune.directory / RECORD
    wanted = {"format": FORMAT, "study": tune.study_name, "storage": shown(tune.storage), **tune.identity()}
    if path.exists():
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: unreadable: {exc}") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise ConfigError(f"{path}: not an nntrain tune record (format {FORMAT})")
        if "id" not in record or {k: record.get(k) for k in wanted} != wanted:
            what = {**wanted, "id": record.get("id")}
            raise ConfigError(f"{tune.directory} holds another tuning study ({_difference(record, what)}); "
                              "use another --study-dir, or the same config, --set, --param, --monitor and --storage")
    else:
        record = {**wanted, "id": uuid.uuid4().hex, "config": str(tune.config), "set": tune.sets}
        save_json(path, record)
    return {"id": record["id"], **tune.identity()}


def _difference(old: dict, new: dict) -> str:
    for key in new:
        if old.get(key) != new[key]:
            return f"{key}: {old.get(key)!r} there, {new.get(key)!r} now"
    return "unknown difference"


def _require_cmaes() -> None:
    try:
        import cmaes  # noqa: F401
    except ImportError:
        raise ConfigError("--sampler cmaes needs the cmaes package: pip install cmaes") from None


# ----- locks -----------------------------------------------------------------------------
@contextlib.contextmanager
def study_lock(directory: Path):
    """STUDY/locks/study.lock, held while a process reads the trials and claims one (so two
    processes never claim the same trial, nor more trials than asked)."""
    lock = FileLock(Path(directory) / "locks" / "study.lock")
    lock.acquire(wait=True)
    try:
        yield
    finally:
        lock.release()


class FileLock:
    """An exclusive ``flock`` on a file: released by the kernel when its process dies, so a
    lock that can be taken says that nobody holds it (e.g. a trial whose process is gone)."""

    def __init__(self, path: Path):
        self.path, self.file = Path(path), None

    def acquire(self, wait: bool) -> bool:
        try:
            import fcntl
        except ImportError:  # Windows: no flock, and no way to tell a live trial from an orphan
            raise ConfigError("nntrain tune needs flock (Linux, macOS, other Unix)") from None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            self.release()
            return False
        return True

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing the only descriptor drops the lock
            self.file = None
