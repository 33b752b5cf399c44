"""Experiment files: YAML loading, ``base:`` inheritance, ``--set`` overrides, validation.

An experiment is one YAML mapping with the sections ``data``, ``model``, ``loss``,
``optimizer``, ``schedule``, ``train`` and ``eval`` (see ``configs/`` and README).
``load_config(path, overrides)`` returns the fully resolved config (every default
filled in) or raises ConfigError with one clear message naming the file, the line
and the key path, e.g.::

    configs/x.yaml:7: optimizer.momentm: unknown key; did you mean 'momentum'?

``base: other.yaml`` (relative to the file) is deep-merged under the file: mappings
merge key by key, anything else (lists such as ``model``) is replaced; later wins.

The sections whose options depend on a registered type (``loss``, ``optimizer``,
``schedule``, each layer of ``model``, each augmentation) are checked by building
the object, so the message comes from the class that owns the option.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

import yaml

from . import validate as v
from .errors import ConfigError
from .registry import did_you_mean

SECTIONS = ("name", "description", "seed", "dtype", "data", "model", "outputs", "loss",
            "optimizer", "schedule", "train", "eval")

DEFAULTS = {
    "name": None,
    "description": "",
    "seed": 0,
    "dtype": "float32",
    "data": {},
    "model": None,
    "outputs": None,
    "loss": {"type": "softmax_cross_entropy"},
    "optimizer": {"type": "sgd", "lr": 0.01},
    "schedule": {"type": "constant"},
    "train": {
        "epochs": 10,
        "batch_size": 100,
        "shuffle": True,
        "drop_last": False,
        "max_iterations": None,
        "eval_every": 0,
        "checkpoint_every": 0,
        "log_every": 1,
        "early_stopping": None,
        "monitor": None,
        "divergence": {"action": "rollback", "lr_factor": 0.5, "max_retries": 3, "explode_factor": 1000.0},
        "ema": None,
        "test_at_end": True,
    },
    "eval": {"batch_size": 500, "tta": "none", "padding": 4},
}

EARLY_STOPPING_DEFAULTS = {"monitor": "val_error", "mode": None, "patience": 5, "min_delta": 0.0,
                           "restore_best": True}
EMA_DEFAULTS = {"decay": 0.999, "every": 1}
LOOKAHEAD_DEFAULTS = {"k": 5, "alpha": 0.5, "decay": None, "power": 0.0, "start_epoch": 0.0}
# train keys added after results were recorded: in the resolved config only when set, so the
# config hash of an experiment that does not use them is what it was
TRAIN_OPTIONAL = ("lookahead",)
METRICS = ("val_error", "val_loss", "energy", "loss", "train_error")
TTA_MODES = ("none", "flip", "crops", "translate", "airbench")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a number (YAML 1.2; PyYAML's 1.1 rules make it a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+][0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def safe_load(text: str):
    """yaml.safe_load with YAML 1.2 numbers (never constructs arbitrary objects)."""
    return yaml.load(text, Loader=_Loader)  # ok: _Loader is a SafeLoader subclass


# ----- reading ---------------------------------------------------------------------------
class Origins:
    """Where each key path came from: ``(file, line)`` or a ``--set`` argument."""

    def __init__(self):
        self.where: dict[tuple, str] = {}

    def __call__(self, path: tuple) -> str:
        path = tuple(path)
        while path:
            if path in self.where:
                return self.where[path]
            path = path[:-1]
        return self.where.get((), "")


def _read_yaml(path: Path, origins: Origins) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data, model, ...), got {type(data).__name__}")
    origins.where.setdefault((), str(path))
    if node is not None:
        _record_lines(node, (), path, origins)
    return data


def _record_lines(node, prefix: tuple, path: Path, origins: Origins) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*prefix, key_node.value)
            origins.where[key] = f"{path}:{key_node.start_mark.line + 1}"
            _record_lines(value_node, key, path, origins)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = (*prefix, i)
            origins.where[key] = f"{path}:{item.start_mark.line + 1}"
            _record_lines(item, key, path, origins)


def deep_merge(base: dict, top: dict) -> dict:
    """``top`` over ``base``: mappings merge recursively, other values are replaced."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_with_bases(path: Path, origins: Origins, seen: tuple = ()) -> dict:
    path = path.resolve() if path.exists() else path
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"base: circular inheritance: {chain}")
    own = Origins()
    data = _read_yaml(path, own)
    base_ref = data.pop("base", None)
    if base_ref is None:
        origins.where.update(own.where)
        return data
    refs = base_ref if isinstance(base_ref, list) else [base_ref]
    merged: dict = {}
    for ref in refs:
        if not isinstance(ref, str):
            raise ConfigError(f"{own(('base',))}: base: expected a file name, received {ref!r}")
        base_path = (path.parent / ref)
        if not base_path.exists():
            raise ConfigError(f"{own(('base',))}: base: file not found: {base_path}")
        merged = deep_merge(merged, _read_with_bases(base_path, origins, (*seen, path)))
    origins.where.update(own.where)
    return deep_merge(merged, data)


# ----- overrides -------------------------------------------------------------------------
def split_key_value(text: str, option: str = "--set", example: str = "optimizer.lr=0.01",
                    form: str = "KEY=VALUE") -> tuple[str, str]:
    """``'optimizer.lr=0.01'`` -> ('optimizer.lr', '0.01'); ConfigError naming ``option`` if malformed."""
    if "=" not in text:
        raise ConfigError(f"{option} {text}: expected {form}, e.g. {option} {example}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"{option} {text}: bad key '{key}'")
    return key, raw


def parse_override(text: str) -> tuple[list, object]:
    """``'optimizer.lr=0.01'`` -> (['optimizer', 'lr'], 0.01); the value is parsed as YAML."""
    key, raw = split_key_value(text)
    try:
        value = safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_override(config: dict, parts: list, value, text: str) -> None:
    """Set a dotted key; list items are addressed by index or, in ``model``, by layer name."""
    node = config
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            index = _list_index(node, part, where, text)
            if last:
                node[index] = value
                return
            node = node[index]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"--set {text}: '{'.'.join(parts[:i])}' is not a section")
        if last:
            node[part] = value
            return
        if node.get(part) is None:
            node[part] = {}
        node = node[part]


def _list_index(items: list, part: str, where: str, text: str) -> int:
    if part.lstrip("-").isdigit():
        index = int(part)
        if not -len(items) <= index < len(items):
            raise ConfigError(f"--set {text}: index {index} out of range for a list of {len(items)}")
        return index
    names = [item.get("name") for item in items if isinstance(item, dict)]
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return index
    raise ConfigError(f"--set {text}: no item named '{part}' in {where.rsplit('.', 1)[0]}"
                      f"{did_you_mean(part, [n for n in names if n])}")


# ----- validation ------------------------------------------------------------------------
def _check_keys(section: dict, allowed, prefix: str, origins: Origins, path: tuple) -> None:
    if not isinstance(section, dict):
        raise ConfigError(f"{origins(path)}: {prefix}: expected a mapping, received {section!r}")
    for key in section:
        if key not in allowed:
            raise ConfigError(f"{origins((*path, key))}: {prefix + '.' if prefix else ''}{key}: unknown key"
                              f"{did_you_mean(key, allowed)} (allowed: {', '.join(allowed)})")


def _at(origins: Origins, path: tuple, fn):
    """Run a check; prefix its ConfigError with the file:line and key path."""
    try:
        return fn()
    except ConfigError as exc:
        key = ".".join(str(p) for p in path)
        msg = str(exc)
        if msg.startswith(key):
            raise ConfigError(f"{origins(path)}: {msg}") from None
        raise ConfigError(f"{origins(path)}: {key}: {msg}") from None


def _validate_train(train: dict, origins: Origins) -> dict:
    p = ("train",)
    _check_keys(train, [*DEFAULTS["train"], *TRAIN_OPTIONAL], "train", origins, p)
    t = deep_merge(DEFAULTS["train"], train)
    for key in TRAIN_OPTIONAL:
        if t.get(key, 0) is None:
            del t[key]
    chk = {
        "epochs": lambda x: v.positive(x, "epochs"),
        "batch_size": lambda x: v.positive_int(x, "batch_size"),
        "shuffle": lambda x: v.boolean(x, "shuffle"),
        "drop_last": lambda x: v.boolean(x, "drop_last"),
        "max_iterations": lambda x: None if x is None else v.positive_int(x, "max_iterations"),
        "eval_every": lambda x: v.integer(x, "eval_every", min_value=0),
        "checkpoint_every": lambda x: v.integer(x, "checkpoint_every", min_value=0),
        "log_every": lambda x: v.positive_int(x, "log_every"),
        "monitor": lambda x: None if x is None else v.choice(x, "monitor", METRICS),
        "test_at_end": lambda x: v.boolean(x, "test_at_end"),
    }
    for key, fn in chk.items():
        t[key] = _at(origins, (*p, key), lambda: fn(t[key]))
    es = t["early_stopping"]
    if es is not None:
        _check_keys(es, EARLY_STOPPING_DEFAULTS, "train.early_stopping", origins, (*p, "early_stopping"))
        es = {**EARLY_STOPPING_DEFAULTS, **es}
        q = (*p, "early_stopping")
        es["monitor"] = _at(origins, (*q, "monitor"), lambda: v.choice(es["monitor"], "monitor", METRICS))
        if es["mode"] is not None:
            es["mode"] = _at(origins, (*q, "mode"), lambda: v.choice(es["mode"], "mode", ["min", "max"]))
        es["patience"] = _at(origins, (*q, "patience"), lambda: v.positive_int(es["patience"], "patience"))
        es["min_delta"] = _at(origins, (*q, "min_delta"), lambda: v.non_negative(es["min_delta"], "min_delta"))
        es["restore_best"] = _at(origins, (*q, "restore_best"),
                                 lambda: v.boolean(es["restore_best"], "restore_best"))
        t["early_stopping"] = es
    div = t["divergence"]
    q = (*p, "divergence")
    _check_keys(div, DEFAULTS["train"]["divergence"], "train.divergence", origins, q)
    div["action"] = _at(origins, (*q, "action"), lambda: v.choice(div["action"], "action", ["rollback", "stop"]))
    div["lr_factor"] = _at(origins, (*q, "lr_factor"), lambda: v.real(
        div["lr_factor"], "lr_factor", min_value=0.0, max_value=1.0, min_open=True, max_open=True))
    div["max_retries"] = _at(origins, (*q, "max_retries"),
                             lambda: v.integer(div["max_retries"], "max_retries", min_value=0))
    div["explode_factor"] = _at(origins, (*q, "explode_factor"),
                                lambda: v.real(div["explode_factor"], "explode_factor", min_value=1.0, min_open=True))
    ema = t["ema"]
    if ema is not None:
        q = (*p, "ema")
        _check_keys(ema, EMA_DEFAULTS, "train.ema", origins, q)
        ema = {**EMA_DEFAULTS, **ema}
        ema["decay"] = _at(origins, (*q, "decay"), lambda: v.probability(ema["decay"], "decay"))
        ema["every"] = _at(origins, (*q, "every"), lambda: v.positive_int(ema["every"], "every"))
        t["ema"] = ema
    la = t.get("lookahead")
    if la is not None:
        q = (*p, "lookahead")
        _check_keys(la, LOOKAHEAD_DEFAULTS, "train.lookahead", origins, q)
        la = {**LOOKAHEAD_DEFAULTS, **la}
        la["start_epoch"] = _at(origins, (*q, "start_epoch"), lambda: v.non_negative(la["start_epoch"], "start_epoch"))
        from .optim import Lookahead

        options = {k: val for k, val in la.items() if k != "start_epoch"}
        _at(origins, q, lambda: Lookahead([], **options, total_steps=1))
        t["lookahead"] = la
    return t


def _validate_eval(section: dict, origins: Origins) -> dict:
    p = ("eval",)
    _check_keys(section, DEFAULTS["eval"], "eval", origins, p)
    e = {**DEFAULTS["eval"], **section}
    e["batch_size"] = _at(origins, (*p, "batch_size"), lambda: v.positive_int(e["batch_size"], "batch_size"))
    e["tta"] = _at(origins, (*p, "tta"), lambda: v.choice(e["tta"], "tta", TTA_MODES))
    e["padding"] = _at(origins, (*p, "padding"), lambda: v.integer(e["padding"], "padding", min_value=0))
    return e


def _validate_typed_section(config: dict, key: str, origins: Origins, check) -> None:
    spec = config[key]
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"{origins((key,))}: {key}: expected a mapping with a 'type', received {spec!r}")
    config[key] = spec
    _at(origins, (key,), lambda: check(spec))


def validate(config: dict, origins: Origins | None = None) -> dict:
    """Fill defaults and check every section except ``model`` shapes (checked when built)."""
    from .data import validate_data_config
    from .losses import make_loss
    from .optim import make_optimizer
    from .schedules import make_schedule

    origins = origins or Origins()
    _check_keys(config, SECTIONS, "", origins, ())
    out = deep_merge({k: val for k, val in DEFAULTS.items() if k not in ("train", "eval")}, config)
    out["name"] = out["name"] if out["name"] is not None else "experiment"
    if not isinstance(out["name"], str) or not out["name"] or "/" in out["name"]:
        raise ConfigError(f"{origins(('name',))}: name: expected a non-empty string without '/', received {out['name']!r}")
    out["seed"] = _at(origins, ("seed",), lambda: v.integer(out["seed"], "seed", min_value=0))
    out["dtype"] = _at(origins, ("dtype",), lambda: v.choice(out["dtype"], "dtype", ["float32", "float64"]))
    out["train"] = _validate_train(config.get("train") or {}, origins)
    out["eval"] = _validate_eval(config.get("eval") or {}, origins)
    out["data"] = _at(origins, ("data",), lambda: validate_data_config(out["data"] or {}))
    _validate_typed_section(out, "loss", origins, make_loss)
    # an optimizer needs parameters to exist: validate its options against a stand-in one
    from .layers.base import Parameter
    import numpy as np

    _validate_typed_section(out, "optimizer", origins,
                            lambda spec: make_optimizer(spec, [Parameter(np.zeros(1, np.float32))]))
    _validate_typed_section(out, "schedule", origins,
                            lambda spec: make_schedule(spec, 1.0, 10, total_epochs=float(out["train"]["epochs"])))
    if not isinstance(out["model"], list) or not out["model"]:
        raise ConfigError(f"{origins(('model',))}: model: expected a non-empty list of layers, "
                          f"received {out['model']!r}")
    from .registry import LAYERS

    for i, item in enumerate(out["model"]):
        if not isinstance(item, dict) or "type" not in item:
            raise ConfigError(f"{origins(('model', i))}: model[{i}]: expected a mapping with a 'type', received {item!r}")
        options = {k: val for k, val in item.items() if k not in ("type", "name", "inputs", "params", "trainable")}
        _at(origins, ("model", i), lambda: LAYERS.get(item["type"]).from_config(options))
    es = out["train"]["early_stopping"]
    if es and es["monitor"].startswith("val_") and not out["data"].get("validation"):
        raise ConfigError(f"{origins(('train', 'early_stopping', 'monitor'))}: train.early_stopping.monitor: "
                          f"'{es['monitor']}' needs a validation split, but data.validation is 0")
    return out


class ResolvedConfig(dict):
    """A resolved config (a plain dict) that remembers where each key came from.

    ``origin(path)`` gives ``file:line`` (or ``--set ...``) for a key path such as
    ``('model', 3)``, so errors found later (layer shapes at build time) can name the line.
    """

    origins: Origins | None = None

    def origin(self, path) -> str:
        return self.origins(tuple(path)) if self.origins else ""


def load_config(path, overrides=(), *, name_default: str | None = None) -> dict:
    """Read, merge bases, apply ``--set`` overrides, validate; the resolved config."""
    path = Path(path)
    origins = Origins()
    config = _read_with_bases(path, origins)
    for text in overrides:
        parts, value = parse_override(text)
        _check_override_key(config, parts, text)
        apply_override(config, parts, value, text)
        origins.where[tuple(int(p) if p.isdigit() else p for p in parts)] = f"--set {text}"
    if config.get("name") is None:
        config["name"] = name_default or path.stem
    resolved = ResolvedConfig(validate(config, origins))
    resolved.origins = origins
    return resolved


def _check_override_key(config: dict, parts: list, text: str) -> None:
    """An unknown top-level or fixed-schema key in --set is an error with a suggestion."""
    if parts[0] not in SECTIONS:
        raise ConfigError(f"--set {text}: unknown key '{parts[0]}'{did_you_mean(parts[0], SECTIONS)} "
                          f"(allowed: {', '.join(SECTIONS)})")
    allowed = {"train": [*DEFAULTS["train"], *TRAIN_OPTIONAL], "eval": list(DEFAULTS["eval"])}
    if parts[0] in allowed and len(parts) >= 2 and parts[1] not in allowed[parts[0]]:
        raise ConfigError(f"--set {text}: unknown key '{parts[0]}.{parts[1]}'"
                          f"{did_you_mean(parts[1], allowed[parts[0]])}")


def config_hash(config: dict) -> str:
    """sha256 (first 16 hex digits) of the resolved config, independent of key order."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dump_yaml(config: dict) -> str:
    return yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=None, width=100)
