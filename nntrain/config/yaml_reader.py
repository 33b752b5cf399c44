"""Reading YAML within bounds, into plain data, with the line of every key.

Loading never executes code and never takes more than the input can legitimately need:

- at most ``MAX_FILE_BYTES`` (1 MiB; an experiment file is a few KB) are read, and only
  from a regular file: ``base: /dev/zero``, a FIFO or a directory is refused unread;
- the bytes must be UTF-8 text ("not a UTF-8 text file" otherwise);
- nesting deeper than ``MAX_DEPTH`` (100) levels is refused while the document is
  composed ("nested too deeply"), long before Python's recursion limit;
- aliases are never expanded. The composed document is a graph of nodes in which an
  alias is a second reference to its anchor's node; the size of every node with its
  aliases expanded (1 + its children's sizes, computed once per node as it is composed)
  must stay within ``MAX_NODES`` (100,000 values: an experiment has a few hundred, and a
  bound this size keeps reading under a second and ~100 MB). A "billion laughs" document
  is refused after its first few levels; an alias inside its own anchor is refused too;
- only the JSON data types: mappings with string keys, lists, strings, integers, floats,
  true/false and null. Any other tag, explicit (``!!python/object:...``, ``!!binary``,
  ``!!set``, ``!!timestamp``, ``!custom``) or not, is refused as "tag not allowed".
  Dates are strings (``description: 2024-01-01`` is '2024-01-01'), and ``1e-4`` is a
  float: YAML 1.2's core schema, which has no date type, like JSON. (``yes``/``no``
  stay booleans and ``<<`` merge keys work, as in PyYAML's safe loader.)
- a key given twice in one mapping is an error naming both lines (YAML would keep the
  last one silently, where a user almost always made a mistake);
- the result is a plain tree: no two places share one object, even through an alias,
  so changing one key (``--set``) changes only that key, and ``json.dumps`` and
  ``dump_yaml`` / ``safe_load`` round-trip it.

Errors are ``ConfigError("<file>:<line>: <problem>")`` and never quote the file beyond a
key or a character: a file that is not YAML (``base: /etc/shadow``) is "not a YAML
mapping", named by its path only.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from ..errors import ConfigError

MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 100
MAX_NODES = 100_000

_YAML = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_YAML + t for t in ("str", "int", "float", "bool", "null", "merge")}
_ALLOWED = {"ScalarNode": _SCALAR_TAGS, "SequenceNode": {_YAML + "seq"}, "MappingNode": {_YAML + "map"}}
_KINDS = "a config holds only mappings, lists, strings, numbers, true/false and null"

# YAML 1.2 floats (``1e-4``: PyYAML's YAML 1.1 rules read it as a string)
YAML12_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X)

if yaml.__with_libyaml__:  # libyaml scans and parses in C, many times faster; composing stays in Python
    from yaml.cyaml import CParser

    _PARSER_BASES: tuple = (CParser,)

    def _init_parser(loader, text: str) -> None:
        CParser.__init__(loader, text)
else:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    _PARSER_BASES = (Reader, Scanner, Parser)

    def _init_parser(loader, text: str) -> None:
        Reader.__init__(loader, text)
        Scanner.__init__(loader)
        Parser.__init__(loader)


class YAMLSyntaxError(ConfigError):
    """The text is not YAML (as opposed to YAML holding something refused)."""


class _Refused(Exception):
    def __init__(self, problem: str, mark):
        super().__init__(problem)
        self.problem, self.mark = problem, mark


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_YAML):] if tag.startswith(_YAML) else tag


class _Loader(Composer, *_PARSER_BASES, SafeConstructor, Resolver):
    """A safe loader that refuses, while composing, what ``parse`` promises to refuse."""

    yaml_implicit_resolvers = {  # SafeLoader's, without timestamps and the '=' value type
        first: [(tag, rx) for tag, rx in resolvers if tag not in (_YAML + "timestamp", _YAML + "value")]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def __init__(self, text: str):
        _init_parser(self, text)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._depth, self._composed, self._sizes = 0, 0, {}

    def compose_node(self, parent, index):
        event = self.peek_event()
        mark = event.start_mark
        if self._depth >= MAX_DEPTH:
            raise _Refused(f"nested too deeply (more than {MAX_DEPTH} levels)", mark)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(event, yaml.AliasEvent):
            if id(node) not in self._sizes:  # its anchor's node is still being composed: an ancestor
                raise _Refused("an alias refers to a node that contains it", mark)
            size, height = self._sizes[id(node)]
        else:
            size, height = self._measure(node, mark)
        if self._depth + height > MAX_DEPTH:  # an alias can bring a deep node up from elsewhere
            raise _Refused(f"nested too deeply (more than {MAX_DEPTH} levels once aliases are expanded)", mark)
        return node

    def _measure(self, node, mark) -> tuple:
        """(values with aliases expanded, height) of a node just composed; its children were measured first."""
        allowed = _ALLOWED[type(node).__name__]
        if node.tag not in allowed:
            raise _Refused(f"tag not allowed: {_short_tag(node.tag)} ({_KINDS})", node.start_mark)
        self._composed += 1
        if isinstance(node, yaml.ScalarNode):
            children = []
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = [n for pair in node.value for n in pair]
        size, height = 1, 1
        for child in children:  # each measured when it was composed
            child_size, child_height = self._sizes[id(child)]
            size, height = size + child_size, max(height, child_height + 1)
        if size > MAX_NODES or self._composed > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES} values (an alias counts its values again)", mark)
        self._sizes[id(node)] = (size, height)
        return size, height

    def construct_mapping(self, node, deep=False):
        first_line = {}
        for key_node, _ in node.value:
            if key_node.tag == _YAML + "merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                problem = (f"key {key_node.value!r} is read as {key!r}, not a string: quote it"
                           if isinstance(key_node, yaml.ScalarNode) else "a key must be a string, not a list or mapping")
                raise _Refused(problem, key_node.start_mark)
            if key in first_line:
                raise _Refused(f"duplicate key '{key}' (first at line {first_line[key] + 1})", key_node.start_mark)
            first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(_YAML + "float", YAML12_FLOAT, list("-+0123456789."))
_Loader.add_constructor(_YAML + "merge", SafeConstructor.construct_yaml_str)  # '<<' as a value: a string


def parse(text: str, source: str, numbered: bool = True) -> tuple[object, dict]:
    """``(data, lines)``: the plain data of one YAML document (None if empty) and the
    1-based line of each key path, e.g. ``lines[('model', 2, 'kernel')] = 14``.

    ``source`` names the text in errors, followed by the line if ``numbered`` (a file
    name; ``--set KEY=VALUE`` is not numbered). Raises YAMLSyntaxError for text that is
    not YAML, ConfigError for anything refused (module docstring).
    """
    try:
        loader = _Loader(text)  # the pure-Python reader checks the characters here
        try:
            node = loader.get_single_node()
            data = None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except _Refused as exc:
        raise ConfigError(f"{source}{f':{exc.mark.line + 1}' if numbered else ''}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise YAMLSyntaxError(_syntax_message(exc, text, source if numbered else None)) from None
    lines: dict = {}
    if node is not None:
        _record_lines(node, (), lines, set())
    return _plain(data, source), lines


def _syntax_message(exc, text: str, source: str | None) -> str:
    """``<source>:<line>: ...`` without quoting the text (a reader error has a position, not a mark)."""
    mark, position = getattr(exc, "problem_mark", None), getattr(exc, "position", None)
    line = mark.line + 1 if mark else text.count("\n", 0, position) + 1 if isinstance(position, int) else None
    where = f"{source}:{line}" if source and line else source or "value"
    if mark is None and isinstance(position, int):
        return f"{where}: not a text file (it holds a control character)"
    return f"{where}: YAML syntax error: {getattr(exc, 'problem', None) or 'not valid YAML'}"


def _record_lines(node, prefix: tuple, lines: dict, seen: set) -> None:
    """Each key path's line; a node reached again through an alias is not walked again
    (paths below an alias take the alias's key line)."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*prefix, key_node.value)
            lines[key] = key_node.start_mark.line + 1
            _record_lines(value_node, key, lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = (*prefix, i)
            lines[key] = item.start_mark.line + 1
            _record_lines(item, key, lines, seen)


def _plain(obj, source: str):
    """A fresh copy of the tree (an alias's object is shared by every place that uses it)."""
    if isinstance(obj, dict):
        bad = [k for k in obj if not isinstance(k, str)]
        if bad:  # only through a '<<' merge of an inline mapping: other keys are checked with their line
            raise ConfigError(f"{source}: key {bad[0]!r} is not a string: quote it")
        return {k: _plain(val, source) for k, val in obj.items()}
    if isinstance(obj, list):
        return [_plain(val, source) for val in obj]
    return obj


def safe_load(text: str):
    """The plain data of a YAML text, with the bounds and refusals of ``parse`` (never
    constructs arbitrary objects)."""
    return parse(text, "<text>")[0]


def read_text(path: Path) -> str:
    """A config file's text: a regular file, at most MAX_FILE_BYTES, UTF-8."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except PermissionError:
        raise ConfigError(f"cannot read config file {path}: permission denied") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"{path}: not a regular file (a config is a YAML file)")
        try:
            raw = f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB, not an experiment file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: not a UTF-8 text file") from None


def read_mapping(path: Path) -> tuple[dict, dict]:
    """``(data, lines)`` of a config file that must hold one mapping (empty: ``{}``)."""
    data, lines = parse(read_text(path), str(path))
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        kind = {list: "a list", str: "a string"}.get(type(data), "a single value")
        raise ConfigError(f"{path}: not a YAML mapping of sections (data, model, ...): the file holds {kind}")
    return data, lines
