"""What ``nntrain tune`` prints and leaves behind: a line per trial, the study's state, the
best trial and STUDY/best.yaml (its resolved config, ready for ``nntrain fit``)."""

from __future__ import annotations

from pathlib import Path

from .study import Tune, shown

BEST = "best.yaml"


def trial_line(frozen, tune: Tune) -> str:
    """``trial 3     pruned       val_error 0.1840  1 epochs  lr=0.0031 momentum=0.52  trial-0003``."""
    from ..rundir import read_summary
    from ..sweep.plan import short_keys

    run_dir = frozen.user_attrs.get("run_dir", "")
    summary = (read_summary(tune.directory / run_dir) if run_dir else None) or {}
    short = short_keys([k for k, _ in tune.space])
    parts = [f"trial {frozen.number:<4}", f"{state_name(frozen):<11}",
             f"{tune.monitor} {frozen.value:.4f}" if frozen.value is not None else "",
             f"{summary['epochs']:.3g} epochs" if summary.get("epochs") is not None else "",
             " ".join(f"{short[k]}={_number(v)}" for k, v in frozen.params.items() if k in short),
             run_dir, frozen.user_attrs.get("error", "")]
    return "  ".join(p for p in parts if p)


def state_name(frozen) -> str:
    """complete, pruned, failed, waiting, running, or interrupted (RUNNING, stopped by Ctrl-C)."""
    state = {"FAIL": "failed"}.get(frozen.state.name, frozen.state.name.lower())
    return "interrupted" if state == "running" and frozen.user_attrs.get("interrupted") else state


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def study_line(study, tune: Tune, workers: int, threads: int | None) -> str:
    """The first line: where the study is, what is done, how it will run."""
    each = f" x {threads} thread(s)" if threads else ""
    return (f"study {tune.study_name} in {tune.directory}: {counts_text(study)}; {tune.trials} wanted; "
            f"{workers} worker(s){each}; {tune.sampler} sampler, {tune.pruner} pruner, minimising {tune.monitor}; "
            f"storage {shown(tune.storage)}")


def counts_text(study) -> str:
    """``7 complete, 3 pruned, 1 failed, 1 interrupted`` (the states present)."""
    states = [state_name(t) for t in study.get_trials(deepcopy=False)]
    order = ("complete", "pruned", "failed", "interrupted", "running", "waiting")
    return ", ".join(f"{states.count(s)} {s}" for s in order if s in states) or "no trials yet"


def finish(study, tune: Tune, echo) -> None:
    """Print the study's state, the epochs its trials trained and the best trial; write best.yaml."""
    from ..rundir import read_summary

    trials = study.get_trials(deepcopy=False)
    epochs = sum((read_summary(tune.directory / t.user_attrs["run_dir"]) or {}).get("epochs") or 0
                 for t in trials if "run_dir" in t.user_attrs)
    echo(f"study {tune.study_name}: {counts_text(study)}; {epochs:.4g} epochs trained in all; "
         f"table: nntrain compare {tune.directory}")
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if not complete:
        echo("no complete trial yet: no best trial")
        return
    best = study.best_trial
    run_dir = tune.directory / best.user_attrs["run_dir"]
    path = write_best(tune, best)
    echo(f"best: trial {best.number}, {tune.monitor} {best.value:.4f}")
    for key, value in best.params.items():
        echo(f"  {key}: {_number(value)}")
    echo(f"run directory: {run_dir}")
    echo(f"config: {path}  (train it: nntrain fit {path})")


def write_best(tune: Tune, best) -> Path:
    """STUDY/best.yaml: the config of the best trial, resolved (every default written out)."""
    from ..config import dump_yaml, load_config
    from ..fileio import atomic_open
    from .space import params_overrides

    overrides = params_overrides(best.params, tune.space)
    config = load_config(tune.config, tune.sets + overrides)
    path = tune.directory / BEST
    with atomic_open(path, "w") as f:
        f.write(f"# nntrain tune: the best trial ({best.number}, {tune.monitor} {best.value:.6g}) of the study "
                f"{tune.study_name}\n# run directory: {tune.directory / best.user_attrs['run_dir']}\n"
                f"# overrides: {' '.join(overrides)}\n")
        f.write(dump_yaml(config))
    return path
