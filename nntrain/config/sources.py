"""Where a config comes from: files with ``base:`` inheritance, and the origin of every key.

``base: other.yaml`` (relative to the file; or a list of files) is deep-merged under the
file: mappings merge key by key, anything else (lists such as ``model``) is replaced;
later wins. ``Origins`` remembers, for each key path, the ``file:line`` it was read from
or the ``--set`` option that gave it, so that every error can say where to look.
"""

from __future__ import annotations

import copy
from pathlib import Path

from ..errors import ConfigError
from ..registry import did_you_mean
from .yaml_reader import read_mapping


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

    def add_file(self, path: Path, lines: dict) -> None:
        self.where.setdefault((), str(path))
        self.where.update({key: f"{path}:{line}" for key, line in lines.items()})

    def replace(self, path: tuple, origin: str) -> None:
        """``path`` and everything under it now come from ``origin`` (a ``--set`` replaced them)."""
        n = len(path)
        for key in [k for k in self.where if k[:n] == path and k]:
            del self.where[key]
        self.where[path] = origin


def deep_merge(base: dict, top: dict) -> dict:
    """``top`` over ``base``: mappings merge recursively, other values are replaced."""
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_with_bases(path: Path, origins: Origins, sections=(), seen: tuple = ()) -> dict:
    """The file's mapping merged over its bases' (recursively); origins filled in.

    A file none of whose keys is one of ``sections`` (or ``base``), or close to one, is
    not an experiment file: it is refused by its path alone, without quoting its keys,
    since it may be any file (``base: /etc/shadow`` reads as a mapping of its lines).
    """
    path = path.resolve() if path.exists() else path
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"base: circular inheritance: {chain}")
    data, lines = read_mapping(path)
    known = (*sections, "base")
    if sections and data and not any(key in known or did_you_mean(key, known) for key in data):
        raise ConfigError(f"{path}: not an experiment file (none of its keys is a section: {', '.join(known)})")
    own = Origins()
    own.add_file(path, lines)
    base_ref = data.pop("base", None)
    if base_ref is None:
        origins.where.update(own.where)
        return data
    refs = base_ref if isinstance(base_ref, list) else [base_ref]
    merged: dict = {}
    for ref in refs:
        if not isinstance(ref, str):
            raise ConfigError(f"{own(('base',))}: base: expected a file name, received {ref!r}")
        base_path = path.parent / ref
        if not base_path.exists():
            raise ConfigError(f"{own(('base',))}: base: file not found: {base_path}")
        merged = deep_merge(merged, read_with_bases(base_path, origins, sections, (*seen, path)))
    origins.where.update(own.where)
    return deep_merge(merged, data)
