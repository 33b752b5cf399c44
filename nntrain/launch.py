"""What ``nntrain fit`` does with a run directory: start it, resume it, start it over,
finish its summary, or report that it already ended — decided in one place.

    fit CONFIG                         a new run directory (runs/<name>-<time>, or --run-dir D)
    fit --resume D                     continue D from D/checkpoints/last.npz, exactly; if D was
                                       killed before its first checkpoint, start it over from
                                       D/config.yaml
    fit CONFIG --run-dir D --resume-if-exists
                                       start D if it is new or empty (or never checkpointed),
                                       resume it if interrupted, report it if it ended (for
                                       requeued Slurm jobs and re-run sweep commands)

A resumed run continues with the config stored in its checkpoint; a CONFIG or an edited
D/config.yaml that differs from it is refused with the first difference, never ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .rundir import (STOP_INTERRUPTED, Checkpoint, check_path_text, clear_unstarted_run, create_run_dir,
                     is_unstarted_run, read_summary)

START, RESUME, FINISH, ENDED = "start", "resume", "finish", "ended"


@dataclass
class Launch:
    """What to do (``action``), where, with which resolved config (and checkpoint, to resume)."""

    action: str  # START, RESUME, FINISH (write the missing summary), ENDED (nothing to do)
    run_dir: Path | None  # None: create a new one at START
    config: dict | None
    checkpoint: Checkpoint | None = None
    note: str = ""  # what the user should be told (e.g. "starting over")
    start_over: bool = False  # START in a run directory that stopped before its first checkpoint


def plan(config_path, overrides, *, run_dir=None, resume_dir=None, resume_if_exists: bool = False) -> Launch:
    from .config import load_config

    if run_dir is not None:
        run_dir = check_path_text(run_dir, "--run-dir")
    if resume_dir is not None:
        resume_dir = check_path_text(resume_dir, "--resume")
    if resume_if_exists:
        if not (config_path and run_dir):
            raise ConfigError("--resume-if-exists needs CONFIG and --run-dir")
        if resume_dir:
            raise ConfigError("--resume-if-exists and --resume exclude each other (use --run-dir)")
        wanted = load_config(config_path, overrides)
        path = Path(run_dir)
        if not path.exists() or (path.is_dir() and not any(path.iterdir())):
            return Launch(START, path, wanted)
        if is_unstarted_run(path):
            return Launch(START, path, wanted, note=f"{path} stopped before its first checkpoint: starting it over",
                          start_over=True)
        return _continue(path, wanted, f"{config_path}")
    if resume_dir:
        if overrides and not config_path:
            raise ConfigError("--set cannot change a resumed run; it continues with its own config.yaml")
        wanted = load_config(config_path, overrides) if config_path else None
        path = Path(resume_dir)
        if not path.is_dir():
            raise ConfigError(f"--resume {path}: no such run directory")
        if is_unstarted_run(path):
            config = wanted or load_config(path / "config.yaml")
            return Launch(START, path, config, note=f"{path} stopped before its first checkpoint: starting it over "
                                                     "from its config.yaml", start_over=True)
        return _continue(path, wanted, f"{config_path}")
    if not config_path:
        raise ConfigError("fit needs a CONFIG file (or --resume RUN_DIR)")
    return Launch(START, Path(run_dir) if run_dir else None, load_config(config_path, overrides))


def _continue(path: Path, wanted: dict | None, config_name: str) -> Launch:
    """A run directory with a checkpoint: resume it, finish its summary, or report it ended."""
    last = path / "checkpoints" / "last.npz"
    if not last.is_file():
        raise ConfigError(f"{path} is not an nntrain run directory with a checkpoint ({last} is missing)")
    ckpt = Checkpoint(last)
    if wanted is not None and wanted != ckpt.config:
        raise ConfigError(f"{config_name} differs from the config of the run in {path} "
                          f"({config_diff(ckpt.config, wanted)}); resume without CONFIG to continue the run as it "
                          "was, or choose another --run-dir")
    _check_config_file_unchanged(path, ckpt.config)
    stop = ckpt.meta.get("stop_reason")
    if stop in (None, STOP_INTERRUPTED):
        return Launch(RESUME, path, ckpt.config, ckpt)
    if read_summary(path) is None:  # killed after its last checkpoint, before its summary
        return Launch(FINISH, path, ckpt.config, ckpt, note=f"{path}: finished the summary of the ended run")
    return Launch(ENDED, path, ckpt.config, ckpt, note=f"{path}: the run already ended ({stop}); nothing to resume")


def _check_config_file_unchanged(path: Path, config: dict) -> None:
    """An edited RUN/config.yaml would be silently overwritten on resume: refuse instead."""
    from .config import load_config

    file = path / "config.yaml"
    if not file.is_file():
        return  # rewritten from the checkpoint when the run continues
    on_disk = load_config(file)
    if on_disk != config:
        raise ConfigError(f"{file} was edited after the run started ({config_diff(config, on_disk)}); a resumed "
                          f"run continues with the config saved in its checkpoint. Undo the edit to resume, or "
                          f"train the edited config as a new run: nntrain fit {file}")


def start(launch: Launch, runs_root) -> Path:
    """The run directory of a START: created, or emptied of a run that never checkpointed."""
    if launch.start_over:
        clear_unstarted_run(launch.run_dir)
        return launch.run_dir
    return create_run_dir(launch.config["name"], runs_root, launch.run_dir)


def follow(dist, launch: Launch | None) -> Launch:
    """Under MPI: every rank gets rank 0's decision (action, run directory, config); the
    others read the checkpoint themselves (a shared file system, as for the data)."""
    if dist.size == 1:
        return launch
    decided = dist.broadcast_object(None if launch is None else (
        launch.action, None if launch.run_dir is None else str(launch.run_dir), launch.config, launch.note,
        launch.start_over))
    if launch is None:
        action, run_dir, config, note, start_over = decided
        run_dir = None if run_dir is None else Path(run_dir)
        ckpt = Checkpoint(run_dir / "checkpoints" / "last.npz") if action in (RESUME, FINISH) else None
        launch = Launch(action, run_dir, config, ckpt, note, start_over)
    return launch


def config_diff(a: dict, b: dict, prefix: str = "") -> str:
    """The first key where two configs differ, as ``key: A in the run, B in the file``."""
    for k in sorted(set(a) | set(b), key=str):
        path = f"{prefix}{k}"
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            d = config_diff(a[k], b[k], path + ".")
            if d:
                return d
        elif a.get(k) != b.get(k):
            return f"{path}: {a.get(k)!r} in the run, {b.get(k)!r} in the file"
    return ""
