"""Compare runs: one row per run with the config keys that differ and the results.

Runs are named by run directories, sweep directories (their trials, in manifest order,
including trials not started yet) or folders holding either (``runs/``). Per run:

    run          the trial id or directory name (parent/name when names repeat)
    <keys>       every flattened config key whose value is not the same in all runs
                 (``optimizer.lr``; layers by name or index: ``model.3.out_features``)
    val_error    the lowest validation error in metrics.csv
    best_epoch   the epoch of that row (the first, on ties)
    test_error   summary.json's test error (the weights the run kept: best or last)
    epochs       epochs trained
    wall_time    seconds from start to end (last logged evaluation if unfinished)
    status       the stop reason of an ended run (finished, early_stopping,
                 max_iterations, diverged, pruned by nntrain tune), else pending, running,
                 interrupted or failed

Sorting by any column puts missing values last in either direction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

RESULT_COLUMNS = ["val_error", "best_epoch", "test_error", "epochs", "wall_time", "status"]
_MISSING = object()


@dataclass
class RunRef:
    """A run to compare: its directory, its label, and its sweep manifest record if any."""

    path: Path
    label: str
    record: dict | None = None


def collect_runs(paths) -> list[RunRef]:
    """Expand sweep directories and folders of runs into runs, in the order given."""
    from .rundir import is_run_dir
    from .sweep import MANIFEST, load_manifest

    refs: list[RunRef] = []
    for p in map(Path, paths):
        if (p / MANIFEST).is_file():
            manifest = load_manifest(p)
            refs += [RunRef(p / str(r.get("run_dir", r.get("id"))), str(r.get("id")), r)
                     for r in manifest["trials"] if isinstance(r, dict)]
        elif is_run_dir(p):
            refs.append(RunRef(p, p.resolve().name))
        elif p.is_dir():
            children = sorted(c for c in p.iterdir() if c.is_dir() and ((c / MANIFEST).is_file() or is_run_dir(c)))
            if not children:
                raise ConfigError(f"{p}: not a run directory (no config.yaml or summary.json), "
                                  "a sweep directory (no manifest.json) or a folder of them")
            refs += collect_runs(children)
        else:
            raise ConfigError(f"{p}: no such run or sweep directory")
    labels = [r.label for r in refs]
    for r in refs:
        if labels.count(r.label) > 1:
            r.label = f"{r.path.resolve().parent.name}/{r.label}"
    return refs


def flatten(config, prefix: str = "") -> dict:
    """Dotted keys to leaf values; ``model`` layers by name or index (as ``--set`` addresses
    them: ``model.conv1.out_channels``); other lists (``data.augment``) are one value."""
    if prefix == "model." and isinstance(config, list) and all(isinstance(x, dict) for x in config):
        items = [(x.get("name") or i, x) for i, x in enumerate(config)]
    elif isinstance(config, dict) and config:
        items = config.items()
    else:
        return {prefix.rstrip("."): config}
    out = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}{key}."))
    return out


def _read_config(path: Path) -> dict | None:
    from .config import safe_load

    try:
        data = safe_load((path / "config.yaml").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_row(ref: RunRef) -> dict:
    """The results of one run (config keys are added by ``compare_rows``)."""
    from .rundir import read_csv, read_summary, trial_state

    summary = read_summary(ref.path) or {}
    metrics = read_csv(ref.path / "metrics.csv") if ref.path.is_dir() else []
    scored = [m for m in metrics if isinstance(m.get("val_error"), (int, float))]
    best = min(scored, key=lambda m: m["val_error"]) if scored else {}  # min keeps the first on ties
    status, _ = trial_state(ref.path, ref.record)
    test = (summary.get("test") or {}).get("error")
    wall = summary.get("wall_time_s")
    if wall is None and metrics:
        wall = metrics[-1].get("seconds")
    epochs = summary.get("epochs")
    if epochs is None and metrics:
        epochs = metrics[-1].get("epoch")
    return {"run": ref.label, "path": str(ref.path), "val_error": best.get("val_error"),
            "best_epoch": best.get("epoch"), "test_error": test, "epochs": epochs, "wall_time": wall,
            "status": summary.get("stop_reason") or status, "stop_reason": summary.get("stop_reason")}


def compare_rows(refs: list[RunRef]) -> tuple[list[str], list[dict]]:
    """(the differing config keys, one row per run with those keys and the results)."""
    from .config import parse_override

    configs = [flatten(c) if c is not None else None for c in (_read_config(r.path) for r in refs)]
    partial = []  # a trial that never wrote config.yaml: its own overrides are all we know
    for ref, flat in zip(refs, configs):
        overrides = [parse_override(t) for t in (ref.record or {}).get("overrides", [])] if flat is None else []
        partial.append({".".join(parts): value for parts, value in overrides})
    keys = list(dict.fromkeys(k for c in [*configs, *partial] if c for k in c))

    def values(key):
        full = [c.get(key, "<missing>") for c in configs if c is not None]
        return {json.dumps(val, sort_keys=True, default=str) for val in full + [p[key] for p in partial if key in p]}

    differing = [k for k in keys if len(values(k)) > 1]
    rows = []
    for ref, flat, known in zip(refs, configs, partial):
        flat = flat if flat is not None else known
        row = {"run": ref.label, **{k: flat.get(k, _MISSING) for k in differing}}
        row.update({k: val for k, val in run_row(ref).items() if k != "run"})
        rows.append(row)
    return differing, rows


def resolve_column(name: str, columns: list[str]) -> str:
    """A column by its name, or a config key by a unique last part (``lr`` -> ``optimizer.lr``)."""
    if name in columns:
        return name
    matches = [c for c in columns if c.endswith("." + name)]
    if len(matches) == 1:
        return matches[0]
    from .registry import did_you_mean

    if matches:
        raise ConfigError(f"--sort {name}: ambiguous, matches {', '.join(matches)}")
    short = [c.rsplit(".", 1)[-1] for c in columns]
    raise ConfigError(f"--sort {name}: no such column{did_you_mean(name, columns + short)} "
                      f"(columns: {', '.join(columns)})")


def sort_rows(rows: list[dict], column: str, descending: bool = False) -> list[dict]:
    """Stable sort by ``column``; numbers before text; missing values last either way."""
    present = [r for r in rows if r.get(column, _MISSING) not in (None, _MISSING)]
    missing = [r for r in rows if r.get(column, _MISSING) in (None, _MISSING)]

    def key(row):
        value = row[column]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return (0, value, "") if number else (1, 0, json.dumps(value, sort_keys=True, default=str))

    return sorted(present, key=key, reverse=descending) + missing


def _cell(column: str, value) -> str:
    if value is None or value is _MISSING:
        return "-"
    if column in ("val_error", "test_error"):
        return f"{value:.4f}"
    if column == "wall_time":
        return format_seconds(value)
    if column in ("best_epoch", "epochs"):
        return f"{value:.4g}"
    if isinstance(value, float):
        return f"{value:g}"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 28 or column == "run" else text[:25] + "..."  # a config value; never the name


def format_seconds(seconds: float) -> str:
    """``12.3s``, ``5m03s``, ``2h07m``."""
    s = float(seconds)
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def format_table(columns: list[str], rows: list[dict]) -> str:
    """Aligned text: numbers right, text left."""
    cells = [[_cell(c, r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r.get(c), (int, float)) or r.get(c) in (None, _MISSING) for r in rows)
               and c not in ("run", "status") for c in columns]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])


def table_columns(differing: list[str]) -> list[str]:
    return ["run", *differing, *RESULT_COLUMNS]


def plain(rows: list[dict], columns: list[str]) -> list[dict]:
    """Rows for CSV / JSON: the given columns plus path and stop_reason; missing -> None."""
    out = []
    for r in rows:
        out.append({c: (None if r.get(c) is _MISSING else r.get(c)) for c in [*columns, "stop_reason", "path"]})
    return out


__all__ = ["RunRef", "collect_runs", "compare_rows", "flatten", "format_seconds", "format_table", "plain",
           "resolve_column", "run_row", "sort_rows", "table_columns"]
