"""Experiment files: YAML loading, ``base:`` inheritance, ``--set`` overrides, validation.

An experiment is one YAML mapping with the sections ``data``, ``model``, ``loss``,
``optimizer``, ``schedule``, ``train`` and ``eval`` (see ``configs/`` and README).
``load_config(path, overrides)`` returns the fully resolved config (every default
filled in, every value checked) or raises ConfigError with one clear message naming the
file, the line and the key path, e.g.::

    configs/x.yaml:7: optimizer.momentm: unknown key; did you mean 'momentum'?

One job per module:

- ``yaml_reader``: YAML text -> plain data and the line of each key, within bounds
  (file size, nesting, aliases) and refusing anything but JSON data types;
- ``sources``: ``base:`` inheritance (deep merge) and ``Origins``, where each key came from;
- ``overrides``: ``--set KEY=VALUE``;
- ``schema``: the sections, their defaults, and ``validate``;
- here: ``load_config`` (read, merge, override, validate), ``config_hash``, ``dump_yaml``.

A resolved config is plain data: ``json.dumps`` and ``dump_yaml`` / ``safe_load``
round-trip it (tested on mutations of the shipped configs).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from .overrides import apply_override, check_override_key, parse_override, split_key_value
from .schema import DEFAULTS, METRICS, SECTIONS, TTA_MODES, validate
from .sources import Origins, deep_merge, read_with_bases
from .yaml_reader import YAML12_FLOAT, safe_load

__all__ = ["DEFAULTS", "METRICS", "SECTIONS", "TTA_MODES", "Origins", "ResolvedConfig", "apply_override",
           "config_hash", "deep_merge", "dump_yaml", "load_config", "parse_override", "safe_load",
           "split_key_value", "validate"]


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
    config = read_with_bases(path, origins, SECTIONS)
    for text in overrides:
        parts, value = parse_override(text)
        check_override_key(parts, text)
        origins.replace(apply_override(config, parts, value, text), f"--set {text}")
    if config.get("name") is None:
        config["name"] = name_default or path.stem
    resolved = ResolvedConfig(validate(config, origins))
    resolved.origins = origins
    return resolved


def config_hash(config: dict) -> str:
    """sha256 (first 16 hex digits) of the resolved config, independent of key order."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _Dumper(yaml.SafeDumper):
    """Quotes a string that ``safe_load`` would read as a number (``'1e3'``: YAML 1.2 floats)."""


_Dumper.add_implicit_resolver("tag:yaml.org,2002:float", YAML12_FLOAT, list("-+0123456789."))


def dump_yaml(config: dict) -> str:
    return yaml.dump(dict(config), Dumper=_Dumper, sort_keys=False, default_flow_style=None, width=100)
