"""The search space of ``nntrain tune``: the sweep's ``--param`` grammar, drawn by Optuna.

Each ``--param KEY=DIST`` is parsed by ``nntrain.sweep.plan.parse_param`` (one grammar for
``sweep --random`` and ``tune``) and drawn by the trial's sampler::

    uniform(a,b)      trial.suggest_float(KEY, a, b)             a <= x <= b
    loguniform(a,b)   trial.suggest_float(KEY, a, b, log=True)   log x uniform on [log a, log b]
    int(a,b)          trial.suggest_int(KEY, a, b)               a, a+1, ..., b
    logint(a,b)       trial.suggest_int(KEY, a, b, log=True)     the integers, log-spaced
    choice(v1,...)    trial.suggest_categorical(KEY, [v1, ...])  the values as typed (YAML text)

The Optuna parameter is named by the config key (``optimizer.lr``); its value becomes the
override text ``KEY=VALUE`` that ``nntrain fit --set`` would take (floats as exact
YAML-safe text, not rounded: the sampler's value is the one trained).

Before anything runs, the space is checked as a sweep checks its trials: every value of
a ``choice`` and both bounds of a range, each with the other keys at their first value,
and all keys at their last value, load and build (``nntrain.sweep.plan._check_trials``).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError


def parse_space(params, sets=()) -> list[tuple]:
    """``--param`` texts -> [(key, Distribution)], each key once and not also fixed by ``--set``."""
    from ..sweep.plan import DISTRIBUTIONS, parse_param

    if not params:
        raise ConfigError(f"nothing to tune: give at least one --param KEY=DISTRIBUTION "
                          f"(distributions: {', '.join(DISTRIBUTIONS)})")
    space = [parse_param(p) for p in params]
    keys = [key for key, _ in space]
    fixed = {s.split("=", 1)[0].strip() for s in sets}
    for key in keys:
        if keys.count(key) > 1:
            raise ConfigError(f"--param {key}: the key is given twice (each key once)")
        if key in fixed:
            raise ConfigError(f"--param {key}: the key is also fixed by --set; drop one of them")
    return space


def value_text(dist, value) -> str:
    """An Optuna parameter value as override text (what ``--set KEY=`` takes)."""
    from ..sweep.plan import float_text

    if dist.kind == "choice":
        return str(value)
    if dist.kind in ("int", "logint"):
        return str(int(value))
    return float_text(float(value))


def suggest(trial, key: str, dist):
    """Draw (or, for a trial that already has it, read back) one parameter."""
    a = dist.args
    if dist.kind == "choice":
        return trial.suggest_categorical(key, list(a))
    if dist.kind in ("int", "logint"):
        return trial.suggest_int(key, a[0], a[1], log=dist.kind == "logint")
    return trial.suggest_float(key, a[0], a[1], log=dist.kind == "loguniform")


def trial_overrides(trial, space) -> list[str]:
    """The trial's ``KEY=VALUE`` overrides, drawn in the order of the ``--param`` options."""
    return [f"{key}={value_text(dist, suggest(trial, key, dist))}" for key, dist in space]


def params_overrides(params: dict, space) -> list[str]:
    """The overrides of a finished trial from its stored parameters (``FrozenTrial.params``)."""
    return [f"{key}={value_text(dist, params[key])}" for key, dist in space if key in params]


def _ends(dist) -> list[str]:
    """The values a check must try: every choice, or both bounds."""
    if dist.kind == "choice":
        return list(dist.args)
    return [value_text(dist, dist.args[0]), value_text(dist, dist.args[1])]


def check_space(config, sets, space) -> None:
    """Load and build the config at the ends of the space (see the module docstring); a bad
    key or value fails here, naming the values, before any trial runs."""
    from ..sweep.plan import Trial, _check_trials, trial_ids

    ends = [_ends(dist) for _, dist in space]
    keys = [key for key, _ in space]
    points = [[e[0] for e in ends]]
    for i, values in enumerate(ends):
        points += [[*points[0][:i], value, *points[0][i + 1:]] for value in values[1:]]
    points.append([e[-1] for e in ends])
    unique = [list(zip(keys, p)) for p in dict.fromkeys(map(tuple, points))]
    trials = [Trial(name, [f"{k}={v}" for k, v in point]) for name, point in zip(trial_ids(unique), unique)]
    _check_trials(Path(config), list(sets), trials, {f"{key}=": "--param" for key in keys})
