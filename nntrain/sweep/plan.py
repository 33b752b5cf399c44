"""Planning a sweep: parse ``--grid`` and ``--param``, expand them into trials, name the
trials, and check every trial's config before anything runs.

Grid points are the Cartesian product of the ``--grid`` values (first key slowest); with
``--random N``, each of the N draws from the ``--param`` distributions (a pure function
of ``--seed``) is combined with every grid point. Values are YAML text, passed to
``nntrain fit --set`` unchanged; random draws are rounded to 4 significant digits.

A trial's id (its directory name) is made from its overrides, e.g.
``lr=0.01_batch_size=64``: each key by its last component (more if two keys share it),
characters other than ``A-Za-z0-9._+=-`` replaced by ``-``, and a hash of the overrides
appended when the name is long or would collide.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from .manifest import merge_manifest

MAX_NAME = 80
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
    from ..config import split_key_value

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
        from ..registry import did_you_mean

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


def sanitise(text: str) -> str:
    """Text that is safe in a file name: other characters than ``A-Za-z0-9._+=-`` become ``-``."""
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
        name = "_".join(f"{sanitise(short[k])}={sanitise(v)}" for k, v in t) or "default"
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
    from .. import validate as v
    from ..config import config_hash, load_config

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
    merge_manifest(sweep)
    return sweep


def _check_trials(config: Path, sets: list[str], trials: list[Trial], options: dict[str, str]) -> None:
    from ..config import load_config
    from ..data.datasets import known_input_shape
    from ..experiment import build_network, check_output, network_input_shape

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

