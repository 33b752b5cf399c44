"""Sweeps: many runs of one experiment with some keys varied, on one machine or a cluster.

A sweep is a config file, fixed ``--set`` overrides, and a list of *trials*; each trial
is a list of extra overrides (``optimizer.lr=0.01``) and one run directory::

    --grid optimizer.lr=0.1,0.01 --grid train.batch_size=64,128   the Cartesian product
                                                                  (first key slowest)
    --random 20 --seed 0 --param "optimizer.lr=loguniform(1e-4,1e-1)"
                                                                  20 random draws
    both                                                          each draw x each grid point

Values are YAML, parsed exactly as ``--set`` parses them: the trial's override text is
passed to ``nntrain fit --set`` unchanged. Random draws are rounded to 4 significant
digits (so names and commands stay readable) and are a pure function of ``--seed``.

On disk::

    SWEEP/manifest.json      format, config, fixed overrides, grid / random spec, and per
                             trial: id, overrides, run_dir (relative), status, exit code
    SWEEP/commands.txt       one shell command per trial still to run (--print-commands)
    SWEEP/sweep.slurm        a Slurm job array over commands.txt (--emit slurm)
    SWEEP/logs/<trial>.log   the trial's output (local runner)
    SWEEP/<trial>/           the trial's run directory (see nntrain.rundir)

The trial id (its directory name) is made from its overrides, e.g.
``lr=0.01_batch_size=64``: each key by its last component (more if two keys share it),
characters other than ``A-Za-z0-9._+=-`` replaced by ``-``, and a hash of the overrides
appended when the name is long or would collide. The run directory is the truth about a
trial's state (``trial_state``); the manifest records what the runner saw.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import math
import os
import random
import re
import shlex
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

MANIFEST = "manifest.json"
COMMANDS = "commands.txt"
SLURM_SCRIPT = "sweep.slurm"
FORMAT = "nntrain-sweep-1"

PENDING, RUNNING, FINISHED, FAILED, INTERRUPTED = "pending", "running", "finished", "failed", "interrupted"
FINISHED_STOPS = ("finished", "early_stopping", "max_iterations")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
MAX_NAME = 80
# what ``nntrain fit`` writes into a run directory before its first checkpoint; a trial
# that failed with only these may be cleared and started again
RUN_FILES = {"config.yaml", "model.txt", "metrics.csv", "iterations.csv", "events.log", "metrics.tmp",
             "iterations.tmp", "checkpoints"}
DISTRIBUTIONS = ("uniform(a,b)", "loguniform(a,b)", "int(a,b)", "logint(a,b)", "choice(v1,v2,...)")


# ----- parsing -------------------------------------------------------------------------
def split_values(text: str) -> list[str]:
    """Split at commas that are outside brackets and quotes: ``'1,[2,3],"a,b"'`` -> 3 items."""
    items, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    items.append(text[start:].strip())
    return items


def _split_key(text: str, option: str) -> tuple[str, str]:
    from .config import split_key_value

    key, rest = split_key_value(text, option, "optimizer.lr=0.1,0.01", "KEY=VALUES")
    return key, rest.strip()


def parse_grid(text: str) -> tuple[str, list[str]]:
    """``'optimizer.lr=0.1,0.01'`` -> ('optimizer.lr', ['0.1', '0.01']) (values kept as typed)."""
    key, rest = _split_key(text, "--grid")
    values = split_values(rest)
    if not rest or any(not v for v in values):
        raise ConfigError(f"--grid {text}: expected comma-separated values, e.g. --grid {key}=0.1,0.01")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ConfigError(f"--grid {text}: value {repeated[0]} is repeated")
    return key, values


@dataclass(frozen=True)
class Distribution:
    """One ``--param`` distribution: ``kind`` in uniform, loguniform, int, logint, choice."""

    kind: str
    args: tuple
    text: str

    def sample(self, rng: random.Random) -> str:
        """One draw, as override text (a YAML value)."""
        a = self.args
        if self.kind == "choice":
            return a[rng.randrange(len(a))]
        if self.kind == "int":
            return str(rng.randint(a[0], a[1]))
        if self.kind == "logint":  # log-uniform over [a, b + 1), floored: each octave equally likely
            return str(min(a[1], int(math.exp(rng.uniform(math.log(a[0]), math.log(a[1] + 1))))))
        x = rng.uniform(a[0], a[1]) if self.kind == "uniform" else math.exp(rng.uniform(math.log(a[0]), math.log(a[1])))
        return float_text(float(f"{x:.4g}"))


def float_text(x: float) -> str:
    """A float as text that YAML (1.1 and 1.2) reads back as the same float: ``1.0e-05``, not ``1e-05``."""
    text = repr(float(x))
    mantissa, _, exponent = text.partition("e")
    if exponent and "." not in mantissa:
        text = f"{mantissa}.0e{exponent}"
    return text


def parse_param(text: str) -> tuple[str, Distribution]:
    """``'optimizer.lr=loguniform(1e-4,1e-1)'`` -> ('optimizer.lr', Distribution)."""
    key, rest = _split_key(text, "--param")
    allowed = f"(allowed: {', '.join(DISTRIBUTIONS)})"
    match = re.fullmatch(r"(\w+)\((.*)\)", rest, re.S)
    if not match:
        raise ConfigError(f"--param {text}: expected KEY=DISTRIBUTION {allowed}")
    kind, inner = match.group(1), match.group(2)
    args = split_values(inner)
    if kind == "choice":
        if not inner.strip() or any(not v for v in args):
            raise ConfigError(f"--param {text}: choice needs values, e.g. choice(64,128,256)")
        return key, Distribution(kind, tuple(args), rest)
    if kind not in ("uniform", "loguniform", "int", "logint"):
        from .registry import did_you_mean

        raise ConfigError(f"--param {text}: unknown distribution '{kind}'"
                          f"{did_you_mean(kind, ['uniform', 'loguniform', 'int', 'logint', 'choice'])} {allowed}")
    if len(args) != 2:
        raise ConfigError(f"--param {text}: {kind} needs two bounds, e.g. {kind}(1,10)")
    try:
        lo, hi = ((int(args[0]), int(args[1])) if kind in ("int", "logint") else (float(args[0]), float(args[1])))
    except ValueError:
        what = "integers" if kind in ("int", "logint") else "numbers"
        raise ConfigError(f"--param {text}: the bounds must be {what}, received {args[0]!r} and {args[1]!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi or (lo == hi and kind in ("uniform", "loguniform")):
        raise ConfigError(f"--param {text}: expected finite bounds with low < high, received {lo!r}, {hi!r}")
    if kind in ("loguniform", "logint") and lo <= 0:
        raise ConfigError(f"--param {text}: {kind} needs a positive low bound, received {lo!r}")
    return key, Distribution(kind, (lo, hi), rest)


# ----- expansion -----------------------------------------------------------------------
@dataclass
class Trial:
    """One run of the sweep: its id (= directory name) and its own ``key=value`` overrides."""

    id: str
    overrides: list[str]
    record: dict = field(default_factory=dict)  # status, exit_code, times: as last written to the manifest


def expand(grid: list[tuple[str, list[str]]], params: list[tuple[str, Distribution]] = (),
           n_random: int = 0, seed: int = 0) -> tuple[list[list[tuple[str, str]]], int]:
    """The trials as lists of (key, value text); and how many duplicate random draws were dropped.

    Grid points are the product of the ``--grid`` values (first key slowest); with random
    parameters, each of the ``n_random`` draws (stdlib ``random.Random(seed)``, the
    parameters drawn in the order given) is combined with every grid point.
    """
    points = [list(zip([k for k, _ in grid], combo)) for combo in itertools.product(*[vals for _, vals in grid])]
    if not params:
        return points, 0
    rng = random.Random(seed)
    draws, seen, dropped = [], set(), 0
    for _ in range(n_random):
        draw = tuple((key, dist.sample(rng)) for key, dist in params)
        if draw in seen:
            dropped += 1  # identical trials would give identical runs: keep one
            continue
        seen.add(draw)
        draws.append(list(draw))
    return [point + draw for draw in draws for point in points], dropped * len(points)


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each dotted key by its shortest distinguishing suffix: ``optimizer.lr`` -> ``lr``."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if all(k == key or not (k == suffix or k.endswith("." + suffix)) for k in keys):
                break
        out[key] = suffix
    return out


def _sanitise(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+=-]+", "-", text).strip("-") or "empty"  # '[]' -> 'empty'


def _digest(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def trial_ids(trials: list[list[tuple[str, str]]]) -> list[str]:
    """Deterministic, unique directory names made from the overrides (see the module docstring)."""
    keys = list(dict.fromkeys(k for t in trials for k, _ in t))
    short = short_keys(keys)
    ids = []
    for t in trials:
        full = "\n".join(f"{k}={v}" for k, v in t)
        name = "_".join(f"{_sanitise(short[k])}={_sanitise(v)}" for k, v in t) or "default"
        if len(name) > MAX_NAME:
            name = f"{name[:MAX_NAME - 9]}-{_digest(full)}"
        ids.append(name)
    clashes = {name for name in ids if ids.count(name) > 1}  # sanitising merged 'a/b' and 'a-b'
    return [f"{name[:MAX_NAME - 9]}-{_digest(chr(10).join(f'{k}={v}' for k, v in t))}" if name in clashes else name
            for name, t in zip(ids, trials)]


# ----- planning --------------------------------------------------------------------------
@dataclass
class Sweep:
    """A planned sweep: what to run and where. ``trials`` in run order."""

    config: Path
    sets: list[str]
    grid: list[tuple[str, list[str]]]
    params: list[tuple[str, Distribution]]
    n_random: int
    seed: int
    directory: Path
    name: str
    config_hash: str
    trials: list[Trial]
    dropped: int = 0
    extra_records: list[dict] = field(default_factory=list)  # manifest trials not in this expansion
    created: str | None = None

    def run_dir(self, trial: Trial) -> Path:
        return self.directory / trial.id

    def log_path(self, trial: Trial) -> Path:
        return self.directory / "logs" / f"{trial.id}.log"


def _rename_option(exc: ConfigError, mapping: dict[str, str]) -> str:
    """An override error names --set; say --grid / --param when the key came from there."""
    msg = str(exc)
    for text, option in mapping.items():
        msg = msg.replace(f"--set {text}", f"{option} {text}")
    return msg


def plan_sweep(config, sets=(), grids=(), params=(), n_random: int = 0, seed: int = 0,
               sweep_dir=None) -> Sweep:
    """Parse and expand the sweep, and check every trial's config before anything runs.

    Each trial's config is loaded with its overrides (unknown keys, bad values) and its
    network is built for the data set's input shape (layer shapes), so a typo fails here
    with the trial named, not after hours of other trials.
    """
    from . import validate as v
    from .config import config_hash, load_config

    n_random = v.integer(n_random, "--random", min_value=0)
    seed = v.integer(seed, "--seed", min_value=0)
    grid = [parse_grid(g) for g in grids]
    dists = [parse_param(p) for p in params]
    if dists and not n_random:
        raise ConfigError("--param needs --random N: how many random trials to draw")
    if n_random and not dists:
        raise ConfigError("--random needs at least one --param KEY=DISTRIBUTION "
                          f"(distributions: {', '.join(DISTRIBUTIONS)})")
    if not grid and not dists:
        raise ConfigError("nothing to sweep: give --grid KEY=V1,V2,... and/or --random N with --param KEY=DIST(...)")
    keys = [k for k, _ in grid] + [k for k, _ in dists]
    set_keys = [s.split("=", 1)[0].strip() for s in sets]
    for key in keys:
        if keys.count(key) > 1:
            raise ConfigError(f"{key} is swept twice (each key once in --grid / --param)")
        if key in set_keys:
            raise ConfigError(f"{key} is both fixed by --set and swept; drop one of them")

    config = Path(config).resolve()
    base = load_config(config, list(sets))
    points, dropped = expand(grid, dists, n_random, seed)
    ids = trial_ids(points)
    trials = [Trial(i, [f"{k}={val}" for k, val in p]) for i, p in zip(ids, points)]
    _check_trials(config, list(sets), trials, {**{f"{k}=": "--grid" for k, _ in grid},
                                               **{f"{k}=": "--param" for k, _ in dists}})
    spec = {"config_hash": config_hash(base), "grid": grid, "params": [(k, d.text) for k, d in dists],
            "random": n_random, "seed": seed}
    directory = Path(sweep_dir) if sweep_dir else Path("sweeps") / f"{base['name']}-{_digest(json.dumps(spec))}"
    sweep = Sweep(config, list(sets), grid, dists, n_random, seed, directory.resolve(), base["name"],
                  spec["config_hash"], trials, dropped)
    _merge_manifest(sweep)
    return sweep


def _check_trials(config: Path, sets: list[str], trials: list[Trial], options: dict[str, str]) -> None:
    from .config import load_config
    from .data.datasets import known_input_shape
    from .experiment import build_network, check_output, network_input_shape

    built = set()  # trials that differ only in training options share one network check
    for trial in trials:
        try:
            cfg = load_config(config, sets + trial.overrides)
            key = json.dumps([cfg["model"], cfg.get("outputs"), cfg["dtype"],
                              {k: cfg["data"].get(k) for k in ("dataset", "path", "augment")}],
                             sort_keys=True, default=str)
            if key not in built:
                shape, classes = known_input_shape(cfg["data"])
                check_output(build_network(cfg, network_input_shape(cfg, shape)), classes)
                built.add(key)
        except ConfigError as exc:
            mapping = {o: opt for o in trial.overrides for prefix, opt in options.items() if o.startswith(prefix)}
            raise ConfigError(f"trial {trial.id}: {_rename_option(exc, mapping)}") from None


# ----- manifest ----------------------------------------------------------------------------
def _now() -> str:
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


def _merge_manifest(sweep: Sweep) -> None:
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
    from .fileio import save_json

    trials = []
    for trial in sweep.trials:
        record = {"id": trial.id, "overrides": trial.overrides, "run_dir": trial.id, "status": PENDING,
                  "exit_code": None}
        record.update({k: val for k, val in trial.record.items() if k not in ("id", "overrides", "run_dir")})
        trial.record = record
        trials.append(record)
    sweep.created = sweep.created or _now()
    save_json(sweep.directory / MANIFEST, {
        "format": FORMAT, "name": sweep.name, "config": str(sweep.config), "set": sweep.sets,
        "config_hash": sweep.config_hash, "cwd": os.getcwd(),
        "grid": {k: vals for k, vals in sweep.grid},
        "random": ({"trials": sweep.n_random, "seed": sweep.seed, "params": {k: d.text for k, d in sweep.params}}
                   if sweep.params else None),
        "created": sweep.created, "updated": _now(),
        "trials": trials + sweep.extra_records,
    })


# ----- the state of a trial ----------------------------------------------------------------
def trial_state(run_dir, record: dict | None = None) -> tuple[str, str]:
    """(status, detail) of a trial from its run directory (and its manifest record).

    pending: no directory or an empty one (unless the record says its process exited with
    an error before training started: failed / interrupted); finished: summary.json with
    a finished, early stopping or max_iterations stop; interrupted: a checkpoint to resume
    from; failed: diverged, or stopped before its first checkpoint; running: the record
    says so and its process is alive on this machine.
    """
    run_dir = Path(run_dir)
    record = record or {}
    if record.get("status") == RUNNING and _alive(record):
        return RUNNING, f"pid {record.get('pid')}"
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        if record.get("status") in (FAILED, INTERRUPTED) and record.get("exit_code"):
            return record["status"], f"exit {record['exit_code']} before training started"
        return PENDING, ""
    summary = read_summary(run_dir)
    stop = (summary or {}).get("stop_reason")
    if stop in FINISHED_STOPS:
        return FINISHED, stop
    if stop == "diverged":
        return FAILED, "diverged"
    if (run_dir / "checkpoints" / "last.npz").is_file():
        return INTERRUPTED, stop or "no summary"
    return (INTERRUPTED if record.get("exit_code") == 130 else FAILED), "stopped before its first checkpoint"


def read_summary(run_dir) -> dict | None:
    try:
        data = json.loads((Path(run_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _alive(record: dict) -> bool:
    pid = record.get("pid")
    if not isinstance(pid, int) or record.get("host") != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clear_failed_run(run_dir: Path) -> None:
    """Empty a run directory that failed before its first checkpoint (only files nntrain writes)."""
    import shutil

    entries = list(run_dir.iterdir())
    foreign = [e.name for e in entries if e.name not in RUN_FILES and not e.name.endswith(".tmp")]
    if foreign:
        raise ConfigError(f"{run_dir} failed before its first checkpoint and holds files nntrain did not write "
                          f"({', '.join(sorted(foreign))}); delete it to run the trial again")
    for entry in entries:
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


# ----- commands ------------------------------------------------------------------------------
def blas_threads(jobs: int, cores: int | None = None) -> int:
    """BLAS threads per worker so that workers x threads <= cores (at least 1)."""
    cores = cores or available_cores()
    return max(1, cores // max(1, jobs))


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _package_path() -> str | None:
    """The folder to put on PYTHONPATH so a child ``python -m nntrain.cli`` finds this nntrain
    (None when it is installed in site-packages, where every interpreter of the environment finds it)."""
    import site

    root = Path(__file__).resolve().parent.parent
    installed = {Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()]}
    return None if root in installed else str(root)


def fit_argv(sweep: Sweep, trial: Trial, resume: bool) -> list[str]:
    """The ``nntrain fit`` command line of a trial (absolute paths)."""
    head = [sys.executable, "-m", "nntrain.cli", "fit"]
    if resume:
        return [*head, "--resume", str(sweep.run_dir(trial)), "--quiet"]
    sets = [a for s in sweep.sets + trial.overrides for a in ("--set", s)]
    return [*head, str(sweep.config), *sets, "--run-dir", str(sweep.run_dir(trial)), "--quiet"]


def shell_command(sweep: Sweep, trial: Trial, resume: bool, threads: int | None = None) -> str:
    """One complete shell command: cd to where the sweep was made (relative data paths), the
    environment it needs, then ``python -m nntrain.cli fit ...``; every word shlex-quoted."""
    env = []
    pkg = _package_path()
    if pkg:
        env.append(f"PYTHONPATH={shlex.quote(pkg)}")
    if threads:
        env += [f"{name}={threads}" for name in THREAD_VARIABLES]
    return " ".join([f"cd {shlex.quote(os.getcwd())} &&", *env, shlex.join(fit_argv(sweep, trial, resume))])


def next_action(run_dir, record: dict | None = None) -> str | None:
    """What a trial needs: None (finished, running, or diverged: training is deterministic,
    it would diverge again), "resume" (it has a checkpoint) or "fresh"."""
    status, detail = trial_state(run_dir, record)
    if status in (FINISHED, RUNNING) or detail == "diverged":
        return None
    return "resume" if (Path(run_dir) / "checkpoints" / "last.npz").is_file() else "fresh"


def _prepare_fresh(run_dir: Path) -> None:
    """``fit --run-dir`` needs a new or empty directory: clear one that failed before its first checkpoint."""
    if run_dir.is_dir() and any(run_dir.iterdir()):
        _clear_failed_run(run_dir)


def pending_commands(sweep: Sweep, threads: int | None = None) -> tuple[list[tuple[Trial, str]], dict[str, int]]:
    """Commands for the trials still to run (resume where there is a checkpoint); and counts by status.

    A trial that failed before its first checkpoint is cleared here, so its command can run.
    """
    out, counts = [], {}
    sweep.directory.mkdir(parents=True, exist_ok=True)
    with _Lock(sweep.directory):  # not while a local runner works on this sweep
        for trial in sweep.trials:
            run_dir = sweep.run_dir(trial)
            status, _ = trial_state(run_dir, trial.record)
            trial.record["status"] = status
            counts[status] = counts.get(status, 0) + 1
            action = next_action(run_dir, trial.record)
            if action == "fresh":
                _prepare_fresh(run_dir)
            if action:
                out.append((trial, shell_command(sweep, trial, action == "resume", threads)))
    return out, counts


def write_commands(sweep: Sweep, commands: list[tuple[Trial, str]]) -> Path:
    from .fileio import atomic_open

    path = sweep.directory / COMMANDS
    with atomic_open(path, "w") as f:
        f.write("".join(cmd + "\n" for _, cmd in commands))
    return path


def write_slurm(sweep: Sweep, n: int, cpus: int = 2) -> Path:
    """``SWEEP/sweep.slurm``: array task i runs line i+1 of commands.txt."""
    from .fileio import atomic_open

    commands = sweep.directory / COMMANDS
    logs = sweep.directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    text = f"""#!/bin/bash
# nntrain sweep {sweep.name}: one trial per array task; task i runs line i+1 of
#   {commands}
# Submit with: sbatch {sweep.directory / SLURM_SCRIPT}   (add --partition, --time, --mem for your cluster)
# After an interruption, run the same `nntrain sweep ... --emit slurm` again: it rewrites
# commands.txt with the trials still to run (resuming those with a checkpoint) and this array.
#SBATCH --job-name=nntrain-{_sanitise(sweep.name)}
#SBATCH --array=0-{n - 1}
#SBATCH --cpus-per-task={cpus}
#SBATCH --output={logs}/slurm-%A_%a.log
set -euo pipefail
export {' '.join(f'{v}="${{SLURM_CPUS_PER_TASK:-1}}"' for v in THREAD_VARIABLES)}
line=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(str(commands))})
if [ -z "$line" ]; then
    echo "no command on line $((SLURM_ARRAY_TASK_ID + 1)) of {commands}" >&2
    exit 2
fi
echo "$line"
exec bash -c "$line"
"""
    path = sweep.directory / SLURM_SCRIPT
    with atomic_open(path, "w") as f:
        f.write(text)
    path.chmod(0o755)
    return path


# ----- the local runner --------------------------------------------------------------------
class _Lock:
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


def result_line(sweep: Sweep, trial: Trial) -> str:
    """``finished     lr=0.1_batch_size=64   val_error 0.0420 @ epoch 5  test_error 0.0410  ...``."""
    status, detail = trial_state(sweep.run_dir(trial), trial.record)
    summary = read_summary(sweep.run_dir(trial)) or {}
    width = max(len(t.id) for t in sweep.trials)
    parts = [f"{status:<11}", f"{trial.id:<{width}}"]
    if status == FINISHED or detail == "diverged":
        best = summary.get("best") or {}
        if best.get("val_error") is not None:
            parts.append(f"val_error {best['val_error']:.4f} @ epoch {best.get('epoch', 0):.4g}")
        if (summary.get("test") or {}).get("error") is not None:
            parts.append(f"test_error {summary['test']['error']:.4f}")
        parts.append(f"{summary.get('stop_reason')}, {summary.get('wall_time_s', 0):.1f}s")
    else:
        code = trial.record.get("exit_code")
        if code not in (None, 0) and not detail.startswith("exit"):
            parts.append(f"exit {code}")
        if detail:
            parts.append(detail)
        if status == FAILED or code not in (None, 0, 130):
            parts.append(_last_error(sweep.log_path(trial)))
    return "  ".join(p for p in parts if p)


def _last_error(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    starts = [i for i, ln in enumerate(lines) if ln.startswith("=== ")]
    lines = lines[starts[-1] + 1:] if starts else lines  # this attempt only
    errors = [ln for ln in lines if ln.startswith("error:")] or lines[-1:]
    return f"{errors[-1] if errors else 'no output'} (log: {log})"


def run_local(sweep: Sweep, jobs: int = 1, *, quiet: bool = False, echo=None, poll: float = 0.1) -> int:
    """Run the trials still to run with ``jobs`` worker processes; the exit code (0 all finished).

    Each worker is ``python -m nntrain.cli fit ...`` in its own session (so a terminal's
    Ctrl-C reaches only this runner, which forwards exactly one SIGINT: a second one
    would make fit abort without its checkpoint), with OMP / OpenBLAS / MKL threads set
    to cores // jobs. Finished trials are skipped; interrupted ones resumed; one that
    failed before its first checkpoint is cleared and started again; a diverged one is
    reported, not re-run. SIGINT / SIGTERM / SIGHUP stop the workers (they save
    checkpoints) and return 130; running the same sweep again continues it.
    """
    import subprocess

    from . import validate as v

    echo = echo or (lambda text: print(text, flush=True))
    jobs = v.positive_int(jobs, "--jobs")
    cores = available_cores()
    threads = blas_threads(jobs, cores)
    env = dict(os.environ, **{name: str(threads) for name in THREAD_VARIABLES})
    pkg = _package_path()
    if pkg:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg, os.environ.get("PYTHONPATH")) if p)
    sweep.directory.mkdir(parents=True, exist_ok=True)
    (sweep.directory / "logs").mkdir(exist_ok=True)
    with _Lock(sweep.directory):
        queue, total = [], len(sweep.trials)
        for trial in sweep.trials:  # "running": a worker of an earlier runner that was killed still runs
            trial.record["status"] = trial_state(sweep.run_dir(trial), trial.record)[0]
            action = next_action(sweep.run_dir(trial), trial.record)
            if action is None:
                echo(f"[skip] {result_line(sweep, trial)}")
            else:
                queue.append((trial, action))
        write_manifest(sweep)
        if not quiet:
            note = " (more workers than cores: trials will compete)" if jobs > cores else ""
            echo(f"sweep {sweep.directory}: {total} trials, {len(queue)} to run; {jobs} worker(s) x {threads} "
                 f"BLAS thread(s) on {cores} core(s){note}; logs in {sweep.directory / 'logs'}")
        signals = []  # SIGINT / SIGTERM received; the loop forwards each one to every worker
        running: dict = {}  # trial id -> [process, trial, log file, signals forwarded]

        def on_signal(signum, frame):
            signals.append(signum)

        stoppers = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
        previous = {s: signal.signal(s, on_signal) for s in stoppers}
        try:
            while queue or running:
                while queue and len(running) < jobs and not signals:
                    trial, action = queue.pop(0)
                    running[trial.id] = [*_launch(sweep, trial, action, env, subprocess), 0]
                    if not quiet:
                        echo(f"[start] {trial.id}{' (resume)' if action == 'resume' else ''}")
                    write_manifest(sweep)
                if signals:
                    queue.clear()
                for entry in running.values():
                    while entry[3] < len(signals) and entry[0].poll() is None:
                        entry[0].send_signal(signal.SIGINT)  # fit saves a checkpoint; a second one aborts
                        entry[3] += 1
                done = [tid for tid, entry in running.items() if entry[0].poll() is not None]
                for tid in done:
                    proc, trial, log, _ = running.pop(tid)
                    log.close()
                    status, _ = trial_state(sweep.run_dir(trial))
                    if proc.returncode == 130 and status in (PENDING, FAILED):
                        status = INTERRUPTED  # stopped before training started: nothing to resume
                    elif proc.returncode and status == PENDING:
                        status = FAILED  # e.g. a data error: the directory stayed empty
                    trial.record.update(status=status, exit_code=proc.returncode, ended=_now())
                    trial.record.pop("pid", None)
                    trial.record.pop("host", None)
                    write_manifest(sweep)
                    echo(result_line(sweep, trial))
                if not done:
                    time.sleep(poll)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            for proc, trial, log, _ in running.values():  # only if this loop itself failed
                proc.send_signal(signal.SIGINT)
                proc.wait()
                log.close()
        statuses = [trial_state(sweep.run_dir(t), t.record)[0] for t in sweep.trials]
        for trial, status in zip(sweep.trials, statuses):
            trial.record["status"] = status
        write_manifest(sweep)
    counts = {s: statuses.count(s) for s in dict.fromkeys(statuses)}
    echo(f"sweep {sweep.directory}: {', '.join(f'{n} {s}' for s, n in counts.items())}; "
         f"table: nntrain compare {shlex.quote(str(sweep.directory))}")
    if signals:
        echo("interrupted: run the same nntrain sweep command again to continue")
        return 130
    return 0 if counts.get(FINISHED, 0) == len(statuses) else 1


def _launch(sweep: Sweep, trial: Trial, action: str, env: dict, subprocess):
    if action == "fresh":
        _prepare_fresh(sweep.run_dir(trial))
    argv = fit_argv(sweep, trial, resume=action == "resume")
    log = open(sweep.log_path(trial), "a")
    log.write(f"=== {_now()} {shlex.join(argv)}\n")
    log.flush()
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    trial.record.update(status=RUNNING, exit_code=None, pid=proc.pid, host=socket.gethostname(),
                        started=_now(), ended=None)
    return proc, trial, log


__all__ = ["Distribution", "Sweep", "Trial", "blas_threads", "expand", "fit_argv", "load_manifest", "next_action",
           "parse_grid", "parse_param", "pending_commands", "plan_sweep", "read_summary", "result_line", "run_local",
           "shell_command", "trial_ids", "trial_state", "write_commands", "write_manifest", "write_slurm"]
