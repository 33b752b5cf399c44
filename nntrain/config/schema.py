"""What an experiment may hold: the sections, their defaults, and the validation of every value.

``validate(config, origins)`` fills the defaults and checks every value before anything
runs, so a bad value is one ConfigError naming the file and line (or the ``--set``
option) and the key path, never a crash later (e.g. in the first checkpoint's
``json.dumps``). The fixed-schema sections (``train``, ``eval``) are tables of
``key: check`` below; the sections whose options depend on a registered type
(``loss``, ``optimizer``, ``schedule``, each layer of ``model``, the data set and its
augmentations) are checked by building the object, so the message comes from the class
that owns the option. Every value must also be plain data (mappings with string keys,
lists, strings, numbers, booleans, null): the YAML reader guarantees it for files, this
module for configs given as Python dicts (the Python API, a checkpoint's embedded config).
"""

from __future__ import annotations

import copy
import math
import re

from .. import validate as v
from ..errors import ConfigError
from ..registry import did_you_mean
from .sources import Origins, deep_merge
from .yaml_reader import MAX_DEPTH

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
TRAIN_OPTIONAL = ("lookahead", "tensorboard")
SECTION_OPTIONAL = {"lookahead": {"buffers": False}}  # likewise, inside a section: key -> default
EVAL_OPTIONAL = {"tta_average": "probabilities"}  # likewise, in eval
EVAL_KEYS = (*DEFAULTS["eval"], *EVAL_OPTIONAL)
TRAIN_KEYS = (*DEFAULTS["train"], *TRAIN_OPTIONAL)
METRICS = ("val_error", "val_loss", "energy", "loss", "train_error")
TTA_MODES = ("none", "flip", "crops", "translate", "airbench")


# ----- the tables: key -> check(value, key) returning the value to keep --------------------
def _optional(check):
    """``check`` for a value that may also be null (the option is off)."""
    return lambda x, name: None if x is None else check(x, name)


def _one_of(*allowed):
    return lambda x, name: v.choice(x, name, allowed)


def _count(x, name):
    return v.integer(x, name, min_value=0)


TRAIN_CHECKS = {
    "epochs": v.positive,
    "batch_size": v.positive_int,
    "shuffle": v.boolean,
    "drop_last": v.boolean,
    "max_iterations": _optional(v.positive_int),
    "eval_every": _count,
    "checkpoint_every": _count,
    "log_every": v.positive_int,
    "monitor": _optional(_one_of(*METRICS)),
    "test_at_end": v.boolean,
}
# train's sub-mappings: (defaults, checks); null turns an optional one off (divergence is never off)
TRAIN_SECTIONS = {
    "early_stopping": (EARLY_STOPPING_DEFAULTS, {
        "monitor": _one_of(*METRICS),
        "mode": _optional(_one_of("min", "max")),
        "patience": v.positive_int,
        "min_delta": v.non_negative,
        "restore_best": v.boolean,
    }),
    "divergence": (DEFAULTS["train"]["divergence"], {
        "action": _one_of("rollback", "stop"),
        "lr_factor": lambda x, name: v.real(x, name, min_value=0.0, max_value=1.0, min_open=True, max_open=True),
        "max_retries": _count,
        "explode_factor": lambda x, name: v.real(x, name, min_value=1.0, min_open=True),
    }),
    "ema": (EMA_DEFAULTS, {"decay": v.probability, "every": v.positive_int}),
    "lookahead": (LOOKAHEAD_DEFAULTS, {"start_epoch": v.non_negative}),  # the rest: by Lookahead itself
}
EVAL_CHECKS = {"batch_size": v.positive_int, "tta": _one_of(*TTA_MODES), "padding": _count,
               "tta_average": _one_of("probabilities", "logits")}


# ----- checking --------------------------------------------------------------------------
def _check_keys(section: dict, allowed, prefix: str, origins: Origins, path: tuple) -> None:
    if not isinstance(section, dict):
        raise ConfigError(f"{origins(path)}: {prefix}: expected a mapping, received {section!r}")
    for key in section:
        if key not in allowed:
            raise ConfigError(f"{origins((*path, key))}: {prefix + '.' if prefix else ''}{key}: unknown key"
                              f"{did_you_mean(key, allowed)} (allowed: {', '.join(allowed)})")


def _at(origins: Origins, path: tuple, fn, options=()):
    """Run a check; prefix its ConfigError with the key path and where the value came from.

    For an object built from ``options`` (a layer, an optimizer...), the place is that of
    the option the message names (``received lr='abc'``) when it has its own: its line in
    the file, or the ``--set`` option that gave it.
    """
    try:
        return fn()
    except ConfigError as exc:
        key = ".".join(str(p) for p in path)
        msg = str(exc)
        where = origins(path)
        named = [k for k in options if isinstance(k, str) and (*path, k) in origins.where
                 and re.search(rf"(^|\W){re.escape(k)}=", msg)]
        if named:
            where = origins((*path, named[0]))
        if msg.startswith(key):
            raise ConfigError(f"{where}: {msg}") from None
        raise ConfigError(f"{where}: {key}: {msg}") from None


def _section(values, defaults: dict, checks: dict, path: tuple, origins: Origins, allowed=None) -> dict:
    """One fixed-schema mapping: known keys only, defaults filled in, every checked key checked."""
    _check_keys(values, allowed or defaults, ".".join(path), origins, path)
    out = {**copy.deepcopy(defaults), **values}
    for key, check in checks.items():
        if key in out:  # an optional key (``allowed``, not in ``defaults``) may be absent
            out[key] = _at(origins, (*path, key), lambda: check(out[key], key))
    return out


def tensorboard_option(value, where: str = "train.tensorboard") -> dict | None:
    """The canonical form of a ``train.tensorboard`` setting: None (off) or {histograms: bool}.

    Accepts false, true, or a mapping ``{histograms: true}``; ConfigError otherwise."""
    if value is None or value is False:
        return None
    if value is True:
        return {"histograms": False}
    if isinstance(value, dict) and set(value) <= {"histograms"} and isinstance(value.get("histograms", False), bool):
        return {"histograms": value.get("histograms", False)}
    raise ConfigError(f"{where}: expected true, false or {{histograms: true}}, received {value!r}")


def _validate_train(train: dict, origins: Origins) -> dict:
    p = ("train",)
    t = _section(train, DEFAULTS["train"], TRAIN_CHECKS, p, origins, allowed=TRAIN_KEYS)
    for key in TRAIN_OPTIONAL:
        if t.get(key, 0) is None:
            del t[key]
    for key, (defaults, checks) in TRAIN_SECTIONS.items():
        never_off = DEFAULTS["train"].get(key) is not None
        if never_off or t.get(key) is not None:
            optional = SECTION_OPTIONAL.get(key, {})
            t[key] = _section(t.get(key), defaults, checks, (*p, key), origins, allowed=(*defaults, *optional))
            for name, default in optional.items():
                if t[key].get(name, default) == default:
                    t[key].pop(name, None)
    if "tensorboard" in t:  # off (false) is left out, as if never written
        t["tensorboard"] = _at(origins, (*p, "tensorboard"), lambda: tensorboard_option(t["tensorboard"]))
        if t["tensorboard"] is None:
            del t["tensorboard"]
    if "lookahead" in t:
        from ..averaging import Lookahead

        options = {k: val for k, val in t["lookahead"].items() if k != "start_epoch"}
        _at(origins, (*p, "lookahead"), lambda: Lookahead([], **options, total_steps=1), options)
    return t


def _validate_typed_section(config: dict, key: str, origins: Origins, check) -> None:
    spec = config[key]
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"{origins((key,))}: {key}: expected a mapping with a 'type', received {spec!r}")
    config[key] = spec
    _at(origins, (key,), lambda: check(spec), spec)


def _check_plain(value, path: tuple, origins: Origins) -> None:
    """Only JSON data: mappings with string keys, lists, strings, finite numbers, booleans, null."""
    if len(path) > MAX_DEPTH:
        raise ConfigError(f"{origins(path)}: {'.'.join(map(str, path[:3]))}...: nested too deeply "
                          f"(more than {MAX_DEPTH} levels)")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{origins(path)}: {'.'.join(map(str, path)) or 'config'}: key {key!r} "
                                  f"is not a string")
            _check_plain(item, (*path, key), origins)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_plain(item, (*path, i), origins)
    elif not (value is None or type(value) in (str, bool, int, float)):  # exact: json.dumps takes no numpy scalar
        raise ConfigError(f"{origins(path)}: {'.'.join(map(str, path))}: a {type(value).__name__} is not "
                          f"allowed (a config holds only mappings, lists, strings, numbers, true/false and null)")
    elif type(value) is float and not math.isfinite(value):  # no option takes one, and JSON has none
        raise ConfigError(f"{origins(path)}: {'.'.join(map(str, path))}: expected a finite number, received {value}")


def _validate_top(out: dict, origins: Origins) -> None:
    """name, description, seed, dtype, outputs."""
    if not isinstance(out["name"], str) or not out["name"] or "/" in out["name"]:
        raise ConfigError(f"{origins(('name',))}: name: expected a non-empty string without '/', "
                          f"received {out['name']!r}")
    if out["description"] is None:
        out["description"] = DEFAULTS["description"]
    if not isinstance(out["description"], str):
        raise ConfigError(f"{origins(('description',))}: description: expected a text, received "
                          f"{out['description']!r} (quote it to make it one)")
    out["seed"] = _at(origins, ("seed",), lambda: v.integer(out["seed"], "seed", min_value=0))
    out["dtype"] = _at(origins, ("dtype",), lambda: v.choice(out["dtype"], "dtype", ["float32", "float64"]))
    outputs = out["outputs"]
    names = [outputs] if isinstance(outputs, str) else outputs
    if outputs is not None and (not isinstance(names, list) or not names
                                or not all(isinstance(n, str) for n in names)):
        raise ConfigError(f"{origins(('outputs',))}: outputs: expected a layer name or a list of layer names, "
                          f"received {outputs!r}")


def _validate_model(out: dict, origins: Origins) -> None:
    from ..registry import LAYERS

    if not isinstance(out["model"], list) or not out["model"]:
        raise ConfigError(f"{origins(('model',))}: model: expected a non-empty list of layers, "
                          f"received {out['model']!r}")
    for i, item in enumerate(out["model"]):
        if not isinstance(item, dict) or "type" not in item:
            raise ConfigError(f"{origins(('model', i))}: model[{i}]: expected a mapping with a 'type', "
                              f"received {item!r}")
        options = {k: val for k, val in item.items() if k not in ("type", "name", "inputs", "params", "trainable")}
        _at(origins, ("model", i), lambda: LAYERS.get(item["type"]).from_config(options), item)


def validate(config: dict, origins: Origins | None = None) -> dict:
    """Fill defaults and check every section except ``model`` shapes (checked when built)."""
    import numpy as np

    from ..data import validate_data_config
    from ..layers.base import Parameter
    from ..losses import make_loss
    from ..optim import make_optimizer
    from ..schedules import make_schedule

    origins = origins or Origins()
    if not isinstance(config, dict):
        raise ConfigError(f"{origins(())}: expected a mapping of sections (data, model, ...), "
                          f"received a {type(config).__name__}")
    _check_plain(config, (), origins)
    _check_keys(config, SECTIONS, "", origins, ())
    out = deep_merge({k: val for k, val in DEFAULTS.items() if k not in ("train", "eval")}, config)
    out["name"] = out["name"] if out["name"] is not None else "experiment"
    _validate_top(out, origins)
    out["train"] = _validate_train(config.get("train") or {}, origins)
    out["eval"] = _section(config.get("eval") or {}, DEFAULTS["eval"], EVAL_CHECKS, ("eval",), origins,
                           allowed=EVAL_KEYS)
    for name, default in EVAL_OPTIONAL.items():
        if out["eval"].get(name, default) == default:
            out["eval"].pop(name, None)
    out["data"] = _at(origins, ("data",), lambda: validate_data_config(out["data"] or {}))
    _validate_typed_section(out, "loss", origins, make_loss)
    # an optimizer needs parameters to exist: validate its options against a stand-in one
    _validate_typed_section(out, "optimizer", origins,
                            lambda spec: make_optimizer(spec, [Parameter(np.zeros(1, np.float32))]))
    _validate_typed_section(out, "schedule", origins,
                            lambda spec: make_schedule(spec, 1.0, 10, total_epochs=float(out["train"]["epochs"])))
    _validate_model(out, origins)
    es = out["train"]["early_stopping"]
    if es and es["monitor"].startswith("val_") and not out["data"].get("validation"):
        raise ConfigError(f"{origins(('train', 'early_stopping', 'monitor'))}: train.early_stopping.monitor: "
                          f"'{es['monitor']}' needs a validation split, but data.validation is 0")
    return out
